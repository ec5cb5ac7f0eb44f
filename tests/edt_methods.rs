//! The PETL zoo on EDT (issue 19, item 3): every method attaches to EDT's Swin blocks through the same hooks as
//! on IPT. A fresh method leaves the EDT output exactly unchanged; perturbed, it changes it, and its ONNX lowering
//! matches the candle model in ONNX Runtime. `methods --backbone edt-b` counts AdaptIR on the full-size EDT-B
//! exactly as the official state dict holds it (fixtures/parity/KEYS.md, section 2).
mod common;

use std::path::Path;

use adaptir::backbone::{Edt, EdtConfig};
use adaptir::commands::methods::{edt_backbone_params, host_table};
use adaptir::compile::lower::{lower_edt, LowerOptions};
use adaptir::peft::{method, METHODS};
use adaptir::tolerance::EXACT;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{adaptir_cli, max_abs_diff};

/// fixtures/parity/KEYS.md, section 2: the official EDT-B + AdaptIR (sr_4) state dict has 11,800,479
/// parameters, of which 173,412 are AdaptIR (36 adapters x 4,817).
const OFFICIAL_EDT_B_SR4_PARAMS: usize = 11_800_479;
const OFFICIAL_EDT_B_ADAPTIR_PARAMS: usize = 173_412;

#[test]
fn parameter_counts_on_edt_b_equal_the_official_state_dict() {
    let config = EdtConfig::official("sr4");
    let backbone = edt_backbone_params(&config).unwrap();
    let rows = host_table(&config.host_dims(), backbone).unwrap();
    let count = |name: &str| rows.iter().find(|r| r.method == name).unwrap().trainable_params;
    assert_eq!(count("adaptir"), Some(OFFICIAL_EDT_B_ADAPTIR_PARAMS));
    assert_eq!(backbone + OFFICIAL_EDT_B_ADAPTIR_PARAMS, OFFICIAL_EDT_B_SR4_PARAMS);
    assert_eq!(count("full"), Some(backbone));
    // VPT's prompts extend a token sequence: not applicable to a grid, and the row says so.
    let vpt = rows.iter().find(|r| r.method == "vpt").unwrap();
    assert_eq!(vpt.trainable_params, None);
    assert!(vpt.not_applicable.as_deref().unwrap_or_default().contains("EDT"));
    // The command prints them.
    let (code, out, err) = adaptir_cli(&["methods", "--backbone", "edt-b"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("173,412") && out.contains("does not apply to EDT"), "{out}");
}

fn small_config() -> EdtConfig {
    EdtConfig { depths: vec![2], num_heads: vec![6], embed_dim: 60, ..EdtConfig::official("sr2") }
}

fn input() -> Tensor {
    let v: Vec<f32> = (0..2 * 3 * 48 * 48).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
    Tensor::from_vec(v, (2, 3, 48, 48), &Device::Cpu).unwrap()
}

/// ONNX Runtime on the lowered model and its candle output (`validate --golden`, exit 0).
fn lowered_matches_candle(model: &Edt, x: &Tensor, y: &Tensor, dir: &Path, name: &str) {
    let g = lower_edt(model, LowerOptions::default()).unwrap();
    let file = dir.join(format!("{name}.onnx"));
    adaptir::compile::onnx::write(&g, &file).unwrap();
    let golden = dir.join(format!("{name}.golden.safetensors"));
    adaptir::params::write_safetensors(&golden, &[("input", x.clone()), ("output", y.clone())]).unwrap();
    let (code, out, err) =
        adaptir_cli(&["validate", file.to_str().unwrap(), "--golden", golden.to_str().unwrap(), "--latency-runs", "0"]);
    assert_eq!(code, 0, "{name}: {out}\n{err}");
}

#[test]
fn every_method_attaches_to_edt_is_identity_at_init_and_lowers() {
    let config = small_config();
    let host = config.host_dims();
    let dir = std::env::temp_dir().join(format!("adaptir-edt-methods-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let x = input();
    for entry in METHODS.iter().filter(|e| !matches!(e.name, "full" | "pretrain")) {
        let m = match method(entry.name, &serde_json::Value::Null, &host) {
            Ok(m) => m,
            Err(why) => {
                assert_eq!(entry.name, "vpt", "{why}");
                continue;
            }
        };
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let modules = m.build(vb.clone(), &host).unwrap();
        let adapted = Edt::fresh(&vm, &config, modules.layers, DType::F32, &Device::Cpu).unwrap();
        let plain = Edt::new(vb.clone(), &config, Edt::no_hooks(&config)).unwrap();
        let d0 = max_abs_diff(&adapted.forward(&x, false).unwrap(), &plain.forward(&x, false).unwrap());
        assert!(d0 <= EXACT, "{}: a fresh method changes the output by {d0:e}", entry.name);

        // Perturbed (the zero-initialised parts included), the method acts, and its lowering agrees.
        for var in vm.all_vars().into_iter().filter(|v| v.dtype().is_float()) {
            var.set(&(var.as_tensor() + var.as_tensor().randn_like(0.0, 0.05).unwrap()).unwrap()).unwrap();
        }
        let y = adapted.forward(&x, false).unwrap();
        let d1 = max_abs_diff(&y, &plain.forward(&x, false).unwrap());
        eprintln!("{}: perturbed method moves the output by {d1:.3e}", entry.name);
        assert!(d1 > 1e-3, "{}: a perturbed method has no effect ({d1:e})", entry.name);
        lowered_matches_candle(&adapted, &x, &y, &dir, entry.name);
    }
    std::fs::remove_dir_all(&dir).ok();
}
