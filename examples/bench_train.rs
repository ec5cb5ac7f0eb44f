//! Training step of AdaptIR on `ipt-base` (the released IPT size) with the backbone frozen, CPU: step time,
//! peak memory and achieved GFLOP/s, against the official PyTorch code's figures from issue 4 (batch 16,
//! 48x48, 2 threads: 18.15 s per step, 8.4 GiB peak RSS, 141.0 GFLOP per sample, 53 % of a 234.8 GFLOP/s
//! peak). The backbone is randomly initialised (timing does not depend on its values) and frozen as
//! `adaptir train` freezes it: plain tensors through `Strict`, so frozen products compute only the input
//! gradient; only the method's parameters are variables. One step = forward (train mode), L1 loss, backward,
//! one AdamW update, as `adaptir train`'s loop does, minus the data synthesis (random inputs and targets in
//! [0, 1]), the held-out evaluation and the checkpoints. Prints ratios from this one run; never a timed assertion.
//!
//!     cargo run --release --example bench_train -- --steps 3 [--batch 16] [--task denoise30]
use std::time::Instant;

use adaptir::backbone::{Ipt, IptConfig};
use adaptir::params::{StateDict, Strict};
use adaptir::peft::MethodModules;
use adaptir::train::init::Seeded;
use adaptir::train::runner::{optimizer, trainable};
use adaptir::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

/// The official PyTorch code on the machine (issue 4, item 6).
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

fn main() -> Result<()> {
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
    let strict = Strict::new(frozen_backbone(&config, &dev)?);
    let vm = VarMap::new();
    let modules = method.build(Seeded::var_builder(&vm, 0, &dev), &host)?;
    let model = Ipt::new(strict.var_builder(DType::F32, &dev), &config, modules)?;
    strict.finish()?;
    let vars = trainable(&vm, &|k: &str| !k.starts_with("sub_mean") && !k.starts_with("add_mean"))?;
    let n_trainable: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let mut opt = optimizer(vars, None)?;
    let built_gib = proc_status_gib("VmHWM");

    println!(
        "AdaptIR training step on ipt-base (backbone frozen, random), CPU, {} candle threads; task {task} \
         (x{scale}), batch {batch}, {patch}x{patch} -> {out}x{out}",
        candle_core::utils::get_num_threads()
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

    let mut times = vec![];
    for step in 0..=steps {
        let x = Tensor::rand(0f32, 1.0, (batch, 3, patch, patch), &dev)?;
        let y = Tensor::rand(0f32, 1.0, (batch, 3, out, out), &dev)?;
        let t = Instant::now();
        let loss = (model.forward(&x, head, true)? - y)?.abs()?.mean_all()?;
        let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let grads = loss.backward()?;
        opt.step(&grads, LR)?;
        drop(grads);
        let s = t.elapsed().as_secs_f64();
        if step == 0 {
            println!("warm-up step: {s:.2} s (loss {l:.4}, untimed)");
        } else {
            println!("step {step}: {s:.2} s (loss {l:.4})");
            times.push(s);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    let peak = proc_status_gib("VmHWM");
    let gflops = GFLOP_PER_SAMPLE * batch as f64 / median;
    let torch_gflops = GFLOP_PER_SAMPLE * 16.0 / TORCH_STEP_S;

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
    println!(
        "vs PyTorch (batch 16, 2 threads, another machine): {TORCH_STEP_S} s per step, {TORCH_PEAK_GIB} GiB, \
         {torch_gflops:.1} GFLOP/s"
    );
    if batch != 16 {
        println!("note: batch {batch} is not the reference's 16, so the ratios below compare unlike runs");
    }
    println!("step time / PyTorch's: {:.3} (at most 1 required)", median / TORCH_STEP_S);
    if let Some(p) = peak {
        println!("peak RSS / PyTorch's: {:.3} (at most 1 required)", p / TORCH_PEAK_GIB);
    }
    Ok(())
}
