//! `train`, `eval`, `export` and `validate` on an EDT checkpoint (issue 19, item 3): `train --config edt.json`
//! adapts the checkpoint's head with any method of the zoo and writes an adapter that records the EDT config;
//! `eval --adapter` finds the checkpoint beside it, checks its sha256, and measures whole images; `export
//! --adapter` writes the ONNX file and `validate` checks it in every runtime. What does not fit (a task of another
//! scale than the head, another patch size, full fine-tuning, a checkpoint that already holds AdaptIR) is
//! refused with exit 2, naming what to do.
//!
//! The backbone is the official fixture's EDT (two blocks, perturbed official init: not a trained model) without
//! its AdaptIR modules, so an adapter has much to correct. Measured when written (2 threads, 24 AdaptIR steps at
//! lr 1e-2, batch 2, stochastic depth on): loss over the first eight steps 0.0510, over the last eight 0.0379;
//! held-out PSNR 27.44 dB at step 8, 29.60 at step 24; the unseen photo 29.00 dB without the adapter, 31.74 with it. The margins below
//! are a fraction of those.
mod common;

use std::path::{Path, PathBuf};

use adaptir::backbone::EdtConfig;
use common::{adaptir_cli, fixture, load, write_random_edt};

const EDT_WEIGHTS: &str = "parity/edt_small_adaptir_sr2/weights.safetensors";
const CONFIG: &str = r#"{"arch": "edt", "task": "sr2", "depths": [2, 2], "num_heads": [6, 6]}"#;
/// The loss over the last eight steps is at most this fraction of the loss over the first eight.
const LOSS_RATIO_AT_MOST: f64 = 0.85;
/// Gain of the run's held-out PSNR from its first evaluation (step 8) to its last (dB).
const VAL_GAIN_AT_LEAST: f64 = 1.0;
/// Gain of the adapted model over the backbone alone on an unseen photo (dB).
const UNSEEN_GAIN_AT_LEAST: f64 = 0.3;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A scratch folder with the EDT backbone (the fixture less its AdaptIR keys), its config, two Set5 training photos
/// (the last by name, woman, is the run's held-out image) and one unseen photo.
fn setup(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let root = std::env::temp_dir().join(format!("adaptir-edt-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for d in ["train", "unseen", "models", "small"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let backbone = root.join("models").join("backbone.safetensors");
    let plain: std::collections::HashMap<_, _> =
        load(EDT_WEIGHTS).into_iter().filter(|(k, _)| !k.contains(".adaptir.")).collect();
    candle_core::safetensors::save(&plain, &backbone).unwrap();
    let config = root.join("edt.json");
    std::fs::write(&config, CONFIG).unwrap();
    for f in ["butterfly.png", "woman.png"] {
        std::fs::copy(fixture(&format!("images/set5/{f}")), root.join("train").join(f)).unwrap();
    }
    std::fs::copy(fixture("images/jpeg/chelsea_256.png"), root.join("unseen").join("chelsea_256.png")).unwrap();
    // A small image for quick whole-image checks.
    std::fs::copy(fixture("images/metrics/astronaut_clean.png"), root.join("small").join("astronaut.png")).unwrap();
    (root, backbone, config)
}

fn train_args<'a>(backbone: &'a Path, config: &'a Path, data: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec!["train", "--backbone", s(backbone), "--config", s(config), "--data", s(data), "--out", s(out)]
}

fn history(ckpt: &Path) -> (Vec<f64>, Vec<(usize, f64)>) {
    let bytes = std::fs::read(ckpt).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let h: adaptir::train::checkpoint::History =
        serde_json::from_str(&header.metadata().as_ref().unwrap()["history"]).unwrap();
    (h.losses(), h.psnrs())
}

fn eval_psnr(args: &[&str]) -> f64 {
    let mut all = vec!["eval"];
    all.extend_from_slice(args);
    all.push("--json");
    let (code, out, err) = adaptir_cli(&all);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["psnr"].as_f64().unwrap()
}

#[test]
fn adaptir_trains_on_edt_and_the_adapter_evaluates() {
    let (root, backbone, config) = setup("learns");
    let (out, train) = (root.join("models").join("sr2.safetensors"), root.join("train"));
    let mut args = train_args(&backbone, &config, &train, &out);
    args.extend_from_slice(&["--method", "adaptir", "--task", "sr2", "--steps", "24", "--batch", "2"]);
    args.extend_from_slice(&["--lr", "1e-2", "--eval-every", "8", "--seed", "0"]);
    let (code, stdout, err) = adaptir_cli(&args);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("finished"), "{stdout}");
    let file = adaptir::peft::file::AdapterFile::load(&out).unwrap();
    assert_eq!(file.meta.backbone_config.edt().map(|c| c.task.as_str()), Some("sr2"));
    // Only AdaptIR's tensors, at the official EDT keys.
    assert!(file.tensors.keys().all(|k| k.contains(".adaptir.")), "{:?}", file.tensors.keys().take(3));
    assert!(file.tensors.keys().any(|k| k.starts_with("body.layers.1.residual_group.blocks.1.adaptir.")));

    let (losses, psnrs) = history(&adaptir::train::checkpoint_path(&out));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (first, last) = (mean(&losses[..8]), mean(&losses[losses.len() - 8..]));
    eprintln!("loss first eight {first:.4}, last eight {last:.4}; held-out PSNR {psnrs:?}");
    assert!(last <= LOSS_RATIO_AT_MOST * first, "loss {first} -> {last}");
    let (p0, p1) = (psnrs[0].1, psnrs[psnrs.len() - 1].1);
    assert!(p1 >= p0 + VAL_GAIN_AT_LEAST, "held-out PSNR {p0} -> {p1}");

    // eval finds the checkpoint beside the adapter (sha256-checked) and beats the backbone alone.
    let unseen = root.join("unseen");
    let adapted = eval_psnr(&["--adapter", s(&out), "--data", s(&unseen)]);
    let plain =
        eval_psnr(&["--method", "pretrain", "--backbone", s(&backbone), "--config", s(&config), "--data", s(&unseen)]);
    eprintln!("unseen photo: backbone alone {plain:.2} dB, with the adapter {adapted:.2} dB");
    assert!(adapted >= plain + UNSEEN_GAIN_AT_LEAST, "{plain} -> {adapted}");

    // export --adapter finds the checkpoint beside the adapter; validate finds both beside the file, and every
    // runtime of the matrix agrees with the candle model.
    let onnx = root.join("models").join("sr2.onnx");
    let (code, _, err) = adaptir_cli(&["export", "--adapter", s(&out), "-o", s(&onnx)]);
    assert_eq!(code, 0, "{err}");
    let g = adaptir::compile::onnx::read(&onnx).unwrap();
    assert_eq!((g.metadata["arch"].as_str(), g.metadata["method"].as_str()), ("edt", "adaptir"));
    assert_eq!(g.metadata["adapter"], "sr2.safetensors");
    let (code, stdout, err) = adaptir_cli(&["validate", s(&onnx), "--runtime", "all", "--latency-runs", "0"]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    assert!(stdout.contains("adapter") && stdout.contains("PASS"), "{stdout}");

    // Another checkpoint than the one trained on is refused by its sha256.
    let other = root.join("other.safetensors");
    let mut t = load(EDT_WEIGHTS);
    t.retain(|k, _| !k.contains(".adaptir."));
    let key = t.keys().find(|k| k.ends_with("qkv.bias")).unwrap().clone();
    t.insert(key.clone(), (t[&key].clone() + 1.0).unwrap());
    candle_core::safetensors::save(&t, &other).unwrap();
    let (code, _, err) = adaptir_cli(&["eval", "--adapter", s(&out), "--backbone", s(&other), "--data", s(&unseen)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sha256"), "{err}");
    std::fs::remove_dir_all(&root).ok();
}

/// Every other method of the zoo trains on EDT too, full fine-tuning included (one step each: it runs and writes
/// its adapter, which `eval` then loads on the checkpoint, named with --backbone because the adapter is elsewhere).
#[test]
fn every_method_trains_on_edt() {
    let (root, _, _) = setup("methods");
    let train = root.join("train");
    // A small random EDT (one stage of two blocks, width 60): this test checks that each method runs end to end.
    let config = root.join("small.json");
    std::fs::write(&config, r#"{"arch": "edt", "task": "sr2", "depths": [2], "num_heads": [6], "embed_dim": 60}"#)
        .unwrap();
    let backbone = root.join("models").join("backbone.safetensors");
    write_random_edt(&EdtConfig::from_json_file(&config).unwrap(), &backbone, false);
    for m in ["lora", "adapter", "adaptformer", "ssf", "fact", "moe", "full"] {
        // Each into a folder that does not exist yet: train creates it.
        let out = root.join("runs").join(m).join(format!("{m}.safetensors"));
        let mut args = train_args(&backbone, &config, &train, &out);
        // The x2 head also takes the x2 hybrid.
        let task = if m == "ssf" { "lr2-noise30" } else { "sr2" };
        args.extend_from_slice(&["--method", m, "--task", task, "--steps", "1", "--batch", "2", "--eval-every", "1"]);
        let (code, _, err) = adaptir_cli(&args);
        assert_eq!(code, 0, "{m}: {err}");
        let file = adaptir::peft::file::AdapterFile::load(&out).unwrap();
        assert_eq!(file.meta.method, m);
        assert!(file.meta.backbone_config.edt().is_some());
        let small = root.join("small");
        let (code, _, err) =
            adaptir_cli(&["eval", "--adapter", s(&out), "--backbone", s(&backbone), "--data", s(&small)]);
        assert_eq!(code, 0, "{m}: {err}");
    }
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn edt_training_refusals() {
    let (root, backbone, config) = setup("refusals");
    let (out, train) = (root.join("x.safetensors"), root.join("train"));
    let full_fixture = fixture(EDT_WEIGHTS);
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (vec!["--method", "adaptir", "--task", "lr4-noise30"], &["x4 task", "head_sr_x2", "edt.json"]),
        (vec!["--method", "adaptir", "--task", "sr2", "--patch", "64"], &["--patch 64", "must be 48"]),
        (vec!["--method", "vpt", "--task", "sr2"], &["does not apply to EDT"]),
    ];
    for (extra, needles) in cases {
        let mut args = train_args(&backbone, &config, &train, &out);
        args.extend_from_slice(&extra);
        args.extend_from_slice(&["--steps", "1", "--batch", "1"]);
        let (code, _, err) = adaptir_cli(&args);
        assert_eq!(code, 2, "{extra:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "`{n}` not in: {err}");
        }
        assert!(!out.exists());
    }
    // A checkpoint that already holds AdaptIR: its keys are not the frozen backbone's.
    let mut args = train_args(&full_fixture, &config, &train, &out);
    args.extend_from_slice(&["--method", "lora", "--task", "sr2", "--steps", "1", "--batch", "1"]);
    let (code, _, err) = adaptir_cli(&args);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("weights.safetensors") && err.contains("adaptir"), "{err}");
    assert!(!out.exists());
    std::fs::remove_dir_all(&root).ok();
}

/// A run stopped and resumed writes the same adapter bytes as one run straight through: the stochastic-depth
/// masks of each step come from the run's seed and the step, not from how the run was cut.
#[test]
fn an_edt_run_resumes_bit_identically() {
    let (root, backbone, config) = setup("resume");
    let train = root.join("train");
    let run = |out: &Path, extra: &[&str]| {
        let mut args = train_args(&backbone, &config, &train, out);
        args.extend_from_slice(&["--method", "adaptir", "--task", "sr2", "--steps", "4", "--batch", "2"]);
        args.extend_from_slice(&["--lr", "1e-2", "--eval-every", "2", "--checkpoint-every", "1", "--seed", "3"]);
        args.extend_from_slice(extra);
        let (code, _, err) = adaptir_cli(&args);
        assert_eq!(code, 0, "{err}");
    };
    let (straight, cut) = (root.join("straight.safetensors"), root.join("cut.safetensors"));
    run(&straight, &[]);
    run(&cut, &["--stop-after", "2"]);
    assert!(!cut.exists(), "a stopped run wrote its adapter");
    run(&cut, &["--resume"]);
    assert_eq!(std::fs::read(&straight).unwrap(), std::fs::read(&cut).unwrap());
    std::fs::remove_dir_all(&root).ok();
}
