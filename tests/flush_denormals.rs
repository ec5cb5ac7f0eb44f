//! `--flush-denormals` (`adaptir::device::flush_denormals`): after it, f32 arithmetic that would produce a denormal
//! gives zero in the calling thread, in candle's matrix product and in every thread of rayon's global pool (candle's
//! CPU pool); before it, the denormal comes out. A test binary of its own: the mode is per thread and stays set.
use std::hint::black_box;

use candle_core::{Device, Tensor};

/// A 512 x 512 product of 1e-21 entries: each output is 512 products of 1e-42, about 5.1e-40 (a denormal).
fn product() -> Vec<f32> {
    let a = Tensor::full(1e-21f32, (512, 512), &Device::Cpu).unwrap();
    a.matmul(&a).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[cfg(target_arch = "x86_64")]
#[test]
fn flush_denormals_zeroes_them_in_this_thread_candle_and_the_rayon_pool() {
    let tiny = black_box(1e-21f32);
    let before = product();
    assert!(before.iter().all(|&v| v > 0.0 && v < f32::MIN_POSITIVE), "expected denormals, found {:e}", before[0]);
    assert!(black_box(black_box(tiny) * black_box(tiny)) > 0.0);
    // This starts rayon's pool before the flush, so the check below sees threads that did not inherit it.
    let per_thread = rayon::broadcast(|_| black_box(tiny) * black_box(tiny));
    assert!(per_thread.iter().all(|&v| v > 0.0), "{per_thread:?}");
    assert!(!adaptir::device::denormals_flushed());

    adaptir::device::flush_denormals().unwrap();
    assert!(adaptir::device::denormals_flushed());
    // Compared by bits: with DAZ on, this thread would read a denormal as equal to 0.0.
    assert_eq!(black_box(black_box(tiny) * black_box(tiny)).to_bits(), 0);
    assert!(product().iter().all(|&v| v.to_bits() == 0));
    let per_thread = rayon::broadcast(|_| black_box(tiny) * black_box(tiny));
    assert_eq!(per_thread.len(), rayon::current_num_threads());
    assert!(per_thread.iter().all(|&v| v.to_bits() == 0), "{per_thread:?}");
}
