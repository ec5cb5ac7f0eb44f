//! Training step of AdaptIR on `ipt-base` (the released IPT size) with the backbone frozen, CPU: step time,
//! peak memory and achieved GFLOP/s, against the official PyTorch code's figures from issue 4 (batch 16,
//! 48x48, 2 threads: 18.15 s per step, 8.4 GiB peak RSS, 141.0 GFLOP per sample, 53 % of a 234.8 GFLOP/s
//! peak). The backbone is randomly initialised (timing does not depend on its values) and frozen as
//! `adaptir train` freezes it: plain tensors through `Strict`, so frozen products compute only the input
//! gradient; only the method's parameters are variables. One step = forward (train mode), L1 loss, backward,
//! one AdamW update, as `adaptir train`'s loop does, minus the data synthesis (random inputs and targets in
//! [0, 1]), the held-out evaluation and the checkpoints. Prints ratios from this one run; never a timed assertion.
//!
//! Prints a per-part table (forward through the body, the adapters' share of the forward, backward, optimizer),
//! the parts' ratios to PyTorch's and the step and memory ratios. Issue 17: `--torch-json FILE` takes PyTorch's
//! figures from `scripts/official_bench.py train` (same machine, same session: scripts/official_bench.sh);
//! `--weights FILE` trains from an official-key weight file (`bench_official --write-weights`: the backbone and
//! the AdaptIR start both tools use) instead of a random backbone and a seeded adapter.
//!
//!     cargo run --release --example bench_train -- --steps 3 [--batch 16] [--task denoise30]
//!         [--torch-json torch-train.json] [--weights weights.safetensors] [--flush-denormals]
//!
//! `--flush-denormals`: as `adaptir train --flush-denormals` (FTZ / DAZ in every candle thread); compare it with
//! PyTorch's `official_bench.py train --flush-denormal`.
use std::time::Instant;

use adaptir::backbone::{Ipt, IptConfig};
use adaptir::params::{StateDict, Strict};
use adaptir::peft::MethodModules;
use adaptir::train::init::Seeded;
use adaptir::train::runner::{optimizer, trainable};
use adaptir::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

/// The official PyTorch code on issue 4's machine (issue 4, item 6), when no `--torch-json` is given.
const TORCH_STEP_S: f64 = 18.15;
const TORCH_PEAK_GIB: f64 = 8.4;
/// The reference's count of one training step's work per 48x48 sample (forward + backward), in GFLOP.
const GFLOP_PER_SAMPLE: f64 = 141.0;
const TORCH_PEAK_GFLOPS: f64 = 234.8;
const LR: f64 = 1e-4;

fn arg<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::args().skip_while(|a| a != name).nth(1) {
        Some(v) => v.parse().map_err(|_| Error::invalid(format!("{name} {v}: not a valid value"))),
        None => Ok(default),
    }
}

/// A field of `/proc/self/status` (`VmHWM`, `VmRSS`), in GiB.
fn proc_status_gib(field: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / (1024.0 * 1024.0))
}

/// A randomly initialised `ipt-base` backbone as plain tensors (no `Var`), under its official key names.
fn frozen_backbone(config: &IptConfig, dev: &Device) -> Result<StateDict> {
    let vm = VarMap::new();
    Ipt::fresh(&vm, config, MethodModules::none(&config.host_dims()), dev)?;
    let data = vm.data().lock().map_err(|_| Error::invalid("VarMap lock poisoned"))?;
    let tensors = data.iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect();
    Ok(StateDict { path: "random ipt-base".into(), tensors })
}

/// PyTorch's figures: (step, forward, backward, optimizer, forward without adapters) in seconds, peak GiB, where.
struct Torch {
    step: f64,
    parts: Option<[f64; 4]>,
    peak_gib: f64,
    source: String,
}

fn torch_figures() -> Result<Torch> {
    let Some(path) = std::env::args().skip_while(|a| a != "--torch-json").nth(1) else {
        return Ok(Torch {
            step: TORCH_STEP_S,
            parts: None,
            peak_gib: TORCH_PEAK_GIB,
            source: "issue 4's figures, batch 16, 2 threads, another machine".into(),
        });
    };
    let text = std::fs::read_to_string(&path).map_err(|e| Error::invalid(format!("--torch-json {path}: {e}")))?;
    let j: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::invalid(format!("--torch-json {path}: {e}")))?;
    let f = |p: &str| {
        j.pointer(p).and_then(serde_json::Value::as_f64).ok_or_else(|| Error::invalid(format!("{path}: no {p}")))
    };
    Ok(Torch {
        step: f("/median_s/step")?,
        parts: Some([
            f("/median_s/forward")?,
            f("/median_s/backward")?,
            f("/median_s/optimizer")?,
            f("/forward_backbone_only_s")?,
        ]),
        peak_gib: f("/peak_rss_gib")?,
        source: format!(
            "{path}: torch {}, batch {}, {} threads, this machine",
            j.pointer("/torch").and_then(|v| v.as_str()).unwrap_or("?"),
            j.pointer("/batch").and_then(|v| v.as_u64()).unwrap_or(0),
            j.pointer("/threads").and_then(|v| v.as_u64()).unwrap_or(0)
        ),
    })
}

fn main() -> Result<()> {
    // `adaptir train --flush-denormals`: before any computation, so every candle thread has it.
    let flush = std::env::args().any(|a| a == "--flush-denormals");
    if flush {
        adaptir::device::flush_denormals()?;
    }
    adaptir::device::pin_cpu_thread_count();
    adaptir::memory::keep_freed_memory_in_process();
    let steps: usize = arg("--steps", 3)?;
    let batch: usize = arg("--batch", 16)?;
    let task: String = arg("--task", "denoise30".to_string())?;
    if steps == 0 || batch == 0 {
        return Err(Error::invalid("--steps and --batch must be at least 1"));
    }
    let dev = Device::Cpu;
    let config = IptConfig::preset("ipt-base")?;
    let head = adaptir::train::head_of(&task, &config)?;
    let scale = config.scales[head];
    let (patch, out) = (config.patch_size, config.patch_size * scale);
    let host = config.host_dims();

    // The model as `adaptir train` builds it (src/train/adapt.rs), with a random backbone in place of the file.
    let method = adaptir::peft::method("adaptir", &serde_json::Value::Null, &host).map_err(Error::invalid)?;
    let torch = torch_figures()?;
    let weights = std::env::args().skip_while(|a| a != "--weights").nth(1);
    // `--weights`: the backbone's tensors of the official-key file (AdaptIR's and the buffers PyTorch keeps
    // for itself left out), the adapter's start copied into its variables below.
    let (backbone, adapter_start) = match &weights {
        None => (frozen_backbone(&config, &dev)?, None),
        Some(p) => {
            let mut sd = StateDict::load(std::path::Path::new(p))?;
            let adapter: std::collections::BTreeMap<String, Tensor> = sd
                .tensors
                .iter()
                .filter(|(k, _)| k.contains(".adaptir."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            sd.tensors.retain(|k, _| !k.contains(".adaptir."));
            (sd, Some(adapter))
        }
    };
    let strict = Strict::new(backbone.clone());
    let vm = VarMap::new();
    let modules = method.build(Seeded::var_builder(&vm, 0, &dev), &host)?;
    let model = Ipt::new(strict.var_builder(DType::F32, &dev), &config, modules)?;
    strict.finish()?;
    if let Some(start) = &adapter_start {
        let data = vm.data().lock().map_err(|_| Error::invalid("VarMap lock poisoned"))?;
        let mut set = 0;
        for (k, var) in data.iter() {
            if let Some(t) = start.get(k) {
                var.set(&t.to_dtype(var.dtype())?)?;
                set += 1;
            }
        }
        println!(
            "--weights {}: backbone and {set} of {} adapter variables from the file",
            weights.as_deref().unwrap_or(""),
            data.len()
        );
    }
    // The same backbone without adapters, for the body's share of the forward (timed after the steps).
    let bare = Ipt::new(Strict::new(backbone).var_builder(DType::F32, &dev), &config, MethodModules::none(&host))?;
    let vars = trainable(&vm, &|k: &str| !k.starts_with("sub_mean") && !k.starts_with("add_mean"))?;
    let n_trainable: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let mut opt = optimizer(vars, None)?;
    let built_gib = proc_status_gib("VmHWM");

    println!(
        "AdaptIR training step on ipt-base (backbone frozen, {}), CPU, {} candle threads; task {task} \
         (x{scale}), batch {batch}, {patch}x{patch} -> {out}x{out}{}",
        if weights.is_some() { "weights from --weights" } else { "random" },
        candle_core::utils::get_num_threads(),
        if flush { "; denormals flushed to zero (--flush-denormals)" } else { "" }
    );
    println!(
        "method {} ({}): {n_trainable} trainable parameters; L1 loss, AdamW lr {LR} wd {}",
        method.name(),
        match method.config() {
            serde_json::Value::Object(m) if m.is_empty() => "default config".to_string(),
            c => c.to_string(),
        },
        opt.config.weight_decay
    );
    println!(
        "one step = forward (train mode) + L1 loss + backward + one AdamW update, as `adaptir train`; \
         excluded: data synthesis (random inputs / targets in [0, 1]), held-out evaluation, checkpoints"
    );
    if let Some(g) = built_gib {
        println!("peak RSS after building the model: {g:.2} GiB");
    }

    // Per step: forward + L1 loss, backward, optimizer.
    let mut parts: Vec<[f64; 3]> = vec![];
    // The backward's share per fused node kind (frozen linear, attention, LayerNorm, ...), summed over the timed
    // steps; the rest of the backward is candle's own autograd (residual adds, ReLU, the adapters' ops).
    let mut nodes: Vec<(&'static str, usize, f64)> = vec![];
    for step in 0..=steps {
        if step == 1 {
            adaptir_ops::fused::backward_timer::enable();
        }
        let x = Tensor::rand(0f32, 1.0, (batch, 3, patch, patch), &dev)?;
        let y = Tensor::rand(0f32, 1.0, (batch, 3, out, out), &dev)?;
        let t = Instant::now();
        let loss = (model.forward(&x, head, true)? - y)?.abs()?.mean_all()?;
        let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let t_fwd = t.elapsed().as_secs_f64();
        let grads = loss.backward()?;
        let t_bwd = t.elapsed().as_secs_f64();
        opt.step(&grads, LR)?;
        drop(grads);
        let s = t.elapsed().as_secs_f64();
        let p = [t_fwd, t_bwd - t_fwd, s - t_bwd];
        let detail = format!("forward {:.2}, backward {:.2}, optimizer {:.3}; loss {l:.4}", p[0], p[1], p[2]);
        if step == 0 {
            println!("warm-up step: {s:.2} s ({detail}, untimed)");
        } else {
            println!("step {step}: {s:.2} s ({detail})");
            parts.push(p);
        }
    }
    nodes.extend(adaptir_ops::fused::backward_timer::take());
    let median_of = |f: &dyn Fn(&[f64; 3]) -> f64| {
        let mut v: Vec<f64> = parts.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let median = median_of(&|p| p.iter().sum());
    let [fwd, bwd, optim] = [median_of(&|p| p[0]), median_of(&|p| p[1]), median_of(&|p| p[2])];
    let peak = proc_status_gib("VmHWM");
    // The body's forward alone (train mode, no variables: nothing is kept for a backward), after the peak was read.
    let x = Tensor::rand(0f32, 1.0, (batch, 3, patch, patch), &dev)?;
    let mut bare_fwd = f64::INFINITY;
    for _ in 0..2 {
        let t = Instant::now();
        let y = bare.forward(&x, head, true)?.mean_all()?.to_scalar::<f32>()?;
        std::hint::black_box(y);
        bare_fwd = bare_fwd.min(t.elapsed().as_secs_f64());
    }
    let gflops = GFLOP_PER_SAMPLE * batch as f64 / median;

    println!();
    println!("median step time: {median:.2} s over {steps} steps ({:.2} patches/s)", batch as f64 / median);
    match peak {
        Some(p) => println!("peak RSS (VmHWM): {p:.2} GiB"),
        None => println!("peak RSS: unavailable (no /proc/self/status)"),
    }
    println!(
        "achieved: {gflops:.1} GFLOP/s ({:.0} % of the issue's {TORCH_PEAK_GFLOPS} GFLOP/s peak), counting the \
         reference's {GFLOP_PER_SAMPLE} GFLOP per sample (PyTorch's own count, not ours)",
        100.0 * gflops / TORCH_PEAK_GFLOPS
    );
    println!("PyTorch: {} ({:.2} s per step, {:.2} GiB)", torch.source, torch.step, torch.peak_gib);
    if batch != 16 {
        println!("note: batch {batch} is not the reference's 16, so the ratios below compare unlike runs");
    }
    // Medians of each part (they need not add up to the median step exactly).
    let tp = torch.parts;
    let row = |what: &str, ours: f64, theirs: Option<f64>| match theirs {
        Some(t) => println!("| {what} | {ours:.3} | {t:.3} | {:.3} |", ours / t),
        None => println!("| {what} | {ours:.3} | - | - |"),
    };
    println!("\n| part (medians over the timed steps) | ours (s) | PyTorch (s) | ours / PyTorch |");
    println!("|---|---|---|---|");
    row("forward through the body (without adapters, timed apart)", bare_fwd, tp.map(|p| p[3]));
    row("forward: the adapters' share (with - without)", fwd - bare_fwd, tp.map(|p| p[0] - p[3]));
    row("forward + L1 loss, with adapters", fwd, tp.map(|p| p[0]));
    row("backward (frozen body's input gradients + adapters)", bwd, tp.map(|p| p[1]));
    row("optimizer (AdamW over the adapters)", optim, tp.map(|p| p[2]));
    row("step", median, Some(torch.step));
    let per_step = |t: f64| t / parts.len() as f64;
    println!("\n| backward, by node (mean per timed step) | calls | ours (s) | share of the backward |");
    println!("|---|---|---|---|");
    let mean_bwd = per_step(parts.iter().map(|p| p[1]).sum());
    for (name, calls, t) in &nodes {
        println!("| {name} | {} | {:.3} | {:.3} |", calls / parts.len(), per_step(*t), per_step(*t) / mean_bwd);
    }
    let fused: f64 = nodes.iter().map(|n| per_step(n.2)).sum();
    println!(
        "| candle's autograd (everything else) | - | {:.3} | {:.3} |",
        mean_bwd - fused,
        (mean_bwd - fused) / mean_bwd
    );
    println!("\nstep time / PyTorch's: {:.3} (at most 1 required)", median / torch.step);
    if let Some(p) = peak {
        println!("peak RSS / PyTorch's: {:.3} (at most 1 required)", p / torch.peak_gib);
    }
    Ok(())
}
