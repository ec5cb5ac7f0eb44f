//! Products of f32 CPU tensors with a frozen matrix, written into a fresh buffer that is not zeroed first: a linear
//! map's value (`x @ w^T + b`, the bias added in place) and a sum of input gradients (`g_1 @ w_1 + g_2 @ w_2 + ...`,
//! each term accumulated by the product itself).
//!
//! Why: candle's matmul zero-fills its output before `gemm` overwrites it, a bias add then writes a second tensor,
//! and a sum of products writes one more tensor per term. On ipt-base at batch 16 each of these is a pass over 9.4
//! MB (38 MB in the FFN), for every frozen product of the forward and the backward.
//!
//! Bits: the value and a single gradient term are the `gemm` call candle makes (same sizes, strides and thread
//! count), then the same f32 add, so they equal candle's `matmul` (+ `broadcast_add`) bit for bit. A sum of several
//! terms adds each later term inside the product's blocks, which rounds differently from adding whole products.
use candle_core::{CpuStorage, DType, Result, Storage, Tensor};
use rayon::prelude::*;

/// `f` on the elements of a contiguous f32 CPU tensor (the kernels of this crate read their operands so).
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((start, end))) => Ok(f(&v[start..end])),
        _ => candle_core::bail!("a contiguous f32 CPU tensor expected, got {:?} {:?}", t.dtype(), t.layout()),
    }
}

/// Contiguous f32 CPU tensors that no gradient flows through: these products build no graph.
fn f32_cpu(ts: &[&Tensor]) -> bool {
    ts.iter().all(|t| {
        t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous() && t.elem_count() > 0 && !t.track_op()
    })
}

/// candle's choice for its own products: rayon with its thread count, or the calling thread alone.
fn parallelism() -> gemm::Parallelism {
    match candle_core::utils::get_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// One product `dst (m, n) = lhs (m, k) @ rhs (k, n)`, or `dst += lhs @ rhs` with `accumulate`, each operand given as
/// (pointer, row stride, column stride).
///
/// # Safety
/// Every addressed element of the three operands must be in bounds; `dst` must not overlap the others, and with
/// `accumulate` its elements must be initialised.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn product(
    m: usize,
    n: usize,
    k: usize,
    dst: (*mut f32, isize, isize),
    lhs: (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    let keep = if accumulate { 1.0 } else { 0.0 };
    gemm::gemm(
        m,
        n,
        k,
        dst.0,
        dst.2,
        dst.1,
        accumulate,
        lhs.0,
        lhs.2,
        lhs.1,
        rhs.0,
        rhs.2,
        rhs.1,
        keep,
        1.0,
        false,
        false,
        false,
        parallelism,
    );
}

/// `x @ w^T + b` over the last dim of `x` (any rank), `w` (out, in); `None` unless all are contiguous, untracked f32
/// CPU tensors with matching sizes.
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Option<Tensor>> {
    linear_elements(x, w, b)?.map(|(v, dims)| Tensor::from_vec(v, dims, x.device())).transpose()
}

/// [`linear`]'s elements and shape, for a graph node to take over without a copy (`fused::Value::F32Cpu`).
pub(crate) fn linear_elements(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Option<(Vec<f32>, Vec<usize>)>> {
    let (Ok((n, k)), Some(&last)) = (w.dims2(), x.dims().last()) else { return Ok(None) };
    if !f32_cpu(&[x, w]) || !b.is_none_or(|b| f32_cpu(&[b]) && b.dims() == [n]) || last != k || n == 0 {
        return Ok(None);
    }
    let m = x.elem_count() / k;
    let mut dst: Vec<f32> = Vec::with_capacity(m * n);
    let dst_ptr = dst.as_mut_ptr() as usize;
    with_f32(x, |xs| {
        with_f32(w, |ws| {
            // SAFETY: xs is (m, k) row-major and ws is (n, k) row-major, read as w^T (k, n) through its strides; dst
            // has room for (m, n) and does not overlap them. Without accumulating every element of dst is written.
            unsafe {
                let (ni, ki) = (n as isize, k as isize);
                product(
                    m,
                    n,
                    k,
                    (dst_ptr as *mut f32, ni, 1),
                    (xs.as_ptr(), ki, 1),
                    (ws.as_ptr(), 1, ki),
                    false,
                    parallelism(),
                )
            }
        })
    })??;
    // SAFETY: the product wrote all m * n elements.
    unsafe { dst.set_len(m * n) };
    if let Some(b) = b {
        with_f32(b, |bs| dst.par_chunks_mut(n).for_each(|row| row.iter_mut().zip(bs).for_each(|(y, b)| *y += b)))?;
    }
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    Ok(Some((dst, dims)))
}

/// `sum_i g_i @ w_i` with each `g_i` (..., out_i) and `w_i` (out_i, in): the input gradient of linear maps that share
/// their input, shaped as `g_1` with `in` as its last dim. `None` unless all are contiguous, untracked f32 CPU tensors
/// with the same leading size.
pub(crate) fn input_gradient_sum(terms: &[(&Tensor, &Tensor)]) -> Result<Option<Tensor>> {
    let Some(&(g0, w0)) = terms.first() else { return Ok(None) };
    let Ok((_, k)) = w0.dims2() else { return Ok(None) };
    let m = g0.elem_count() / g0.dims().last().copied().unwrap_or(1).max(1);
    for &(g, w) in terms {
        let fits =
            matches!(w.dims2(), Ok((n, kw)) if kw == k && g.dims().last() == Some(&n) && g.elem_count() == m * n);
        if !(fits && f32_cpu(&[g, w])) {
            return Ok(None);
        }
    }
    let mut dst: Vec<f32> = Vec::with_capacity(m * k);
    let dst_ptr = dst.as_mut_ptr() as usize;
    for (i, &(g, w)) in terms.iter().enumerate() {
        let n = w.dim(0)?;
        with_f32(g, |gs| {
            with_f32(w, |ws| {
                // SAFETY: gs is (m, n) and ws (n, k), both row-major; dst has room for (m, k) and overlaps neither.
                // The first term writes every element; each later one reads them and adds.
                unsafe {
                    let (ni, ki) = (n as isize, k as isize);
                    product(
                        m,
                        k,
                        n,
                        (dst_ptr as *mut f32, ki, 1),
                        (gs.as_ptr(), ni, 1),
                        (ws.as_ptr(), ki, 1),
                        i > 0,
                        parallelism(),
                    )
                }
            })
        })??;
    }
    // SAFETY: the first product wrote all m * k elements.
    unsafe { dst.set_len(m * k) };
    let mut dims = g0.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = k;
    }
    Ok(Some(Tensor::from_vec(dst, dims, g0.device())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("an f32 tensor").iter().map(|x| x.to_bits()).collect()
    }

    /// The module's promise: the value and a single gradient term are candle's `matmul` (+ `broadcast_add`) bit for bit,
    /// and a sum of terms is the sum of candle's products to f32 rounding. Sizes include ones that are not multiples of
    /// the kernels' blocks, and a leading rank of two (IPT's (L, N, E) tokens).
    #[test]
    fn products_match_candle() -> Result<()> {
        let dev = Device::Cpu;
        for (lead, k, n) in [(vec![7usize], 5usize, 3usize), (vec![33, 4], 96, 70), (vec![256, 2], 576, 576)] {
            let mut xs = lead.clone();
            xs.push(k);
            let x = Tensor::randn(0f32, 1.0, xs, &dev)?;
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let b = Tensor::randn(0f32, 1.0, n, &dev)?;
            let x2 = x.reshape(((), k))?;
            let want = x2.matmul(&w.t()?)?.broadcast_add(&b)?;
            let got = linear(&x, &w, Some(&b))?.expect("contiguous f32 CPU tensors");
            assert_eq!(got.dims()[..lead.len()], lead[..]);
            assert_eq!(bits(&got), bits(&want), "linear {lead:?} x {k} -> {n}");
            let got = linear(&x, &w, None)?.expect("contiguous f32 CPU tensors");
            assert_eq!(bits(&got), bits(&x2.matmul(&w.t()?)?), "linear without bias");

            let g = Tensor::randn(0f32, 1.0, (x2.dim(0)?, n), &dev)?;
            let got = input_gradient_sum(&[(&g, &w)])?.expect("contiguous f32 CPU tensors");
            assert_eq!(bits(&got), bits(&g.matmul(&w)?), "one gradient term");
            let (g2, w2) =
                (Tensor::randn(0f32, 1.0, (x2.dim(0)?, 2 * n), &dev)?, Tensor::randn(0f32, 1.0, (2 * n, k), &dev)?);
            let want = (g.matmul(&w)? + g2.matmul(&w2)?)?;
            let got = input_gradient_sum(&[(&g, &w), (&g2, &w2)])?.expect("contiguous f32 CPU tensors");
            let diff = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let bound = 4.0 * f32::EPSILON * (3 * n) as f32 * want.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff <= bound, "two gradient terms: {diff} > {bound}");
        }
        // Not applicable: candle's path is the caller's.
        let x = Tensor::randn(0f32, 1.0, (4, 3), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (3, 5), &dev)?;
        assert!(linear(&x, &w.t()?, None)?.is_none(), "a transposed (non-contiguous) weight");
        let var = candle_core::Var::from_tensor(&w.t()?.contiguous()?)?;
        assert!(linear(&x, var.as_tensor(), None)?.is_none(), "a trained weight: its gradient needs candle's graph");
        assert!(linear(&x.to_dtype(DType::F64)?, &w.t()?.contiguous()?.to_dtype(DType::F64)?, None)?.is_none(), "f64");
        Ok(())
    }
}
