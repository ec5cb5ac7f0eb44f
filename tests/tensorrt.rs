//! The TensorRT-target export against TensorRT's published ONNX operator support (the vendored ONNX-TensorRT
//! 10.1 GA matrix, `src/compile/tensorrt.rs`): every shipped adapter, in f32 and fp16, patch and whole-image
//! graphs, is within it; the ONNX Runtime target (functions, f64) and a graph with an op TensorRT lacks are not.
mod common;
use common::adaptir_cli;

use std::path::PathBuf;

use adaptir::compile::ir::{Attr, Node};
use adaptir::compile::tensorrt::{check, matrix};

fn shipped(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/ipt-tiny").join(name)
}

const ADAPTERS: &[&str] = &[
    "derain.safetensors",
    "lowlight.safetensors",
    "lr4-jpeg30.safetensors",
    "lr4-noise30.safetensors",
    "realnoise.safetensors",
];

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("adaptir-tensorrt-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn the_matrix_is_read() {
    let m = matrix();
    // Spot checks of the vendored file as published: supported, unsupported, and a restriction.
    assert!(m["MatMul"].supported && m["MatMul"].types.iter().any(|t| t == "FP16"));
    assert!(!m["StringNormalizer"].supported);
    assert!(m["Slice"].restrictions.contains("axes"));
    assert!(m.len() > 150, "{} ops", m.len());
}

#[test]
fn every_shipped_adapter_exports_within_the_tensorrt_matrix() {
    let dir = tempdir();
    for adapter in ADAPTERS {
        for extra in [&[][..], &["--fp16"][..], &["--whole-image"][..]] {
            let out = dir.join(format!("{adapter}{}.onnx", extra.join("")));
            let a = shipped(adapter);
            let mut args =
                vec!["export", "--adapter", a.to_str().unwrap(), "--target", "tensorrt", "-o", out.to_str().unwrap()];
            args.extend_from_slice(extra);
            let (code, o, e) = adaptir_cli(&args);
            assert_eq!(code, 0, "{adapter} {extra:?}: {o}{e}");
            let g = adaptir::compile::onnx::read(&out).unwrap();
            let r = check(&g);
            assert!(r.passed(), "{adapter} {extra:?}: {:?}", r.violations);
            assert!(g.functions.is_empty());
            let ops: Vec<String> = r.ops.iter().map(|(op, (n, t))| format!("{op} {n} {t:?}")).collect();
            eprintln!("{adapter} {extra:?}: {}", ops.join(", "));
        }
    }
}

#[test]
fn the_onnx_runtime_target_and_unknown_ops_are_refused() {
    let dir = tempdir();
    let a = shipped("derain.safetensors");
    let out = dir.join("derain-ort.onnx");
    let (code, o, e) =
        adaptir_cli(&["export", "--adapter", a.to_str().unwrap(), "--target", "ort", "-o", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    let mut g = adaptir::compile::onnx::read(&out).unwrap();
    let r = check(&g);
    assert!(r.violations.iter().any(|v| v.contains("model-local function")), "{:?}", r.violations);
    assert!(r.violations.iter().any(|v| v.contains("custom domain")), "{:?}", r.violations);

    // The same file with its functions inlined still has f64: refused for that alone.
    let out = dir.join("derain-ort-inline.onnx");
    let (code, o, e) = adaptir_cli(&[
        "export",
        "--adapter",
        a.to_str().unwrap(),
        "--target",
        "ort",
        "--inline-functions",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{o}{e}");
    let r = check(&adaptir::compile::onnx::read(&out).unwrap());
    assert!(!r.violations.is_empty() && r.violations.iter().all(|v| v.contains("DOUBLE")), "{:?}", r.violations);

    // An op the matrix marks unsupported, and a Slice whose axes are computed.
    let first = g.nodes[0].outputs[0].clone();
    g.nodes.push(Node {
        name: "probe/Unique".into(),
        op: "Unique".into(),
        domain: String::new(),
        inputs: vec![first.clone()],
        outputs: vec!["probe.unique".into()],
        attrs: Default::default(),
    });
    g.nodes.push(Node {
        name: "probe/Slice".into(),
        op: "Slice".into(),
        domain: String::new(),
        inputs: vec![first.clone(), "probe.unique".into(), "probe.unique".into(), "probe.unique".into()],
        outputs: vec!["probe.slice".into()],
        attrs: [("unused".to_string(), Attr::Int(0))].into_iter().collect(),
    });
    let r = check(&g);
    assert!(r.violations.iter().any(|v| v.contains("probe/Unique")), "{:?}", r.violations);
    assert!(r.violations.iter().any(|v| v.contains("probe/Slice") && v.contains("axes")), "{:?}", r.violations);
}
