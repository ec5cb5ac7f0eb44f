//! The whole EDT + AdaptIR against the official model (`fixtures/parity/edt_small_adaptir_sr2`: x2 SR, a body of
//! two stages of two blocks, everything else official). The fixture stores no intermediates, only `x` and `y`.
mod common;

use adaptir::backbone::edt::swin::shifted_window_mask;
use adaptir::backbone::EdtConfig;
use adaptir::model::edt::load_edt;
use adaptir::peft::{AdaptIrConfig, Layout};
use adaptir::tolerance::{EXACT, MODEL_PARITY_ABS};
use candle_core::{DType, Device};
use common::*;

const WEIGHTS: &str = "parity/edt_small_adaptir_sr2/weights.safetensors";

#[test]
fn edt_small_adaptir_sr2() {
    let config = EdtConfig::from_json_file(&fixture("edt_small.json")).unwrap();
    let (model, sizes) = load_edt(&fixture(WEIGHTS), &config, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(sizes, Some(AdaptIrConfig::official(180, Layout::Edt)));
    let io = load("parity/edt_small_adaptir_sr2/io.safetensors");
    let (x, want) = (&io["x"], &io["y"]);
    let got = model.forward(x, false).unwrap();
    let err = max_abs_diff(&got, want);
    eprintln!("output {:?}, max |y| {:.3}, max abs diff {err:.3e}", got.dims(), max_abs(want));
    // The same weights in f64: how far torch's own f32 output is from the exact-ish value (diagnostic).
    let (model64, _) = load_edt(&fixture(WEIGHTS), &config, DType::F64, &Device::Cpu).unwrap();
    let got64 = model64.forward(&x.to_dtype(DType::F64).unwrap(), false).unwrap();
    eprintln!(
        "vs our f64 forward: ours f32 {:.3e}, torch f32 {:.3e}",
        max_abs_diff(&got, &got64),
        max_abs_diff(want, &got64)
    );
    assert!(err <= MODEL_PARITY_ABS, "{err:e} > {MODEL_PARITY_ABS:e}");
}

/// The shifted blocks' `attn_mask_h` / `attn_mask_v` buffers, which the official constructor computes for the 48x48
/// grid, equal the masks we compute (we use the checkpoint's at 48x48 and compute them at other sizes).
#[test]
fn stored_masks_equal_the_computed_ones() {
    let sd = load(WEIGHTS);
    let mut seen = 0;
    for (key, stored) in sd.iter().filter(|(k, _)| k.contains("attn_mask")) {
        let (window, shift) = if key.ends_with("attn_mask_h") { ((6, 24), (3, 12)) } else { ((24, 6), (12, 3)) };
        let ours = shifted_window_mask((48, 48), window, shift, DType::F32, &Device::Cpu).unwrap();
        let err = max_abs_diff(&ours, stored);
        assert!(err <= EXACT, "{key}: {err:e}");
        assert!(key.contains("blocks.1."), "{key}: a mask on an unshifted block");
        seen += 1;
    }
    assert_eq!(seen, 4, "two stages x one shifted block x two branches");
}
