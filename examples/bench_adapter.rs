//! One AdaptIR adapter alone on ipt-base's activations (576 channels, 16 x 16 tokens, batch 16, IPT layout), CPU,
//! train mode: the wall time of its forward (plus the host's residual add) and of the backward of a weighted sum,
//! per iteration. A probe for the adapter's own cost in `bench_train` (BENCHMARKS.md "the training step, kernels
//! and layout"); prints timings, never asserts them.
//!
//!     cargo run --release --example bench_adapter [-- --iters 10]
use std::time::Instant;

use adaptir::peft::adaptir::{AdaptIr, AdaptIrConfig, Layout};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

fn main() -> candle_core::Result<()> {
    adaptir::device::pin_cpu_thread_count();
    adaptir::memory::keep_freed_memory_in_process();
    let iters = std::env::args().skip_while(|a| a != "--iters").nth(1).and_then(|v| v.parse().ok()).unwrap_or(10);
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let adapter =
        AdaptIr::new(VarBuilder::from_varmap(&vm, DType::F32, &dev), AdaptIrConfig::official(576, Layout::Ipt))?;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (256, 16, 576), &dev)?)?;
    let w = Tensor::randn(0f32, 1.0, (256, 16, 576), &dev)?;
    println!(
        "AdaptIR (official size for 576 channels), input (256, 16, 576), {} threads",
        candle_core::utils::get_num_threads()
    );
    for it in 0..iters {
        let t = Instant::now();
        let y = (adapter.forward_t(x.as_tensor(), true)? + x.as_tensor())?;
        let loss = (y * &w)?.sum_all()?;
        let _ = loss.to_scalar::<f32>()?;
        let forward = t.elapsed().as_secs_f64();
        drop(loss.backward()?);
        let backward = t.elapsed().as_secs_f64() - forward;
        println!("iteration {it}: forward {:.1} ms, backward {:.1} ms", forward * 1e3, backward * 1e3);
    }
    Ok(())
}
