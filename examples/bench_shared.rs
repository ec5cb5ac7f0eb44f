//! One backbone file for many tasks (`export --out-dir`) against separate files, measured in one run:
//!
//! 1. bytes on disk: the task files and the shared weight file against one self-contained file per task;
//! 2. ONNX Runtime load time (`Session::new` on the path) of a task file against its standalone file, and the
//!    one-off sha256 check of the weight file that every loader makes before the first load in a process;
//! 3. ONNX Runtime latency (batch 1) of the two loaded sessions.
//!
//! Times are medians of interleaved pairs, ratios shared / standalone per pair. Cases: the five shipped adapters of
//! models/ipt-tiny; ipt-base (random weights, written to a temporary folder) with two perturbed AdaptIR adapters.
//!
//!     cargo run --release --example bench_shared [-- --threads 2 --pairs 9 --base-pairs 5 --skip-base 0]
// Only `arg` is used here (the random model comes with its files, written below).
#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use adaptir::backbone::{Ipt, IptConfig};
use adaptir::compile::export::{export, ExportArgs};
use adaptir::compile::shared::{export_shared, SharedArgs};
use adaptir::peft::file::{method_tensors, sha256_file, AdapterFile, AdapterMeta};
use adaptir::peft::{method, MethodModules};
use adaptir::runtime::{RunOptions, Session};
use adaptir_ops::graph::FftLowering;
use candle_core::{DType, Device, Tensor};
use common::arg;

fn base_args(backbone: Option<&Path>) -> ExportArgs<'_> {
    ExportArgs {
        adapter: None,
        backbone,
        config: None,
        task: None,
        output: None,
        fft: FftLowering::MatMul,
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

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Interleaved pairs of `a` (standalone) and `b` (shared): medians of a, b and of the per-pair ratio b / a, with
/// the ratio's quartiles.
fn pairs(
    n: usize,
    a: &mut dyn FnMut() -> adaptir::Result<()>,
    b: &mut dyn FnMut() -> adaptir::Result<()>,
) -> adaptir::Result<(f64, f64, [f64; 3])> {
    let time = |f: &mut dyn FnMut() -> adaptir::Result<()>| -> adaptir::Result<f64> {
        let t = Instant::now();
        f()?;
        Ok(t.elapsed().as_secs_f64())
    };
    time(a)?;
    time(b)?;
    let (mut ta, mut tb, mut r) = (vec![], vec![], vec![]);
    for i in 0..n {
        let (x, y) = if i % 2 == 0 {
            (time(a)?, time(b)?)
        } else {
            let y = time(b)?;
            (time(a)?, y)
        };
        ta.push(x);
        tb.push(y);
        r.push(y / x);
    }
    let m = median(&mut r);
    Ok((median(&mut ta), median(&mut tb), [r[r.len() / 4], m, r[3 * r.len() / 4]]))
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Export `adapters` both ways into `dir`, print the bytes, and time load and latency on the first adapter.
fn case(
    name: &str,
    backbone: Option<&Path>,
    adapters: &[PathBuf],
    dir: &Path,
    run: &RunOptions,
    n: usize,
) -> adaptir::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| adaptir::Error::file(dir, e.to_string()))?;
    let shared_dir = dir.join("shared");
    let t = Instant::now();
    let report = export_shared(&SharedArgs { adapters, out_dir: &shared_dir, base: base_args(backbone) })?;
    let shared_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut standalone = Vec::new();
    for a in adapters {
        let out = dir.join(format!("{}.onnx", AdapterFile::load(a)?.meta.task));
        export(&ExportArgs { adapter: Some(a), output: Some(&out), ..base_args(backbone) })?;
        standalone.push(out);
    }
    let separate_s = t.elapsed().as_secs_f64();
    let separate: u64 = standalone.iter().map(|p| size(p)).sum();
    let total = size(&report.weights) + report.tasks.iter().map(|t| size(&t.path)).sum::<u64>();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "{name}, {} tasks: shared {:.2} MiB (weights {:.2} MiB + task files {:.2} MiB) vs separate {:.2} MiB: {:.3}x; \
         export {shared_s:.1} s vs {separate_s:.1} s",
        adapters.len(),
        mib(total),
        mib(report.weights_bytes),
        mib(total - report.weights_bytes),
        mib(separate),
        total as f64 / separate as f64
    );
    for t in &report.tasks {
        println!(
            "  {}: {:.1} KiB ({} shared tensors, {} inline, {} copied) vs standalone {:.2} MiB",
            t.task,
            t.bytes as f64 / 1024.0,
            t.external,
            t.inline,
            t.replaced.len(),
            mib(size(&standalone[report.tasks.iter().position(|x| x.task == t.task).unwrap_or(0)]))
        );
    }

    // The one-off check every loader makes (once per process and file; later loads only compare size and mtime).
    let t = Instant::now();
    let sha = adaptir::compile::onnx::external::sha256_streamed(&report.weights)
        .map_err(|e| adaptir::Error::file(&report.weights, e.to_string()))?;
    let check_s = t.elapsed().as_secs_f64();
    if sha != report.weights_sha256 {
        return Err(adaptir::Error::file(&report.weights, "sha256 differs from the export's record"));
    }
    println!("  sha256 check of the weight file: {:.1} ms (once per process)", check_s * 1e3);

    let (task_file, single) = (&report.tasks[0].path, &standalone[0]);
    // Load time: a session on each path, dropped at once.
    let (a, b, r) =
        pairs(n, &mut || Session::new(single, run).map(drop), &mut || Session::new(task_file, run).map(drop))?;
    println!(
        "  ORT load ({}): standalone {:.1} ms, shared {:.1} ms, ratio shared/standalone {:.3} (quartiles {:.3} - {:.3})",
        report.tasks[0].task,
        a * 1e3,
        b * 1e3,
        r[1],
        r[0],
        r[2]
    );
    let mut s1 = Session::new(single, run)?;
    let mut s2 = Session::new(task_file, run)?;
    let x = Tensor::rand(0f32, 1.0, (1, 3, 48, 48), &Device::Cpu)?;
    let (a, b, r) = pairs(n * 3, &mut || s1.run(&[("input", x.clone())]).map(drop), &mut || {
        s2.run(&[("input", x.clone())]).map(drop)
    })?;
    println!(
        "  ORT latency, batch 1: standalone {:.2} ms, shared {:.2} ms, ratio {:.3} (quartiles {:.3} - {:.3})",
        a * 1e3,
        b * 1e3,
        r[1],
        r[0],
        r[2]
    );
    Ok(())
}

/// A random ipt-base backbone file and two perturbed AdaptIR adapters for it, written into `dir`.
fn ipt_base_files(dir: &Path) -> adaptir::Result<(PathBuf, Vec<PathBuf>)> {
    let config = IptConfig::preset("ipt-base")?;
    let host = config.host_dims();
    let vm = candle_nn::VarMap::new();
    Ipt::fresh(&vm, &config, MethodModules::none(&host), &Device::Cpu)?;
    let tensors: std::collections::HashMap<String, Tensor> = vm
        .data()
        .lock()
        .map(|d| d.iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect())
        .unwrap_or_default();
    let backbone = dir.join("backbone.safetensors");
    candle_core::safetensors::save(&tensors, &backbone)?;
    let sha = sha256_file(&backbone)?;
    let mut adapters = Vec::new();
    for task in ["derain", "sr4"] {
        let m = method("adaptir", &serde_json::Value::Null, &host).map_err(adaptir::Error::invalid)?;
        let mvm = candle_nn::VarMap::new();
        let modules = m.build(candle_nn::VarBuilder::from_varmap(&mvm, DType::F32, &Device::Cpu), &host)?;
        for var in mvm.all_vars().into_iter().filter(|v| v.dtype().is_float()) {
            var.set(&(var.as_tensor() + var.as_tensor().randn_like(0.0, 0.05)?)?)?;
        }
        let meta = AdapterMeta {
            method: "adaptir".into(),
            method_config: m.config(),
            task: task.into(),
            backbone: "ipt-base-random".into(),
            backbone_sha256: sha.clone(),
            backbone_config: config.clone().into(),
            training: serde_json::json!({"steps": 0, "note": "perturbed for bench_shared"}),
        };
        let path = dir.join(format!("{task}.safetensors"));
        AdapterFile::save(&path, &meta, &method_tensors(&mvm, modules.buffers()?)?)?;
        adapters.push(path);
    }
    Ok((backbone, adapters))
}

fn main() -> adaptir::Result<()> {
    let (threads, n, base_n) = (arg("--threads", 2), arg("--pairs", 9), arg("--base-pairs", 5));
    let run = RunOptions { threads: Some(threads), ..Default::default() };
    println!("ONNX Runtime CPU EP, {threads} intra-op threads; medians of interleaved pairs, ratios per pair");
    let root = std::env::temp_dir().join(format!("adaptir-bench-shared-{}", std::process::id()));

    let tiny = root.join("tiny");
    std::fs::create_dir_all(&tiny).map_err(|e| adaptir::Error::file(&tiny, e.to_string()))?;
    let shipped: Vec<PathBuf> = ["derain", "lowlight", "lr4-jpeg30", "lr4-noise30", "realnoise"]
        .iter()
        .map(|t| PathBuf::from(format!("models/ipt-tiny/{t}.safetensors")))
        .collect();
    case("ipt-tiny, the shipped adapters", None, &shipped, &tiny, &run, n)?;

    if arg("--skip-base", 0) == 0 {
        let base = root.join("base");
        std::fs::create_dir_all(&base).map_err(|e| adaptir::Error::file(&base, e.to_string()))?;
        let (backbone, adapters) = ipt_base_files(&base)?;
        case("ipt-base (random) + 2 AdaptIR adapters", Some(&backbone), &adapters, &base.join("out"), &run, base_n)?;
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
