//! Amplitude `|re + i im|` of a complex tensor given as two real ones (`torch.abs` of a complex tensor).
//!
//! A custom op rather than `sqrt(re^2 + im^2)` in candle ops: the forward uses `hypot` (no overflow or underflow
//! of the squares), and the backward is `g re / |z|`, `g im / |z|` with 0 at the origin, as torch's; the
//! composed form would give 0 * inf = NaN there, and AdaptIR sees exact zero bins (constant planes).
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use crate::elementwise::{cpu_binary, nonzero_or_one, prepare};

struct Amplitude;

/// The CUDA forward: `hypotf` / `hypot`, the CUDA math library's IEEE-conforming functions.
#[cfg(feature = "cuda")]
static CUDA: crate::elementwise::CudaBinary = crate::elementwise::CudaBinary::new("amplitude", "hypotf", "hypot");

impl CustomOp2 for Amplitude {
    fn name(&self) -> &'static str {
        "amplitude"
    }

    fn cpu_fwd(&self, re: &CpuStorage, lr: &Layout, im: &CpuStorage, li: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu_binary(self.name(), re, lr, im, li, f32::hypot, f64::hypot)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        re: &candle_core::CudaStorage,
        lr: &Layout,
        im: &candle_core::CudaStorage,
        li: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        CUDA.fwd(re, lr, im, li)
    }

    fn bwd(&self, re: &Tensor, im: &Tensor, res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = (grad / nonzero_or_one(res)?)?;
        Ok((Some((&g * re)?), Some((&g * im)?)))
    }
}

/// Element-wise `sqrt(re^2 + im^2)` (broadcasting), differentiable, with a zero gradient at the origin.
pub fn amplitude(re: &Tensor, im: &Tensor) -> Result<Tensor> {
    let (re, im) = prepare(re, im)?;
    re.apply_op2(&im, Amplitude)
}

/// Emit `sqrt(re^2 + im^2)`.
pub fn lower(b: &mut dyn crate::graph::GraphBuilder, re: &str, im: &str) -> Result<String> {
    let r2 = b.op("Mul", &[re, re], vec![])?;
    let i2 = b.op("Mul", &[im, im], vec![])?;
    let s = b.op("Add", &[&r2, &i2], vec![])?;
    b.op("Sqrt", &[&s], vec![])
}
