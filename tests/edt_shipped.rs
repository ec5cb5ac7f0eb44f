//! The shipped EDT model (`models/edt-tiny/`): its adapter names the shipped backbone by sha256 and loads with
//! it, and on two photos that neither the pre-training nor the adapter saw (Set5 fixtures), the adapter restores the
//! `lr2-noise30` input better than the backbone alone, and the x2 head alone upscales better than bicubic: what the
//! model card reports on Set5 and Set14 (`models/edt-tiny/eval/`). And the canonical call works on it: `export
//! --adapter` writes a file that `validate` checks in ONNX Runtime against the candle model, finding the adapter
//! and backbone in `models/edt-tiny/` by itself.
mod common;

use std::path::{Path, PathBuf};

use common::*;

fn shipped(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/edt-tiny").join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `eval --json` on `data`: (PSNR, baseline PSNR).
fn eval(args: &[&str], data: &Path) -> (f64, f64) {
    let mut all = vec!["eval"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--data", s(data), "--json"]);
    let (code, out, err) = adaptir_cli(&all);
    assert_eq!(code, 0, "{all:?}: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    (v["psnr"].as_f64().unwrap(), v["baseline_psnr"].as_f64().unwrap())
}

#[test]
fn the_shipped_edt_adapter_helps_on_unseen_photos() {
    let adapter = shipped("lr2-noise30.safetensors");
    let file = adaptir::peft::file::AdapterFile::load(&adapter).unwrap();
    assert_eq!(file.meta.task, "lr2-noise30");
    assert_eq!(file.meta.backbone_config.edt().map(|c| c.task.as_str()), Some("sr2"));

    let dir = std::env::temp_dir().join(format!("adaptir-edt-shipped-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Two Set5 images (benchmark images: in no training folder).
    for f in ["butterfly.png", "woman.png"] {
        std::fs::copy(fixture(&format!("images/set5/{f}")), dir.join(f)).unwrap();
    }

    let (backbone, config) = (shipped("backbone.safetensors"), shipped("backbone.edt.json"));
    let plain = ["--backbone", s(&backbone), "--config", s(&config), "--method", "pretrain"];
    let (adapted, _) = eval(&["--adapter", s(&adapter)], &dir);
    let (alone, _) = eval(&[&plain[..], &["--task", "lr2-noise30"]].concat(), &dir);
    let (sr2, bicubic) = eval(&[&plain[..], &["--task", "sr2"]].concat(), &dir);
    eprintln!(
        "lr2-noise30: backbone alone {alone:.2} dB, adapted {adapted:.2} dB; sr2 {sr2:.2} dB, bicubic {bicubic:.2}"
    );
    assert!(adapted > alone, "the adapter does not help: {alone} -> {adapted}");
    assert!(sr2 > bicubic, "the x2 head is below bicubic: {sr2} vs {bicubic}");

    let onnx = dir.join("edt.onnx");
    let (code, _, err) = adaptir_cli(&["export", "--adapter", s(&adapter), "-o", s(&onnx)]);
    assert_eq!(code, 0, "export: {err}");
    let g = adaptir::compile::onnx::read(&onnx).unwrap();
    assert_eq!(g.metadata["spectral_precision"], "f64", "files default to f64 spectral products");
    let (code, out, err) = adaptir_cli(&["validate", s(&onnx), "--latency-runs", "0"]);
    assert_eq!(code, 0, "validate: {out}{err}");
    // And on patches of real inputs of its task (the noisy x2 versions of the two photos), in every runtime of the
    // matrix: where the f32 spectral products were 4.0e-5 to 5.0e-5 from the model (bound 1.1e-5).
    let noisy = dir.join("noisy");
    let (b, w) = (dir.join("butterfly.png"), dir.join("woman.png"));
    let (code, _, err) = adaptir_cli(&["degrade", "--task", "lr2-noise30", s(&b), s(&w), "-o", s(&noisy)]);
    assert_eq!(code, 0, "degrade: {err}");
    let (code, out, err) =
        adaptir_cli(&["validate", s(&onnx), "--images", s(&noisy), "--runtime", "all", "--latency-runs", "0"]);
    assert_eq!(code, 0, "validate --images: {out}{err}");
    // The reference it compared against: the shipped adapter, found in models/edt-tiny/ by itself.
    assert!(out.contains("edt-tiny/lr2-noise30.safetensors"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `adaptir restore` takes the shipped EDT adapter (it took IPT adapters only until 2026-12-07): an x2 noisy
/// input comes out twice as large, and the candle and ONNX Runtime engines (the latter running the EDT lowering
/// compiled in memory) agree to within a level's rounding.
#[test]
fn restore_runs_the_shipped_edt_adapter_on_candle_and_onnx() {
    let dir = std::env::temp_dir().join(format!("adaptir-edt-restore-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let clean = fixture("images/set5/butterfly.png");
    let (code, _, err) = adaptir_cli(&["degrade", "--task", "lr2-noise30", s(&clean), "-o", s(&dir)]);
    assert_eq!(code, 0, "degrade: {err}");
    let noisy = dir.join("butterfly.png");
    let adapter = shipped("lr2-noise30.safetensors");
    let mut psnr_vs_clean = vec![];
    for engine in ["candle", "onnx"] {
        let out = dir.join(format!("restored_{engine}.png"));
        let args = ["restore", "--adapter", s(&adapter), s(&noisy), "-o", s(&out), "--engine", engine, "--quiet"];
        let (code, text, err) = adaptir_cli(&args);
        assert_eq!(code, 0, "{engine}: {err}");
        assert!(text.contains("(128x128) -> ") && text.contains("(256x256)"), "{engine}: {text}");
        psnr_vs_clean.push(metrics_psnr(&out, &clean));
    }
    let engines = metrics_psnr(&dir.join("restored_candle.png"), &dir.join("restored_onnx.png"));
    assert!(engines > 60.0, "candle and ONNX Runtime restorations differ: {engines} dB");
    eprintln!("restore vs clean: candle {:.2} dB, onnx {:.2} dB", psnr_vs_clean[0], psnr_vs_clean[1]);
    std::fs::remove_dir_all(&dir).ok();
}

/// `adaptir metrics A B --y --crop 2 --json`: the PSNR of A against B (infinite for identical images).
fn metrics_psnr(a: &Path, b: &Path) -> f64 {
    let (code, out, err) = adaptir_cli(&["metrics", s(a), s(b), "--y", "--crop", "2", "--json"]);
    assert_eq!(code, 0, "metrics: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    match v["psnr"].as_f64() {
        Some(p) => p,
        // Identical images: an infinite PSNR, which JSON writes as null.
        None if v["ssim"].as_f64() == Some(1.0) => f64::INFINITY,
        None => panic!("metrics --json: {out}"),
    }
}

/// A whole-image export of the shipped EDT adapter (`export --whole-image`: tiling and blending in the graph; EDT
/// since 2026-12-07) matches candle's `restore` in every runtime of the matrix, and `restore --onnx` with it gives
/// the candle engine's image. (With f32 spectral products this file was 9.2e-6 from candle, against 3.0e-7 with
/// the f64 products files have by default since: docs/compiler.md "Real images and the spectral products".)
#[test]
fn whole_image_export_of_the_shipped_edt_adapter() {
    let dir = std::env::temp_dir().join(format!("adaptir-edt-whole-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let adapter = shipped("lr2-noise30.safetensors");
    let file = dir.join("edt-whole.onnx");
    let (code, _, err) = adaptir_cli(&["export", "--adapter", s(&adapter), "--whole-image", "-o", s(&file)]);
    assert_eq!(code, 0, "export: {err}");
    let g = adaptir::compile::onnx::read(&file).unwrap();
    assert_eq!(g.metadata["whole_image"], "1");
    let (code, out, err) = adaptir_cli(&["validate", s(&file), "--runtime", "all", "--latency-runs", "0"]);
    assert_eq!(code, 0, "validate: {out}{err}");
    assert!(out.contains("candle `restore`"), "{out}");

    let image = dir.join("small.png");
    let (code, _, err) =
        adaptir_cli(&["degrade", "--task", "lr2-noise30", &fixture_str("images/set5/woman.png"), "-o", s(&dir)]);
    assert_eq!(code, 0, "degrade: {err}");
    std::fs::rename(dir.join("woman.png"), &image).unwrap();
    let restored = |extra: &[&str], name: &str| {
        let out = dir.join(name);
        let mut args = vec!["restore", "--adapter", s(&adapter), s(&image), "-o", s(&out), "--quiet"];
        args.extend_from_slice(extra);
        let (code, _, err) = adaptir_cli(&args);
        assert_eq!(code, 0, "restore {extra:?}: {err}");
        out
    };
    let candle = restored(&[], "candle.png");
    let whole = restored(&["--engine", "onnx", "--onnx", s(&file)], "whole.png");
    let psnr = metrics_psnr(&candle, &whole);
    assert!(psnr > 60.0, "whole-image file vs candle restore: {psnr} dB");
    std::fs::remove_dir_all(&dir).ok();
}

fn fixture_str(rel: &str) -> String {
    fixture(rel).to_string_lossy().into_owned()
}

/// `adaptir forward --checkpoint B --adapter A` runs an EDT adapter (it took IPT adapters only until 2026-12-07):
/// on the seeded inputs of `export --golden` it writes exactly the golden outputs (both are the candle model,
/// loaded by two commands), and the mismatches a user can make exit 2 naming what was expected.
#[test]
fn forward_runs_the_shipped_edt_adapter() {
    let dir = std::env::temp_dir().join(format!("adaptir-edt-forward-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (adapter, backbone) = (shipped("lr2-noise30.safetensors"), shipped("backbone.safetensors"));
    let golden = dir.join("golden.safetensors");
    let (code, _, err) =
        adaptir_cli(&["export", "--adapter", s(&adapter), "-o", s(&dir.join("edt.onnx")), "--golden", s(&golden)]);
    assert_eq!(code, 0, "export: {err}");
    let out = dir.join("out.safetensors");
    let base = ["forward", "--checkpoint", s(&backbone), "--adapter", s(&adapter)];
    let (code, text, err) =
        adaptir_cli(&[&base[..], &["--input", s(&golden), "--input-name", "input", "-o", s(&out)]].concat());
    assert_eq!(code, 0, "forward: {err}");
    assert!(text.contains("adaptir from lr2-noise30.safetensors"), "{text}");
    let g = candle_core::safetensors::load(&golden, &candle_core::Device::Cpu).unwrap();
    let y = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
    assert_eq!(max_abs_diff(&y["output"], &g["output"]), 0.0);

    // The same with the config given: it must be the adapter's.
    let config = shipped("backbone.edt.json");
    let (code, _, err) = adaptir_cli(
        &[&base[..], &["--config", s(&config), "--input", s(&golden), "--input-name", "input", "-o", s(&out)]].concat(),
    );
    assert_eq!(code, 0, "forward --config: {err}");
    let other = dir.join("other.edt.json");
    std::fs::write(&other, r#"{"arch": "edt", "task": "sr2", "depths": [2, 2], "num_heads": [6, 6]}"#).unwrap();
    let ipt_adapter = fixture("golden/micro/derain.safetensors");
    let wrong_input = dir.join("x.safetensors");
    adaptir::params::write_safetensors(
        &wrong_input,
        &[(
            "x",
            candle_core::Tensor::zeros((1, 3, 40, 40), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
        )],
    )
    .unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--config", s(&other), "--input", s(&golden), "--input-name", "input"], "was trained on the EDT config"),
        (
            vec!["--adapter", s(&ipt_adapter), "--config", s(&config), "--input", s(&golden)],
            "an adapter for an IPT backbone",
        ),
        (vec!["--input", s(&wrong_input)], "expected (N, 3, 48, 48) for EDT task sr2"),
    ];
    let bad = dir.join("bad.safetensors");
    for (extra, needle) in cases {
        let mut args = vec!["forward", "--checkpoint", s(&backbone), "-o", s(&bad)];
        if !extra.contains(&"--adapter") {
            args.extend_from_slice(&["--adapter", s(&adapter)]);
        }
        args.extend_from_slice(&extra);
        let (code, _, err) = adaptir_cli(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "`{needle}` not in: {err}");
        assert!(!bad.exists(), "{args:?} wrote an output");
    }
    std::fs::remove_dir_all(&dir).ok();
}
