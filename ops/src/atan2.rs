//! `atan2(y, x)` with IEEE / torch semantics, including the branch cut on the negative real axis and
//! signed zeros: `atan2(+0, -1) = +pi`, `atan2(-0, -1) = -pi`, `atan2(+0, +0) = 0`, `atan2(-0, +0) = -0`,
//! `atan2(+0, -0) = +pi`. This is what `torch.angle` returns for a complex number `x + iy`.
//!
//! Candle has no `atan2`: the forward is a custom op that calls the platform `atan2` (IEEE-conforming), the
//! backward is `dy = g x / r2`, `dx = -g y / r2` with `r2 = x^2 + y^2`, and 0 at the origin, where the angle
//! has no derivative (torch returns 0 there too).
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use crate::elementwise::{cpu_binary, nonzero_or_one, prepare};

struct Atan2;

/// The CUDA forward: `atan2f` / `atan2`, the CUDA math library's IEEE-conforming functions.
#[cfg(feature = "cuda")]
static CUDA: crate::elementwise::CudaBinary = crate::elementwise::CudaBinary::new("atan2", "atan2f", "atan2");

impl CustomOp2 for Atan2 {
    fn name(&self) -> &'static str {
        "atan2"
    }

    fn cpu_fwd(&self, y: &CpuStorage, ly: &Layout, x: &CpuStorage, lx: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu_binary(self.name(), y, ly, x, lx, f32::atan2, f64::atan2)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        y: &candle_core::CudaStorage,
        ly: &Layout,
        x: &candle_core::CudaStorage,
        lx: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        CUDA.fwd(y, ly, x, lx)
    }

    fn bwd(&self, y: &Tensor, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let r2 = nonzero_or_one(&(x.sqr()? + y.sqr()?)?)?;
        let g = (grad / r2)?;
        Ok((Some((&g * x)?), Some((&g * y)?.neg()?)))
    }
}

/// Element-wise `atan2(y, x)` (broadcasting), differentiable in both arguments.
pub fn atan2(y: &Tensor, x: &Tensor) -> Result<Tensor> {
    let (y, x) = prepare(y, x)?;
    y.apply_op2(&x, Atan2)
}

/// Emit `atan2(y, x)` with the same IEEE semantics (ONNX has `Atan` only): `atan(y / x)`, shifted by
/// `+-pi` (the sign of y, signed zeros included) where x is negative or -0, and the both-zero cases set
/// explicitly (`atan2(+-0, +0) = +-0`, `atan2(+-0, -0) = +-pi`). A sign bit is read as `v < 0 or 1/v < 0`.
pub fn lower(b: &mut dyn crate::graph::GraphBuilder, y: &str, x: &str) -> Result<String> {
    let outs = b.function("Atan2", &[y, x], 1, &|b, i| {
        let (y, x) = (&i[0], &i[1]);
        let zero = b.constant_f32("zero", &[], &[0.0])?;
        let one = b.constant_f32("one", &[], &[1.0])?;
        let pi = b.constant_f32("pi", &[], &[std::f32::consts::PI])?;
        let (zero, one, pi) = (
            b.op("CastLike", &[&zero, x], vec![])?,
            b.op("CastLike", &[&one, x], vec![])?,
            b.op("CastLike", &[&pi, x], vec![])?,
        );
        let sign_bit = |b: &mut dyn crate::graph::GraphBuilder, v: &str| -> Result<String> {
            let neg = b.op("Less", &[v, &zero], vec![])?;
            let inv = b.op("Div", &[&one, v], vec![])?;
            let neg_inv = b.op("Less", &[&inv, &zero], vec![])?;
            b.op("Or", &[&neg, &neg_inv], vec![])
        };
        let y_neg = sign_bit(b, y)?;
        let x_neg = sign_bit(b, x)?;
        let ratio = b.op("Div", &[y, x], vec![])?;
        let base = b.op("Atan", &[&ratio], vec![])?;
        let neg_pi = b.op("Neg", &[&pi], vec![])?;
        let shift = b.op("Where", &[&y_neg, &neg_pi, &pi], vec![])?;
        let shifted = b.op("Add", &[&base, &shift], vec![])?;
        let r = b.op("Where", &[&x_neg, &shifted, &base], vec![])?;
        let x_zero = b.op("Equal", &[x, &zero], vec![])?;
        let y_zero = b.op("Equal", &[y, &zero], vec![])?;
        let both_zero = b.op("And", &[&x_zero, &y_zero], vec![])?;
        let at_zero = b.op("Where", &[&x_neg, &shift, y], vec![])?;
        Ok(vec![b.op("Where", &[&both_zero, &at_zero, &r], vec![])?])
    })?;
    Ok(outs[0].clone())
}
