//! The adapter file: save, load, apply through `adaptir forward --adapter`, inspect, deterministic bytes,
//! and every way loading can go wrong (exit code 2, a message that says what differs).
mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use adaptir::backbone::{Ipt, IptConfig};
use adaptir::peft::file::{method_tensors, sha256_file, AdapterFile, AdapterMeta};
use adaptir::peft::{method, MethodModules};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::max_abs_diff;

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("adaptir-adapter-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config() -> IptConfig {
    IptConfig::new(24, 4, 1)
}

/// A small random backbone written to disk, with its config JSON.
fn backbone_files() -> (PathBuf, PathBuf) {
    static ONCE: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    ONCE.get_or_init(make_backbone_files).clone()
}

fn make_backbone_files() -> (PathBuf, PathBuf) {
    let (w, c) = (dir().join("backbone.safetensors"), dir().join("backbone.json"));
    {
        let vm = VarMap::new();
        Ipt::fresh(&vm, &config(), MethodModules::none(&config().host_dims()), &Device::Cpu).unwrap();
        let tensors: HashMap<String, Tensor> =
            vm.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect();
        let tmp = dir().join("backbone.tmp");
        candle_core::safetensors::save(&tensors, &tmp).unwrap();
        std::fs::rename(&tmp, &w).unwrap();
        std::fs::write(&c, serde_json::to_string(&config()).unwrap()).unwrap();
    }
    (w, c)
}

/// A perturbed method's tensors and the metadata of its adapter file.
fn adapter(name: &str, backbone: &Path) -> (BTreeMap<String, Tensor>, AdapterMeta) {
    let host = config().host_dims();
    let m = method(name, &serde_json::Value::Null, &host).unwrap();
    let vm = VarMap::new();
    let modules = m.build(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), &host).unwrap();
    for var in vm.all_vars().into_iter().filter(|v| v.dtype().is_float()) {
        var.set(&(var.as_tensor() + var.as_tensor().randn_like(0.0, 0.05).unwrap()).unwrap()).unwrap();
    }
    let meta = AdapterMeta {
        method: name.into(),
        method_config: m.config(),
        task: "denoise30".into(),
        backbone: "test-backbone".into(),
        backbone_sha256: sha256_file(backbone).unwrap(),
        backbone_config: config().into(),
        training: serde_json::json!({"steps": 0, "note": "perturbed for a test"}),
    };
    (method_tensors(&vm, modules.buffers().unwrap()).unwrap(), meta)
}

fn adaptir_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_adaptir")).args(args).output().unwrap();
    let (o, e) = (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
    assert!(!e.contains("panicked"), "{e}");
    (out.status.code().unwrap_or(-1), o, e)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Run forward with the adapter on a fixed input; returns (exit code, stderr, output path).
fn forward_with(adapter: &Path, backbone: &Path) -> (i32, String, PathBuf) {
    let input = dir().join("x.safetensors");
    if !input.exists() {
        let x = Tensor::rand(0f32, 1.0, (1, 3, 48, 48), &Device::Cpu).unwrap();
        candle_core::safetensors::save(&HashMap::from([("x".to_string(), x)]), &input).unwrap();
    }
    let out = dir().join(format!("y-{}.safetensors", adapter.file_stem().unwrap().to_string_lossy()));
    let (code, _, err) = adaptir_cli(&[
        "forward",
        "--checkpoint",
        s(backbone),
        "--adapter",
        s(adapter),
        "--input",
        s(&input),
        "-o",
        s(&out),
    ]);
    (code, err, out)
}

#[test]
fn save_load_apply_and_inspect() {
    let (w, _) = backbone_files();
    for name in ["adaptir", "lora", "vpt"] {
        let (tensors, meta) = adapter(name, &w);
        let path = dir().join(format!("{name}.safetensors"));
        AdapterFile::save(&path, &meta, &tensors).unwrap();
        // Deterministic bytes.
        let again = dir().join(format!("{name}-again.safetensors"));
        AdapterFile::save(&again, &meta, &tensors).unwrap();
        assert_eq!(sha256_file(&path).unwrap(), sha256_file(&again).unwrap(), "{name}");

        let file = AdapterFile::load(&path).unwrap();
        assert_eq!(file.meta, meta);
        // Applied through the CLI == applied in process.
        let (code, err, out) = forward_with(&path, &w);
        assert_eq!(code, 0, "{err}");
        let y_cli = candle_core::safetensors::load(&out, &Device::Cpu).unwrap().remove("output").unwrap();
        let sd = adaptir::params::StateDict::load(&w).unwrap();
        let strict = adaptir::params::Strict::new(sd);
        let model = Ipt::new(
            strict.var_builder(DType::F32, &Device::Cpu),
            &config(),
            file.modules(DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
        let x = candle_core::safetensors::load(dir().join("x.safetensors"), &Device::Cpu).unwrap().remove("x").unwrap();
        let y = model.forward(&x, 4, false).unwrap(); // denoise30
        assert_eq!(max_abs_diff(&y, &y_cli), 0.0, "{name}");

        let (code, text, err) = adaptir_cli(&["inspect", s(&path)]);
        assert_eq!(code, 0, "{err}");
        for needle in [format!("method:     {name}"), "task:       denoise30".into(), meta.backbone_sha256.clone()] {
            assert!(text.contains(&needle), "{needle} not in {text}");
        }
    }
}

fn expect_error(path: &Path, backbone: &Path, needles: &[&str]) {
    let (code, err, out) = forward_with(path, backbone);
    assert_eq!(code, 2, "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
    assert!(!out.exists(), "output written despite the error");
}

#[test]
fn loading_onto_the_wrong_backbone_or_with_wrong_tensors_fails_clearly() {
    let (w, _) = backbone_files();
    let (tensors, meta) = adapter("lora", &w);

    // Another backbone: one weight changed.
    let mut other: HashMap<String, Tensor> = candle_core::safetensors::load(&w, &Device::Cpu).unwrap();
    let t = other["tail.1.1.bias"].clone();
    other.insert("tail.1.1.bias".into(), (t + 1.0).unwrap());
    let other_path = dir().join("other-backbone.safetensors");
    candle_core::safetensors::save(&other, &other_path).unwrap();
    let good = dir().join("good.safetensors");
    AdapterFile::save(&good, &meta, &tensors).unwrap();
    expect_error(
        &good,
        &other_path,
        &["good.safetensors", "trained on backbone `test-backbone`", &meta.backbone_sha256],
    );

    let variant = |name: &str, f: &dyn Fn(&mut BTreeMap<String, Tensor>)| {
        let mut t = tensors.clone();
        f(&mut t);
        let p = dir().join(name);
        AdapterFile::save(&p, &meta, &t).unwrap();
        p
    };
    let missing = variant("missing.safetensors", &|t| {
        t.remove("body.encoder.layers.0.self_attn.q.lora_A");
    });
    expect_error(&missing, &w, &["missing.safetensors", "missing (1)", "body.encoder.layers.0.self_attn.q.lora_A"]);
    let extra = variant("extra.safetensors", &|t| {
        t.insert(
            "body.encoder.layers.0.self_attn.k.lora_A".into(),
            Tensor::zeros((12, 216), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    expect_error(&extra, &w, &["extra.safetensors", "unexpected (1)", "self_attn.k.lora_A"]);
    let shape = variant("shape.safetensors", &|t| {
        t.insert(
            "body.decoder.layers.0.multihead_attn.v.lora_B".into(),
            Tensor::zeros((216, 4), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    expect_error(&shape, &w, &["shape.safetensors", "wrong shape (1)", "expected [216, 12], found [216, 4]"]);

    // Metadata: unknown method, newer format version.
    let raw = |name: &str, key: &str, value: &str| {
        let path = dir().join(name);
        let good_bytes = std::fs::read(&good).unwrap();
        let st = safetensors::SafeTensors::deserialize(&good_bytes).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&good_bytes).unwrap();
        let mut m = header.metadata().clone().unwrap();
        m.insert(key.into(), value.into());
        let views: Vec<(String, safetensors::tensor::TensorView)> = st.tensors();
        safetensors::tensor::serialize_to_file(views, Some(m), &path).unwrap();
        path
    };
    let unknown = raw("unknown.safetensors", "method", "dora");
    expect_error(&unknown, &w, &["unknown.safetensors", "unknown method `dora`"]);
    let backbone_format = raw("backbone-format.safetensors", "format", "adaptir-backbone");
    expect_error(
        &backbone_format,
        &w,
        &["backbone-format.safetensors", "format `adaptir-backbone` (a backbone file: pass it as --backbone)"],
    );
    let newer = raw("newer.safetensors", "format_version", "2");
    expect_error(&newer, &w, &["newer.safetensors", "format version 2 is newer than this adaptir reads (up to 1)"]);
    let (code, _, err) = adaptir_cli(&["inspect", s(&newer)]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = adaptir_cli(&["inspect", s(&unknown)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown method `dora`"), "{err}");
}
