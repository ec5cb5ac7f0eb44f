//! Products with a frozen weight: `x @ w^T` whose backward produces the gradient for `x` only.
//!
//! candle's autograd computes the gradient of *both* operands of a product, tracked or not, so every frozen
//! backbone weight between an adapter and the loss would cost a weight-gradient GEMM per step that is thrown
//! away. Training an adapter needs only the gradient with respect to the activations; this op provides
//! exactly that. The forward is candle's own matmul kernel on the storage (`BackendStorage::matmul`), so it
//! is bit-identical to `x.matmul(&w.t())` and runs on every device that candle's matmul runs on.
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

struct FrozenMatmul;

impl FrozenMatmul {
    fn bmnk(l1: &Layout, l2: &Layout) -> Result<(usize, usize, usize, usize)> {
        let (m, k) = l1.shape().dims2()?;
        let (k2, n) = l2.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("frozen matmul: inner dims {k} and {k2} differ");
        }
        Ok((1, m, n, k))
    }
}

impl CustomOp2 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, x: &CpuStorage, lx: &Layout, wt: &CpuStorage, lw: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, m, n, k) = Self::bmnk(lx, lw)?;
        Ok((x.matmul(wt, (b, m, n, k), lx, lw)?, Shape::from((m, n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        lx: &Layout,
        wt: &candle_core::CudaStorage,
        lw: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (b, m, n, k) = Self::bmnk(lx, lw)?;
        Ok((x.matmul(wt, (b, m, n, k), lx, lw)?, Shape::from((m, n))))
    }

    fn bwd(&self, _x: &Tensor, wt: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(&wt.t()?)?), None))
    }
}

/// `x @ w^T` over the last dim of `x` (any rank), with `w` (out, in). When `w` is frozen (not derived from a
/// variable) and `x` is tracked, the backward skips the weight gradient; otherwise this is a plain matmul.
pub fn linear_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let last = dims.len() - 1;
    let x2 = x.reshape(((), dims[last]))?;
    let y = if x.track_op() && !w.track_op() {
        x2.contiguous()?.apply_op2(&w.t()?, FrozenMatmul)?
    } else {
        x2.matmul(&w.t()?)?
    };
    dims[last] = y.dim(1)?;
    y.reshape(dims)
}

/// `conv2d(x, w)` (stride 1, dilation 1, `padding` on each side) with the same rule as [`linear_t`]: a frozen
/// kernel under a tracked input gets the input gradient only: one adjoint convolution, `conv2d(grad, w')` with `w'`
/// the kernel with in/out swapped and spatially flipped, padded by `k - 1 - p`, instead of candle's two (input and
/// kernel gradient), and no graph of slices for an im2col;
/// a tracked kernel uses candle's conv2d (both gradients); neither tracked, `conv::conv2d_untracked`. The forward of
/// a frozen kernel is `conv2d_untracked` whether the input is tracked or not, so training and inference compute the
/// same values.
pub fn conv2d(x: &Tensor, w: &Tensor, padding: usize) -> Result<Tensor> {
    if w.track_op() {
        return x.conv2d(w, padding, 1, 1, 1);
    }
    if !x.track_op() {
        return crate::conv::conv2d_untracked(x, w, padding);
    }
    let (_, c, _, _) = x.dims4()?;
    let (_, ci, kh, kw) = w.dims4()?;
    if ci != c {
        candle_core::bail!("conv2d: input has {c} channels, kernel expects {ci}");
    }
    if kh != kw || padding >= kh {
        candle_core::bail!(
            "frozen conv2d: needs a square kernel and padding below its size, got {kh}x{kw}, padding {padding}"
        );
    }
    let y = crate::conv::conv2d_untracked(x, w, padding)?;
    let adjoint_kernel = w.transpose(0, 1)?.contiguous()?.flip(&[2, 3])?.contiguous()?;
    let adjoint_padding = kh - 1 - padding;
    crate::fused::carry("frozen-conv2d", x, y, move |_x, _y, grad| {
        crate::conv::conv2d_untracked(grad, &adjoint_kernel, adjoint_padding)
    })
}
