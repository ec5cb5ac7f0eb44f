//! Process-wide allocator tuning for candle's tensor traffic.
//!
//! glibc's `malloc` serves large blocks (above a threshold that adapts up to 32 MiB) with a fresh `mmap` and gives
//! them back with `munmap` on `free`. candle allocates and frees a new buffer of up to hundreds of MiB for every op,
//! so each one page-faults freshly zeroed pages from the kernel: measured on `adaptir train` (ipt-tiny, lr4-noise30,
//! batch 16, 2 threads), 35 s of a run's 60 s of CPU time were the kernel's, and the run took twice as long.
//! Keeping freed memory in the process (no `mmap` for big blocks, no trimming of the heap's top) makes the next
//! allocation of the same size reuse pages that are already mapped. Numerics are unaffected (bit-identical
//! outputs); the price is a peak RSS about 10 % higher, measured in `BENCHMARKS.md`.

/// Call once at the start of a compute-heavy program (the CLI, the benchmarks). Without effect where the C
/// library is not glibc. Returns whether the settings were accepted.
pub fn keep_freed_memory_in_process() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; it is called before any other thread exists.
        unsafe {
            let mmap = libc::mallopt(libc::M_MMAP_THRESHOLD, i32::MAX);
            let trim = libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            let pad = libc::mallopt(libc::M_TOP_PAD, 256 << 20);
            mmap == 1 && trim == 1 && pad == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
