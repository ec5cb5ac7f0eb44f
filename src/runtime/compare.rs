//! Comparing an output with its reference: max abs, mean abs, max relative error, PSNR, the worst location, and
//! pass/fail against a named tolerance from `adaptir_ops::tolerance` (tests and `validate` never write a number).
use candle_core::{DType, Tensor};

use crate::tolerance;
use crate::{Error, Result};

/// A named bound on `max |ours - reference|`: absolute, or relative to `max |reference|`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// The constant's name in `adaptir_ops::tolerance`, for reports.
    pub name: &'static str,
    pub bound: f64,
    pub relative: bool,
    /// `bound` is the least PSNR (dB) of the difference, not a bound on it (`--int8` files).
    pub min_psnr: bool,
}

impl Tolerance {
    pub const fn abs(name: &'static str, bound: f64) -> Self {
        Tolerance { name, bound, relative: false, min_psnr: false }
    }

    pub const fn rel(name: &'static str, bound: f64) -> Self {
        Tolerance { name, bound, relative: true, min_psnr: false }
    }

    pub const fn psnr(name: &'static str, min_db: f64) -> Self {
        Tolerance { name, bound: min_db, relative: false, min_psnr: true }
    }

    /// Bit-identical.
    pub const EXACT: Tolerance = Tolerance::abs("EXACT", tolerance::EXACT);
    /// f32 model against an f32 reference of the same maths evaluated in another order (ONNX Runtime's kernels
    /// against candle's, folded graphs against unfolded ones).
    pub const F32: Tolerance = Tolerance::rel("F32_REASSOCIATION_REL", tolerance::F32_REASSOCIATION_REL);
    /// f16 model against an f32 reference.
    pub const F16: Tolerance = Tolerance::rel("F16_REL", tolerance::F16_REL);
    /// int8 model against its f32 model, on real images.
    pub const INT8: Tolerance = Tolerance::psnr("INT8_MIN_PSNR_DB", tolerance::INT8_MIN_PSNR_DB);
    /// An f32 file run with bf16 inference (OpenVINO) against its f32 reference.
    pub const BF16: Tolerance = Tolerance::psnr("BF16_MIN_PSNR_DB", tolerance::BF16_MIN_PSNR_DB);

    /// The absolute bound for a reference whose largest magnitude is `ref_max_abs`.
    pub fn absolute_bound(&self, ref_max_abs: f64) -> f64 {
        if self.min_psnr {
            f64::INFINITY
        } else if self.relative {
            self.bound * ref_max_abs
        } else {
            self.bound
        }
    }
}

impl std::fmt::Display for Tolerance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min_psnr {
            write!(f, "{} (PSNR at least {} dB)", self.name, self.bound)
        } else if self.relative {
            write!(f, "{} ({:e} x max|reference|)", self.name, self.bound)
        } else {
            write!(f, "{} ({:e} absolute)", self.name, self.bound)
        }
    }
}

/// The result of comparing one tensor with its reference.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub shape: Vec<usize>,
    /// `max |ours - reference|` (NaN if either side has a NaN where the other does not).
    pub max_abs: f64,
    /// `mean |ours - reference|`.
    pub mean_abs: f64,
    /// `max |ours - reference| / max(|reference|, 1e-6 max|reference|)`: per element, with the denominator
    /// floored at a millionth of the reference's largest magnitude so exact zeros do not make it infinite.
    pub max_rel: f64,
    /// `10 log10(peak^2 / mse)` with `peak = max |reference|` (1 for images in [0,1]); infinite when equal.
    pub psnr_db: f64,
    /// Multi-index of the element with the largest absolute difference.
    pub worst_index: Vec<usize>,
    pub ours_at_worst: f64,
    pub reference_at_worst: f64,
    /// `max |reference|`.
    pub reference_max_abs: f64,
    pub tolerance: Tolerance,
    /// `max_abs <= tolerance.absolute_bound(reference_max_abs)` (false for NaN).
    pub passed: bool,
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} max_abs {:.3e} mean_abs {:.3e} max_rel {:.3e} psnr {:.2} dB, worst at {:?} ({} vs reference {}), \
             tolerance {}",
            if self.passed { "PASS" } else { "FAIL" },
            self.max_abs,
            self.mean_abs,
            self.max_rel,
            self.psnr_db,
            self.worst_index,
            self.ours_at_worst,
            self.reference_at_worst,
            self.tolerance
        )
    }
}

/// Compare `ours` with `reference` (same shape; any float or integer dtype, any device; computed in f64).
/// `what` names the output in the shape-mismatch error.
pub fn compare(what: &str, ours: &Tensor, reference: &Tensor, tol: Tolerance) -> Result<Comparison> {
    if ours.dims() != reference.dims() {
        return Err(Error::invalid(format!(
            "{what}: expected shape {:?} (the reference's), found {:?}",
            reference.dims(),
            ours.dims()
        )));
    }
    let a = ours.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let b = reference.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    Ok(compare_slices(ours.dims(), &a, &b, tol))
}

/// [`compare`] on flat row-major data of shape `shape`.
pub fn compare_slices(shape: &[usize], ours: &[f64], reference: &[f64], tol: Tolerance) -> Comparison {
    let ref_max = reference.iter().fold(0.0f64, |m, x| if x.abs() > m { x.abs() } else { m });
    let floor = ref_max * 1e-6;
    let (mut max_abs, mut sum_abs, mut sum_sq, mut max_rel, mut worst) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0usize);
    let mut nan = false;
    for (i, (&x, &y)) in ours.iter().zip(reference).enumerate() {
        let d = if x == y { 0.0 } else { (x - y).abs() };
        if d.is_nan() {
            nan = true;
            worst = i;
            continue;
        }
        sum_abs += d;
        sum_sq += d * d;
        if d > max_abs {
            max_abs = d;
            if !nan {
                worst = i;
            }
        }
        let den = y.abs().max(floor);
        if d > 0.0 {
            let r = if den > 0.0 { d / den } else { f64::INFINITY };
            max_rel = max_rel.max(r);
        }
    }
    let n = ours.len().max(1) as f64;
    let mse = sum_sq / n;
    let (max_abs, mean_abs) = if nan { (f64::NAN, f64::NAN) } else { (max_abs, sum_abs / n) };
    let psnr_db = if nan {
        f64::NAN
    } else if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (ref_max * ref_max / mse).log10()
    };
    let passed = if tol.min_psnr { psnr_db >= tol.bound } else { max_abs <= tol.absolute_bound(ref_max) };
    Comparison {
        shape: shape.to_vec(),
        max_abs,
        mean_abs,
        max_rel: if nan { f64::NAN } else { max_rel },
        psnr_db,
        worst_index: unravel(worst, shape),
        ours_at_worst: ours.get(worst).copied().unwrap_or(f64::NAN),
        reference_at_worst: reference.get(worst).copied().unwrap_or(f64::NAN),
        reference_max_abs: ref_max,
        tolerance: tol,
        passed,
    }
}

fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            idx[k] = i % d;
            i /= d;
        }
    }
    idx
}
