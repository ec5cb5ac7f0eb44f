//! ONNX Runtime CPU latency of ipt-base exports, in one run: with and without AdaptIR (overhead ratio),
//! `--fft matmul` vs `--fft dft`, and ONNX Runtime vs the candle forward on the same model, with achieved GFLOP/s
//! (69.805 GFLOP per 48x48 patch for ipt-base + AdaptIR, as given in issue 5). Weights are random (timing does not
//! depend on them); AdaptIR's are perturbed so that no branch is trivially zero.
//!
//!     cargo run --release --example bench_export [-- --threads 2 --reps 3]
//!     ... -- --pairs 20             the adapter overhead alone, from 20 interleaved pairs of runs
//!     ... -- --profile PREFIX [--batch 16]   ONNX Runtime's per-node profiles, summed by part of the adapter
use std::time::Instant;

use adaptir::backbone::{Ipt, IptConfig};
use adaptir::compile::lower::{lower, LowerOptions};
use adaptir::compile::onnx::to_bytes;
use adaptir::compile::passes::optimize;
use adaptir::params::{StateDict, Strict};
use adaptir::peft::{method, MethodModules};
use adaptir::runtime::{RunOptions, Session};
use adaptir_ops::graph::FftLowering;
use candle_core::{DType, Device, Tensor};

const GFLOP_PER_PATCH: f64 = 69.805;

fn arg(name: &str, default: usize) -> usize {
    std::env::args().skip_while(|a| a != name).nth(1).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> adaptir::Result<()> {
    let (threads, reps) = (arg("--threads", 2), arg("--reps", 3));
    let config = IptConfig::preset("ipt-base")?;
    let host = config.host_dims();
    let vm = candle_nn::VarMap::new();
    Ipt::fresh(&vm, &config, MethodModules::none(&host), &Device::Cpu)?;
    let tensors = |vm: &candle_nn::VarMap| StateDict {
        path: "random".into(),
        tensors: vm
            .data()
            .lock()
            .map(|d| d.iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect())
            .unwrap_or_default(),
    };
    let sd = tensors(&vm);
    let m = method("adaptir", &serde_json::Value::Null, &host).map_err(adaptir::Error::invalid)?;
    let mvm = candle_nn::VarMap::new();
    m.build(candle_nn::VarBuilder::from_varmap(&mvm, DType::F32, &Device::Cpu), &host)?;
    for var in mvm.all_vars().into_iter().filter(|v| v.dtype().is_float()) {
        var.set(&(var.as_tensor() + var.as_tensor().randn_like(0.0, 0.05)?)?)?;
    }
    let msd = tensors(&mvm);
    let with = Ipt::new(
        Strict::new(sd.clone()).var_builder(DType::F32, &Device::Cpu),
        &config,
        m.build(Strict::new(msd).var_builder(DType::F32, &Device::Cpu), &host)?,
    )?;
    let without = Ipt::new(Strict::new(sd).var_builder(DType::F32, &Device::Cpu), &config, MethodModules::none(&host))?;
    let opts = RunOptions { threads: Some(threads), ..Default::default() };
    // The optimised export in memory, with its node count, and a session on it.
    let onnx = |model: &Ipt, fft: FftLowering| -> adaptir::Result<(Vec<u8>, usize)> {
        let mut g = lower(model, 3, LowerOptions { fft, inline_functions: false, ..Default::default() })?;
        optimize(&mut g)?;
        Ok((to_bytes(&g, "bench")?, g.nodes.len()))
    };
    let session_with = |model: &Ipt, fft: FftLowering, opts: &RunOptions| -> adaptir::Result<(Session, usize)> {
        let (bytes, nodes) = onnx(model, fft)?;
        Ok((Session::from_memory(&bytes, std::path::Path::new("bench.onnx"), opts)?, nodes))
    };
    let session = |model: &Ipt, fft: FftLowering| session_with(model, fft, &opts);
    let time_ort = |s: &mut Session, x: &Tensor| -> adaptir::Result<f64> {
        s.run(&[("input", x.clone())])?;
        let t = Instant::now();
        for _ in 0..reps {
            s.run(&[("input", x.clone())])?;
        }
        Ok(t.elapsed().as_secs_f64() / reps as f64)
    };
    let time_candle = |model: &Ipt, x: &Tensor| -> adaptir::Result<f64> {
        model.forward(x, 3, false)?;
        let t = Instant::now();
        for _ in 0..reps {
            model.forward(x, 3, false)?;
        }
        Ok(t.elapsed().as_secs_f64() / reps as f64)
    };
    // `--profile PREFIX [--batch N]`: ONNX Runtime's per-node profiles of both models instead of the table.
    if let Some(prefix) = std::env::args().skip_while(|a| a != "--profile").nth(1) {
        let batch = arg("--batch", 16);
        let x = Tensor::rand(0f32, 1.0, (batch, 3, 48, 48), &Device::Cpu)?;
        for (model, tag) in [(&without, "backbone"), (&with, "adaptir")] {
            let popts = RunOptions { profile: Some(format!("{prefix}-{tag}-b{batch}").into()), ..opts.clone() };
            let (mut s, _) = session_with(model, FftLowering::MatMul, &popts)?;
            for _ in 0..reps + 1 {
                s.run(&[("input", x.clone())])?;
            }
            let file = s.end_profiling()?;
            println!("{tag}, batch {batch}: {}", file.display());
            println!("{}", adaptir::runtime::profile::render(&adaptir::runtime::profile::summarize(&file)?.0));
        }
        return Ok(());
    }
    // `--pairs N`: the adapter overhead from N interleaved pairs of runs (backbone, adapter; order alternating),
    // so that drift of the machine hits both: median and quartiles of the per-pair ratios.
    if let Some(pairs) = std::env::args().skip_while(|a| a != "--pairs").nth(1).and_then(|v| v.parse::<usize>().ok()) {
        let (mut s_with, _) = session(&with, FftLowering::MatMul)?;
        let (mut s_without, _) = session(&without, FftLowering::MatMul)?;
        println!("adapter overhead from {pairs} interleaved pairs, ORT CPU EP, {threads} intra-op threads");
        println!(
            "{:<6} {:>14} {:>14} {:>10} {:>10} {:>10}",
            "batch", "bb median (s)", "+A median (s)", "q1", "median", "q3"
        );
        for batch in [1usize, 16] {
            let x = Tensor::rand(0f32, 1.0, (batch, 3, 48, 48), &Device::Cpu)?;
            let once = |s: &mut Session| -> adaptir::Result<f64> {
                let t = Instant::now();
                s.run(&[("input", x.clone())])?;
                Ok(t.elapsed().as_secs_f64())
            };
            once(&mut s_without)?;
            once(&mut s_with)?;
            let (mut a, mut b, mut r) = (vec![], vec![], vec![]);
            for i in 0..pairs {
                let (ta, tb) = if i % 2 == 0 {
                    let ta = once(&mut s_without)?;
                    (ta, once(&mut s_with)?)
                } else {
                    let tb = once(&mut s_with)?;
                    (once(&mut s_without)?, tb)
                };
                a.push(ta);
                b.push(tb);
                r.push(tb / ta);
            }
            let q = |v: &mut Vec<f64>, f: f64| {
                v.sort_by(f64::total_cmp);
                v[((v.len() - 1) as f64 * f).round() as usize]
            };
            println!(
                "{batch:<6} {:>14.4} {:>14.4} {:>10.4} {:>10.4} {:>10.4}",
                q(&mut a, 0.5),
                q(&mut b, 0.5),
                q(&mut r, 0.25),
                q(&mut r, 0.5),
                q(&mut r, 0.75)
            );
        }
        return Ok(());
    }
    let (mut s_with, n_with) = session(&with, FftLowering::MatMul)?;
    let (mut s_without, n_without) = session(&without, FftLowering::MatMul)?;
    let (mut s_dft, _) = session(&with, FftLowering::Dft)?;
    println!(
        "ipt-base + AdaptIR, task derain, 48x48, ONNX Runtime CPU EP with {threads} intra-op threads, candle with {} threads, {reps} reps",
        candle_core::utils::get_num_threads()
    );
    println!("graph nodes: {n_with} with AdaptIR, {n_without} without (after passes)");
    println!(
        "{:<6} {:>12} {:>12} {:>9} {:>12} {:>10} {:>12} {:>9}",
        "batch", "ORT bb (s)", "ORT +A (s)", "overhead", "ORT dft (s)", "dft/mm", "candle (s)", "GFLOP/s"
    );
    for batch in [1usize, 16] {
        let x = Tensor::rand(0f32, 1.0, (batch, 3, 48, 48), &Device::Cpu)?;
        let a = time_ort(&mut s_without, &x)?;
        let b = time_ort(&mut s_with, &x)?;
        let d = time_ort(&mut s_dft, &x)?;
        let c = time_candle(&with, &x)?;
        println!(
            "{batch:<6} {a:>12.3} {b:>12.3} {:>9.3} {d:>12.3} {:>10.3} {c:>12.3} {:>9.1}",
            b / a,
            d / b,
            GFLOP_PER_PATCH * batch as f64 / b
        );
    }
    Ok(())
}
