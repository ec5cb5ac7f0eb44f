//! The f32 spectral path (the portable export's, and `--fp16`'s): DFT products in f32 with the exact-zero
//! threshold in f32 ulps. It must keep the official fixtures: `ipt_small_adaptir` within `MODEL_PARITY_ABS` in
//! ONNX Runtime, and on the crafted spectra of `adaptir_fft_edges` the test prints, channel by channel, how far
//! the f32 path and the f64 path each are from torch, and holds the f32 path to the same bound as the f64 one
//! on the channels the fixture calls portable, relative to the output's magnitude (`F32_SPECTRAL_REL`). docs/compiler.md ("The f32 spectral path") has the table.
mod common;

use adaptir::compile::builder::Builder;
use adaptir::compile::ir::{Dim, ElemType, ValueInfo};
use adaptir::compile::lower::lower;
use adaptir::compile::onnx::to_bytes;
use adaptir::compile::target::Target;
use adaptir::runtime::{RunOptions, Session};
use adaptir::tolerance::{F32_SPECTRAL_REL, FFT_EDGES_PORTABLE_ABS, MODEL_PARITY_ABS};
use adaptir_ops::graph::{FftLowering, GraphBuilder, SpectralPrecision};
use candle_core::{Device, IndexOp, Tensor};
use common::*;

fn run(g: &adaptir::compile::ir::Graph, inputs: &[(&str, Tensor)]) -> Vec<(String, Tensor)> {
    let bytes = to_bytes(g, "test").unwrap();
    let mut s = Session::from_memory(&bytes, std::path::Path::new("test.onnx"), &RunOptions::default()).unwrap();
    s.run(inputs).unwrap()
}

#[test]
fn portable_export_keeps_the_official_ipt_fixture() {
    let config = adaptir::backbone::IptConfig::from_json_file(&fixture("ipt_small.json")).unwrap();
    let (model, _) =
        adaptir::model::load_ipt(&fixture("parity/ipt_small_adaptir/weights.safetensors"), &config, &Device::Cpu)
            .unwrap();
    let io = load("parity/ipt_small_adaptir/io.safetensors");
    for task in [2usize, 4] {
        let g = lower(&model, task, Target::Portable.lower_options(FftLowering::MatMul)).unwrap();
        assert!(g.functions.is_empty(), "the portable graph has no model-local functions");
        let out = run(&g, &[("input", io["x"].clone())]);
        let err = max_abs_diff(&out[0].1, &io[&format!("task{task}.y")]);
        eprintln!("portable (f32 spectral, inlined) task {task}: ORT vs official {err:.3e}");
        assert!(err <= MODEL_PARITY_ABS, "task {task}: {err:e}");
    }
}

/// The frequency branch of the fixture's adapter lowered with `spectral`, run by ONNX Runtime on `x0`.
fn frequency_branch_in_ort(m: &adaptir::peft::AdaptIr, x0: &Tensor, spectral: SpectralPrecision) -> Tensor {
    let (n, h, hh, ww) = x0.dims4().unwrap();
    let mut b = Builder::with_spectral("freq", FftLowering::MatMul, true, spectral);
    let y = m.lower_frequency_branch(&mut b, "x0", (hh, ww), "adaptir").unwrap();
    let y = b.op("Identity", &[&y], vec![]).unwrap();
    let mut g = b.finish();
    let shape = vec![Dim::Fixed(n), Dim::Fixed(h), Dim::Fixed(hh), Dim::Fixed(ww)];
    g.inputs = vec![ValueInfo { name: "x0".into(), elem: ElemType::F32, shape: shape.clone() }];
    g.outputs = vec![ValueInfo { name: y, elem: ElemType::F32, shape }];
    run(&g, &[("x0", x0.clone())]).remove(0).1
}

#[test]
fn fft_edges_channel_by_channel_f32_against_f64() {
    let io = load("parity/adaptir_fft_edges/io.safetensors");
    let mut portable_checked = 0;
    for (weights, dim, layout, case) in FFT_EDGES_CASES {
        let m = fft_edges_adapter(weights, dim, layout);
        let x0 = &io[&format!("{case}.inter.x0")];
        let torch = &io[&format!("{case}.inter.global")];
        let f32_path = frequency_branch_in_ort(&m, x0, SpectralPrecision::F32);
        let f64_path = frequency_branch_in_ort(&m, x0, SpectralPrecision::F64);
        let scale = max_abs(torch);
        eprintln!(
            "{case} (max |torch| {scale:.3}): channel | pattern | portable | f32 path vs torch | f64 path vs torch"
        );
        for ch in fft_edges_channels(case) {
            let (s, c) = (ch.sample, ch.channel);
            let t = torch.i((s, c)).unwrap();
            let d32 = max_abs_diff(&f32_path.i((s, c)).unwrap(), &t);
            let d64 = max_abs_diff(&f64_path.i((s, c)).unwrap(), &t);
            eprintln!("  [{s},{c}] | {} | {} | {d32:.3e} | {d64:.3e}", ch.pattern, ch.portable);
            if ch.portable {
                // Rounding of the dense f32 products only: within the f32 bound of the output's magnitude.
                assert!(d32 <= F32_SPECTRAL_REL * scale, "{case} [{s},{c}] {}: f32 path {d32:e}", ch.pattern);
                portable_checked += 1;
            } else {
                // Torch's own rounding at the branch cut (-0.0 imaginary parts, residues where the exact value
                // is 0): the f32 path follows the same clean convention as the f64 path, or lands closer to torch.
                assert!(
                    d32 <= d64 + FFT_EDGES_PORTABLE_ABS,
                    "{case} [{s},{c}] {}: f32 {d32:e}, f64 {d64:e}",
                    ch.pattern
                );
            }
        }
    }
    assert_eq!(portable_checked, 23);
}
