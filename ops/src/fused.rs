//! Forward values computed without a graph (a fused kernel, or a detached composition), given a closed-form
//! backward by one graph node: softmax over the last dim, LayerNorm with frozen parameters, and the frozen-kernel
//! convolution of `frozen.rs`.
//!
//! Why: candle's autograd keeps every intermediate of a composed op until the backward, and candle's fused
//! softmax / LayerNorm kernels have no backward at all. On ipt-base training at batch 16 the composed softmax
//! alone kept four (N, heads, L, L) tensors per attention. Here the graph holds the op's input and output only,
//! as torch does, and the forward is the same kernel that inference uses.
use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor, D};

type Backward = Box<dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync>;

/// One graph node on `arg` whose value is `value`, computed beforehand, and whose gradient with respect to `arg`
/// is `backward(arg, value, grad)`. The value is handed over once (then copied into the node's own storage, as
/// custom ops must return fresh storage), so the graph holds no second copy of it.
struct Carry {
    name: &'static str,
    value: Mutex<Option<Tensor>>,
    backward: Backward,
}

impl Carry {
    fn take(&self) -> Result<Tensor> {
        let value = self.value.lock().map_err(|_| candle_core::Error::Msg("carry: poisoned".into()))?.take();
        let value = value.ok_or_else(|| candle_core::Error::Msg(format!("{}: forward run twice", self.name)))?;
        value.contiguous()
    }
}

impl CustomOp1 for Carry {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, _arg: &CpuStorage, _layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let value = self.take()?;
        let (storage, layout) = value.storage_and_layout();
        match &*storage {
            Storage::Cpu(s) => Ok((copy_contiguous(s, layout)?, layout.shape().clone())),
            _ => candle_core::bail!("{}: the value is not on the CPU", self.name),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, _arg: &candle_core::CudaStorage, _layout: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let value = self.take()?;
        let (storage, layout) = value.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => {
                let mut dst = unsafe {
                    candle_core::backend::BackendDevice::alloc_uninit(s.device(), layout.shape(), s.dtype())?
                };
                s.copy_strided_src(&mut dst, 0, layout)?;
                Ok((dst, layout.shape().clone()))
            }
            _ => candle_core::bail!("{}: the value is not on the CUDA device", self.name),
        }
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some((self.backward)(arg, res, grad)?))
    }
}

/// The elements of a contiguous layout, as a new storage of exactly that size.
fn copy_contiguous(s: &CpuStorage, layout: &Layout) -> Result<CpuStorage> {
    let (start, end) =
        layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("carry: value not contiguous".into()))?;
    Ok(match s {
        CpuStorage::F32(v) => CpuStorage::F32(v[start..end].to_vec()),
        CpuStorage::F64(v) => CpuStorage::F64(v[start..end].to_vec()),
        CpuStorage::F16(v) => CpuStorage::F16(v[start..end].to_vec()),
        CpuStorage::BF16(v) => CpuStorage::BF16(v[start..end].to_vec()),
        _ => candle_core::bail!("carry: float values only"),
    })
}

/// `value` (computed from `arg` without a graph) as a node on `arg` with the given backward; `value` itself when
/// `arg` is not tracked.
pub(crate) fn carry(
    name: &'static str,
    arg: &Tensor,
    value: Tensor,
    backward: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
) -> Result<Tensor> {
    if !arg.track_op() {
        return Ok(value);
    }
    arg.apply_op1(Carry { name, value: Mutex::new(Some(value)), backward: Box::new(backward) })
}

/// Softmax over the last dim: candle-nn's fused kernel (f32) or the composed form without graph (other dtypes);
/// backward `y * (g - sum(g * y))`.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let detached = x.detach();
    let y = if x.dtype() == DType::F32 {
        candle_nn::ops::softmax_last_dim(&detached.contiguous()?)?
    } else {
        let e = detached.broadcast_sub(&detached.max_keepdim(D::Minus1)?)?.exp()?;
        e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?
    };
    carry("softmax-last-dim", x, y, |_x, y, g| {
        let dot = (g * y)?.sum_keepdim(D::Minus1)?;
        y * g.broadcast_sub(&dot)?
    })
}

/// LayerNorm over the last dim, `(x - mean) / sqrt(var + eps) * w + b`, with `w` and `b` frozen (gradient for `x`
/// only): candle-nn's fused kernel (f32) or the composed form without graph; backward
/// `(g - mean(g) - xhat * mean(g * xhat)) / sigma` with `g = grad * w`, recomputing `xhat` and `sigma` from `x`.
pub fn layer_norm_frozen(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if w.track_op() || b.track_op() {
        candle_core::bail!("layer_norm_frozen: weight and bias must be frozen");
    }
    let detached = x.detach().contiguous()?;
    let y = match x.dtype() {
        DType::F32 => candle_nn::ops::layer_norm(&detached, w, b, eps as f32)?,
        _ => {
            let (xhat, _) = normalise(&detached, eps)?;
            xhat.broadcast_mul(w)?.broadcast_add(b)?
        }
    };
    let w = w.clone();
    carry("layer-norm-frozen", x, y, move |x, _y, grad| {
        let (xhat, sigma) = normalise(x, eps)?;
        let g = grad.broadcast_mul(&w)?;
        let mean_g = g.mean_keepdim(D::Minus1)?;
        let mean_gx = (&g * &xhat)?.mean_keepdim(D::Minus1)?;
        g.broadcast_sub(&mean_g)?.sub(&xhat.broadcast_mul(&mean_gx)?)?.broadcast_div(&sigma)
    })
}

/// (xhat, sigma) over the last dim, biased variance as torch.
fn normalise(x: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let sigma = (centred.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    Ok((centred.broadcast_div(&sigma)?, sigma))
}
