//! `adaptir export --adapter A --adapter B ... --out-dir DIR`: task files around one shared weight file (ONNX
//! external data). Each task file read back (external data resolved) is the one-file export's graph; AdaptIR
//! changes no shared tensor, and the weight file does not depend on the adapters; methods folded into the weights
//! get per-task copies of only what they change; every shipped adapter's task file passes the runtime matrix;
//! a truncated, swapped or missing weight file is refused before anything runs (exit 2, naming it); options a
//! shared export cannot honour exit 2. Needs ONNX Runtime and OpenVINO (scripts/setup-ort.sh).
mod common;

use std::path::{Path, PathBuf};

use adaptir::compile::export::ExportArgs;
use adaptir::compile::ir::Graph;
use adaptir::compile::shared::{export_shared, SharedArgs, SharedReport, ALIGN, WEIGHTS_F32};
use adaptir::runtime::{RunOptions, Session};
use adaptir::tolerance::F32_REASSOCIATION_REL;
use candle_core::Device;
use common::*;

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("adaptir-shared-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// (method, task, adapter file).
type Adapter = (&'static str, &'static str, PathBuf);

/// The small random backbone, and perturbed adapters beside it.
fn files() -> (PathBuf, Vec<Adapter>) {
    static ONCE: std::sync::OnceLock<(PathBuf, Vec<Adapter>)> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let (w, _) = small_backbone_files(&dir());
        let mut v = Vec::new();
        for (method, task) in [("adaptir", "derain"), ("adaptir", "lowlight"), ("adaptir", "sr4"), ("lora", "sr2")]
            .into_iter()
            .chain([("ssf", "sr3"), ("fact", "denoise30")])
        {
            let a = dir().join(format!("{method}-{task}.safetensors"));
            write_adapter(method, task, &w, &a);
            v.push((method, task, a));
        }
        (w, v)
    })
    .clone()
}

fn base(backbone: &Path) -> ExportArgs<'_> {
    ExportArgs {
        adapter: None,
        backbone: Some(backbone),
        config: None,
        task: None,
        output: None,
        fft: adaptir_ops::graph::FftLowering::MatMul,
        target: Default::default(),
        inline_functions: false,
        spectral: None,
        whole_image: None,
        fp16: false,
        no_passes: false,
        extra_passes: &[],
        golden: None,
        int8: None,
    }
}

fn shared(backbone: &Path, adapters: &[PathBuf], out: &Path) -> SharedReport {
    export_shared(&SharedArgs { adapters, out_dir: out, base: base(backbone) }).unwrap_or_else(|e| panic!("{e}"))
}

/// The graph of a file read back, without the metadata that says where its weights are.
fn read_plain(p: &Path) -> Graph {
    let mut g = adaptir::compile::onnx::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    g.metadata.retain(|k, _| !k.starts_with("external_data"));
    g
}

/// Run a task file on the one-file export's golden input and compare with its golden (candle) output.
fn check_against_golden(onnx: &Path, golden: &Path) -> f64 {
    let g = candle_core::safetensors::load(golden, &Device::Cpu).unwrap();
    let mut sess = Session::new(onnx, &RunOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", onnx.display()));
    let y = sess.run(&[("input", g["input"].clone())]).unwrap().remove(0).1;
    let (d, scale) = (max_abs_diff(&y, &g["output"]), max_abs(&g["output"]));
    assert!(d <= F32_REASSOCIATION_REL * scale, "{}: {d:e} > {F32_REASSOCIATION_REL:e} * {scale:e}", onnx.display());
    d
}

#[test]
fn task_files_are_the_one_file_exports_and_only_folded_methods_copy_shared_tensors() {
    let (w, adapters) = files();
    let all: Vec<PathBuf> = adapters.iter().map(|(_, _, a)| a.clone()).collect();
    let out = dir().join("all");
    let r = shared(&w, &all, &out);
    assert!(r.weights_written);
    assert_eq!(r.weights, out.join(WEIGHTS_F32));
    assert_eq!(std::fs::metadata(&r.weights).unwrap().len(), r.weights_bytes);
    assert!(r.weights_tensors > 0);
    assert!(r.total_bytes() < r.standalone_bytes(), "{} >= {}", r.total_bytes(), r.standalone_bytes());
    for ((method, task, adapter), t) in adapters.iter().zip(&r.tasks) {
        assert_eq!(t.path, out.join(format!("{task}.onnx")));
        adaptir::runtime::check_model(&t.path).unwrap_or_else(|e| panic!("{task}: {e}"));
        // Every external tensor is aligned for mapping.
        let m = adaptir::compile::onnx::read_model(&t.path).unwrap();
        for init in &m.graph.as_ref().unwrap().initializer {
            if let Some(off) = init.external_data.iter().find(|e| e.key.as_deref() == Some("offset")) {
                let off: u64 = off.value.as_deref().unwrap().parse().unwrap();
                assert_eq!(off % ALIGN, 0, "{task}: {:?} at {off}", init.name);
            }
        }
        // The task file, external data resolved, is the one-file export's graph.
        let single = dir().join(format!("single-{task}.onnx"));
        let golden = dir().join(format!("golden-{task}.safetensors"));
        let (code, _, err) = adaptir_cli(&[
            "export",
            "--adapter",
            s(adapter),
            "--backbone",
            s(&w),
            "-o",
            s(&single),
            "--golden",
            s(&golden),
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(
            read_plain(&t.path) == read_plain(&single),
            "{task}: the task file's graph differs from the one-file export"
        );
        let d = check_against_golden(&t.path, &golden);
        // AdaptIR leaves every shared tensor as it is; LoRA, SSF and FacT fold into some of them.
        match *method {
            "adaptir" => {
                assert!(t.replaced.is_empty(), "{task}: {:?}", t.replaced);
                assert_eq!(t.external, r.weights_tensors, "{task}");
            }
            _ => {
                assert!(!t.replaced.is_empty(), "{method} folds into the weights, yet {task} copies none");
                assert!(t.external < r.weights_tensors, "{task}");
            }
        }
        eprintln!(
            "{method} {task}: {} B (standalone {} B), {} shared, {} inline, {} copied; ORT vs candle {d:.3e}",
            t.bytes,
            t.standalone_bytes,
            t.external,
            t.inline,
            t.replaced.len()
        );
    }
    // Exporting again leaves the identical weight file untouched.
    assert!(!shared(&w, &all[..1], &out).weights_written);
}

#[test]
fn the_weight_file_does_not_depend_on_the_adapters() {
    let (w, adapters) = files();
    let a = |i: usize| adapters[i].2.clone();
    let one = dir().join("one");
    let two = dir().join("two");
    let folded = dir().join("folded");
    shared(&w, &[a(0)], &one);
    shared(&w, &[a(1), a(2)], &two);
    shared(&w, &[a(3), a(4), a(5)], &folded);
    let bytes = std::fs::read(one.join(WEIGHTS_F32)).unwrap();
    assert_eq!(bytes, std::fs::read(two.join(WEIGHTS_F32)).unwrap());
    assert_eq!(bytes, std::fs::read(folded.join(WEIGHTS_F32)).unwrap());
    // One adapter's task file is the same whichever others were exported with it.
    assert_eq!(std::fs::read(one.join("derain.onnx")).unwrap(), {
        let again = dir().join("again");
        shared(&w, &[a(1), a(0)], &again);
        std::fs::read(again.join("derain.onnx")).unwrap()
    });
}

/// Each runtime's exit code and stderr for `validate` of `model`.
fn validate_each(model: &Path, extra: &[&str]) -> Vec<(String, i32, String)> {
    ["ort", "tract", "openvino"]
        .iter()
        .map(|rt| {
            let mut args = vec!["validate", s(model), "--runtime", rt, "--latency-runs", "0"];
            args.extend_from_slice(extra);
            let (code, _, err) = adaptir_cli(&args);
            (rt.to_string(), code, err)
        })
        .collect()
}

#[test]
fn a_truncated_swapped_or_missing_weight_file_is_refused_before_running() {
    let (w, adapters) = files();
    let adapter = &adapters[0].2;
    let out = dir().join("broken");
    shared(&w, std::slice::from_ref(adapter), &out);
    let (model, weights) = (out.join("derain.onnx"), out.join(WEIGHTS_F32));
    let good = std::fs::read(&weights).unwrap();
    let refs = ["--adapter", s(adapter), "--backbone", s(&w)];
    for (rt, code, err) in validate_each(&model, &refs) {
        assert_eq!(code, 0, "{rt}, intact: {err}");
    }
    let img = dir().join("img.png");
    image::RgbImage::from_fn(20, 13, |x, y| image::Rgb([(x * 12) as u8, (y * 19) as u8, 90])).save(&img).unwrap();
    let restored = dir().join("restored.png");
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("truncated", good[..good.len() - 100].to_vec(), "truncated"),
        ("swapped", good.iter().rev().copied().collect(), "swapped or corrupted"),
        ("missing", Vec::new(), "cannot be read"),
    ];
    for (what, bytes, needle) in cases {
        if what == "missing" {
            std::fs::remove_file(&weights).unwrap();
        } else {
            std::fs::write(&weights, &bytes).unwrap();
        }
        for (rt, code, err) in validate_each(&model, &refs) {
            assert_eq!(code, 2, "{what}, {rt}: {err}");
            assert!(err.contains(s(&weights)) && err.contains(needle), "{what}, {rt}: {err}");
        }
        for engine in ["onnx", "tract"] {
            let (code, _, err) = adaptir_cli(&[
                "restore",
                s(&img),
                "--adapter",
                s(adapter),
                "--backbone",
                s(&w),
                "--onnx",
                s(&model),
                "--engine",
                engine,
                "-o",
                s(&restored),
            ]);
            assert_eq!(code, 2, "{what}, restore --engine {engine}: {err}");
            assert!(err.contains(s(&weights)) && err.contains(needle), "{what}, {engine}: {err}");
            assert!(!restored.exists());
        }
        let e = adaptir::compile::onnx::read(&model).expect_err(what).to_string();
        assert!(e.contains(s(&weights)), "{what}: {e}");
    }
    // Restored, it runs again.
    std::fs::write(&weights, &good).unwrap();
    let (code, _, err) = adaptir_cli(&[
        "restore",
        s(&img),
        "--adapter",
        s(adapter),
        "--backbone",
        s(&w),
        "--onnx",
        s(&model),
        "--engine",
        "onnx",
        "-o",
        s(&restored),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(restored.exists());
}

#[test]
fn bad_shared_export_input() {
    let (w, adapters) = files();
    let a = s(&adapters[0].2);
    let b = s(&adapters[1].2);
    // An adapter for another backbone (its recorded sha256 is another file's), and a second adapter of one task.
    let other = dir().join("other-backbone-derain.safetensors");
    write_adapter("adaptir", "lowlight", &dir().join("config.json"), &other);
    let twin = dir().join("twin-derain.safetensors");
    write_adapter("adaptir", "derain", &w, &twin);
    let out = dir().join("bad-out");
    let o = s(&out);
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["--adapter", a, "--adapter", s(&other), "--out-dir", o], format!("{}: adapter for backbone", s(&other))),
        (vec!["--adapter", a, "--adapter", s(&twin), "--out-dir", o], format!("{}: task `derain`", s(&twin))),
        (vec!["--adapter", a, "--adapter", b], "several tasks need --out-dir".into()),
        (vec!["--adapter", a, "--out-dir", o, "-o", "x.onnx"], "-o cannot be used with --out-dir".into()),
        (vec!["--adapter", a, "--out-dir", o, "--task", "sr2"], "--task cannot be used with --out-dir".into()),
        (vec!["--adapter", a, "--out-dir", o, "--golden", "g.safetensors"], "--golden cannot be used".into()),
        (vec!["--out-dir", o], "--out-dir needs at least one --adapter".into()),
        (vec!["--adapter", a, "--out-dir", s(&w)], "expected a folder, found a file".into()),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["export", "--backbone", s(&w)];
        args.extend_from_slice(&extra);
        let (code, _, err) = adaptir_cli(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(&needle), "`{needle}` not in {err}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}

/// The five shipped adapters of models/ipt-tiny around one weight file: every task file passes ONNX Runtime,
/// tract and OpenVINO (`validate --runtime all`), and the folder is smaller than five separate files.
#[test]
fn shipped_adapters_share_one_weight_file_and_pass_every_runtime() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/ipt-tiny");
    let mut adapters: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors") && !p.ends_with("backbone.safetensors"))
        .collect();
    adapters.sort();
    assert_eq!(adapters.len(), 5, "{adapters:?}");
    let out = dir().join("shipped");
    let mut args = vec!["export".to_string(), "--out-dir".into(), s(&out).into()];
    for a in &adapters {
        args.extend(["--adapter".to_string(), s(a).to_string()]);
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, text, err) = adaptir_cli(&argv);
    assert_eq!(code, 0, "{err}");
    eprint!("{text}");
    let mut total = std::fs::metadata(out.join(WEIGHTS_F32)).unwrap().len();
    for a in &adapters {
        let task = adaptir::peft::file::AdapterFile::load(a).unwrap().meta.task;
        let m = out.join(format!("{task}.onnx"));
        total += std::fs::metadata(&m).unwrap().len();
        let (code, text, err) =
            adaptir_cli(&["validate", s(&m), "--runtime", "all", "--threads", "1", "--latency-runs", "0", "--json"]);
        assert_eq!(code, 0, "{task}: {text}\n{err}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let rows = v["runtimes"].as_array().unwrap();
        assert_eq!(rows.len(), 3);
        for r in rows {
            assert_eq!(r["passed"], true, "{task}: {r}");
            for o in r["outputs"].as_array().unwrap() {
                assert_eq!(o["within_bound"], true, "{task} {} needed the peer check: {o}", r["runtime"]);
            }
            eprintln!("{task} {}: max_abs {}", r["runtime"], r["max_abs"]);
        }
    }
    let backbone = std::fs::metadata(root.join("backbone.safetensors")).unwrap().len();
    assert!(total < 5 * backbone, "{total} bytes for five tasks; the backbone alone is {backbone}");
}
