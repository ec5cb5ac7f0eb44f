//! candle's f32 product on the CPU at ipt-base's linear-map shapes (tokens x batch = 4096 rows; 576 and 2048
//! features), `x @ w^T` as the frozen linear maps run it: best of 8, in GFLOP/s. The GEMM itself is the `gemm`
//! crate's; compare with PyTorch on the same machine (BENCHMARKS.md "the training step, kernels and layout"):
//!
//!     cargo run --release --example bench_gemm
//!     python -c "import torch,time; torch.set_num_threads(2)
//!     for m,k,n in [(4096,576,2048),(4096,2048,576),(4096,576,576)]:
//!         a,w=torch.randn(m,k),torch.randn(n,k); b=1e9
//!         for _ in range(8): t=time.perf_counter(); torch.nn.functional.linear(a,w); b=min(b,time.perf_counter()-t)
//!         print(m,k,n,round(2*m*k*n/b/1e9,1),'GFLOP/s')"
use std::time::Instant;

use candle_core::{Device, Tensor};

fn main() -> candle_core::Result<()> {
    adaptir::device::pin_cpu_thread_count();
    adaptir::memory::keep_freed_memory_in_process();
    println!("candle f32 matmul, CPU, {} threads", candle_core::utils::get_num_threads());
    for (m, k, n) in [(4096usize, 576usize, 2048usize), (4096, 2048, 576), (4096, 576, 576)] {
        let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
        let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu)?;
        let mut best = f64::INFINITY;
        for _ in 0..8 {
            let t = Instant::now();
            std::hint::black_box(x.matmul(&w.t()?)?);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{m} x {k} @ {k} x {n}: {:.1} ms, {:.1} GFLOP/s", best * 1e3, 2.0 * (m * k * n) as f64 / best / 1e9);
    }
    Ok(())
}
