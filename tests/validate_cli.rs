//! `adaptir validate`: a real export passes (exit 0) against the candle model and against its golden file; the
//! same file with one weight changed fails (exit 1); bad input exits 2 and says what to do. Needs ONNX Runtime
//! (scripts/setup-ort.sh).
mod common;

use std::path::{Path, PathBuf};

use adaptir::compile::ir::Data;
use candle_core::{Device, Tensor};
use common::*;

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("adaptir-validate-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// (backbone, adapter, model, golden): a small backbone, a perturbed AdaptIR derain adapter, its export and golden.
fn files() -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    static ONCE: std::sync::OnceLock<(PathBuf, PathBuf, PathBuf, PathBuf)> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let (w, _) = small_backbone_files(&dir());
        let a = dir().join("derain.safetensors");
        write_adapter("adaptir", "derain", &w, &a);
        let (m, g) = (dir().join("derain.onnx"), dir().join("derain.golden.safetensors"));
        let (code, _, err) =
            adaptir_cli(&["export", "--adapter", s(&a), "--backbone", s(&w), "-o", s(&m), "--golden", s(&g)]);
        assert_eq!(code, 0, "{err}");
        (w, a, m, g)
    })
    .clone()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Run the binary with extra environment variables.
fn cli_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_adaptir"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let (o, e) = (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
    assert!(!e.contains("panicked"), "{e}");
    (out.status.code().unwrap_or(-1), o, e)
}

#[test]
fn a_real_export_passes_against_candle_and_its_golden() {
    let (w, a, m, g) = files();
    // Against the candle model, backbone and adapter given.
    let (code, text, err) =
        adaptir_cli(&["validate", s(&m), "--backbone", s(&w), "--adapter", s(&a), "--json", "--threads", "1"]);
    assert_eq!(code, 0, "{text}\n{err}");
    let v = json(&text);
    assert_eq!(v["passed"], true);
    assert_eq!(v["ep"], "cpu");
    assert_eq!(v["tolerance"]["name"], "F32_REASSOCIATION_REL");
    let out = &v["outputs"][0];
    assert_eq!(out["name"], "output");
    for key in ["max_abs", "mean_abs", "psnr_db"] {
        assert!(out[key].is_number(), "{key}: {out}");
    }
    assert!(v["nodes_by_ep"]["CPUExecutionProvider"].as_u64().unwrap_or(0) > 0, "{v}");
    assert_eq!(v["candle_onnx"]["runs"], false, "{v}");
    eprintln!(
        "candle reference: max_abs {} mean_abs {} psnr {} dB, nodes {}; candle-onnx blocked by {}",
        out["max_abs"], out["mean_abs"], out["psnr_db"], v["nodes_by_ep"], v["candle_onnx"]["blocking_ops"]
    );

    // Against the golden file.
    let (code, text, err) = adaptir_cli(&["validate", s(&m), "--golden", s(&g)]);
    assert_eq!(code, 0, "{text}\n{err}");
    assert!(text.contains("PASS") && text.contains("CPUExecutionProvider") && text.contains("F32_REASSOCIATION_REL"));
    eprintln!("golden:\n{text}");

    // Backbone and adapter found without flags: the backbone and the adapter beside the model.
    let (code, text, err) = adaptir_cli(&["validate", s(&m)]);
    assert_eq!(code, 0, "{text}\n{err}");
}

#[test]
fn an_fp16_export_is_held_to_the_f16_tolerance() {
    let (w, a, _, _) = files();
    let m = dir().join("derain-fp16.onnx");
    let (code, _, err) = adaptir_cli(&["export", "--adapter", s(&a), "--backbone", s(&w), "--fp16", "-o", s(&m)]);
    assert_eq!(code, 0, "{err}");
    let (code, text, err) = adaptir_cli(&["validate", s(&m), "--backbone", s(&w), "--adapter", s(&a), "--json"]);
    assert_eq!(code, 0, "{text}\n{err}");
    let v = json(&text);
    assert_eq!(v["tolerance"]["name"], "F16_REL");
    assert_eq!(v["precision"], "fp16");
    eprintln!("fp16: max_abs {} psnr {} dB", v["outputs"][0]["max_abs"], v["outputs"][0]["psnr_db"]);

    // The negative case: the same fp16 file with its largest f16 weight matrix doubled (one layer converted with
    // a wrong scale) is beyond F16_REL: exit 1. (Scaled by 1.1 it is not: that matrix feeds a residual branch.)
    let mut graph = adaptir::compile::onnx::read(&m).unwrap();
    let (name, c) = graph
        .initializers
        .iter_mut()
        .filter(|(_, c)| matches!(c.data, Data::F16(_)))
        .max_by_key(|(_, c)| c.data.len())
        .unwrap();
    let name = name.clone();
    if let Data::F16(v) = &mut c.data {
        for b in v.iter_mut() {
            *b = half::f16::from_f32(half::f16::from_bits(*b).to_f32() * 2.0).to_bits();
        }
    }
    let changed = dir().join("derain-fp16-changed.onnx");
    adaptir::compile::onnx::write(&graph, &changed).unwrap();
    let (code, text, err) = adaptir_cli(&["validate", s(&changed), "--backbone", s(&w), "--adapter", s(&a), "--json"]);
    assert_eq!(code, 1, "`{name}` x 2 in the fp16 file: {text}\n{err}");
    let v = json(&text);
    assert_eq!(v["tolerance"]["name"], "F16_REL");
    assert_eq!(v["outputs"][0]["within_bound"], false);
    eprintln!("fp16 with `{name}` x 2: max_abs {} (bound {})", v["outputs"][0]["max_abs"], v["outputs"][0]["bound"]);
}

#[test]
fn one_changed_weight_fails_with_exit_1() {
    let (w, a, m, g) = files();
    let mut graph = adaptir::compile::onnx::read(&m).unwrap();
    // The largest f32 initialiser (a weight matrix the output depends on: dead ones were removed by the passes).
    let (name, c) = graph
        .initializers
        .iter_mut()
        .filter(|(_, c)| matches!(c.data, Data::F32(_)))
        .max_by_key(|(_, c)| c.data.len())
        .unwrap();
    let name = name.clone();
    if let Data::F32(v) = &mut c.data {
        v[0] += 1.0;
    }
    let changed = dir().join("derain-changed.onnx");
    adaptir::compile::onnx::write(&graph, &changed).unwrap();
    for extra in [vec!["--backbone", s(&w), "--adapter", s(&a)], vec!["--golden", s(&g)]] {
        let mut args = vec!["validate", s(&changed), "--json"];
        args.extend(extra.iter().copied());
        let (code, text, err) = adaptir_cli(&args);
        assert_eq!(code, 1, "{args:?}: {text}\n{err}");
        let v = json(&text);
        assert_eq!(v["passed"], false);
        let out = &v["outputs"][0];
        assert_eq!(out["passed"], false);
        assert_eq!(out["within_bound"], false);
        // Against the candle model the peer check runs too, and a changed weight fails it as well: ORT is far
        // further from candle in f64 than candle's own f32 forward. A golden file has no model to run in f64.
        if extra[0] == "--backbone" {
            let peer = &out["peer_check"];
            assert_eq!(peer["passed"], false, "{out}");
            let (ort, own) = (peer["ort_vs_f64"].as_f64().unwrap(), peer["candle_f32_vs_f64"].as_f64().unwrap());
            assert!(ort > 100.0 * own, "{out}");
        } else {
            assert!(out["peer_check"].is_null(), "{out}");
        }
        eprintln!(
            "`{name}`[0] += 1: max_abs {} (bound {}), peer check {}",
            out["max_abs"], out["bound"], out["peer_check"]
        );
    }
    let (code, text, _) = adaptir_cli(&["validate", s(&changed), "--golden", s(&g)]);
    assert_eq!(code, 1);
    assert!(text.contains("FAIL"), "{text}");
}

/// A deep model whose own f32 rounding is far above `F32_REASSOCIATION_REL` (ipt-base, random weights: its
/// f32 and f64 forwards differ by about 3e-4, 20x the bound): the fixed bound fails for any f32 engine, and
/// the export passes on the peer check, ONNX Runtime being no further from the f64 forward than 2x candle's f32.
#[test]
fn a_deep_model_beyond_the_fixed_bound_passes_the_peer_check() {
    let d = dir().join("ipt-base");
    std::fs::create_dir_all(&d).unwrap();
    let (w, _) = common::backbone_files(&d, &adaptir::backbone::IptConfig::preset("ipt-base").unwrap());
    let m = d.join("base.onnx");
    let (code, _, err) = adaptir_cli(&["export", "--backbone", s(&w), "--task", "derain", "-o", s(&m)]);
    assert_eq!(code, 0, "{err}");
    let (code, text, err) = adaptir_cli(&["validate", s(&m), "--backbone", s(&w), "--json"]);
    assert_eq!(code, 0, "{text}\n{err}");
    let v = json(&text);
    let out = &v["outputs"][0];
    assert_eq!(v["passed"], true, "{out}");
    assert_eq!(out["within_bound"], false, "the fixed bound held: this model no longer exercises the peer check");
    let peer = &out["peer_check"];
    assert_eq!(peer["passed"], true, "{out}");
    let (ort, own) = (peer["ort_vs_f64"].as_f64().unwrap(), peer["candle_f32_vs_f64"].as_f64().unwrap());
    assert!(ort <= adaptir::tolerance::F32_PEER_FACTOR * own, "{out}");
    eprintln!(
        "ipt-base: ORT vs candle f32 {} (bound {}); vs f64: ORT {ort:.3e}, candle f32 {own:.3e}",
        out["max_abs"], out["bound"]
    );

    // A subtle bug in the same deep model: its largest weight matrix 3 % too large (a scale folded twice, a
    // constant rounded). The output moves by a few 1e-3 (about one 8-bit level), a few times the model's own f32
    // rounding (which varies between random initialisations, 1.7e-4 to 8.9e-4 seen): the fixed bound cannot tell
    // it from rounding, the peer check does. Measured: 1 % was caught on a model of 1.7e-4 own error, 0.3 %
    // was not (its effect is below f32 rounding); docs/validation.md.
    let mut graph = adaptir::compile::onnx::read(&m).unwrap();
    let (name, c) = graph
        .initializers
        .iter_mut()
        .filter(|(_, c)| matches!(c.data, Data::F32(_)))
        .max_by_key(|(_, c)| c.data.len())
        .unwrap();
    let name = name.clone();
    let factor = 1.03f32;
    if let Data::F32(v) = &mut c.data {
        v.iter_mut().for_each(|x| *x *= factor);
    }
    let changed = d.join("base-changed.onnx");
    adaptir::compile::onnx::write(&graph, &changed).unwrap();
    let (code, text, err) = adaptir_cli(&["validate", s(&changed), "--backbone", s(&w), "--json"]);
    assert_eq!(code, 1, "`{name}` x {factor}: {text}\n{err}");
    let v = json(&text);
    let peer = &v["outputs"][0]["peer_check"];
    assert_eq!(peer["passed"], false, "{v}");
    eprintln!(
        "ipt-base with `{name}` x {factor}: ORT vs f64 {}, candle f32 vs f64 {}, ceiling {}",
        peer["ort_vs_f64"], peer["candle_f32_vs_f64"], peer["ceiling"]
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// `ort-latency --profile`: ONNX Runtime's profile file is written and summed per part of the export (the
/// backbone, the adapter's nodes, each `ai.adaptir` function); a missing folder is refused before any run.
#[test]
fn ort_latency_profiles_the_export_per_part() {
    let (_, _, m, g) = files();
    let prefix = dir().join("profile");
    let (code, text, err) = adaptir_cli(&[
        "ort-latency",
        s(&m),
        "--golden",
        s(&g),
        "--threads",
        "1",
        "--iters",
        "3",
        "--profile",
        s(&prefix),
        "--json",
    ]);
    assert_eq!(code, 0, "{text}\n{err}");
    let v = json(&text);
    let file = std::path::PathBuf::from(v["profile"]["file"].as_str().unwrap());
    assert!(file.is_file() && file.starts_with(dir()), "{v}");
    let parts = v["profile"]["parts"].as_array().unwrap();
    let names: Vec<&str> = parts.iter().map(|p| p["part"].as_str().unwrap()).collect();
    for want in ["adapter nodes", "function Rfft2", "function Atan2", "function Polar", "function Irfft2"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let share: f64 = parts.iter().map(|p| p["percent"].as_f64().unwrap()).sum();
    assert!((share - 100.0).abs() < 1e-6, "{share}");
    assert!(parts
        .iter()
        .all(|p| p["ms_per_run"].as_f64().unwrap() > 0.0 && p["kernels_per_run"].as_f64().unwrap() >= 1.0));
    eprintln!("{}", serde_json::to_string_pretty(&v["profile"]["parts"]).unwrap());
    let _ = std::fs::remove_file(&file);

    let missing = dir().join("no-such-folder").join("p");
    let (code, _, err) = adaptir_cli(&["ort-latency", s(&m), "--golden", s(&g), "--profile", s(&missing)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--profile: the folder") && err.contains("does not exist"), "{err}");
}

/// `--denormal-as-zero` is ONNX Runtime's: `ort-latency` and `validate` take it and say so; tract and OpenVINO
/// refuse it before any run (its effect on the values is `tests/denormal_as_zero.rs`).
#[test]
fn denormal_as_zero_runs_in_onnx_runtime_and_the_other_runtimes_refuse_it() {
    let (_, _, m, g) = files();
    let (code, text, err) =
        adaptir_cli(&["ort-latency", s(&m), "--golden", s(&g), "--threads", "1", "--iters", "2", "--denormal-as-zero"]);
    assert_eq!(code, 0, "{text}\n{err}");
    assert!(text.contains("denormals flushed to zero"), "{text}");
    let (code, text, err) = adaptir_cli(&["validate", s(&m), "--golden", s(&g), "--denormal-as-zero"]);
    assert_eq!(code, 0, "{text}\n{err}");
    for runtime in ["tract", "openvino", "all"] {
        let (code, _, err) =
            adaptir_cli(&["validate", s(&m), "--golden", s(&g), "--runtime", runtime, "--denormal-as-zero"]);
        assert_eq!(code, 2, "{runtime}: {err}");
        assert!(err.contains("--denormal-as-zero: an ONNX Runtime session option"), "{runtime}: {err}");
    }
}

#[test]
fn bad_input_exits_2_and_says_what_to_do() {
    let (w, a, m, g) = files();
    let d = dir();
    let not_onnx = d.join("notes.onnx");
    std::fs::write(&not_onnx, "this is not a model\n").unwrap();
    let truncated = d.join("truncated.onnx");
    let bytes = std::fs::read(&m).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    // Golden files that do not match the model's inputs.
    let bad_shape = d.join("golden-shape.safetensors");
    let x = Tensor::zeros((2, 3, 32, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&[("input".to_string(), x.clone()), ("output".to_string(), x)].into(), &bad_shape)
        .unwrap();
    let no_input = d.join("golden-names.safetensors");
    let y = Tensor::zeros((2, 3, 48, 48), candle_core::DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&[("x".to_string(), y.clone()), ("output".to_string(), y)].into(), &no_input)
        .unwrap();
    // Another backbone: a copy with one byte of tensor data changed (its sha256 differs).
    let other = d.join("other-backbone.safetensors");
    let mut bb = std::fs::read(&w).unwrap();
    let last = bb.len() - 1;
    bb[last] ^= 1;
    std::fs::write(&other, bb).unwrap();
    let lonely = d.join("lonely");
    std::fs::create_dir_all(&lonely).unwrap();
    let lonely_model = lonely.join("derain.onnx");
    std::fs::copy(&m, &lonely_model).unwrap();
    let lonely_backbone = lonely.join("weights.safetensors");
    std::fs::copy(&w, &lonely_backbone).unwrap();

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["validate", s(&not_onnx)], "not an ONNX model"),
        (vec!["validate", s(&truncated)], "truncated"),
        (vec!["validate", "/nonexistent/model.onnx"], "no such file"),
        (vec!["validate", s(&m), "--golden", s(&bad_shape)], "expects"),
        (vec!["validate", s(&m), "--golden", s(&no_input)], "expected a tensor `input`"),
        (vec!["validate", s(&m), "--golden", s(&not_onnx)], "safetensors"),
        (vec!["validate", s(&m), "--backbone", s(&other), "--adapter", s(&a)], "sha256"),
        (vec!["validate", s(&lonely_model)], "pass --backbone PATH"),
        (vec!["validate", s(&lonely_model), "--backbone", s(&lonely_backbone)], "pass --adapter PATH"),
        (vec!["validate", s(&m), "--ep", "tpu"], "--ep: expected `cpu` or `cuda`"),
        (vec!["validate", s(&m), "--golden", s(&g), "--threads", "0"], "--threads"),
    ];
    for (args, needle) in cases {
        let (code, text, err) = adaptir_cli(&args);
        assert_eq!(code, 2, "{args:?}: {text}\n{err}");
        assert!(err.contains(needle), "{args:?}: `{needle}` not in {err}");
        assert!(text.is_empty(), "{args:?}: printed {text}");
    }

    // CUDA on this build/machine: exit 2 with what to do (a build without the feature says how to rebuild; with
    // it, a machine without a GPU says what the provider needs).
    let (code, _, err) = adaptir_cli(&["validate", s(&m), "--golden", s(&g), "--ep", "cuda", "--strict-ep"]);
    if code != 0 {
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--ep cuda"), "{err}");
    }

    // No ONNX Runtime library: exit 2 with the install command.
    let (code, _, err) =
        cli_env(&["validate", s(&m), "--golden", s(&g)], &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(adaptir::runtime::INSTALL_COMMAND), "{err}");
}

#[test]
fn candle_onnx_blockers_are_those_of_the_flattened_graph() {
    let (w, a, m, _) = files();
    let inline = dir().join("derain-inline.onnx");
    let (code, _, err) =
        adaptir_cli(&["export", "--adapter", s(&a), "--backbone", s(&w), "--inline-functions", "-o", s(&inline)]);
    assert_eq!(code, 0, "{err}");
    let flat = adaptir::compile::onnx::read(&inline).unwrap();
    assert!(flat.functions.is_empty());
    let blockers = adaptir::runtime::candle_onnx::blockers(&flat);
    // Reading the functions' bodies gives the same answer as the flattened file.
    assert_eq!(blockers, adaptir::runtime::candle_onnx::blockers(&adaptir::compile::onnx::read(&m).unwrap()));
    for op in &blockers {
        let name = op.split(' ').next().unwrap();
        let used = flat.nodes.iter().any(|n| n.op == name);
        assert!(used, "{op} is not in the flattened graph");
    }
    // The backbone's pre-norm LayerNormalization alone keeps candle-onnx out.
    assert!(blockers.iter().any(|b| b == "LayerNormalization"), "{blockers:?}");
    eprintln!("candle-onnx is blocked by: {}", blockers.join(", "));
}
