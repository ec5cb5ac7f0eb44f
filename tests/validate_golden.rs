//! Golden CI (run by `.ci/run` through `cargo test`): every shipped adapter (`models/<backbone>/*.safetensors`
//! that is an adapter file) and the small fixture adapter in `fixtures/golden/micro/` is exported again and
//! `adaptir validate`d against its stored golden file `fixtures/golden/<backbone folder>/<stem>.golden.safetensors`
//! (ONNX Runtime vs the stored candle outputs) and against the candle model as it computes today. A change in
//! numerics (lowering, passes, ops, the candle model) fails here; so does a shipped adapter without a golden file.
//! Each shipped adapter's default export is also validated on patches of real degraded photos, whose spectra
//! seeded inputs do not resemble.
//!
//! Golden files are written only by the explicit command
//! `cargo test --release --test validate_golden -- --ignored regenerate_golden_files`
//! (which also creates the micro fixture's backbone and adapter if they are missing).
mod common;

use std::path::{Path, PathBuf};

use common::*;

const REGENERATE: &str = "cargo test --release --test validate_golden -- --ignored regenerate_golden_files";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Case {
    backbone: PathBuf,
    adapter: PathBuf,
    golden: PathBuf,
}

/// The fixture adapter plus every shipped adapter, with where its golden file lives.
fn cases() -> Vec<Case> {
    let golden_dir = root().join("fixtures/golden");
    let micro = golden_dir.join("micro");
    let mut v = vec![Case {
        backbone: micro.join("backbone.safetensors"),
        adapter: micro.join("derain.safetensors"),
        golden: micro.join("derain.golden.safetensors"),
    }];
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("models"))
        .map(|r| r.flatten().map(|e| e.path()).filter(|p| p.join("backbone.safetensors").is_file()).collect())
        .unwrap_or_default();
    dirs.sort();
    for d in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&d).unwrap().flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".safetensors") || name.ends_with(".ckpt.safetensors") || name == "backbone.safetensors"
            {
                continue;
            }
            if !adaptir::peft::file::is_adapter_file(&f).unwrap_or(false) {
                continue;
            }
            let stem = name.trim_end_matches(".safetensors");
            v.push(Case {
                backbone: d.join("backbone.safetensors"),
                golden: golden_dir.join(d.file_name().unwrap()).join(format!("{stem}.golden.safetensors")),
                adapter: f,
            });
        }
    }
    v
}

fn tmp() -> PathBuf {
    let d = std::env::temp_dir().join(format!("adaptir-golden-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn shipped_adapters_still_match_their_golden_outputs() {
    let mut failures = Vec::new();
    for c in cases() {
        let stem = c.adapter.file_stem().unwrap().to_string_lossy().into_owned();
        if !c.golden.is_file() {
            failures.push(format!(
                "{}: no golden file {}; create it with `{REGENERATE}`",
                c.adapter.display(),
                c.golden.display()
            ));
            continue;
        }
        let model = tmp().join(format!("{stem}.onnx"));
        let (code, _, err) =
            adaptir_cli(&["export", "--adapter", s(&c.adapter), "--backbone", s(&c.backbone), "-o", s(&model)]);
        assert_eq!(code, 0, "export {}: {err}", c.adapter.display());
        for (what, extra) in [
            ("stored golden", vec!["--golden", s(&c.golden)]),
            ("candle today", vec!["--backbone", s(&c.backbone), "--adapter", s(&c.adapter)]),
        ] {
            let mut args = vec!["validate", s(&model), "--json"];
            args.extend(extra);
            let (code, text, err) = adaptir_cli(&args);
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            eprintln!(
                "{} vs {what}: exit {code}, max_abs {}, psnr {} dB",
                c.adapter.display(),
                v["outputs"][0]["max_abs"],
                v["outputs"][0]["psnr_db"]
            );
            if code != 0 {
                failures.push(format!("{} vs {what}: exit {code}\n{text}{err}", c.adapter.display()));
            }
        }
    }
    assert!(failures.is_empty(), "golden check failed:\n{}", failures.join("\n"));
}

/// A folder `name` holding two clean fixture photos, to degrade into real-image inputs for `validate --images`.
fn real_photos(name: &str) -> PathBuf {
    let clean = tmp().join(name);
    std::fs::create_dir_all(&clean).unwrap();
    for f in ["images/jpeg/chelsea_256.png", "images/metrics/coffee_clean.png"] {
        std::fs::copy(fixture(f), clean.join(Path::new(f).file_name().unwrap())).unwrap();
    }
    clean
}

/// Seeded patches have a flat spectrum; real images do not, and the two can disagree. Measured 2026-12-07 on the
/// patches below, files with f32 spectral products (the portable default until then): derain 8.3e-7 and
/// lr4-noise30 5.5e-7 passed, but lowlight 1.3e-3, lr4-jpeg30 4.7e-5, realnoise 6.0e-5 and the EDT lr2-noise30
/// 5.1e-5 missed the model (bound about 1e-5), although all passed on seeded patches (docs/compiler.md "Real
/// images and the spectral products"). With f64 spectral products, the portable default since then, every
/// shipped adapter matches: this test holds every shipped adapter's default export to that, on patches of two
/// fixture photos degraded for its task (`realnoise`, whose inputs are real noisy photos, gets synthetic noise as
/// the nearest stand-in), in ONNX Runtime against the candle model.
#[test]
fn shipped_adapters_match_candle_on_real_image_patches() {
    let clean = real_photos("real-clean");
    let mut failures = Vec::new();
    for c in cases().into_iter().skip(1) {
        let file = adaptir::peft::file::AdapterFile::load(&c.adapter).unwrap();
        let degrade = match file.meta.task.as_str() {
            "derain" => "rain-light",
            "realnoise" => "noise15",
            t => t,
        }
        .to_string();
        let stem = c.adapter.file_stem().unwrap().to_string_lossy().into_owned();
        let inputs = tmp().join(format!("real-{stem}"));
        let (code, _, err) = adaptir_cli(&["degrade", "--task", &degrade, "-o", s(&inputs), s(&clean)]);
        assert_eq!(code, 0, "degrade --task {degrade}: {err}");
        let model = tmp().join(format!("{stem}-real.onnx"));
        let (code, _, err) = adaptir_cli(&["export", "--adapter", s(&c.adapter), "-o", s(&model)]);
        assert_eq!(code, 0, "export {}: {err}", c.adapter.display());
        let (code, text, err) = adaptir_cli(&["validate", s(&model), "--images", s(&inputs), "--json"]);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        eprintln!("{} on real patches: exit {code}, max_abs {}", c.adapter.display(), v["outputs"][0]["max_abs"]);
        if code != 0 {
            failures.push(format!("{} on real patches: exit {code}\n{text}{err}", c.adapter.display()));
        }
    }
    assert!(failures.is_empty(), "real-patch check failed:\n{}", failures.join("\n"));
}

/// The f32 spectral form (`--target tensorrt`; TensorRT has no f64) runs its products on each plane less its
/// mean. Uncentered, the shipped lowlight adapter's f32 file missed the model by 1.3e-3 on real patches (a dark
/// image's planes are mostly their mean); centered it matches (3.3e-6). lr4-jpeg30, realnoise and the EDT adapter
/// still miss in f32 (docs/compiler.md "Real images and the spectral products"), so they are not held here.
#[test]
fn the_lowlight_tensorrt_file_matches_candle_on_real_image_patches() {
    let clean = real_photos("real-clean-trt");
    let inputs = tmp().join("real-lowlight-trt");
    let (code, _, err) = adaptir_cli(&["degrade", "--task", "lowlight", "-o", s(&inputs), s(&clean)]);
    assert_eq!(code, 0, "{err}");
    let model = tmp().join("lowlight-tensorrt.onnx");
    let adapter = "models/ipt-tiny/lowlight.safetensors";
    let (code, _, err) = adaptir_cli(&["export", "--adapter", adapter, "--target", "tensorrt", "-o", s(&model)]);
    assert_eq!(code, 0, "{err}");
    let (code, text, err) = adaptir_cli(&["validate", s(&model), "--images", s(&inputs), "--json"]);
    assert_eq!(code, 0, "{text}{err}");
}

#[test]
fn a_numerics_change_fails_the_golden_check() {
    // The stored golden output moved by twice the f32 bound at one element: validate must exit 1.
    use candle_core::{DType, Device, Tensor};
    let c = &cases()[0];
    let model = tmp().join("micro-numerics.onnx");
    let (code, _, err) =
        adaptir_cli(&["export", "--adapter", s(&c.adapter), "--backbone", s(&c.backbone), "-o", s(&model)]);
    assert_eq!(code, 0, "{err}");
    let g = candle_core::safetensors::load(&c.golden, &Device::Cpu).unwrap();
    let y = &g["output"];
    let scale = y.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    let bound = adaptir::runtime::Tolerance::F32.absolute_bound(scale as f64);
    let mut bump = vec![0f32; y.elem_count()];
    bump[y.elem_count() / 2] = (2.0 * bound) as f32;
    let moved = (y + Tensor::from_vec(bump, y.dims(), &Device::Cpu).unwrap()).unwrap().to_dtype(DType::F32).unwrap();
    let changed = tmp().join("micro-moved.golden.safetensors");
    candle_core::safetensors::save(
        &[("input".to_string(), g["input"].clone()), ("output".to_string(), moved)].into(),
        &changed,
    )
    .unwrap();
    let (code, text, err) = adaptir_cli(&["validate", s(&model), "--golden", s(&changed)]);
    assert_eq!(code, 1, "{text}\n{err}");
}

/// The micro fixture: a 6-feature IPT with 4 task heads (sr2, sr3, sr4, derain) and an AdaptIR derain adapter
/// (hidden 8) whose weights are perturbed away from their zero init, so every expert contributes.
fn make_micro(backbone: &Path, adapter: &Path) {
    use adaptir::backbone::{Ipt, IptConfig};
    use adaptir::peft::file::{method_tensors, sha256_file, AdapterFile, AdapterMeta};
    use candle_core::{DType, Device, Tensor};
    let mut config = IptConfig::new(6, 2, 1);
    config.num_tasks = 4;
    config.scales = vec![2, 3, 4, 1];
    let vm = candle_nn::VarMap::new();
    Ipt::fresh(&vm, &config, adaptir::peft::MethodModules::none(&config.host_dims()), &Device::Cpu).unwrap();
    let tensors: std::collections::HashMap<String, Tensor> =
        vm.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect();
    candle_core::safetensors::save(&tensors, backbone).unwrap();
    std::fs::write(backbone.with_file_name("config.json"), serde_json::to_string(&config).unwrap()).unwrap();

    let host = config.host_dims();
    let m = adaptir::peft::method("adaptir", &serde_json::json!({"hidden": 8}), &host).unwrap();
    let vm = candle_nn::VarMap::new();
    let modules = m.build(candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), &host).unwrap();
    for var in vm.all_vars().into_iter().filter(|v| v.dtype().is_float()) {
        var.set(&(var.as_tensor() + var.as_tensor().randn_like(0.0, 0.05).unwrap()).unwrap()).unwrap();
    }
    let meta = AdapterMeta {
        method: "adaptir".into(),
        method_config: m.config(),
        task: "derain".into(),
        backbone: "micro".into(),
        backbone_sha256: sha256_file(backbone).unwrap(),
        backbone_config: config.into(),
        training: serde_json::json!({"steps": 0, "note": "random weights for the golden CI fixture"}),
    };
    AdapterFile::save(adapter, &meta, &method_tensors(&vm, modules.buffers().unwrap()).unwrap()).unwrap();
}

#[test]
#[ignore = "writes fixtures/golden/: run explicitly to regenerate the golden files"]
fn regenerate_golden_files() {
    for c in cases() {
        if !c.adapter.is_file() {
            std::fs::create_dir_all(c.adapter.parent().unwrap()).unwrap();
            make_micro(&c.backbone, &c.adapter);
        }
        std::fs::create_dir_all(c.golden.parent().unwrap()).unwrap();
        let model = tmp().join("regenerate.onnx");
        let (code, text, err) = adaptir_cli(&[
            "export",
            "--adapter",
            s(&c.adapter),
            "--backbone",
            s(&c.backbone),
            "-o",
            s(&model),
            "--golden",
            s(&c.golden),
        ]);
        assert_eq!(code, 0, "{err}");
        eprintln!("{}: {}", c.golden.display(), text.lines().next().unwrap_or(""));
    }
}
