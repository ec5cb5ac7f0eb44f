//! Softmax over the last dim of a contiguous f32 CPU tensor, with an exp the compiler vectorises.
//!
//! candle's fused softmax calls the C library's scalar `expf` per element, which took 9 % of an ipt-base training
//! step (the 36 attentions' (16, 12, 256, 256) weights, computed twice with the recomputing backward). Here `exp`
//! is Cephes' `expf` (range reduction by ln 2 in two parts, degree-6 polynomial; about 1 ulp on [-87.3, 88.7]) in
//! straight-line code over SSE2 operations only, so the loop vectorises on the baseline x86-64 target; inputs
//! below -87.3 (where f32 `exp` is subnormal or zero) give exactly 0. Rows are spread over rayon's threads.
//! `ops/tests/ops_grad.rs` checks it against f64 softmax.
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};
use rayon::prelude::*;

/// `exp(x)` for `x <= 0` (softmax subtracts the row maximum first); ~1 ulp, exactly 0 below -87.3, NaN for NaN.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4; // ln 2 split in two for an exact first subtraction (Cephes)
    const C2: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer
    let nan = x.is_nan();
    let underflow = x < -87.336_55;
    let x = if underflow { -87.336_55 } else { x }; // (not f32::max: its NaN rule blocks vectorising)
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * C1 - n * C2;
    let z = r * r;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 5.000_000_1e-1;
    let y = p * z + r + 1.0;
    // 2^n by building the exponent bits (n is in [-126, 0] here).
    // SAFETY: n is an integer in [-126, 0], so the unchecked conversion is exact.
    let scale = f32::from_bits(((unsafe { n.to_int_unchecked::<i32>() } + 127) as u32) << 23);
    if nan {
        f32::NAN
    } else if underflow {
        0.0
    } else {
        y * scale
    }
}

/// Row maximum and sum over 8 independent lanes, so that both loops vectorise (a single running max or sum is
/// a serial dependency the compiler may not reorder).
const LANES: usize = 8;

#[inline(always)]
fn row_max(v: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let chunks = v.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            m[i] = if c[i] > m[i] { c[i] } else { m[i] };
        }
    }
    rest.iter().chain(&m).fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a })
}

#[inline(always)]
fn row_sum(v: &[f32]) -> f32 {
    let mut s = [0f32; LANES];
    let chunks = v.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            s[i] += c[i];
        }
    }
    s.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

#[inline(always)]
fn softmax_row_body(src: &[f32], dst: &mut [f32]) {
    let max = row_max(src);
    if max == f32::NEG_INFINITY {
        // An all -inf (or all NaN) row has no softmax: NaN, as candle and torch.
        dst.fill(f32::NAN);
        return;
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = exp_nonpositive(s - max);
    }
    let inv = 1.0 / row_sum(dst);
    for d in dst.iter_mut() {
        *d *= inv;
    }
}

/// The same code compiled for AVX2 (8-wide) and AVX-512 (16-wide); no FMA contraction happens without `mul_add`,
/// and the sums keep their 8 lanes, so every version gives identical bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn softmax_row_avx2(src: &[f32], dst: &mut [f32]) {
    softmax_row_body(src, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_row_avx512(src: &[f32], dst: &mut [f32]) {
    softmax_row_body(src, dst)
}

pub(crate) fn softmax_row(src: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { softmax_row_avx512(src, dst) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { softmax_row_avx2(src, dst) };
    }
    softmax_row_body(src, dst)
}

/// One row of the softmax backward in place: `g <- p * (g - sum(g * p))`, from the row's weights `p` and output
/// gradient `g` (the composed form's `y * (g - sum_keepdim(g * y))`, with the sum over 8 lanes).
#[inline(always)]
fn softmax_backward_row_body(p: &[f32], g: &mut [f32]) {
    let mut s = [0f32; LANES];
    let (gc, pc) = (g.chunks_exact(LANES), p.chunks_exact(LANES));
    let rest: f32 = gc.remainder().iter().zip(pc.remainder()).map(|(a, b)| a * b).sum();
    for (a, b) in gc.zip(pc) {
        for i in 0..LANES {
            s[i] += a[i] * b[i];
        }
    }
    let dot = s.iter().sum::<f32>() + rest;
    for (x, &y) in g.iter_mut().zip(p) {
        *x = y * (*x - dot);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn softmax_backward_row_avx2(p: &[f32], g: &mut [f32]) {
    softmax_backward_row_body(p, g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_backward_row_avx512(p: &[f32], g: &mut [f32]) {
    softmax_backward_row_body(p, g)
}

pub(crate) fn softmax_backward_row(p: &[f32], g: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { softmax_backward_row_avx512(p, g) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { softmax_backward_row_avx2(p, g) };
    }
    softmax_backward_row_body(p, g)
}

struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "softmax-last-dim-f32"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(v), Some((start, end))) = (storage, layout.contiguous_offsets()) else {
            candle_core::bail!("softmax: a contiguous f32 tensor expected");
        };
        let n = layout.shape().dims().last().copied().unwrap_or(1).max(1);
        let src = &v[start..end];
        let mut dst = vec![0f32; src.len()];
        dst.par_chunks_mut(n).zip(src.par_chunks(n)).for_each(|(d, s)| softmax_row(s, d));
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// Softmax over the last dim (no gradient); `None` unless `x` is an f32 CPU tensor.
pub(crate) fn softmax_last_dim_f32_cpu(x: &candle_core::Tensor) -> Option<Result<candle_core::Tensor>> {
    (x.device().is_cpu() && x.dtype() == candle_core::DType::F32)
        .then(|| x.contiguous().and_then(|x| x.apply_op1_no_bwd(&SoftmaxLastDim)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of several lengths (a remainder past the 8 lanes included) over the whole f32 exp range.
    fn rows() -> Vec<Vec<f32>> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        [1usize, 7, 8, 17, 64, 255, 256]
            .into_iter()
            .flat_map(|n| [4.0f32, 40.0, 120.0].map(|spread| (0..n).map(|_| (next() - 0.5) * spread).collect()))
            .collect()
    }

    /// What the comments promise: the AVX2 and AVX-512 builds of both rows give the portable build's bits, so a result
    /// does not depend on which of them the CPU picks. A version the CPU lacks is skipped.
    #[test]
    fn every_build_gives_the_same_bits() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for src in rows() {
            let mut want = vec![0f32; src.len()];
            softmax_row_body(&src, &mut want);
            let mut grad: Vec<f32> = src.iter().map(|x| x.sin()).collect();
            softmax_backward_row_body(&want, &mut grad);
            let mut got = vec![0f32; src.len()];
            softmax_row(&src, &mut got);
            assert_eq!(bits(&got), bits(&want), "softmax row of {}", src.len());
            let mut got_grad: Vec<f32> = src.iter().map(|x| x.sin()).collect();
            softmax_backward_row(&want, &mut got_grad);
            assert_eq!(bits(&got_grad), bits(&grad), "softmax backward row of {}", src.len());
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                unsafe { softmax_row_avx2(&src, &mut got) };
                assert_eq!(bits(&got), bits(&want), "AVX2 softmax row of {}", src.len());
            }
        }
    }
}
