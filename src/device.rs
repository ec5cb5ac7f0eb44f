//! Where candle computes: `--device cpu | cuda | cuda:N` for training, evaluation, `forward` and `parity`.
//!
//! The CUDA backend exists only in a binary built with the cargo feature `cuda` (scripts/build-cuda.sh): that
//! binary needs the CUDA libraries to start at all, so CUDA is a separate build, not a run-time switch of the
//! default one. Asking for CUDA where it cannot run is an error (exit code 2) that says which is missing, the
//! feature or the GPU; there is never a silent fall back to the CPU.
//!
//! The CLI selects the device once per process ([`select`]); the library's entry points that build models read
//! it with [`current`] (the CPU unless selected). One `Device` value is kept, because candle's CUDA tensors
//! from two `Device::new_cuda` calls are on different devices and cannot be mixed.
use std::sync::Mutex;

use candle_core::Device;

use crate::error::{Error, Result};

static SELECTED: Mutex<Option<Device>> = Mutex::new(None);

/// Whether this binary was built with candle's CUDA backend (cargo feature `cuda`).
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// The device named `name`: `cpu`, `cuda` (GPU 0) or `cuda:N`. Errors (exit code 2) name what is missing.
pub fn device(name: &str) -> Result<Device> {
    let lower = name.trim().to_ascii_lowercase();
    let ordinal = match lower.as_str() {
        "cpu" => return Ok(Device::Cpu),
        "cuda" | "gpu" => 0,
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => return Err(Error::invalid(format!("--device: expected `cpu`, `cuda` or `cuda:N`, found `{name}`"))),
        },
    };
    if !CUDA_BUILT {
        return Err(Error::invalid(format!(
            "--device {name}: this adaptir binary was built without the `cuda` feature (no CUDA backend); \
             build the CUDA binary with scripts/build-cuda.sh (cargo build --release --features cuda) \
             and run that one on a machine with an NVIDIA GPU"
        )));
    }
    Device::new_cuda(ordinal).map_err(|e| {
        // candle appends a backtrace to CUDA errors: the first line says what failed.
        let e = e.to_string();
        let e = e.lines().next().unwrap_or_default().trim();
        Error::invalid(format!(
            "--device {name}: no usable NVIDIA GPU {ordinal} (the binary has the CUDA backend, but CUDA reports: \
             {e}); check `nvidia-smi` and the driver"
        ))
    })
}

/// Select the process's device (see [`current`]) and return it.
pub fn select(name: &str) -> Result<Device> {
    let d = device(name)?;
    *SELECTED.lock().map_err(|_| Error::invalid("device selection: lock poisoned"))? = Some(d.clone());
    Ok(d)
}

/// The selected device; the CPU when none was selected.
pub fn current() -> Device {
    SELECTED.lock().ok().and_then(|d| d.clone()).unwrap_or(Device::Cpu)
}

/// Fix candle's CPU thread count for the process: when `RAYON_NUM_THREADS` is unset, set it to the count candle
/// would choose anyway (its physical-core default). Why: without the variable, every multi-threaded candle op asks
/// `num_cpus` for the physical core count, which parses `/proc/cpuinfo` on each call (17,881 opens in 40 steps of one
/// ipt-base AdaptIR adapter, about 6 % of their CPU time). candle reads the variable first, so each op's thread count
/// is unchanged. rayon's global pool reads the same variable when it starts, so it is started first, with its own
/// default (the logical CPU count), and keeps its size. Call first thing in `main`, before any other thread exists.
pub fn pin_cpu_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let candle_threads = candle_core::utils::get_num_threads();
        let _pool_threads = rayon::current_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", candle_threads.to_string());
    }
}

static DENORMALS_FLUSHED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--flush-denormals` (`train`, `pretrain`): the CPU flushes f32 denormals to zero (x86 MXCSR FTZ and DAZ) in this
/// thread and in every thread of candle's CPU pool (rayon's global pool; threads started later inherit the mode).
/// Attention that underflows into denormals sends the CPU's arithmetic down a slow path: an ipt-base AdaptIR step
/// is about 1.26x faster flushed, PyTorch's 2.6x with `torch.set_flush_denormal(True)` (BENCHMARKS.md). Each
/// flushed value is below 1.2e-38. x86-64 only.
pub fn flush_denormals() -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    {
        fn set_ftz_daz() {
            let mut csr: u32 = 0;
            // SAFETY: stmxcsr / ldmxcsr read and write this thread's SSE control register; setting FTZ (bit 15) and
            // DAZ (bit 6) changes only how denormals are treated.
            unsafe {
                std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
                csr |= (1 << 15) | (1 << 6);
                std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack));
            }
        }
        set_ftz_daz();
        rayon::broadcast(|_| set_ftz_daz());
        DENORMALS_FLUSHED.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
    #[cfg(not(target_arch = "x86_64"))]
    Err(Error::invalid("--flush-denormals: implemented for x86-64 CPUs only"))
}

/// Whether [`flush_denormals`] ran in this process (recorded in training checkpoints' fingerprints).
pub fn denormals_flushed() -> bool {
    DENORMALS_FLUSHED.load(std::sync::atomic::Ordering::SeqCst)
}

/// `cpu` or `cuda:N`, for reports.
pub fn describe(d: &Device) -> String {
    match d.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Wait for the device's queued work (timings on CUDA are otherwise launch times).
pub fn synchronize(d: &Device) -> Result<()> {
    Ok(d.synchronize()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_bad_names() {
        assert!(device("cpu").unwrap().is_cpu());
        assert!(device(" CPU ").unwrap().is_cpu());
        for bad in ["tpu", "cuda:x", "cuda:-1", ""] {
            let e = device(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("expected `cpu`, `cuda` or `cuda:N`"), "{e}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_so() {
        for name in ["cuda", "cuda:1"] {
            let e = device(name).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("built without the `cuda` feature"), "{e}");
        }
    }
}
