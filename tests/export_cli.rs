//! `adaptir export`: the file ONNX Runtime runs equals the candle model on the golden inputs, two exports are
//! byte-identical, the metadata says what the file is, every lowering option works, and bad input exits 2.
mod common;

use std::path::{Path, PathBuf};

use adaptir::compile::ir::{Attr, ElemType};
use adaptir::runtime::{RunOptions, Session};
use adaptir::tolerance::{F16_REL, F32_REASSOCIATION_REL};
use candle_core::Device;
use common::*;

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("adaptir-export-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn files() -> (PathBuf, PathBuf, PathBuf) {
    static ONCE: std::sync::OnceLock<(PathBuf, PathBuf, PathBuf)> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let (w, c) = small_backbone_files(&dir());
        let a = dir().join("derain.safetensors");
        write_adapter("adaptir", "derain", &w, &a);
        (w, c, a)
    })
    .clone()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Run the exported file on the golden input and compare with the golden (candle) output.
fn check_against_golden(onnx: &Path, golden: &Path, rel: f64) -> f64 {
    let g = candle_core::safetensors::load(golden, &Device::Cpu).unwrap();
    let mut sess = Session::new(onnx, &RunOptions::default()).unwrap();
    let y = sess.run(&[("input", g["input"].clone())]).unwrap().remove(0).1;
    let (d, scale) = (max_abs_diff(&y, &g["output"]), max_abs(&g["output"]));
    assert!(d <= rel * scale, "{}: {d:e} > {rel:e} * {scale:e}", onnx.display());
    d
}

#[test]
fn export_runs_in_onnx_runtime_and_matches_the_candle_model() {
    let (w, _, a) = files();
    // (name, flags, tolerance, keeps the ai.adaptir functions): the default (portable) target inlines them, `--target
    // ort` keeps them unless `--inline-functions`; both compute the spectral products in f64, and only the
    // `tensorrt` target (TensorRT has no f64) holds no f64.
    let variants: &[(&str, &[&str], f64, bool)] = &[
        ("default", &[], F32_REASSOCIATION_REL, false),
        ("dft", &["--fft", "dft"], F32_REASSOCIATION_REL, false),
        ("ort", &["--target", "ort"], F32_REASSOCIATION_REL, true),
        ("ort-dft", &["--target", "ort", "--fft", "dft"], F32_REASSOCIATION_REL, true),
        ("ort-inline", &["--target", "ort", "--inline-functions"], F32_REASSOCIATION_REL, false),
        ("tensorrt", &["--target", "tensorrt"], F32_REASSOCIATION_REL, false),
        ("nopasses", &["--no-passes"], F32_REASSOCIATION_REL, false),
        ("fp16", &["--fp16"], F16_REL, false),
        ("ort-fp16", &["--target", "ort", "--fp16"], F16_REL, true),
    ];
    for (name, extra, rel, functions) in variants {
        let out = dir().join(format!("derain-{name}.onnx"));
        let golden = dir().join(format!("golden-{name}.safetensors"));
        let mut args = vec!["export", "--adapter", s(&a), "--backbone", s(&w), "-o", s(&out), "--golden", s(&golden)];
        args.extend_from_slice(extra);
        let (code, text, err) = adaptir_cli(&args);
        assert_eq!(code, 0, "{name}: {err}");
        assert!(text.contains("nodes:"), "{text}");
        adaptir::runtime::check_model(&out).unwrap_or_else(|e| panic!("{name}: {e}"));
        let d = check_against_golden(&out, &golden, *rel);
        eprintln!("{name}: ORT vs candle {d:.3e}; {}", text.lines().nth(1).unwrap_or(""));
        let g = adaptir::compile::onnx::read(&out).unwrap();
        for key in ["method", "task", "backbone", "backbone_sha256", "adapter", "adapter_sha256", "tool_version"] {
            assert!(g.metadata.contains_key(key), "{name}: metadata has no {key}");
        }
        assert_eq!(g.metadata["method"], "adaptir");
        assert_eq!(g.metadata["task"], "derain");
        let has_functions = !g.functions.is_empty();
        assert_eq!(
            has_functions,
            *functions,
            "{name}: functions {:?}",
            g.functions.iter().map(|f| &f.name).collect::<Vec<_>>()
        );
        let f64_constants = g.initializers.values().filter(|c| c.data.elem() == ElemType::F64).count();
        let f64_casts = g.nodes.iter().filter(|n| n.op == "Cast" && n.attrs.get("to") == Some(&Attr::Int(11))).count();
        let spectral = g.metadata["spectral_precision"].as_str();
        assert_eq!(spectral == "f32", g.metadata["target"] == "tensorrt", "{name}: spectral products in {spectral}");
        assert_eq!(
            spectral == "f32",
            f64_constants + f64_casts == 0,
            "{name}: {f64_constants} f64 constants, {f64_casts} casts"
        );
        let all_nodes: Vec<_> = g.functions.iter().flat_map(|f| &f.nodes).chain(&g.nodes).collect();
        let dft_nodes = all_nodes.iter().filter(|n| n.op == "DFT").count();
        assert_eq!(dft_nodes > 0, name.ends_with("dft"), "{name}: {dft_nodes} DFT nodes");
        let random =
            all_nodes.iter().filter(|n| n.op.starts_with("Random") || n.op == "Bernoulli" || n.op == "Dropout").count();
        assert_eq!(random, 0, "{name}: random-number or dropout nodes");
    }
}

#[test]
fn exports_are_deterministic_and_the_backbone_exports_alone() {
    let (w, c, a) = files();
    let (o1, o2) = (dir().join("one.onnx"), dir().join("two.onnx"));
    for o in [&o1, &o2] {
        let (code, _, err) = adaptir_cli(&["export", "--adapter", s(&a), "--backbone", s(&w), "-o", s(o)]);
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(std::fs::read(&o1).unwrap(), std::fs::read(&o2).unwrap());

    let bb = dir().join("backbone-sr4.onnx");
    let golden = dir().join("golden-backbone.safetensors");
    let (code, _, err) = adaptir_cli(&[
        "export",
        "--backbone",
        s(&w),
        "--config",
        s(&c),
        "--task",
        "sr4",
        "-o",
        s(&bb),
        "--golden",
        s(&golden),
    ]);
    assert_eq!(code, 0, "{err}");
    adaptir::runtime::check_model(&bb).unwrap();
    check_against_golden(&bb, &golden, F32_REASSOCIATION_REL);
    let g = adaptir::compile::onnx::read(&bb).unwrap();
    assert_eq!(g.metadata["method"], "pretrain");
    assert_eq!(g.outputs[0].shape[2], adaptir::compile::ir::Dim::Fixed(192));
}

#[test]
fn bad_export_input() {
    let (w, c, a) = files();
    let out = dir().join("bad.onnx");
    let txt = dir().join("out.txt");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["export", "--backbone", s(&w), "--config", s(&c), "--task", "deblur", "-o", s(&out)],
            "unknown task `deblur`",
        ),
        (vec!["export", "--backbone", s(&w), "--config", s(&c), "-o", s(&out)], "--task is required"),
        (vec!["export"], "nothing to export: give --adapter"),
        (
            vec!["export", "--adapter", s(&a), "--backbone", "/nonexistent/backbone.safetensors", "-o", s(&out)],
            "backbone not found",
        ),
        (
            vec!["export", "--adapter", s(&a), "--backbone", s(&w), "--fft", "fast", "-o", s(&out)],
            "--fft: expected `matmul` or `dft`",
        ),
        (vec!["export", "--adapter", s(&c), "--backbone", s(&w), "-o", s(&out)], "config.json"),
        (vec!["export", "--adapter", s(&a), "--backbone", s(&w), "-o", "/nonexistent-dir/x.onnx"], "x.onnx"),
        (
            vec!["export", "--adapter", s(&a), "--backbone", s(&w), "--opset", "13", "-o", s(&out)],
            "opset 13 is not supported",
        ),
        (vec!["export", "--adapter", s(&a), "--backbone", s(&w), "-o", s(&txt)], "expected a path ending in .onnx"),
        (
            vec!["export", "--adapter", s(&a), "--backbone", s(&w), "--target", "trt", "-o", s(&out)],
            "--target: expected one of portable, ort, tensorrt",
        ),
        (
            vec!["export", "--adapter", s(&a), "--backbone", s(&w), "--whole-image", "--overlap", "30", "-o", s(&out)],
            "at most half the tile",
        ),
    ];
    for (args, needle) in cases {
        let (code, _, err) = adaptir_cli(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "`{needle}` not in {err}");
        assert!(!out.exists() && !txt.exists());
    }
}
