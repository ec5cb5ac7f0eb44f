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

impl CustomOp2 for Atan2 {
    fn name(&self) -> &'static str {
        "atan2"
    }

    fn cpu_fwd(&self, y: &CpuStorage, ly: &Layout, x: &CpuStorage, lx: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu_binary(self.name(), y, ly, x, lx, f32::atan2, f64::atan2)
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
