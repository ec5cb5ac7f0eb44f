//! Shared helpers of the `train_*` tests: a tiny random backbone file and small synthetic photo folders.
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use adaptir::backbone::{Ipt, IptConfig};
use adaptir::data::{save_png, BitDepth, Image};
use adaptir::peft::MethodModules;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;

/// A fresh folder for one test.
pub fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("adaptir-train-tests-{}", std::process::id())).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// E = 216 (AdaptIR's official widths >= 1), one encoder and one decoder layer, the six official heads.
pub fn tiny_config() -> IptConfig {
    IptConfig::new(24, 4, 1)
}

/// A randomly initialised backbone written as `pretrain` writes one (config in the metadata).
pub fn backbone(path: &Path) -> IptConfig {
    let config = tiny_config();
    let vm = VarMap::new();
    Ipt::fresh(&vm, &config, MethodModules::none(&config.host_dims()), &Device::Cpu).unwrap();
    let t: BTreeMap<String, Tensor> =
        vm.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect();
    adaptir::train::save_backbone(path, &t, &config, &serde_json::json!({"test": true})).unwrap();
    config
}

/// A smooth colourful image with some texture, different per `k`.
pub fn photo(w: usize, h: usize, k: usize) -> Image {
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
                let v = 0.5
                    + 0.3 * ((fx * (3.0 + k as f32) + c as f32) * 2.1).sin() * ((fy * (2.0 + c as f32)) * 1.7).cos()
                    + 0.1 * (((x * 7 + y * 13 + k * 31 + c * 5) % 17) as f32 / 17.0 - 0.5);
                data.push(v.clamp(0.0, 1.0));
            }
        }
    }
    Image::new(w, h, 3, data).unwrap().quantized_u8()
}

/// `n` photos of `w` x `h` in `dir`.
pub fn photos(dir: &Path, n: usize, w: usize, h: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for k in 0..n {
        save_png(dir.join(format!("img{k}.png")), &photo(w, h, k), BitDepth::Eight).unwrap();
    }
    dir.to_path_buf()
}

/// Run the CLI: (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_adaptir")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `adaptir train` of AdaptIR for denoise30 on `data`, batch 1: the arguments the resume tests vary.
pub fn train_args<'a>(backbone: &'a Path, data: &'a Path, out: &'a Path, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--method",
        "adaptir",
        "--task",
        "denoise30",
        "--backbone",
        s(backbone),
        "--data",
        s(data),
        "--steps",
        steps,
        "--batch",
        "1",
        "--out",
        s(out),
    ]
}
