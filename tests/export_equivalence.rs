//! The lowered graph, run by ONNX Runtime, computes what the candle model computes: the official IPT + AdaptIR
//! fixture against torch's output, every method of the zoo against candle, and the FFT edge cases against the
//! fixture, with both FFT lowerings and with functions inlined or not.
mod common;

use adaptir::compile::builder::Builder;
use adaptir::compile::ir::{Dim, ElemType, ValueInfo};
use adaptir::compile::lower::{lower, LowerOptions};
use adaptir::compile::onnx::to_bytes;
use adaptir::runtime::{RunOptions, Session};
use adaptir::tolerance::{F32_REASSOCIATION_REL, FFT_EDGES_PORTABLE_ABS, MODEL_PARITY_ABS};
use adaptir_ops::graph::SpectralPrecision::F64;
use adaptir_ops::graph::{FftLowering, GraphBuilder};
use candle_core::{DType, Device, IndexOp, Tensor};
use common::*;

fn run(g: &adaptir::compile::ir::Graph, inputs: &[(&str, Tensor)]) -> Vec<(String, Tensor)> {
    let bytes = to_bytes(g, "test").unwrap();
    let mut s = Session::from_memory(&bytes, std::path::Path::new("test.onnx"), &RunOptions::default()).unwrap();
    s.run(inputs).unwrap()
}

const LOWERINGS: &[LowerOptions] = &[
    LowerOptions { fft: FftLowering::MatMul, inline_functions: false, spectral: F64, whole_image: None },
    LowerOptions { fft: FftLowering::MatMul, inline_functions: true, spectral: F64, whole_image: None },
    LowerOptions { fft: FftLowering::Dft, inline_functions: false, spectral: F64, whole_image: None },
];

#[test]
fn official_ipt_adaptir_through_onnx_runtime() {
    let config = adaptir::backbone::IptConfig::from_json_file(&fixture("ipt_small.json")).unwrap();
    let (model, _) =
        adaptir::model::load_ipt(&fixture("parity/ipt_small_adaptir/weights.safetensors"), &config, &Device::Cpu)
            .unwrap();
    let io = load("parity/ipt_small_adaptir/io.safetensors");
    for opts in LOWERINGS {
        for task in [2usize, 4] {
            let g = lower(&model, task, *opts).unwrap();
            let out = run(&g, &[("input", io["x"].clone())]);
            let want = &io[&format!("task{task}.y")];
            let err = max_abs_diff(&out[0].1, want);
            eprintln!("{opts:?} task {task}: ORT vs official {err:.3e}");
            assert!(err <= MODEL_PARITY_ABS, "{opts:?} task {task}: {err:e}");
        }
    }
}

/// The frequency branch alone on the crafted spectra of `adaptir_fft_edges`: the portable channels within
/// `FFT_EDGES_PORTABLE_ABS` of torch, as in candle.
#[test]
fn fft_edges_through_onnx_runtime() {
    let io = load("parity/adaptir_fft_edges/io.safetensors");
    for (weights, dim, layout, case) in FFT_EDGES_CASES {
        let m = fft_edges_adapter(weights, dim, layout);
        let x0 = &io[&format!("{case}.inter.x0")];
        let (n, h, hh, ww) = x0.dims4().unwrap();
        let ours_candle = m.frequency_branch(x0).unwrap();
        for opts in LOWERINGS {
            let mut b = Builder::new("freq", opts.fft, opts.inline_functions);
            let y = m.lower_frequency_branch(&mut b, "x0", (hh, ww), "adaptir").unwrap();
            let y = b.op("Identity", &[&y], vec![]).unwrap();
            let mut g = b.finish();
            let fixed = |v: usize| Dim::Fixed(v);
            g.inputs = vec![ValueInfo {
                name: "x0".into(),
                elem: ElemType::F32,
                shape: vec![fixed(n), fixed(h), fixed(hh), fixed(ww)],
            }];
            g.outputs =
                vec![ValueInfo { name: y, elem: ElemType::F32, shape: vec![fixed(n), fixed(h), fixed(hh), fixed(ww)] }];
            let out = run(&g, &[("x0", x0.clone())]);
            let ort = &out[0].1;
            // Same convention as candle everywhere (portable or not), and torch's on the portable channels.
            let d = max_abs_diff(ort, &ours_candle);
            eprintln!("{case} {opts:?}: ORT vs candle {d:.3e}");
            assert!(d <= FFT_EDGES_PORTABLE_ABS, "{case} {opts:?}: ORT vs candle {d:e}");
            let torch = &io[&format!("{case}.inter.global")];
            for (s, c) in fft_edges_channels(case).iter().filter(|c| c.portable).map(|c| (c.sample, c.channel)) {
                let e = max_abs_diff(&ort.i((s, c)).unwrap(), &torch.i((s, c)).unwrap());
                assert!(e <= FFT_EDGES_PORTABLE_ABS, "{case} {opts:?} [{s},{c}]: {e:e}");
            }
        }
    }
}

/// Every method of the zoo, perturbed so that it acts, lowered and run by ORT against candle.
#[test]
fn every_method_through_onnx_runtime() {
    use adaptir::backbone::{Ipt, IptConfig};
    use adaptir::params::{StateDict, Strict};
    use adaptir::peft::{method, MethodModules, METHODS};
    let config = IptConfig { num_tasks: 2, scales: vec![2, 1], ..IptConfig::new(24, 4, 1) };
    let host = config.host_dims();
    let vm = candle_nn::VarMap::new();
    Ipt::fresh(&vm, &config, MethodModules::none(&host), &Device::Cpu).unwrap();
    let frozen = |vm: &candle_nn::VarMap| StateDict {
        path: "t".into(),
        tensors: vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach().copy().unwrap()))
            .collect(),
    };
    let sd = frozen(&vm);
    let x = Tensor::rand(0f32, 1.0, (2, 3, 48, 48), &Device::Cpu).unwrap();
    for entry in METHODS {
        let m = method(entry.name, &serde_json::Value::Null, &host).unwrap();
        let mvm = candle_nn::VarMap::new();
        m.build(candle_nn::VarBuilder::from_varmap(&mvm, DType::F32, &Device::Cpu), &host).unwrap();
        for var in mvm.all_vars().into_iter().filter(|v| v.dtype().is_float()) {
            var.set(&(var.as_tensor() + var.as_tensor().randn_like(0.0, 0.05).unwrap()).unwrap()).unwrap();
        }
        let msd = Strict::new(frozen(&mvm));
        let modules = m.build(msd.var_builder(DType::F32, &Device::Cpu), &host).unwrap();
        let model = Ipt::new(Strict::new(sd.clone()).var_builder(DType::F32, &Device::Cpu), &config, modules).unwrap();
        for task in 0..2 {
            let want = model.forward(&x, task, false).unwrap();
            let g = lower(&model, task, LowerOptions::default()).unwrap();
            let got = &run(&g, &[("input", x.clone())])[0].1;
            let (d, scale) = (max_abs_diff(got, &want), max_abs(&want));
            eprintln!("{} task {task}: ORT vs candle {d:.3e} (max |y| {scale:.3})", entry.name);
            assert!(d <= F32_REASSOCIATION_REL * scale, "{} task {task}: {d:e}", entry.name);
        }
    }
}

/// `ipt-base` (the released IPT size, randomly initialised) + AdaptIR with perturbed weights, exported and run
/// in ONNX Runtime. A random 12+12-layer IPT amplifies f32 rounding: our own f32 forward is 2.4e-4 from the f64
/// forward of the same weights, far above `F32_REASSOCIATION_REL`. So both f32 results are compared with the f64
/// one, and ONNX Runtime must be no further from it than `F32_PEER_FACTOR` times our f32 forward
/// (about 3 GB of memory, half a minute).
#[test]
fn ipt_base_adaptir_through_onnx_runtime() {
    use adaptir::backbone::{Ipt, IptConfig};
    use adaptir::params::{StateDict, Strict};
    use adaptir::peft::method;
    let start = std::time::Instant::now();
    use adaptir::train::init::{init_tensor, Seeded};
    // Seeded throughout (weights, perturbation, input), so that every machine checks the same draw: the peer
    // ratio is a statistic of one random model, and an unseeded draw reached 2.14x on a fresh clone (2026-12-06).
    // This draw: ours 3.6e-4 and ORT 1.6e-4 from f64 (0.43x).
    let config = IptConfig::preset("ipt-base").unwrap();
    let host = config.host_dims();
    let vm = candle_nn::VarMap::new();
    adaptir::train::init::seeded_ipt(&vm, &config, 0, &Device::Cpu).unwrap();
    let tensors = |vm: &candle_nn::VarMap| -> std::collections::BTreeMap<String, Tensor> {
        vm.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect()
    };
    let sd = StateDict { path: "ipt-base".into(), tensors: tensors(&vm) };
    drop(vm);
    let m = method("adaptir", &serde_json::Value::Null, &host).unwrap();
    let mvm = candle_nn::VarMap::new();
    m.build(Seeded::var_builder(&mvm, 1, &Device::Cpu), &host).unwrap();
    for (name, var) in mvm.data().lock().unwrap().iter().filter(|(_, v)| v.dtype().is_float()) {
        let perturb = candle_nn::Init::Randn { mean: 0.0, stdev: 0.05 };
        let seed = adaptir::data::seed::stem_seed(2, name);
        let noise = init_tensor(var.shape(), perturb, DType::F32, &Device::Cpu, seed).unwrap();
        var.set(&(var.as_tensor() + noise).unwrap()).unwrap();
    }
    let msd = StateDict { path: "adapter".into(), tensors: tensors(&mvm) };
    let build = |dtype: DType| {
        let modules = m.build(Strict::new(msd.clone()).var_builder(dtype, &Device::Cpu), &host).unwrap();
        Ipt::new(Strict::new(sd.clone()).var_builder(dtype, &Device::Cpu), &config, modules).unwrap()
    };
    let x =
        init_tensor(&(1, 3, 48, 48).into(), candle_nn::Init::Uniform { lo: 0.0, up: 1.0 }, DType::F32, &Device::Cpu, 3)
            .unwrap();
    let exact = build(DType::F64).forward(&x.to_dtype(DType::F64).unwrap(), 3, false).unwrap();
    let model = build(DType::F32);
    let ours = model.forward(&x, 3, false).unwrap();
    let mut g = lower(&model, 3, LowerOptions::default()).unwrap();
    adaptir::compile::passes::optimize(&mut g).unwrap();
    let ort = run(&g, &[("input", x)]).remove(0).1;
    let (ours_err, ort_err) = (max_abs_diff(&ours, &exact), max_abs_diff(&ort, &exact));
    eprintln!(
        "ipt-base + AdaptIR (derain head), max |y| {:.3}: candle f32 vs f64 {ours_err:.3e}, ORT vs f64 {ort_err:.3e}, ORT vs candle {:.3e}; {:.1} s",
        max_abs(&exact),
        max_abs_diff(&ort, &ours),
        start.elapsed().as_secs_f64()
    );
    assert!(ort_err <= adaptir::tolerance::F32_PEER_FACTOR * ours_err, "ORT {ort_err:e} vs ours {ours_err:e}");
}

/// The `Atan2` function as lowered (no `Atan` node, so that it runs on ONNX Runtime's CUDA provider too), run
/// by ORT against the platform `atan2` in f64 and f32: signed zeros, infinities, NaN, both sides of the
/// reduction boundaries (0.66 and tan(3pi/8) = 2.4142...) and a dense sweep of ratios and magnitudes.
#[test]
fn atan2_lowering_matches_the_platform_atan2() {
    let special = [0.0, -0.0, 1.0, -1.0, 0.66, 0.660001, 2.414213562373095, 2.4142136, 1e-300, 1e300, f64::INFINITY];
    let (mut ys, mut xs) = (vec![], vec![]);
    for &y in special.iter().chain(special.iter().map(|v| -v).collect::<Vec<_>>().iter()).chain([f64::NAN].iter()) {
        for &x in special.iter().chain(special.iter().map(|v| -v).collect::<Vec<_>>().iter()).chain([f64::NAN].iter()) {
            ys.push(y);
            xs.push(x);
        }
    }
    for i in 0..4000 {
        let angle = -3.2 + 6.4 * (i as f64) / 4000.0;
        let mag = 10f64.powf(-6.0 + 12.0 * ((i * 7919) % 4000) as f64 / 4000.0);
        ys.push(mag * angle.sin());
        xs.push(mag * angle.cos());
    }
    let n = ys.len();
    for (elem, dtype) in [(ElemType::F64, DType::F64), (ElemType::F32, DType::F32)] {
        for inline_functions in [false, true] {
            let mut b = Builder::new("atan2", FftLowering::MatMul, inline_functions);
            let out = adaptir_ops::atan2::lower(&mut b, "y", "x").unwrap();
            let out = b.op("Identity", &[&out], vec![]).unwrap();
            let mut g = b.finish();
            g.inputs = ["y", "x"]
                .iter()
                .map(|s| ValueInfo { name: s.to_string(), elem, shape: vec![Dim::Fixed(n)] })
                .collect();
            g.outputs = vec![ValueInfo { name: out, elem, shape: vec![Dim::Fixed(n)] }];
            let y = Tensor::new(ys.as_slice(), &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
            let x = Tensor::new(xs.as_slice(), &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
            let got = run(&g, &[("y", y.clone()), ("x", x.clone())])[0].1.to_dtype(DType::F64).unwrap();
            let got = got.to_vec1::<f64>().unwrap();
            let (y, x) = (
                y.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap(),
                x.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap(),
            );
            // f64: Cephes' atan is within about one ulp; f32: one f32 rounding of the inputs, the ratio and the result.
            let eps = if dtype == DType::F64 { f64::EPSILON } else { f32::EPSILON as f64 };
            let rel = adaptir::tolerance::ATAN2_EPS_UNITS * eps;
            let mut worst = 0f64;
            for i in 0..n {
                let want = if dtype == DType::F64 { y[i].atan2(x[i]) } else { (y[i] as f32).atan2(x[i] as f32) as f64 };
                let ok = if want.is_nan() {
                    got[i].is_nan()
                } else {
                    let e = (got[i] - want).abs() / want.abs().max(f64::MIN_POSITIVE);
                    worst = worst.max(e);
                    e <= rel && got[i].is_sign_negative() == want.is_sign_negative()
                };
                assert!(
                    ok,
                    "{dtype:?} inline {inline_functions}: atan2({}, {}) = {} in ORT, {want} wanted",
                    y[i], x[i], got[i]
                );
            }
            eprintln!("{dtype:?} inline {inline_functions}: worst relative error {worst:.2e} over {n} pairs");
        }
    }
}
