//! The runtime matrix's CPU latency on the same default (portable) file, from one run: ONNX Runtime, OpenVINO
//! (f32 hint) and tract, each with the same intra-op thread count, timed round-robin (one run of each per round,
//! so drift of the machine hits all three) on ipt-base + AdaptIR at batch 1 (random weights, adapter perturbed)
//! and ipt-tiny + the shipped derain adapter at batch 2. Prints medians and the ratios to ONNX Runtime, and each
//! runtime's max abs difference from ONNX Runtime's output.
//!
//!     cargo run --release --example bench_runtimes [-- --threads 2 --rounds 7]
mod common;

use std::path::Path;
use std::time::Instant;

use adaptir::backbone::Ipt;
use adaptir::compile::lower::lower;
use adaptir::compile::onnx::to_bytes;
use adaptir::compile::passes::optimize;
use adaptir::compile::target::Target;
use adaptir::peft::file::AdapterFile;
use adaptir::runtime::engine::{Engine, Runtime};
use adaptir::runtime::RunOptions;
use adaptir_ops::graph::FftLowering;
use candle_core::{DType, Device, Tensor};
use common::{arg, random_ipt_with_adaptir};

fn bench(name: &str, model: &Ipt, task: usize, batch: usize, threads: usize, rounds: usize) -> adaptir::Result<()> {
    let mut g = lower(model, task, Target::Portable.lower_options(FftLowering::MatMul))?;
    optimize(&mut g)?;
    let path = std::env::temp_dir().join(format!("adaptir-bench-runtimes-{}-{name}.onnx", std::process::id()));
    adaptir::fsutil::write_atomic(&path, &to_bytes(&g, "bench")?)?;
    let p = model.config.patch_size;
    let x = Tensor::rand(0f32, 1.0, (batch, 3, p, p), &Device::Cpu)?;
    let shapes = [("input".to_string(), x.dims().to_vec())];
    let opts = RunOptions { threads: Some(threads), ..Default::default() };
    let mut engines = Vec::new();
    for rt in Runtime::ALL {
        engines.push(Engine::open(rt, &path, &shapes, &opts)?);
    }
    let mut outs = Vec::new();
    for e in engines.iter_mut() {
        outs.push(e.run(&[("input", x.clone())])?.remove(0).1); // warm-up
    }
    let mut ms = vec![Vec::new(); engines.len()];
    for _ in 0..rounds {
        for (k, e) in engines.iter_mut().enumerate() {
            let t = Instant::now();
            e.run(&[("input", x.clone())])?;
            ms[k].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let med: Vec<f64> = ms
        .iter_mut()
        .map(|v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect();
    println!("{name}, batch {batch} ({} nodes in the file):", g.nodes.len());
    for (k, e) in engines.iter().enumerate() {
        let d = (outs[k].to_dtype(DType::F64)? - outs[0].to_dtype(DType::F64)?)?.abs()?.flatten_all()?.max(0)?;
        println!(
            "  {:<9} {:>10.1} ms  x{:.2} of ONNX Runtime  max |diff from ORT| {:.1e}  ({})",
            e.runtime().as_str(),
            med[k],
            med[k] / med[0],
            d.to_scalar::<f64>()?,
            e.placement()
        );
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

fn main() -> adaptir::Result<()> {
    let (threads, rounds) = (arg("--threads", 2), arg("--rounds", 7));
    println!("CPU, {threads} threads each, medians of {rounds} round-robin rounds (after one warm-up run each)");
    let adapter = AdapterFile::load(Path::new("models/ipt-tiny/derain.safetensors"))?;
    let tiny = adaptir::model::build_model(
        Path::new("models/ipt-tiny/backbone.safetensors"),
        adapter.ipt_config("bench_runtimes")?,
        Some(&adapter),
        DType::F32,
        &Device::Cpu,
    )?;
    let task = adaptir::backbone::config::task_index(&adapter.meta.task).unwrap_or(3);
    bench("ipt-tiny + derain", &tiny, task, 2, threads, rounds * 5)?;
    bench("ipt-base + AdaptIR (random)", &random_ipt_with_adaptir("ipt-base")?, 3, 1, threads, rounds)?;
    Ok(())
}
