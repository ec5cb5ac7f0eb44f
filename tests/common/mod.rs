#![allow(dead_code)]
use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel)
}

pub fn load(rel: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(rel), &Device::Cpu).unwrap()
}

pub fn max_abs(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(DType::F64).unwrap();
    let b = b.to_dtype(DType::F64).unwrap();
    max_abs(&(a - b).unwrap())
}

/// |a - b| element-wise, f64.
pub fn abs_diff(a: &Tensor, b: &Tensor) -> Tensor {
    (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap()).unwrap().abs().unwrap()
}

/// A small random IPT backbone (all six official tasks) on disk, with its config JSON beside it, made once
/// per test process in `dir`.
pub fn small_backbone_files(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    backbone_files(dir, &adaptir::backbone::IptConfig::new(24, 4, 1))
}

/// A backbone of `config` with seeded random weights (seed 0) and its config.json, written into `dir`.
pub fn backbone_files(dir: &std::path::Path, config: &adaptir::backbone::IptConfig) -> (PathBuf, PathBuf) {
    let (w, c) = (dir.join("backbone.safetensors"), dir.join("config.json"));
    let vm = candle_nn::VarMap::new();
    // Seeded, so that every machine checks the same draw: a deep random model's f32 rounding is a statistic of
    // the draw, and one unseeded ipt-base draw put ONNX Runtime 3.8x candle's f32 distance from f64 (2026-12-07, AMD
    // EPYC with AVX-512); seed 0's ipt-base: ORT 4.8e-4, candle f32 4.5e-4 from f64 (1.07x) on that machine.
    adaptir::train::init::seeded_ipt(&vm, config, 0, &Device::Cpu).unwrap();
    let tensors: HashMap<String, Tensor> =
        vm.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect();
    let tmp = dir.join("backbone.tmp");
    candle_core::safetensors::save(&tensors, &tmp).unwrap();
    std::fs::rename(&tmp, &w).unwrap();
    std::fs::write(&c, serde_json::to_string(config).unwrap()).unwrap();
    (w, c)
}

/// A perturbed adapter of `method` for the backbone at `backbone`, written as an adapter file at `path`.
pub fn write_adapter(method_name: &str, task: &str, backbone: &std::path::Path, path: &std::path::Path) {
    use adaptir::peft::file::{method_tensors, sha256_file, AdapterFile, AdapterMeta};
    let config = adaptir::backbone::IptConfig::new(24, 4, 1);
    let host = config.host_dims();
    let m = adaptir::peft::method(method_name, &serde_json::Value::Null, &host).unwrap();
    let vm = candle_nn::VarMap::new();
    let modules = m.build(candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), &host).unwrap();
    for var in vm.all_vars().into_iter().filter(|v| v.dtype().is_float()) {
        var.set(&(var.as_tensor() + var.as_tensor().randn_like(0.0, 0.05).unwrap()).unwrap()).unwrap();
    }
    let meta = AdapterMeta {
        method: method_name.into(),
        method_config: m.config(),
        task: task.into(),
        backbone: "test-backbone".into(),
        backbone_sha256: sha256_file(backbone).unwrap(),
        backbone_config: config.into(),
        training: serde_json::json!({"steps": 0, "note": "perturbed for a test"}),
    };
    AdapterFile::save(path, &meta, &method_tensors(&vm, modules.buffers().unwrap()).unwrap()).unwrap();
}

/// Run the `adaptir` binary: (exit code, stdout, stderr); fails the test on a panic.
pub fn adaptir_cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_adaptir")).args(args).output().unwrap();
    let (o, e) = (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
    assert!(!e.contains("panicked"), "{e}");
    (out.status.code().unwrap_or(-1), o, e)
}

/// One channel of an `adaptir_fft_edges` case, as its config.json describes it.
pub struct FftEdgesChannel {
    pub sample: usize,
    pub channel: usize,
    pub pattern: String,
    /// The fixture's verdict: a clean implementation reproduces torch here (else torch's pocketfft rounding shows).
    pub portable: bool,
    /// Max |torch - the clean convention| on this channel, as the fixture recorded it.
    pub torch_vs_clean: f64,
}

/// The frequency-branch cases of `adaptir_fft_edges`: (weights file, width, layout, case name).
pub const FFT_EDGES_CASES: [(&str, usize, adaptir::peft::Layout, &str); 2] = [
    ("weights.safetensors", 192, adaptir::peft::Layout::Ipt, "ipt_x0_injected_n2"),
    ("weights_edt.safetensors", 180, adaptir::peft::Layout::Edt, "edt_x0_injected_h24w48_n1"),
];

/// The channels of an `adaptir_fft_edges` case.
pub fn fft_edges_channels(case: &str) -> Vec<FftEdgesChannel> {
    let text = std::fs::read_to_string(fixture("parity/adaptir_fft_edges/config.json")).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    let case = cfg["cases"].as_array().unwrap().iter().find(|c| c["name"] == case).unwrap();
    case["portability_vs_clean_convention"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| FftEdgesChannel {
            sample: c["sample"].as_u64().unwrap() as usize,
            channel: c["channel"].as_u64().unwrap() as usize,
            pattern: c["pattern"].as_str().unwrap().to_string(),
            portable: c["portable"].as_bool().unwrap(),
            torch_vs_clean: c["max_abs_diff_global_torch_f32_vs_clean_convention_f64"].as_f64().unwrap(),
        })
        .collect()
}

/// The official AdaptIR of an `adaptir_fft_edges` weights file, strictly loaded.
pub fn fft_edges_adapter(weights: &str, dim: usize, layout: adaptir::peft::Layout) -> adaptir::peft::AdaptIr {
    use adaptir::params::{StateDict, Strict};
    let sd = StateDict::load(&fixture(&format!("parity/adaptir_fft_edges/{weights}"))).unwrap();
    let strict = Strict::new(sd);
    let m = adaptir::peft::AdaptIr::new(
        strict.var_builder(DType::F32, &Device::Cpu),
        adaptir::peft::AdaptIrConfig::official(dim, layout),
    )
    .unwrap();
    strict.finish().unwrap();
    m
}

/// A seeded EDT of `config` written with official keys, every weight perturbed (so that zero-initialised parts act
/// too); with `adaptir`, AdaptIR's official EDT modules in every block.
///
/// Seeded (initialisation and perturbation, by variable name): the same file on every machine and every run, so
/// a numerical test on it is a fixed check rather than a draw.
pub fn write_random_edt(config: &adaptir::backbone::EdtConfig, path: &std::path::Path, adaptir: bool) {
    use adaptir::backbone::Edt;
    use adaptir::train::init::{init_tensor, Seeded};
    const SEED: u64 = 19;
    let vm = candle_nn::VarMap::new();
    let vb = Seeded::var_builder(&vm, SEED, &Device::Cpu);
    let hooks = if adaptir {
        let sizes = adaptir::peft::AdaptIrConfig::official(config.embed_dim, adaptir::peft::Layout::Edt);
        adaptir::model::edt::adaptir_hooks(&vb, config, sizes).unwrap()
    } else {
        Edt::no_hooks(config)
    };
    Edt::new(vb, config, hooks).unwrap();
    let perturb = candle_nn::Init::Randn { mean: 0.0, stdev: 0.05 };
    for (name, var) in vm.data().lock().unwrap().iter() {
        if var.dtype().is_float() {
            let seed = adaptir::data::seed::stem_seed(SEED + 1, name);
            let noise = init_tensor(var.shape(), perturb, DType::F32, &Device::Cpu, seed).unwrap();
            var.set(&(var.as_tensor() + noise).unwrap()).unwrap();
        }
    }
    vm.save(path).unwrap();
}
