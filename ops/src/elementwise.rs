//! Shared plumbing for the element-wise binary custom ops (`atan2`, `amplitude`): the CPU forward over
//! contiguous f32 / f64 storage. The CUDA forward is the same one-line kernel per op, to be added in each op's
//! `cuda_fwd` with the `cuda` feature; the backward passes are written with candle ops and run anywhere.
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};

/// Apply `f32_fn` / `f64_fn` element-wise to two contiguous storages of the same shape and dtype.
pub fn cpu_binary(
    name: &str,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    f32_fn: fn(f32, f32) -> f32,
    f64_fn: fn(f64, f64) -> f64,
) -> Result<(CpuStorage, Shape)> {
    if l1.shape() != l2.shape() {
        candle_core::bail!("{name}: shapes {:?} and {:?} differ", l1.shape(), l2.shape());
    }
    let (Some((a0, a1)), Some((b0, b1))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
        candle_core::bail!("{name}: inputs must be contiguous");
    };
    let out = match (s1, s2) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => {
            CpuStorage::F32(a[a0..a1].iter().zip(&b[b0..b1]).map(|(&x, &y)| f32_fn(x, y)).collect())
        }
        (CpuStorage::F64(a), CpuStorage::F64(b)) => {
            CpuStorage::F64(a[a0..a1].iter().zip(&b[b0..b1]).map(|(&x, &y)| f64_fn(x, y)).collect())
        }
        (a, b) => candle_core::bail!(
            "{name}: supported dtypes are f32 and f64 (both the same), got {:?} and {:?}",
            a.dtype(),
            b.dtype()
        ),
    };
    Ok((out, l1.shape().clone()))
}

/// Broadcast two operands to a common shape and make them contiguous, as the custom ops expect.
pub fn prepare(a: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor)> {
    let shape = a.shape().broadcast_shape_binary_op(b.shape(), "binary custom op")?;
    Ok((a.broadcast_as(&shape)?.contiguous()?, b.broadcast_as(&shape)?.contiguous()?))
}

/// `x` where it is non-zero, 1 where it is zero: a denominator that turns 0/0 into 0 at the origin.
pub fn nonzero_or_one(x: &Tensor) -> Result<Tensor> {
    x.eq(0.0)?.where_cond(&x.ones_like()?, x)
}
