//! Forward time of `ipt-base` (the released IPT size) with and without AdaptIR, on one 48x48 patch and on a
//! batch of 16, CPU, eval mode. Weights are randomly initialised (timing does not depend on their values).
//! Prints ratios from this one run; never a timed assertion.
//!
//!     cargo run --release --example bench_forward [-- --reps 3]
use std::time::Instant;

use adaptir::backbone::{Ipt, IptConfig};
use adaptir::peft::adaptir::AdaptIrMethod;
use adaptir::peft::{AdaptIrConfig, Layout, Method, MethodModules};
use candle_core::{DType, Device, Tensor};

fn time(model: &Ipt, batch: usize, reps: usize) -> candle_core::Result<f64> {
    let x = Tensor::rand(0f32, 1.0, (batch, 3, 48, 48), &Device::Cpu)?;
    model.forward(&x, 2, false)?; // warm-up (allocations, thread pool)
    let t = Instant::now();
    for _ in 0..reps {
        model.forward(&x, 2, false)?;
    }
    Ok(t.elapsed().as_secs_f64() / reps as f64)
}

fn main() -> candle_core::Result<()> {
    let reps = std::env::args().skip_while(|a| a != "--reps").nth(1).and_then(|v| v.parse().ok()).unwrap_or(3);
    let config = IptConfig::preset("ipt-base").map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let host = config.host_dims();
    let build = |with_adapter: bool| {
        let vm = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let modules = if with_adapter {
            AdaptIrMethod::with_sizes(AdaptIrConfig::official(host.embed, Layout::Ipt)).build(vb.clone(), &host)?
        } else {
            MethodModules::none(&host)
        };
        Ipt::fresh(&vm, &config, modules, &Device::Cpu)
    };
    let with = build(true)?;
    let without = build(false)?;
    println!(
        "ipt-base forward (task sr4, eval), CPU, {} threads, {} reps; candle {}",
        candle_core::utils::get_num_threads(),
        reps,
        "0.11"
    );
    println!("{:<10} {:>14} {:>14} {:>10} {:>14}", "batch", "backbone (s)", "+AdaptIR (s)", "ratio", "patches/s");
    for batch in [1usize, 16] {
        let a = time(&without, batch, reps)?;
        let b = time(&with, batch, reps)?;
        println!("{batch:<10} {a:>14.3} {b:>14.3} {:>10.3} {:>14.2}", b / a, batch as f64 / b);
    }
    Ok(())
}
