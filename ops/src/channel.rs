//! Per-channel shift and scale (a bias add, a LayerNorm's affine, a depthwise kernel's tap) of a trained vector,
//! whose backward sums the gradient over every other dim with matrix products.
//!
//! Why: candle's backward of a broadcast op sums the gradient with its generic reduction, which walks the dims
//! other than the last with per-element index arithmetic on one thread. With trained per-channel vectors
//! (pre-training, full fine-tuning, an adapter's own biases) those sums were 35 % of an edt-tiny pre-training
//! step (`perf`, 2026-12-07). A product with a vector of ones does the same sum in the parallel `gemm` kernels.
//! An untracked vector takes candle's own broadcast op, whose backward then needs no sum at all.
use candle_core::{DType, Result, Tensor, D};

/// `x + b`, with `b` of shape (C,) along `axis` of `x`.
pub fn add(x: &Tensor, b: &Tensor, axis: usize) -> Result<Tensor> {
    let bb = along(b, x.rank(), axis)?;
    if !b.track_op() {
        return x.broadcast_add(&bb);
    }
    let value = x.detach().broadcast_add(&bb.detach())?;
    crate::fused::carry3("channel-add", [x, b, b], value, move |_, _, grad| {
        Ok(vec![Some(grad.clone()), Some(sum_except(grad, axis)?), None])
    })
}

/// `x * s`, with `s` of shape (C,) along `axis` of `x`.
pub fn mul(x: &Tensor, s: &Tensor, axis: usize) -> Result<Tensor> {
    let sb = along(s, x.rank(), axis)?;
    if !s.track_op() {
        return x.broadcast_mul(&sb);
    }
    let value = x.detach().broadcast_mul(&sb.detach())?;
    crate::fused::carry3("channel-mul", [x, s, s], value, move |args, _, grad| {
        let gx = grad.broadcast_mul(&sb.detach())?;
        let gs = sum_except(&(grad * args[0].detach())?, axis)?;
        Ok(vec![Some(gx), Some(gs), None])
    })
}

/// LayerNorm over the last dim as candle-nn's `layer_norm_slow` computes it (the same ops in the same order, so the
/// same values, `eps` an f32 as there), with its affine through [`mul`] and [`add`]: for trained `w`, `b` (pre-training, full
/// fine-tuning) and for f64. Frozen f32 parameters take `fused::layer_norm_frozen` instead.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
    let x_dtype = x.dtype();
    let internal = match x_dtype {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    };
    let hidden = x.dim(D::Minus1)? as f64;
    let x = x.to_dtype(internal)?;
    let x = x.broadcast_sub(&(x.sum_keepdim(D::Minus1)? / hidden)?)?;
    let var = (x.sqr()?.sum_keepdim(D::Minus1)? / hidden)?;
    let normed = x.broadcast_div(&(var + eps as f64)?.sqrt()?)?.to_dtype(x_dtype)?;
    let last = normed.rank() - 1;
    add(&mul(&normed, w, last)?, b, last)
}

/// The sum of `g` over every dim but `axis`: a (C,) vector, by one or two products with vectors of ones.
pub fn sum_except(g: &Tensor, axis: usize) -> Result<Tensor> {
    let dims = g.dims();
    let c = dims[axis];
    let (pre, post): (usize, usize) = (dims[..axis].iter().product(), dims[axis + 1..].iter().product());
    let g = g.contiguous()?;
    // (pre * C, post) @ ones(post, 1): the sum over the trailing dims.
    let per_row = if post == 1 {
        g.reshape((pre, c))?
    } else {
        let ones = Tensor::ones((post, 1), g.dtype(), g.device())?;
        g.reshape((pre * c, post))?.matmul(&ones)?.reshape((pre, c))?
    };
    // ones(1, pre) @ (pre, C): the sum over the leading dims.
    let ones = Tensor::ones((1, pre), g.dtype(), g.device())?;
    ones.matmul(&per_row)?.reshape(c)
}

/// `v` (C,) reshaped to broadcast along `axis` of a rank-`rank` tensor: (1, .., C, .., 1).
fn along(v: &Tensor, rank: usize, axis: usize) -> Result<Tensor> {
    let mut shape = vec![1; rank];
    shape[axis] = v.elem_count();
    v.reshape(shape)
}
