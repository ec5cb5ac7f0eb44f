//! `adaptir import`: official checkpoints (fixtures/import, written by torch itself: scripts/make_import_fixtures.py)
//! become adapter + backbone files whose export computes what `forward` computes on the original checkpoint, and
//! what the official code computed (fixtures/parity/ipt_small_adaptir); bad checkpoints exit 2 and write nothing.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adaptir::params::StateDict;
use adaptir::peft::file::{sha256_file, AdapterFile};
use adaptir::runtime::{RunOptions, Session};
use adaptir::tolerance::{EXACT, IMPORT_EXPORT_ABS, MODEL_PARITY_ABS};
use candle_core::{DType, Tensor};
use common::*;

const CKPT: &str = "import/ipt_small_derain.ckpt";
const IO: &str = "parity/ipt_small_adaptir/io.safetensors";
const OFFICIAL: &str = "parity/ipt_small_adaptir/weights.safetensors";

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("adaptir-import-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(args: &[&str]) -> String {
    let (code, out, err) = adaptir_cli(args);
    assert_eq!(code, 0, "adaptir {args:?}: {err}");
    out
}

/// Run ONNX Runtime on the fixture's input `x`.
fn ort(onnx: &Path) -> Tensor {
    let x = load(IO)["x"].clone();
    let mut sess = Session::new(onnx, &RunOptions { threads: Some(1), ..Default::default() }).unwrap();
    sess.run(&[("input", x)]).unwrap().remove(0).1
}

/// `adaptir forward` on the fixture's input `x`.
fn forward(dir: &Path, checkpoint: &Path, config: &Path, task_index: usize) -> Tensor {
    let out = dir.join(format!("forward-{task_index}.safetensors"));
    let t = task_index.to_string();
    ok(&[
        "forward",
        "--checkpoint",
        s(checkpoint),
        "--config",
        s(config),
        "--task-index",
        &t,
        "--input",
        s(&fixture(IO)),
        "-o",
        s(&out),
    ]);
    candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap()["output"].clone()
}

/// Same dtype, shape and bits.
fn assert_same(what: &str, a: &Tensor, b: &Tensor) {
    assert_eq!((a.dtype(), a.dims()), (b.dtype(), b.dims()), "{what}");
    let d = match a.dtype() {
        DType::I64 => {
            let eq = a.flatten_all().unwrap().to_vec1::<i64>().unwrap()
                == b.flatten_all().unwrap().to_vec1::<i64>().unwrap();
            if eq {
                0.0
            } else {
                f64::INFINITY
            }
        }
        _ => max_abs_diff(a, b),
    };
    assert!(d <= EXACT, "{what}: differs by {d:e}");
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn lightning_checkpoint_exports_what_forward_computes_on_it() {
    let d = tmp("lightning");
    let ckpt = fixture(CKPT);
    let adapter = d.join("derain.safetensors");
    let text = ok(&["import", s(&ckpt), "--task", "derain", "-o", s(&adapter)]);
    eprintln!("{text}");
    assert!(text.contains("Lightning checkpoint") && text.contains("`net.`"), "{text}");
    assert!(text.contains("method: adaptir") && text.contains("preset ipt-small"), "{text}");
    assert!(text.contains("pathlib.PosixPath"), "the Namespace's unknown global is noted: {text}");

    // The safe reader returns every tensor torch wrote, bit for bit (against the safetensors they were made from).
    let ck = adaptir::params::torch::read_checkpoint(&ckpt).unwrap();
    let official: BTreeMap<String, Tensor> = load(OFFICIAL).into_iter().collect();
    assert_eq!(ck.tensors.len(), official.len());
    for (k, t) in &official {
        assert_same(k, &ck.tensors[&format!("net.{k}")], t);
    }
    assert!(ck.other_keys.contains(&"optimizer_states".to_string()), "{:?}", ck.other_keys);

    // Adapter + backbone hold exactly those tensors; the adapter records the backbone and the run.
    let a = AdapterFile::load(&adapter).unwrap();
    let backbone = d.join("backbone.safetensors");
    let b = StateDict::load(&backbone).unwrap();
    assert_eq!((a.meta.method.as_str(), a.meta.task.as_str()), ("adaptir", "derain"));
    assert_eq!(a.meta.backbone_sha256, sha256_file(&backbone).unwrap());
    assert_eq!(a.tensors.len() + b.tensors.len(), official.len());
    for (k, t) in &official {
        let ours = a.tensors.get(k).or_else(|| b.get(k)).unwrap_or_else(|| panic!("{k} missing"));
        assert_same(k, ours, t);
    }
    let run = &a.meta.training["lightning"];
    assert_eq!((run["epoch"].as_i64(), run["global_step"].as_i64()), (Some(299), Some(1200)));
    assert_eq!(run["hyper_parameters"]["args"]["de_type"], "derain");

    // import -> export -> ONNX Runtime == forward on the original .ckpt.
    let onnx = d.join("derain.onnx");
    ok(&["export", "--adapter", s(&adapter), "-o", s(&onnx)]);
    let y = ort(&onnx);
    let reference = forward(&d, &ckpt, &fixture("ipt_small.json"), 3);
    let diff = max_abs_diff(&y, &reference);
    eprintln!("import -> export (ORT) vs forward on the .ckpt, derain: max abs {diff:.3e}");
    assert!(diff <= IMPORT_EXPORT_ABS, "{diff:e} > {IMPORT_EXPORT_ABS:e}");
}

#[test]
fn imported_export_matches_the_official_torch_output() {
    let d = tmp("torch");
    let adapter = d.join("denoise30.safetensors");
    let text = ok(&["import", s(&fixture(CKPT)), "--task", "denoise30", "-o", s(&adapter)]);
    assert!(text.contains("de_type `derain`"), "a task other than the run's is noted: {text}");
    let onnx = d.join("denoise30.onnx");
    ok(&["export", "--adapter", s(&adapter), "-o", s(&onnx)]);
    let diff = max_abs_diff(&ort(&onnx), &load(IO)["task4.y"]);
    eprintln!("import -> export (ORT) vs the official torch output, task 4: max abs {diff:.3e}");
    assert!(diff <= MODEL_PARITY_ABS, "{diff:e} > {MODEL_PARITY_ABS:e}");
}

#[test]
fn data_parallel_state_dict_and_full_fine_tuning() {
    let d = tmp("dp");
    let dp = fixture("import/ipt_f4_dp.pt");
    let config = fixture("import/ipt_f4.json");
    let adapter = d.join("derain.safetensors");
    // The head count is not in the weights and no preset has this size.
    let (code, _, err) = adaptir_cli(&["import", s(&dp), "--task", "derain", "-o", s(&adapter)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ipt_f4_dp.pt") && err.contains("--config") && err.contains("num_heads"), "{err}");
    assert!(files_in(&d).is_empty(), "{:?}", files_in(&d));

    let text = ok(&["import", s(&dp), "--task", "derain", "--config", s(&config), "-o", s(&adapter)]);
    assert!(text.contains("`module.`") && text.contains("method: pretrain"), "{text}");
    // The backbone written holds the tensors of the .pt (as the other reader, candle's, reads them).
    let backbone = d.join("backbone.safetensors");
    let written = StateDict::load(&backbone).unwrap();
    let original = StateDict::load(&dp).unwrap();
    assert_eq!(written.tensors.len(), original.tensors.len());
    for (k, t) in &original.tensors {
        assert_same(k, &written.tensors[k.strip_prefix("module.").unwrap()], t);
    }
    let onnx = d.join("derain.onnx");
    ok(&["export", "--adapter", s(&adapter), "-o", s(&onnx)]);
    let reference = forward(&d, &backbone, &config, 3);
    let diff = max_abs_diff(&ort(&onnx), &reference);
    eprintln!("DataParallel backbone: export (ORT) vs forward: max abs {diff:.3e} of max {:.3e}", max_abs(&reference));
    assert!(diff <= IMPORT_EXPORT_ABS, "{diff:e}");

    // A fully fine-tuned copy (official keys, safetensors) against that backbone: method `full`.
    let f = tmp("full");
    let mut tuned = written.tensors.clone();
    for k in ["body.linear_encoding.weight", "tail.3.1.bias"] {
        tuned.insert(k.to_string(), (&tuned[k] + 0.01).unwrap());
    }
    let tuned_path = f.join("tuned.safetensors");
    candle_core::safetensors::save(&tuned.clone().into_iter().collect(), &tuned_path).unwrap();
    let full = f.join("full.safetensors");
    let text = ok(&["import", s(&tuned_path), "--task", "derain", "--backbone", s(&backbone), "-o", s(&full)]);
    assert!(text.contains("method: full") && text.contains("2 of"), "{text}");
    assert!(!f.join("backbone.safetensors").exists(), "--backbone: no backbone is written");
    let onnx = f.join("full.onnx");
    ok(&["export", "--adapter", s(&full), "--backbone", s(&backbone), "-o", s(&onnx)]);
    let diff = max_abs_diff(&ort(&onnx), &forward(&f, &tuned_path, &config, 3));
    eprintln!("full fine-tuning: export (ORT) vs forward on the tuned weights: max abs {diff:.3e}");
    assert!(diff <= IMPORT_EXPORT_ABS, "{diff:e}");
}

#[test]
fn tasks_share_one_backbone_file() {
    let a = tmp("shared-a");
    let ckpt = fixture(CKPT);
    ok(&["import", s(&ckpt), "--task", "derain", "-o", s(&a.join("derain.safetensors"))]);
    let backbone = a.join("backbone.safetensors");
    let sha = sha256_file(&backbone).unwrap();
    // A second task into the same folder keeps the backbone file as it is.
    let text = ok(&["import", s(&ckpt), "--task", "denoise30", "-o", s(&a.join("denoise30.safetensors")), "--json"]);
    let report: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!((report["backbone_state"].as_str(), report["method"].as_str()), (Some("unchanged"), Some("adaptir")));
    assert_eq!((report["head"].as_u64(), report["config"]["num_heads"].as_u64()), (Some(4), Some(6)));
    assert_eq!(sha256_file(&backbone).unwrap(), sha);
    // Against a given backbone: only the adapter is written, and it records that backbone.
    let b = tmp("shared-b");
    let sr4 = b.join("sr4.safetensors");
    ok(&["import", s(&ckpt), "--task", "sr4", "--backbone", s(&backbone), "-o", s(&sr4)]);
    assert_eq!(files_in(&b), vec!["sr4.safetensors"]);
    for f in [a.join("derain.safetensors"), a.join("denoise30.safetensors"), sr4] {
        assert_eq!(AdapterFile::load(&f).unwrap().meta.backbone_sha256, sha, "{}", f.display());
    }
    // The official-key safetensors of the same weights gives the same adapter tensors.
    let c = tmp("shared-c");
    ok(&["import", s(&fixture(OFFICIAL)), "--task", "derain", "-o", s(&c.join("derain.safetensors"))]);
    let (x, y) = (
        AdapterFile::load(&c.join("derain.safetensors")).unwrap(),
        AdapterFile::load(&a.join("derain.safetensors")).unwrap(),
    );
    assert_eq!(x.tensors.keys().collect::<Vec<_>>(), y.tensors.keys().collect::<Vec<_>>());
    for (k, t) in &x.tensors {
        assert_same(k, t, &y.tensors[k]);
    }
}

#[test]
fn bad_checkpoints_exit_2_name_the_file_and_write_nothing() {
    let d = tmp("bad");
    let ckpt = fixture(CKPT);
    // Inputs made here: a truncated zip, a state dict with the heads of two tasks only, a backbone of another size,
    // a backbone with one tensor changed.
    let inputs = tmp("bad-inputs");
    let truncated = inputs.join("truncated.ckpt");
    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let two_heads = inputs.join("two_heads.safetensors");
    let official: BTreeMap<String, Tensor> = load(OFFICIAL).into_iter().collect();
    let kept: std::collections::HashMap<String, Tensor> = official
        .iter()
        .filter(|(k, _)| !["head.", "tail."].iter().any(|p| k.starts_with(p)) || k[5..].starts_with(['0', '3']))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    candle_core::safetensors::save(&kept, &two_heads).unwrap();
    let small = tmp("bad-small");
    ok(&[
        "import",
        s(&fixture("import/ipt_f4_dp.pt")),
        "--task",
        "derain",
        "--config",
        s(&fixture("import/ipt_f4.json")),
        "-o",
        s(&small.join("derain.safetensors")),
    ]);
    let ok_dir = tmp("bad-good");
    ok(&["import", s(&ckpt), "--task", "derain", "-o", s(&ok_dir.join("derain.safetensors"))]);
    let other = inputs.join("other_backbone.safetensors");
    let mut t = StateDict::load(&ok_dir.join("backbone.safetensors")).unwrap().tensors;
    t.insert("body.mlp_head.0.bias".into(), (&t["body.mlp_head.0.bias"] + 1e-3).unwrap());
    let config = adaptir::backbone::IptConfig::preset("ipt-small").unwrap();
    adaptir::train::save_backbone(&other, &t, &config, &serde_json::json!({})).unwrap();

    let out = d.join("derain.safetensors");
    let cases: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        (
            "another architecture",
            vec![s(&fixture("parity/adaptir_block_edt/weights.safetensors")).into()],
            vec!["weights.safetensors", "not an IPT state dict"],
        ),
        (
            "another size (--config)",
            vec![s(&ckpt).into(), "--config".into(), s(&fixture("import/ipt_f4.json")).into()],
            vec!["ipt_small_derain.ckpt", "another size", "n_feats 22 in the checkpoint, 4 there"],
        ),
        (
            "another size (--backbone)",
            vec![s(&ckpt).into(), "--backbone".into(), s(&small.join("backbone.safetensors")).into()],
            vec!["ipt_small_derain.ckpt", "another size"],
        ),
        (
            "no state_dict",
            vec![s(&fixture("import/no_state_dict.ckpt")).into()],
            vec!["no_state_dict.ckpt", "without `state_dict`"],
        ),
        (
            "unknown global in the weights",
            vec![s(&fixture("import/evil_global.pt")).into()],
            vec!["evil_global.pt", "posix.system", "refused"],
        ),
        ("truncated zip", vec![s(&truncated).into()], vec!["truncated.ckpt", "truncated"]),
        ("two tasks' heads", vec![s(&two_heads).into()], vec!["two_heads.safetensors", "heads of tasks {0, 3}"]),
        (
            "adapters on another backbone",
            vec![s(&ckpt).into(), "--backbone".into(), s(&other).into()],
            vec!["another backbone", "body.mlp_head.0.bias"],
        ),
        ("unknown task", vec![s(&ckpt).into(), "--task".into(), "deblur".into()], vec!["deblur"]),
    ];
    for (name, extra, want) in cases {
        let mut args: Vec<String> = vec!["import".into()];
        args.extend(extra.iter().cloned());
        if !extra.contains(&"--task".to_string()) {
            args.extend(["--task".into(), "derain".into()]);
        }
        args.extend(["-o".into(), s(&out).into()]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        // Run in the output folder: a pickle that could run `touch adaptir_import_pwned` would leave it there.
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_adaptir")).args(&argv).current_dir(&d).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
        for w in want {
            assert!(err.contains(w), "{name}: expected `{w}` in: {err}");
        }
        assert!(files_in(&d).is_empty(), "{name}: wrote {:?}", files_in(&d));
        eprintln!("{name}: {}", err.trim());
    }

    // An existing backbone file beside -o with other weights is neither used nor replaced.
    std::fs::copy(&other, d.join("backbone.safetensors")).unwrap();
    let before = sha256_file(&d.join("backbone.safetensors")).unwrap();
    let (code, _, err) = adaptir_cli(&["import", s(&ckpt), "--task", "derain", "-o", s(&out)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("exists and holds other backbone weights"), "{err}");
    assert_eq!(files_in(&d), vec!["backbone.safetensors"]);
    assert_eq!(sha256_file(&d.join("backbone.safetensors")).unwrap(), before);

    // An output that is not a .safetensors file.
    let (code, _, err) = adaptir_cli(&["import", s(&ckpt), "--task", "derain", "-o", s(&d.join("derain.txt"))]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(".safetensors"), "{err}");
}
