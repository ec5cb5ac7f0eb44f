//! ONNX Runtime through `adaptir::runtime`: hand-built graphs written by our writer, run on the CPU provider and
//! compared with the same maths in candle under a named tolerance; node placement; a changed weight is caught;
//! library discovery and its errors. ONNX Runtime must be installed (scripts/setup-ort.sh): these tests fail,
//! never skip, without it.
mod onnx_support;

use std::path::Path;

use adaptir::compile::ir::Data;
use adaptir::compile::onnx;
use adaptir::runtime::{self, compare, Ep, RunOptions, Session, Tolerance};
use candle_core::{Device, Tensor};
use onnx_support::*;

fn opts() -> RunOptions {
    RunOptions { ep: Ep::Cpu, strict_ep: false, threads: Some(1), ..Default::default() }
}

fn tensor(dims: &[usize], seed: u64) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_vec(values(n, seed), dims, &Device::Cpu).unwrap()
}

fn init(g: &adaptir::compile::ir::Graph, name: &str) -> Tensor {
    let c = &g.initializers[name];
    match &c.data {
        Data::F32(v) => Tensor::from_vec(v.clone(), c.dims.as_slice(), &Device::Cpu).unwrap(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn from_graph_runs_without_a_file() {
    let g = mlp();
    let mut s = Session::from_graph(&g, &opts()).unwrap_or_else(|e| panic!("{e}"));
    let x = tensor(&[2, 4], 7);
    let out = s.run(&[("input", x.clone())]).unwrap();
    let reference = x.matmul(&init(&g, "w")).unwrap().broadcast_add(&init(&g, "b")).unwrap().relu().unwrap();
    check("from_graph", &out[0].1, &reference);
}

fn run_one(path: &Path, input: &Tensor) -> Tensor {
    let mut s = Session::new(path, &opts()).unwrap_or_else(|e| panic!("{e}"));
    let mut out = s.run(&[("input", input.clone())]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "output");
    out.remove(0).1
}

fn check(what: &str, ours: &Tensor, reference: &Tensor) {
    let c = compare::compare(what, ours, reference, Tolerance::F32).unwrap();
    eprintln!("{what}: {c}");
    assert!(c.passed, "{what}: {c}");
}

#[test]
fn matmul_add_relu_matches_candle_for_several_batch_sizes() {
    let g = mlp();
    let d = temp_dir("ort-mlp");
    let p = d.join("mlp.onnx");
    onnx::write(&g, &p).unwrap();
    for n in [1, 5] {
        let x = tensor(&[n, 4], 10 + n as u64);
        let ours = run_one(&p, &x);
        let reference = x.matmul(&init(&g, "w")).unwrap().broadcast_add(&init(&g, "b")).unwrap().relu().unwrap();
        check(&format!("mlp N={n}"), &ours, &reference);
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn layer_normalization_and_gelu_match_candle() {
    let g = layer_norm_gelu();
    let d = temp_dir("ort-ln");
    let p = d.join("ln.onnx");
    onnx::write(&g, &p).unwrap();
    let x = (tensor(&[3, 5, 8], 20) * 3.0).unwrap();
    let ours = run_one(&p, &x);
    let h = candle_nn::ops::layer_norm(&x, &init(&g, "gamma"), &init(&g, "beta"), 1e-5).unwrap();
    let reference = h.gelu_erf().unwrap();
    check("layer norm + gelu", &ours, &reference);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn model_local_function_with_dynamic_batch_matches_candle() {
    let g = function_graph();
    let d = temp_dir("ort-function");
    let p = d.join("f.onnx");
    onnx::write(&g, &p).unwrap();
    let s = init(&g, "s");
    for n in [1, 3] {
        let x = (tensor(&[n, 2, 3], 30 + n as u64) * 4.0).unwrap();
        let ours = run_one(&p, &x);
        let sig = candle_nn::ops::sigmoid(&x.broadcast_mul(&s).unwrap()).unwrap();
        let reference = (&x * sig).unwrap().transpose(1, 2).unwrap();
        assert_eq!(ours.dims(), &[n, 3, 2]);
        check(&format!("function N={n}"), &ours, &reference);
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn nodes_by_ep_counts_cpu_placements_and_strict_cpu_loads() {
    let d = temp_dir("ort-placement");
    let p = d.join("ln.onnx");
    onnx::write(&layer_norm_gelu(), &p).unwrap();
    for strict_ep in [false, true] {
        let s = Session::new(&p, &RunOptions { strict_ep, ..opts() }).unwrap_or_else(|e| panic!("{e}"));
        let m = s.nodes_by_ep();
        assert_eq!(m.keys().collect::<Vec<_>>(), vec!["CPUExecutionProvider"], "strict {strict_ep}: {m:?}");
        assert!(m["CPUExecutionProvider"] >= 1, "{m:?}");
        assert_eq!(s.input_names(), ["input"]);
        assert_eq!(s.output_names(), ["output"]);
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn one_changed_weight_is_a_mismatch() {
    let g = mlp();
    let d = temp_dir("ort-changed-weight");
    let (good, bad) = (d.join("good.onnx"), d.join("bad.onnx"));
    onnx::write(&g, &good).unwrap();
    // Change one weight through the reader, as `validate`'s test does.
    let mut h = onnx::read(&good).unwrap();
    match &mut h.initializers.get_mut("w").unwrap().data {
        // Large enough that Relu cannot hide it: |x @ w + b| < 5 for x = 1 and entries in [-1, 1).
        Data::F32(v) => v[5] += 10.0,
        other => panic!("{other:?}"),
    }
    onnx::write(&h, &bad).unwrap();
    let x = Tensor::ones((4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    let reference = run_one(&good, &x);
    let ours = run_one(&bad, &x);
    let c = compare::compare("output", &ours, &reference, Tolerance::F32).unwrap();
    assert!(!c.passed, "a changed weight must fail: {c}");
    assert_eq!(c.worst_index[1], 2, "w[5] is row 1, column 2 of (4,3): output column 2 changes: {c}");
    assert!(c.max_abs >= 5.0 && c.max_abs <= 10.0 + 1e-3, "{c}");
}

#[test]
fn sessions_refuse_bad_files_and_bad_inputs_clearly() {
    let d = temp_dir("ort-bad");
    let text = d.join("notes.onnx");
    std::fs::write(&text, "hello").unwrap();
    let e = Session::new(&text, &opts()).expect_err("not ONNX");
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("notes.onnx") && e.to_string().contains("ONNX"), "{e}");

    let e = Session::new(&d.join("absent.onnx"), &opts()).expect_err("missing");
    assert!(e.to_string().contains("absent.onnx"), "{e}");

    let p = d.join("mlp.onnx");
    onnx::write(&mlp(), &p).unwrap();
    let mut s = Session::new(&p, &opts()).unwrap();
    let e = s.run(&[("x", tensor(&[1, 4], 1))]).expect_err("wrong name");
    assert!(e.to_string().contains("input"), "{e}");
    let e = s.run(&[("input", tensor(&[1, 7], 1))]).expect_err("wrong shape");
    assert!(e.to_string().contains("mlp.onnx"), "{e}");

    let e = Session::new(&p, &RunOptions { threads: Some(0), ..opts() }).expect_err("0 threads");
    assert!(e.to_string().contains("--threads"), "{e}");

    #[cfg(not(feature = "cuda"))]
    {
        let e = Session::new(&p, &RunOptions { ep: Ep::Cuda, ..opts() }).expect_err("no cuda build");
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("scripts/build-cuda.sh"), "{e}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn library_is_found_by_the_documented_discovery() {
    let rt = runtime::runtime().unwrap_or_else(|e| panic!("ONNX Runtime is required for these tests: {e}"));
    assert!(rt.library.path.to_string_lossy().ends_with(runtime::library::LIB_FILE), "{:?}", rt.library);
    assert_eq!(rt.version, runtime::ORT_VERSION, "{:?}", rt.library);
}

#[test]
fn missing_library_gives_the_install_command() {
    let empty = temp_dir("ort-nolib");
    let search =
        runtime::Search { env_path: None, venv_roots: vec![empty.clone()], python: Some(empty.join("no-python-here")) };
    let e = runtime::locate(&search).expect_err("nothing to find");
    assert_eq!(e.exit_code(), 2);
    let msg = e.to_string();
    assert!(msg.contains("scripts/setup-ort.sh") && msg.contains("onnxruntime==1.31.1"), "{msg}");
    assert!(msg.contains("ORT_DYLIB_PATH"), "{msg}");

    // An explicit ORT_DYLIB_PATH that does not exist is an error naming it, not a silent fall-through.
    let search = runtime::Search { env_path: Some(empty.join("libnothing.so").into()), ..search };
    let e = runtime::locate(&search).expect_err("missing file");
    assert!(e.to_string().contains("libnothing.so") && e.to_string().contains("ORT_DYLIB_PATH"), "{e}");

    // The project-local .venv layout is found.
    let capi = empty.join(".venv/lib/python3.11/site-packages/onnxruntime/capi");
    std::fs::create_dir_all(&capi).unwrap();
    std::fs::write(capi.join(runtime::library::LIB_FILE), b"").unwrap();
    let found = runtime::locate(&runtime::Search { env_path: None, ..search }).unwrap();
    assert_eq!(found.source, runtime::Source::ProjectVenv);
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
fn placement_log_parsing() {
    let one = vec![" All nodes placed on [CPUExecutionProvider]. Number of nodes: 7".to_string()];
    assert_eq!(runtime::parse_placements(&one).get("CPUExecutionProvider"), Some(&7));
    let two = vec![
        " Node(s) placed on [CUDAExecutionProvider]. Number of nodes: 12\n  MatMul (mm)\n".to_string(),
        " Node(s) placed on [CPUExecutionProvider]. Number of nodes: 2\n  Shape (s)\n".to_string(),
    ];
    let m = runtime::parse_placements(&two);
    assert_eq!((m["CUDAExecutionProvider"], m["CPUExecutionProvider"]), (12, 2));
}

#[test]
fn comparison_statistics() {
    let a = Tensor::new(&[[0.0f32, 0.5], [1.0, 0.25]], &Device::Cpu).unwrap();
    let b = Tensor::new(&[[0.0f32, 0.5], [0.9, 0.25]], &Device::Cpu).unwrap();
    let c = compare::compare("t", &a, &b, Tolerance::F32).unwrap();
    assert!(!c.passed);
    assert_eq!(c.worst_index, vec![1, 0]);
    assert!((c.max_abs - 0.1).abs() < 1e-6 && (c.mean_abs - 0.025).abs() < 1e-6, "{c}");
    assert!((c.max_rel - 0.1 / 0.9).abs() < 1e-6, "{c}");
    // PSNR with peak = max|reference| = 0.9: 10 log10(0.81 / (0.01 / 4)).
    assert!((c.psnr_db - 10.0 * (0.81f64 / 0.0025).log10()).abs() < 1e-3, "{c}");
    let same = compare::compare("t", &a, &a, Tolerance::EXACT).unwrap();
    assert!(same.passed && same.max_abs == 0.0 && same.psnr_db.is_infinite());
    let nan = Tensor::new(&[f32::NAN, 0.0], &Device::Cpu).unwrap();
    let zero = Tensor::new(&[0.0f32, 0.0], &Device::Cpu).unwrap();
    assert!(!compare::compare("t", &nan, &zero, Tolerance::F32).unwrap().passed);
    assert!(compare::compare("t", &a, &zero, Tolerance::F32).is_err(), "shape mismatch");
}

#[test]
fn f16_and_i64_values_cross_the_boundary() {
    use adaptir::compile::ir::{Constant, Dim, ElemType, Graph, ValueInfo};
    // output = input + c in f16; shape = Shape(input) in i64.
    let mut g = Graph { name: "f16".into(), ..Default::default() };
    let dims = vec![Dim::Sym("N".into()), Dim::Fixed(3)];
    g.inputs.push(ValueInfo { name: "input".into(), elem: ElemType::F16, shape: dims.clone() });
    g.outputs.push(ValueInfo { name: "output".into(), elem: ElemType::F16, shape: dims });
    g.outputs.push(ValueInfo { name: "shape".into(), elem: ElemType::I64, shape: vec![Dim::Fixed(2)] });
    let c: Vec<half::f16> = [0.5f32, -1.25, 3.0].iter().map(|&v| half::f16::from_f32(v)).collect();
    g.initializers
        .insert("c".into(), Constant { dims: vec![3], data: Data::F16(c.iter().map(|v| v.to_bits()).collect()) });
    g.nodes.push(node("add", "Add", &["input", "c"], &["output"]));
    g.nodes.push(node("shape", "Shape", &["input"], &["shape"]));
    let d = temp_dir("ort-f16");
    let p = d.join("f16.onnx");
    onnx::write(&g, &p).unwrap();
    let x = tensor(&[2, 3], 40).to_dtype(candle_core::DType::F16).unwrap();
    let mut s = Session::new(&p, &opts()).unwrap_or_else(|e| panic!("{e}"));
    let out = s.run(&[("input", x.clone())]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["output", "shape"]);
    assert_eq!(out[0].1.dtype(), candle_core::DType::F16);
    let c = Tensor::new(c.as_slice(), &Device::Cpu).unwrap();
    let reference = x.broadcast_add(&c).unwrap();
    // One f16 rounding of the same f32 sum on both sides: bit-identical.
    let cmp = compare::compare("output", &out[0].1, &reference, Tolerance::EXACT).unwrap();
    assert!(cmp.passed, "{cmp}");
    assert_eq!(out[1].1.to_vec1::<i64>().unwrap(), vec![2, 3]);
    let _ = std::fs::remove_dir_all(&d);
}
