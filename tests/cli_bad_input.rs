//! Bad input to `adaptir forward` / `adaptir inspect`: exit code 2, a message that names the file and says
//! what was expected and what was found, no panic, and no output file left behind.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use common::fixture;

fn adaptir(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_adaptir")).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("adaptir-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const WEIGHTS: &str = "parity/ipt_small_adaptir/weights.safetensors";
const IO: &str = "parity/ipt_small_adaptir/io.safetensors";

/// Run forward with one argument replaced; expect exit 2 and every `needles` in the message.
fn forward_fails(checkpoint: &Path, config: &Path, task: &str, input: &Path, name: &str, needles: &[&str]) {
    let out = tmp(&format!("out-{}.safetensors", needles.join("-").len()));
    let (code, err) = adaptir(&[
        "forward",
        "--checkpoint",
        s(checkpoint),
        "--config",
        s(config),
        "--task-index",
        task,
        "--input",
        s(input),
        "--input-name",
        name,
        "-o",
        s(&out),
    ]);
    assert_eq!(code, 2, "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
    assert!(!out.exists(), "an output was written despite the error");
}

fn ok_args() -> (PathBuf, PathBuf, PathBuf) {
    (fixture(WEIGHTS), fixture("ipt_small.json"), fixture(IO))
}

#[test]
fn checkpoint_that_is_not_a_state_dict() {
    let (_, cfg, io) = ok_args();
    let bogus = tmp("bogus.safetensors");
    std::fs::write(&bogus, b"{\"this is\": \"json, not weights\"}").unwrap();
    forward_fails(&bogus, &cfg, "2", &io, "x", &["bogus.safetensors", "not a safetensors file"]);
}

#[test]
fn truncated_checkpoints() {
    let (w, cfg, io) = ok_args();
    let bytes = std::fs::read(&w).unwrap();
    let cut = tmp("truncated.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    forward_fails(&cut, &cfg, "2", &io, "x", &["truncated.safetensors"]);
    let pt = std::fs::read(fixture("adaptir_c192.pt")).unwrap();
    let cut_pt = tmp("truncated.pt");
    std::fs::write(&cut_pt, &pt[..pt.len() * 2 / 3]).unwrap();
    let (code, err) = adaptir(&["inspect", s(&cut_pt)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("truncated.pt"), "{err}");
    let tiny = tmp("tiny.pt");
    std::fs::write(&tiny, b"PK").unwrap();
    let (code, err) = adaptir(&["inspect", s(&tiny)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("too short"), "{err}");
}

#[test]
fn missing_unexpected_and_misshaped_keys_are_listed_together() {
    let (w, cfg, io) = ok_args();
    let mut sd = candle_core::safetensors::load(&w, &Device::Cpu).unwrap();
    sd.remove("body.encoder.layers.0.linear1.bias");
    sd.remove("tail.5.1.weight");
    sd.insert("body.extra.weight".into(), Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap());
    sd.insert("head.0.0.bias".into(), Tensor::zeros(7, candle_core::DType::F32, &Device::Cpu).unwrap());
    let bad = tmp("bad-keys.safetensors");
    candle_core::safetensors::save(&sd, &bad).unwrap();
    forward_fails(
        &bad,
        &cfg,
        "2",
        &io,
        "x",
        &[
            "bad-keys.safetensors",
            "missing (2)",
            "body.encoder.layers.0.linear1.bias",
            "tail.5.1.weight",
            "unexpected (1)",
            "body.extra.weight",
            "wrong shape (1)",
            "head.0.0.bias: expected [22], found [7]",
        ],
    );
}

#[test]
fn adapter_too_small() {
    let (w, cfg, io) = ok_args();
    let mut sd = candle_core::safetensors::load(&w, &Device::Cpu).unwrap();
    sd.insert(
        "body.encoder.layers.0.adaptir.head.weight".into(),
        Tensor::zeros((1, 198, 1, 1), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let bad = tmp("h1.safetensors");
    candle_core::safetensors::save(&sd, &bad).unwrap();
    forward_fails(&bad, &cfg, "2", &io, "x", &["h1.safetensors", "hidden = 1 but must be at least 2"]);
}

#[test]
fn bad_configs() {
    let (w, _, io) = ok_args();
    let cases: &[(&str, &[&str])] = &[
        (
            r#"{"arch": "ipt", "n_feats": 22, "num_heads": 6, "num_layers": 1, "dropout": 0.1}"#,
            &["unknown field `dropout`"],
        ),
        (
            r#"{"arch": "ipt", "n_feats": 22, "num_heads": 7, "num_layers": 1}"#,
            &["num_heads = 7 does not divide the transformer width 198"],
        ),
        // An EDT config (issue 19) with IPT's fields: read as an EDT config, whose fields these are not.
        (
            r#"{"arch": "edt", "n_feats": 22, "num_heads": 6, "num_layers": 1}"#,
            &["not a valid EDT config", "unknown field `n_feats`"],
        ),
        (
            r#"{"arch": "ipt", "n_feats": 22, "num_heads": 6, "num_layers": 1, "scales": [2, 3]}"#,
            &["scales has 2 entries, expected num_tasks = 6"],
        ),
        (r#"{"arch": "ipt", "n_feats": 22"#, &["not a valid IPT config"]),
        (r#"{"arch": "ipt", "n_feats": 0, "num_heads": 6, "num_layers": 1}"#, &["n_feats is 0"]),
    ];
    for (i, (json, needles)) in cases.iter().enumerate() {
        let cfg = tmp(&format!("config{i}.json"));
        std::fs::write(&cfg, json).unwrap();
        let mut all = needles.to_vec();
        let name = format!("config{i}.json");
        all.push(&name);
        forward_fails(&w, &cfg, "2", &io, "x", &all);
    }
    // A config whose width disagrees with the checkpoint's: the adapters say 198 channels.
    let cfg = tmp("wide.json");
    std::fs::write(&cfg, r#"{"arch": "ipt", "n_feats": 24, "num_heads": 6, "num_layers": 1}"#).unwrap();
    forward_fails(&w, &cfg, "2", &io, "x", &["weights.safetensors", "adapters take 198 channels", "width is 216"]);
}

#[test]
fn bad_inputs_and_task() {
    let (w, cfg, io) = ok_args();
    forward_fails(&w, &cfg, "2", &io, "y", &["io.safetensors", "no tensor named `y`", "task2.y"]);
    forward_fails(
        &w,
        &cfg,
        "2",
        &io,
        "task2.y",
        &["io.safetensors", "shape [2, 3, 192, 192], expected (N, 3, 48, 48)"],
    );
    forward_fails(&w, &cfg, "6", &io, "x", &["--task-index 6 is out of range", "6 tasks"]);
    forward_fails(
        &w,
        &cfg,
        "2",
        &tmp("does-not-exist.safetensors"),
        "x",
        &["does-not-exist.safetensors", "cannot open"],
    );
}

/// The `.pt` path: the same tensors as the safetensors original, bit for bit (made by
/// `scripts/safetensors_to_pt.py`, which writes torch's zip format; see fixtures/README.md).
#[test]
fn pytorch_checkpoint_loads_bit_identically() {
    let pt = adaptir::params::StateDict::load(&fixture("adaptir_c192.pt")).unwrap();
    let st = adaptir::params::StateDict::load(&fixture("parity/adaptir_block_ipt_c192/weights.safetensors")).unwrap();
    assert_eq!(pt.tensors.len(), st.tensors.len());
    for (k, a) in &st.tensors {
        let b = &pt.tensors[k];
        assert_eq!((a.dims(), a.dtype()), (b.dims(), b.dtype()), "{k}");
        let (a, b) = (a.flatten_all().unwrap(), b.flatten_all().unwrap());
        assert_eq!(
            a.to_dtype(candle_core::DType::F64).unwrap().to_vec1::<f64>().unwrap(),
            b.to_dtype(candle_core::DType::F64).unwrap().to_vec1::<f64>().unwrap(),
            "{k}"
        );
    }
    let (code, out) = adaptir(&["inspect", s(&fixture("adaptir_c192.pt"))]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn forward_writes_the_official_output() {
    let (w, cfg, io) = ok_args();
    let out = tmp("y.safetensors");
    let (code, err) = adaptir(&[
        "forward",
        "--checkpoint",
        s(&w),
        "--config",
        s(&cfg),
        "--task-index",
        "4",
        "--input",
        s(&io),
        "-o",
        s(&out),
    ]);
    assert_eq!(code, 0, "{err}");
    let y = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    let want = common::load(IO);
    let e = common::max_abs_diff(&y["output"], &want["task4.y"]);
    assert!(e <= adaptir::tolerance::MODEL_PARITY_ABS, "{e:e}");
}
