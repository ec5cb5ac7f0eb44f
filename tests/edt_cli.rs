//! `adaptir forward` with an EDT config: it runs the official x2 fixture, and bad input (an EDT checkpoint with an
//! IPT config and the reverse, a checkpoint without the configured task's head, another body depth, an input of
//! the wrong size, a task index) exits 2 with a message naming the file, what was expected and what was found,
//! writing nothing.
mod common;

use std::path::{Path, PathBuf};

use adaptir::tolerance::MODEL_PARITY_ABS;
use candle_core::{Device, Tensor};
use common::{adaptir_cli, fixture, load, max_abs_diff};

const EDT_WEIGHTS: &str = "parity/edt_small_adaptir_sr2/weights.safetensors";
const EDT_IO: &str = "parity/edt_small_adaptir_sr2/io.safetensors";

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("adaptir-edt-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An EDT config with these fields (JSON object body, without braces) next to the others of this process.
fn edt_config(name: &str, fields: &str) -> PathBuf {
    let p = tmp(name);
    std::fs::write(&p, format!("{{\"arch\": \"edt\", {fields}}}")).unwrap();
    p
}

/// A tensor file holding `x` of this shape.
fn input(name: &str, shape: (usize, usize, usize, usize)) -> PathBuf {
    let p = tmp(name);
    let x = Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu).unwrap().affine(0.0, 0.5).unwrap();
    candle_core::safetensors::save(&[("x", x)].into_iter().collect(), &p).unwrap();
    p
}

/// forward on (checkpoint, config, input file with `x`) plus `extra` must exit 2, name every `needles`, and write
/// no output.
fn forward_fails(checkpoint: &Path, config: &Path, input: &Path, extra: &[&str], needles: &[&str]) {
    let out = tmp(&format!("out-{}.safetensors", needles.join("").len()));
    let mut args = vec!["forward", "--checkpoint", s(checkpoint), "--config", s(config), "--input", s(input)];
    args.extend_from_slice(&["--input-name", "x", "-o", s(&out)]);
    args.extend_from_slice(extra);
    let (code, _, err) = adaptir_cli(&args);
    assert_eq!(code, 2, "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
    assert!(!out.exists(), "an output was written despite the error");
}

#[test]
fn forward_runs_the_official_edt_fixture() {
    let out = tmp("edt-y.safetensors");
    let (code, stdout, err) = adaptir_cli(&[
        "forward",
        "--checkpoint",
        s(&fixture(EDT_WEIGHTS)),
        "--config",
        s(&fixture("edt_small.json")),
        "--input",
        s(&fixture(EDT_IO)),
        "--input-name",
        "x",
        "-o",
        s(&out),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("EDT sr2 (x2)") && stdout.contains("AdaptIR (hidden 12, rank 6)"), "{stdout}");
    let got = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    let err = max_abs_diff(&got["output"], &load(EDT_IO)["y"]);
    assert!(err <= MODEL_PARITY_ABS, "{err:e}");
}

#[test]
fn edt_checkpoint_with_an_ipt_config() {
    let (w, io) = (fixture(EDT_WEIGHTS), fixture(EDT_IO));
    forward_fails(
        &w,
        &fixture("ipt_small.json"),
        &io,
        &["--task-index", "0"],
        &["weights.safetensors", "an EDT state dict", "arch is `ipt`"],
    );
}

#[test]
fn ipt_checkpoint_with_an_edt_config() {
    let ipt = fixture("parity/ipt_small_adaptir/weights.safetensors");
    forward_fails(
        &ipt,
        &fixture("edt_small.json"),
        &fixture(EDT_IO),
        &[],
        &["ipt_small_adaptir/weights.safetensors", "expected an EDT state dict", "found an IPT state dict"],
    );
}

#[test]
fn checkpoint_without_the_configured_head() {
    let cfg = edt_config("sr4.json", r#""task": "sr4", "depths": [2, 2], "num_heads": [6, 6]"#);
    forward_fails(
        &fixture(EDT_WEIGHTS),
        &cfg,
        &fixture(EDT_IO),
        &[],
        &["weights.safetensors", "task `sr4`", "needs the head `head_sr_x4.*`", "holds the head(s) head_sr_x2"],
    );
    let cfg = edt_config("dn.json", r#""task": "denoise30", "depths": [2, 2], "num_heads": [6, 6]"#);
    let x192 = input("x192.safetensors", (1, 3, 192, 192));
    forward_fails(&fixture(EDT_WEIGHTS), &cfg, &x192, &[], &["weights.safetensors", "head_dn_g30", "head_sr_x2"]);
}

#[test]
fn checkpoint_with_another_body_depth() {
    let cfg = edt_config("official.json", r#""task": "sr2""#);
    forward_fails(
        &fixture(EDT_WEIGHTS),
        &cfg,
        &fixture(EDT_IO),
        &[],
        &["weights.safetensors", "depths are [6, 6, 6, 6, 6, 6]", "stages of [2, 2] blocks"],
    );
}

#[test]
fn input_of_the_wrong_size_for_the_task() {
    let x96 = input("x96.safetensors", (1, 3, 96, 96));
    forward_fails(
        &fixture(EDT_WEIGHTS),
        &fixture("edt_small.json"),
        &x96,
        &[],
        &["x96.safetensors", "[1, 3, 96, 96]", "expected (N, 3, 48, 48) for EDT task sr2"],
    );
    let cfg = edt_config("derain.json", r#""task": "derain", "depths": [2, 2], "num_heads": [6, 6]"#);
    forward_fails(
        &fixture(EDT_WEIGHTS),
        &cfg,
        &fixture(EDT_IO),
        &[],
        &["io.safetensors", "[1, 3, 48, 48]", "expected (N, 3, 192, 192) for EDT task derain"],
    );
}

#[test]
fn task_index_and_bad_configs_are_refused() {
    let (w, io) = (fixture(EDT_WEIGHTS), fixture(EDT_IO));
    forward_fails(&w, &fixture("edt_small.json"), &io, &["--task-index", "0"], &["--task-index 0", "task `sr2`"]);
    let adapter = fixture("golden/micro/derain.safetensors");
    // An IPT adapter with an EDT config (an EDT adapter runs: tests/edt_shipped.rs).
    forward_fails(
        &w,
        &fixture("edt_small.json"),
        &io,
        &["--adapter", adapter.to_str().unwrap()],
        &["an adapter for an IPT backbone"],
    );
    let cfg = edt_config("odd.json", r#""task": "sr2", "embed_dim": 181"#);
    forward_fails(&w, &cfg, &io, &[], &["odd.json", "embed_dim is 181"]);
    let cfg = edt_config("unknown.json", r#""task": "sr2", "scales": [2]"#);
    forward_fails(&w, &cfg, &io, &[], &["unknown.json", "unknown field `scales`"]);
    let cfg = edt_config("task.json", r#""task": "lowlight""#);
    forward_fails(&w, &cfg, &io, &[], &["task.json", "task `lowlight` is not an EDT task", "sr2, sr3, sr4"]);
}
