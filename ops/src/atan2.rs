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

/// Emit `atan2(y, x)` with the same IEEE semantics, from standard ops that every execution provider has
/// (ONNX has `Atan` only, and ONNX Runtime's CUDA provider not even that): the magnitude is `atan(|y| / |x|)`
/// ([`lower_atan_abs`]), or `pi` minus it where x is negative or -0; `0 / 0` and `inf / inf` are read as 0
/// and 1 (so `atan2(+-0, +0) = +-0`, `atan2(+-0, -0) = +-pi`, `atan2(+-inf, +-inf) = +-pi/4 or +-3pi/4`);
/// the sign of y, signed zeros included, is put on last by a product with +-1. Not by `Where`: ONNX Runtime's
/// CPU `Where` returns +0 where it picks a -0.
pub fn lower(b: &mut dyn crate::graph::GraphBuilder, y: &str, x: &str) -> Result<String> {
    let outs = b.function("Atan2", &[y, x], 1, &|b, i| {
        let (y, x) = (&i[0], &i[1]);
        let zero = constant_like(b, "zero", 0.0, x)?;
        let one = constant_like(b, "one", 1.0, x)?;
        let minus_one = constant_like(b, "minus_one", -1.0, x)?;
        let pi = constant_like(b, "pi", std::f64::consts::PI, x)?;
        // The sign bit, -0 included: `min(v, 1/v) < 0` (1/-0 = -inf, 1/-inf = -0, and v and 1/v share the sign
        // bit otherwise; a NaN stays NaN on both sides, so the choice of `Min` on NaN does not matter).
        let sign_bit = |b: &mut dyn crate::graph::GraphBuilder, v: &str| -> Result<String> {
            let inv = b.op("Div", &[&one, v], vec![])?;
            let m = b.op("Min", &[v, &inv], vec![])?;
            b.op("Less", &[&m, &zero], vec![])
        };
        let y_neg = sign_bit(b, y)?;
        let x_neg = sign_bit(b, x)?;
        let (ay, ax) = (b.op("Abs", &[y], vec![])?, b.op("Abs", &[x], vec![])?);
        let ratio = b.op("Div", &[&ay, &ax], vec![])?;
        let both_zero = {
            let (x_zero, y_zero) = (b.op("Equal", &[x, &zero], vec![])?, b.op("Equal", &[y, &zero], vec![])?);
            b.op("And", &[&x_zero, &y_zero], vec![])?
        };
        let both_inf = {
            let (x_inf, y_inf) = (b.op("IsInf", &[x], vec![])?, b.op("IsInf", &[y], vec![])?);
            b.op("And", &[&x_inf, &y_inf], vec![])?
        };
        let ratio = b.op("Where", &[&both_inf, &one, &ratio], vec![])?;
        let ratio = b.op("Where", &[&both_zero, &zero, &ratio], vec![])?;
        let base = lower_atan_abs(b, &ratio, x)?;
        let reflected = b.op("Sub", &[&pi, &base], vec![])?;
        let magnitude = b.op("Where", &[&x_neg, &reflected, &base], vec![])?;
        let sign = b.op("Where", &[&y_neg, &minus_one, &one], vec![])?;
        Ok(vec![b.op("Mul", &[&magnitude, &sign], vec![])?])
    })?;
    Ok(outs[0].clone())
}

/// A scalar constant of the type of `like`: an f64 constant cast to it (so that an f64 graph keeps every digit),
/// or, where the file may hold no f64 (the f32 spectral path: portable and TensorRT files), an f32 constant,
/// which a precision conversion of the file (`--fp16`) converts with the model's own constants.
fn constant_like(b: &mut dyn crate::graph::GraphBuilder, hint: &str, v: f64, like: &str) -> Result<String> {
    match b.spectral_precision() {
        crate::graph::SpectralPrecision::F64 => {
            let c = b.constant(hint, &Tensor::new(v, &candle_core::Device::Cpu)?)?;
            b.op("CastLike", &[&c, like], vec![])
        }
        crate::graph::SpectralPrecision::F32 => b.constant(hint, &Tensor::new(v as f32, &candle_core::Device::Cpu)?),
    }
}

/// Emit `atan(a)` for `a >= 0` (or NaN) from `Greater`, `Where` and arithmetic: ONNX Runtime's CUDA
/// provider has no `Atan` kernel, and one `Atan` node would send every AdaptIR block's phase to the CPU and
/// back. This is Cephes' `atan` (S. L. Moshier, double precision, relative error about 1e-16): a is reduced
/// to [0, 0.66] with `atan a = pi/2 + atan(-1/a)` above tan(3pi/8) and `pi/4 + atan((a-1)/(a+1))` above
/// 0.66, then `t + t z P(z)/Q(z)` with `z = t^2`, and the low bits of pi/2 and pi/4 added back. NaN stays
/// NaN, inf gives pi/2.
pub fn lower_atan_abs(b: &mut dyn crate::graph::GraphBuilder, a: &str, like: &str) -> Result<String> {
    const TAN_3PI_8: f64 = 2.414_213_562_373_095;
    const P: [f64; 5] = [
        -8.750_608_600_031_904e-1,
        -1.615_753_718_733_365e1,
        -7.500_855_792_314_705e1,
        -1.228_866_684_490_136_2e2,
        -6.485_021_904_942_025e1,
    ];
    const Q: [f64; 5] = [
        2.485_846_490_142_306_3e1,
        1.650_270_098_316_988_5e2,
        4.328_810_604_912_903e2,
        4.853_903_996_359_137e2,
        1.945_506_571_482_614e2,
    ];
    const MOREBITS: f64 = 6.123_233_995_736_766e-17; // pi/2 - (pi/2 rounded to f64)
    let k = |b: &mut dyn crate::graph::GraphBuilder, hint: &str, v: f64| constant_like(b, hint, v, like);
    let (t3p8, c066, one, minus_one, zero) = (
        k(b, "tan_3pi_8", TAN_3PI_8)?,
        k(b, "atan_mid", 0.66)?,
        k(b, "one", 1.0)?,
        k(b, "minus_one", -1.0)?,
        k(b, "zero", 0.0)?,
    );
    let big = b.op("Greater", &[a, &t3p8], vec![])?;
    let mid = b.op("Greater", &[a, &c066], vec![])?;
    // The reduced argument and what is added back; `Where` picks per element (the unpicked branches may be inf/NaN).
    let inv = b.op("Div", &[&minus_one, a], vec![])?;
    let (am1, ap1) = (b.op("Sub", &[a, &one], vec![])?, b.op("Add", &[a, &one], vec![])?);
    let moebius = b.op("Div", &[&am1, &ap1], vec![])?;
    let t_mid = b.op("Where", &[&mid, &moebius, a], vec![])?;
    let t = b.op("Where", &[&big, &inv, &t_mid], vec![])?;
    let (pi_2, pi_4) = (k(b, "pi_2", std::f64::consts::FRAC_PI_2)?, k(b, "pi_4", std::f64::consts::FRAC_PI_4)?);
    let y0_mid = b.op("Where", &[&mid, &pi_4, &zero], vec![])?;
    let y0 = b.op("Where", &[&big, &pi_2, &y0_mid], vec![])?;
    let (mb, mb_2) = (k(b, "atan_morebits", MOREBITS)?, k(b, "atan_morebits_2", 0.5 * MOREBITS)?);
    let low_mid = b.op("Where", &[&mid, &mb_2, &zero], vec![])?;
    let low = b.op("Where", &[&big, &mb, &low_mid], vec![])?;
    // P(z) and the monic Q(z) by Horner.
    let z = b.op("Mul", &[&t, &t], vec![])?;
    let mut p = k(b, "atan_p0", P[0])?;
    for (i, c) in P.iter().enumerate().skip(1) {
        let pz = b.op("Mul", &[&p, &z], vec![])?;
        let c = k(b, &format!("atan_p{i}"), *c)?;
        p = b.op("Add", &[&pz, &c], vec![])?;
    }
    let mut q = z.clone();
    for (i, c) in Q.iter().enumerate() {
        let c = k(b, &format!("atan_q{i}"), *c)?;
        let qc = b.op("Add", &[&q, &c], vec![])?;
        q = if i + 1 < Q.len() { b.op("Mul", &[&qc, &z], vec![])? } else { qc };
    }
    let zp = b.op("Mul", &[&z, &p], vec![])?;
    let ratio = b.op("Div", &[&zp, &q], vec![])?;
    let tr = b.op("Mul", &[&t, &ratio], vec![])?;
    let poly = b.op("Add", &[&tr, &t], vec![])?;
    let poly = b.op("Add", &[&poly, &low], vec![])?;
    b.op("Add", &[&y0, &poly], vec![])
}
