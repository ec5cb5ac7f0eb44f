//! `rfft2` / `irfft2` with `norm = "ortho"`, as products with constant real DFT bases.
//!
//! Why matrix products and not an FFT: the planes AdaptIR transforms are tiny (16x16 in IPT, 24x24 to 48x48 in
//! EDT), so a dense DFT costs a few small GEMMs, runs on every candle device and every ONNX Runtime execution
//! provider as it is, and its backward is the transposed product, which candle's autograd derives by itself.
//!
//! Torch semantics kept (DESIGN §2):
//! - the forward is a real DFT along W (W/2+1 bins) then a complex DFT along H, both scaled by 1/sqrt(n);
//! - the inverse is a complex inverse along H then a complex-to-real inverse along W that ignores the
//!   imaginary parts of the DC column and, for even W, of the Nyquist column;
//! - a value that is zero in exact arithmetic is returned as `+0.0`. The imaginary part at the
//!   self-conjugate bins (k in {0, H/2}) x (l in {0, W/2}) is zero for every real input and is forced to
//!   `+0.0`. Elsewhere a product with rounded bases cannot produce an exact zero where pocketfft does (a
//!   constant plane has an exactly zero spectrum outside DC). So the forward products run in f64 (for f32 and
//!   f64 inputs; f32 for f16 / bf16), and every component below the rounding bound of that f64 product,
//!   `SNAP_ULPS * eps64 * sum|x| / sqrt(HW)` per plane, is returned as `+0.0`; the result is then rounded to
//!   the input dtype. A residue that small carries no information, but its *angle* would: `atan2` of a residue
//!   is arbitrary, and the phase affine of AdaptIR turns it into an O(bias) change of the output. Computing in
//!   f64 keeps the snapping threshold some 1e-15 of the data, far below anything an f32 input can hold, so the
//!   snap never moves a genuine value by more than an f32 rounding, and the f32 result is as accurate as a
//!   correctly rounded DFT. The inverse runs in f64 too: a dense f32 product of up to 2 (W/2+1) H terms per
//!   output rounds visibly worse than an FFT (2e-6 against torch on 24x48 planes of magnitude 30), while in
//!   f64 the result is the correctly rounded one. The products are tiny next to the backbone's, so f64 costs
//!   nothing measurable on CPU; see `tests/dft.rs` and the `adaptir_fft_edges` parity test.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{DType, Device, DeviceLocation, Result, Tensor, D};

/// Components of the forward spectrum below `SNAP_ULPS * eps * sum|x| / sqrt(HW)` (eps of the compute dtype)
/// are exact zeros.
///
/// The rounding error of each output of the two-stage product is bounded by about
/// `(H + W) * eps * sum|x| / sqrt(HW)`; the residues actually seen where the exact value is zero (constants,
/// stripes, checkerboards, 8x8 to 64x64) stay below `0.3 * eps * sum|x| / sqrt(HW)` (measured in
/// `tests/dft.rs`, which asserts a margin of at least 4).
pub const SNAP_ULPS: f64 = 8.0;

/// The dtype the forward products run in for an input dtype (see the module docs).
pub fn compute_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        _ => DType::F64,
    }
}

/// `(cos, sin)` of `2 pi m / n`, with the symmetries of the circle exact: values at multiples of pi/4 are
/// exact, and `cos(a) = sin(pi/2 - a)` bit for bit, so symmetric basis entries cancel exactly.
pub fn cos_sin_2pi(m: usize, n: usize) -> (f64, f64) {
    let m = m % n;
    let m4 = 4 * m;
    let (quadrant, rem) = (m4 / n, m4 % n);
    // Angle within the quadrant is (pi/2) * rem / n.
    let (c, s) = if rem == 0 {
        (1.0, 0.0)
    } else if 2 * rem == n {
        let r = std::f64::consts::FRAC_1_SQRT_2;
        (r, r)
    } else if 2 * rem < n {
        let a = std::f64::consts::FRAC_PI_2 * rem as f64 / n as f64;
        (a.cos(), a.sin())
    } else {
        let a = std::f64::consts::FRAC_PI_2 * (n - rem) as f64 / n as f64;
        (a.sin(), a.cos())
    };
    match quadrant {
        0 => (c, s),
        1 => (-s, c),
        2 => (-c, -s),
        _ => (s, -c),
    }
}

/// The constant bases for one (H, W) plane size, on one device and dtype.
pub struct DftBases {
    pub h: usize,
    pub w: usize,
    /// W/2 + 1.
    pub wr: usize,
    /// (W, 2 Wr): `[cos | -sin] / sqrt(W)`: real row -> (re | im) of the half spectrum.
    fwd_w: Tensor,
    /// (2H, 2H): `[[C, -S], [S, C]]` with `C, S = cos, sin / sqrt(H)`: (re | im) -> forward complex DFT.
    fwd_h: Tensor,
    /// (2H, 2H): `[[C, S], [-S, C]]`: inverse complex DFT along H.
    inv_h: Tensor,
    /// (2 Wr, W): complex-to-real inverse along W; zero rows for the ignored imaginary parts.
    inv_w: Tensor,
    /// (H, Wr) in the dtype: 1 at the self-conjugate bins, where the imaginary part is zero by symmetry.
    self_conjugate: Tensor,
    /// (H, H): `cos / sqrt(H)` and `sin / sqrt(H)`, for lowerings that multiply along H from the left.
    cos_h: Tensor,
    sin_h: Tensor,
}

impl DftBases {
    fn build(h: usize, w: usize, dtype: DType, device: &Device) -> Result<Self> {
        let wr = w / 2 + 1;
        let (sw, sh) = (1.0 / (w as f64).sqrt(), 1.0 / (h as f64).sqrt());

        let mut fwd_w = vec![0f64; w * 2 * wr];
        for x in 0..w {
            for l in 0..wr {
                let (c, s) = cos_sin_2pi(l * x, w);
                fwd_w[x * 2 * wr + l] = c * sw;
                fwd_w[x * 2 * wr + wr + l] = -s * sw;
            }
        }

        let (mut fwd_h, mut inv_h) = (vec![0f64; 4 * h * h], vec![0f64; 4 * h * h]);
        for r in 0..h {
            for k in 0..h {
                let (c, s) = cos_sin_2pi(r * k, h);
                let (c, s) = (c * sh, s * sh);
                // Row vector (re | im) times the matrix: block (row block, column block).
                let at = |rb: usize, cb: usize| (rb * h + r) * 2 * h + cb * h + k;
                fwd_h[at(0, 0)] = c;
                fwd_h[at(0, 1)] = -s;
                fwd_h[at(1, 0)] = s;
                fwd_h[at(1, 1)] = c;
                inv_h[at(0, 0)] = c;
                inv_h[at(0, 1)] = s;
                inv_h[at(1, 0)] = -s;
                inv_h[at(1, 1)] = c;
            }
        }

        let mut inv_w = vec![0f64; 2 * wr * w];
        for l in 0..wr {
            // Bins 1..W/2 (exclusive of Nyquist) stand for themselves and their mirror images.
            let nyquist = w % 2 == 0 && l == w / 2;
            let weight = if l == 0 || nyquist { 1.0 } else { 2.0 };
            for x in 0..w {
                let (c, s) = cos_sin_2pi(l * x, w);
                inv_w[l * w + x] = weight * c * sw;
                // At DC and Nyquist sin is exactly 0: their imaginary parts are ignored, as in torch.
                inv_w[(wr + l) * w + x] = -weight * s * sw;
            }
        }

        let mut self_conjugate = vec![0f64; h * wr];
        for k in [0, h / 2] {
            for l in [0, w / 2] {
                let k_ok = k == 0 || h % 2 == 0;
                let l_ok = l == 0 || w % 2 == 0;
                if k_ok && l_ok {
                    self_conjugate[k * wr + l] = 1.0;
                }
            }
        }

        let (mut cos_h, mut sin_h) = (vec![0f64; h * h], vec![0f64; h * h]);
        for r in 0..h {
            for k in 0..h {
                let (c, s) = cos_sin_2pi(r * k, h);
                cos_h[r * h + k] = c * sh;
                sin_h[r * h + k] = s * sh;
            }
        }
        let t = |v: Vec<f64>, r: usize, c: usize| Tensor::from_vec(v, (r, c), device)?.to_dtype(dtype);
        Ok(Self {
            h,
            w,
            wr,
            fwd_w: t(fwd_w, w, 2 * wr)?,
            fwd_h: t(fwd_h, 2 * h, 2 * h)?,
            inv_h: t(inv_h, 2 * h, 2 * h)?,
            inv_w: t(inv_w, 2 * wr, w)?,
            self_conjugate: t(self_conjugate, h, wr)?,
            cos_h: t(cos_h, h, h)?,
            sin_h: t(sin_h, h, h)?,
        })
    }

    /// (2H, 2H): the complex DFT along H acting from the left on `[Re; Im]` stacked along H:
    /// `[[C, S], [-S, C]]` (forward, e^-i) or `[[C, -S], [S, C]]` (inverse, e^+i); C and S are symmetric.
    pub fn complex_h_left(&self, inverse: bool) -> Result<Tensor> {
        let (c, s) = (&self.cos_h, &self.sin_h);
        let (top, bottom) = if inverse {
            (Tensor::cat(&[c, &s.neg()?], 1)?, Tensor::cat(&[s, c], 1)?)
        } else {
            (Tensor::cat(&[c, s], 1)?, Tensor::cat(&[&s.neg()?, c], 1)?)
        };
        Tensor::cat(&[&top, &bottom], 0)
    }

    /// The bases for (h, w) on `device` in `dtype`, built once per process and shared.
    pub fn get(h: usize, w: usize, dtype: DType, device: &Device) -> Result<Arc<Self>> {
        type Key = (usize, usize, DType, DeviceLocation);
        static CACHE: OnceLock<Mutex<HashMap<Key, Arc<DftBases>>>> = OnceLock::new();
        if h == 0 || w == 0 {
            candle_core::bail!("rfft2/irfft2: empty plane {h}x{w}");
        }
        let key = (h, w, dtype, device.location());
        let cache = CACHE.get_or_init(Default::default);
        if let Some(b) = cache.lock().map_err(poisoned)?.get(&key) {
            return Ok(b.clone());
        }
        let bases = Arc::new(Self::build(h, w, dtype, device)?);
        cache.lock().map_err(poisoned)?.insert(key, bases.clone());
        Ok(bases)
    }

    /// (H, W/2+1): `sqrt(HW)` at the DC bin, zero elsewhere: the spectrum of a constant plane of value 1.
    pub fn dc_of_mean(&self) -> Result<Tensor> {
        let mut dc = vec![0f64; self.h * self.wr];
        dc[0] = ((self.h * self.w) as f64).sqrt();
        Tensor::from_vec(dc, (self.h, self.wr), self.self_conjugate.device())?.to_dtype(self.self_conjugate.dtype())
    }

    /// Scale of the exact-zero threshold: `tol = scale * sum|x|` per plane (see [`SNAP_ULPS`]).
    pub fn snap_scale(&self, dtype: DType) -> f64 {
        let eps = if dtype == DType::F64 { f64::EPSILON } else { f32::EPSILON as f64 };
        SNAP_ULPS * eps / ((self.h * self.w) as f64).sqrt()
    }
}

fn poisoned<T>(_: T) -> candle_core::Error {
    candle_core::Error::Msg("DFT basis cache lock poisoned".into())
}

/// Split (.., 2n) into its two halves.
fn halves(t: &Tensor, n: usize) -> Result<(Tensor, Tensor)> {
    Ok((t.narrow(D::Minus1, 0, n)?, t.narrow(D::Minus1, n, n)?))
}

/// (B, H, X) -> (B*X, H) rows along H, and back.
fn rows_along_h(t: &Tensor) -> Result<Tensor> {
    let (b, h, x) = t.dims3()?;
    t.transpose(1, 2)?.contiguous()?.reshape((b * x, h))
}

fn from_rows_along_h(t: &Tensor, b: usize, x: usize) -> Result<Tensor> {
    let h = t.dim(1)?;
    t.reshape((b, x, h))?.transpose(1, 2)?.contiguous()
}

/// Flatten leading dims: (.., H, W) -> (B, H, W), remembering them.
fn flatten_planes(x: &Tensor) -> Result<(Tensor, Vec<usize>)> {
    let dims = x.dims();
    if dims.len() < 2 {
        candle_core::bail!("rfft2/irfft2: expected a tensor of rank >= 2, got shape {:?}", dims);
    }
    let lead = dims[..dims.len() - 2].to_vec();
    let b: usize = lead.iter().product();
    let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    Ok((x.reshape((b, h, w))?, lead))
}

fn with_lead(t: &Tensor, lead: &[usize]) -> Result<Tensor> {
    let mut shape = lead.to_vec();
    shape.extend_from_slice(&t.dims()[1..]);
    t.reshape(shape)
}

/// `torch.fft.rfft2(x, norm="ortho")` over the last two dims: returns (re, im), each (.., H, W/2+1).
pub fn rfft2(x: &Tensor) -> Result<(Tensor, Tensor)> {
    rfft2_in(x, compute_dtype(x.dtype()))
}

/// [`rfft2`] with the products and the exact-zero threshold in `compute` (f32: what the f32 spectral path of an
/// export computes; see `SpectralPrecision` in `graph.rs`).
pub fn rfft2_in(x: &Tensor, compute: DType) -> Result<(Tensor, Tensor)> {
    let (x3, lead) = flatten_planes(x)?;
    let (_, h, w) = x3.dims3()?;
    let x3 = x3.to_dtype(compute)?;
    let bases = DftBases::get(h, w, x3.dtype(), x.device())?;
    let (re, im) = if compute == DType::F32 {
        let (xc, mean) = centered_f32(&x3)?;
        let (re, im) = products(&xc, &bases)?;
        let re = re.broadcast_add(&mean.broadcast_mul(&bases.dc_of_mean()?)?)?;
        exact_zeros(&xc, &re, &im, &bases)?
    } else {
        let (re, im) = products(&x3, &bases)?;
        exact_zeros(&x3, &re, &im, &bases)?
    };
    let (re, im) = (re.to_dtype(x.dtype())?, im.to_dtype(x.dtype())?);
    Ok((with_lead(&re, &lead)?, with_lead(&im, &lead)?))
}

/// f32 products run on each plane less its mean, and the exact-zero threshold is taken from that centered plane.
/// A product's rounding error scales with the plane's mass `sum|x|`; where a large mean dominates it (real
/// images, and most of all dark ones), the small components that AdaptIR's phase branch takes `atan2` of drown
/// in it. Measured on the shipped lowlight adapter's f32 file on real photo patches: 1.3e-3 from the model
/// uncentered, 3.3e-6 centered (docs/compiler.md "Real images and the spectral products"). The mean only
/// changes the DC bin, which gets it back exactly as `mean * sqrt(HW)` (ortho scaling). Returns (centered, mean).
fn centered_f32(x3: &Tensor) -> Result<(Tensor, Tensor)> {
    let mean = x3.mean_keepdim((1, 2))?;
    Ok((x3.broadcast_sub(&mean)?, mean))
}

/// The raw two-stage product in the compute dtype, before exact zeros are restored: for diagnostics and tests.
pub fn rfft2_products(x: &Tensor) -> Result<(Tensor, Tensor)> {
    rfft2_products_in(x, compute_dtype(x.dtype()))
}

/// [`rfft2_products`] in `compute`.
pub fn rfft2_products_in(x: &Tensor, compute: DType) -> Result<(Tensor, Tensor)> {
    let (x3, lead) = flatten_planes(x)?;
    let (_, h, w) = x3.dims3()?;
    let x3 = x3.to_dtype(compute)?;
    let bases = DftBases::get(h, w, x3.dtype(), x.device())?;
    let (re, im) = products(&x3, &bases)?;
    Ok((with_lead(&re, &lead)?, with_lead(&im, &lead)?))
}

fn products(x3: &Tensor, bases: &DftBases) -> Result<(Tensor, Tensor)> {
    let (b, h, w) = x3.dims3()?;
    let wr = bases.wr;

    // Along W: (B*H, W) @ (W, 2Wr) -> (B, H, 2Wr) = (re | im).
    let half = x3.reshape((b * h, w))?.matmul(&bases.fwd_w)?;
    let half = half.reshape((b, h, 2 * wr))?;
    // Along H on (re | im) rows: (B*Wr, 2H) @ (2H, 2H).
    let (re, im) = halves(&half, wr)?;
    let rows = Tensor::cat(&[rows_along_h(&re)?, rows_along_h(&im)?], 1)?;
    let spec = rows.matmul(&bases.fwd_h)?;
    let (re, im) = halves(&spec, h)?;
    Ok((from_rows_along_h(&re, b, wr)?, from_rows_along_h(&im, b, wr)?))
}

fn exact_zeros(x3: &Tensor, re: &Tensor, im: &Tensor, bases: &DftBases) -> Result<(Tensor, Tensor)> {
    let (h, w, x) = (bases.h, bases.w, x3);
    // Exact zeros: below the product's own rounding bound, and Im at the self-conjugate bins.
    let _ = (h, w);
    let scale = bases.snap_scale(x.dtype());
    let tol = x.detach().abs()?.sum_keepdim((1, 2))?.affine(scale, 0.0)?;
    let zeros = re.zeros_like()?;
    let snap = |v: &Tensor, forced: Option<&Tensor>| -> Result<Tensor> {
        let small = v.detach().abs()?.broadcast_le(&tol)?;
        let zero_here = match forced {
            Some(f) => small.to_dtype(x.dtype())?.broadcast_maximum(f)?.gt(0.0)?,
            None => small,
        };
        zero_here.where_cond(&zeros, v)
    };
    Ok((snap(re, None)?, snap(im, Some(&bases.self_conjugate))?))
}

/// `torch.fft.irfft2(complex(re, im), s=(h, w), norm="ortho")` over the last two dims.
pub fn irfft2(re: &Tensor, im: &Tensor, hw: (usize, usize)) -> Result<Tensor> {
    irfft2_in(re, im, hw, compute_dtype(re.dtype()))
}

/// [`irfft2`] with the products in `compute`.
pub fn irfft2_in(re: &Tensor, im: &Tensor, (h, w): (usize, usize), compute: DType) -> Result<Tensor> {
    if re.dims() != im.dims() {
        candle_core::bail!("irfft2: re {:?} and im {:?} differ in shape", re.dims(), im.dims());
    }
    let (re3, lead) = flatten_planes(re)?;
    let im3 = im.reshape(re3.dims())?;
    let (b, hh, wr) = re3.dims3()?;
    let (re3, im3) = (re3.to_dtype(compute)?, im3.to_dtype(compute)?);
    let bases = DftBases::get(h, w, compute, re.device())?;
    if hh != h || wr != bases.wr {
        candle_core::bail!("irfft2: spectrum is {hh}x{wr}, expected {h}x{} for an output of {h}x{w}", bases.wr);
    }
    // Inverse along H on (re | im) rows.
    let rows = Tensor::cat(&[rows_along_h(&re3)?, rows_along_h(&im3)?], 1)?;
    let y = rows.matmul(&bases.inv_h)?;
    let (yr, yi) = halves(&y, h)?;
    let (yr, yi) = (from_rows_along_h(&yr, b, wr)?, from_rows_along_h(&yi, b, wr)?);
    // Complex-to-real along W: (B*H, 2Wr) @ (2Wr, W).
    let half = Tensor::cat(&[yr, yi], 2)?.reshape((b * h, 2 * wr))?;
    let out = half.matmul(&bases.inv_w)?.reshape((b, h, w))?.to_dtype(re.dtype())?;
    with_lead(&out, &lead)
}

// ---- ONNX lowering -------------------------------------------------------------------------------------

use crate::graph::{Attr, FftLowering, GraphBuilder, SpectralPrecision, KEEP_PRECISION_PREFIX};

/// ONNX `TensorProto.DataType` of double and float, for `Cast`.
const ONNX_DOUBLE: i64 = 11;
const ONNX_FLOAT: i64 = 1;

/// What the lowering needs to know about the spectral precision: the candle dtype of the constants, the ONNX
/// type code of the products, and the prefix of the constants' names. f64 constants keep today's names
/// (`dft16x16.fwd_w_re`); f32 ones are named `spectral_f32.dft16x16.fwd_w_re`, so a precision conversion of the
/// file (`--fp16`) leaves them alone and no pass merges them with the model's own f32 constants.
struct Spectral {
    dtype: DType,
    onnx: i64,
    prefix: &'static str,
}

fn spectral(b: &dyn GraphBuilder) -> Spectral {
    match b.spectral_precision() {
        SpectralPrecision::F64 => Spectral { dtype: DType::F64, onnx: ONNX_DOUBLE, prefix: "" },
        SpectralPrecision::F32 => Spectral { dtype: DType::F32, onnx: ONNX_FLOAT, prefix: KEEP_PRECISION_PREFIX },
    }
}

impl Spectral {
    fn tag(&self, (h, w): (usize, usize)) -> String {
        format!("{}dft{h}x{w}", self.prefix)
    }

    /// A constant of the spectral dtype (built in f64, rounded once).
    fn constant(&self, b: &mut dyn GraphBuilder, name: &str, t: &Tensor) -> Result<String> {
        b.constant(name, &t.to_dtype(self.dtype)?)
    }

    fn scalar(&self, b: &mut dyn GraphBuilder, name: &str, v: f64) -> Result<String> {
        let hint = format!("{}{name}", self.prefix);
        self.constant(b, &hint, &Tensor::new(v, &candle_core::Device::Cpu)?)
    }
}

/// Emit `rfft2(x)` over the last two dims (H, W) = `hw` with this crate's semantics (products in the builder's
/// spectral precision, exact zeros restored). The bases are graph constants shared by every call of the same
/// size; the function body is size-agnostic. Returns (re, im) in x's dtype.
pub fn lower_rfft2(b: &mut dyn GraphBuilder, x: &str, (h, w): (usize, usize)) -> Result<(String, String)> {
    let sp = spectral(b);
    let bases = DftBases::get(h, w, DType::F64, &candle_core::Device::Cpu)?;
    let tag = sp.tag((h, w));
    // ONNX's DFT op on sizes that are not powers of two accumulates rounding over up to H + W terms per
    // output (its own bound), so its threshold is that much wider; still ~1e-14 of the data in f64.
    let widen = match b.fft_lowering() {
        FftLowering::MatMul => 1.0,
        FftLowering::Dft => (h + w) as f64,
    };
    let snap = bases.snap_scale(sp.dtype) * widen;
    let scale = sp.constant(b, &format!("{tag}.snap_scale"), &Tensor::new(snap, &candle_core::Device::Cpu)?)?;
    let mask = sp.constant(b, &format!("{tag}.self_conjugate"), &bases.self_conjugate)?;
    let to = sp.onnx;
    let outs = match b.fft_lowering() {
        FftLowering::MatMul => {
            // Along W (from the right, one flat GEMM each): the real rows -> Re and Im of the half spectrum,
            // stacked along H; along H (from the left): one batched product with the real (2H, 2H) form of the
            // complex DFT, `[[C, S], [-S, C]] @ [Re; Im]`. Four kernels fewer than four H-by-H products, and
            // ONNX Runtime runs one batched GEMM of twice the size instead of four.
            let (cw, sw) = (bases.fwd_w.narrow(1, 0, bases.wr)?, bases.fwd_w.narrow(1, bases.wr, bases.wr)?);
            let cw = sp.constant(b, &format!("{tag}.fwd_w_re"), &cw.contiguous()?)?;
            let sw = sp.constant(b, &format!("{tag}.fwd_w_im"), &sw.contiguous()?)?;
            let fh = sp.constant(b, &format!("{tag}.fwd_h_left"), &bases.complex_h_left(false)?)?;
            let mut inputs = vec![x, &cw, &sw, &fh, &scale, &mask];
            // f32: the products run on the plane less its mean, as in `rfft2_in` (`centered_f32` says why); the
            // DC bin gets the mean back as `mean * sqrt(HW)`.
            let dc = if sp.dtype == DType::F32 {
                Some(sp.constant(b, &format!("{tag}.dc_of_mean"), &bases.dc_of_mean()?)?)
            } else {
                None
            };
            if let Some(dc) = &dc {
                inputs.push(dc);
            }
            let centered = dc.is_some();
            b.function("Rfft2", &inputs, 2, &|b, i| {
                let xd = b.op("Cast", &[&i[0]], vec![("to", Attr::Int(to))])?;
                let (xp, mean) = if centered {
                    let ax = b.constant_i64("axes_hw", &[-2, -1])?;
                    let mean = b.op("ReduceMean", &[&xd, &ax], vec![("keepdims", Attr::Int(1))])?;
                    (b.op("Sub", &[&xd, &mean], vec![])?, Some(mean))
                } else {
                    (xd.clone(), None)
                };
                let (xr, xi) = (b.op("MatMul", &[&xp, &i[1]], vec![])?, b.op("MatMul", &[&xp, &i[2]], vec![])?);
                let stacked = b.op("Concat", &[&xr, &xi], vec![("axis", Attr::Int(-2))])?;
                let f = b.op("MatMul", &[&i[3], &stacked], vec![])?;
                let parts = b.op_n("Split", &[&f], vec![("axis", Attr::Int(-2)), ("num_outputs", Attr::Int(2))], 2)?;
                let re = match &mean {
                    Some(mean) => {
                        let dc = b.op("Mul", &[mean, &i[6]], vec![])?;
                        b.op("Add", &[&parts[0], &dc], vec![])?
                    }
                    None => parts[0].clone(),
                };
                rfft2_exact_zeros(b, &sp, &i[0], &xp, &re, &parts[1], &i[4], &i[5])
            })?
        }
        FftLowering::Dft => {
            b.function("Rfft2Dft", &[x, &scale, &mask], 2, &|b, i| {
                let xd = b.op("Cast", &[&i[0]], vec![("to", Attr::Int(to))])?;
                let last = b.constant_i64("axis_last", &[-1])?;
                let xc = b.op("Unsqueeze", &[&xd, &last], vec![])?; // (.., H, W, 1) real signal
                                                                    // DFT's axis is a scalar input.
                let ax_w = b.constant("axis_w", &Tensor::new(-2i64, &candle_core::Device::Cpu)?)?;
                let ax_h = b.constant("axis_h", &Tensor::new(-3i64, &candle_core::Device::Cpu)?)?;
                let one_sided = b.op("DFT", &[&xc, "", &ax_w], vec![("onesided", Attr::Int(1))])?;
                let full = b.op("DFT", &[&one_sided, "", &ax_h], vec![])?;
                // ortho scaling: 1 / sqrt(H W), from the runtime shape.
                let shape = b.op("Shape", &[&xd], vec![])?;
                let (start, end) = (b.constant_i64("minus2", &[-2])?, b.constant_i64("end", &[i64::MAX])?);
                let hw = b.op("Slice", &[&shape, &start, &end], vec![])?;
                let n = b.op("ReduceProd", &[&hw], vec![("keepdims", Attr::Int(0))])?;
                let n = b.op("Cast", &[&n], vec![("to", Attr::Int(to))])?;
                let s = b.op("Sqrt", &[&n], vec![])?;
                let full = b.op("Div", &[&full, &s], vec![])?;
                let parts =
                    b.op_n("Split", &[&full], vec![("axis", Attr::Int(-1)), ("num_outputs", Attr::Int(2))], 2)?;
                let fr = b.op("Squeeze", &[&parts[0], &last], vec![])?;
                let fi = b.op("Squeeze", &[&parts[1], &last], vec![])?;
                rfft2_exact_zeros(b, &sp, &i[0], &xd, &fr, &fi, &i[1], &i[2])
            })?
        }
    };
    Ok((outs[0].clone(), outs[1].clone()))
}

/// Below the rounding bound -> +0.0; Im at the self-conjugate bins -> +0.0; back to x's dtype.
/// `scale` and `mask` are in the spectral dtype.
#[allow(clippy::too_many_arguments)]
fn rfft2_exact_zeros(
    b: &mut dyn GraphBuilder,
    sp: &Spectral,
    x: &str,
    xd: &str,
    fr: &str,
    fi: &str,
    scale: &str,
    mask: &str,
) -> Result<Vec<String>> {
    let ax = b.constant_i64("axes_hw", &[-2, -1])?;
    let abs = b.op("Abs", &[xd], vec![])?;
    let sum = b.op("ReduceSum", &[&abs, &ax], vec![("keepdims", Attr::Int(1))])?;
    let tol = b.op("Mul", &[&sum, scale], vec![])?;
    let f64_path = sp.dtype == DType::F64;
    let half = sp.scalar(b, if f64_path { "half_f64" } else { "half" }, 0.5)?;
    let forced = b.op("Greater", &[mask, &half], vec![])?;
    let snap = |b: &mut dyn GraphBuilder, v: &str, forced: Option<&str>| -> Result<String> {
        let abs = b.op("Abs", &[v], vec![])?;
        let small = b.op("LessOrEqual", &[&abs, &tol], vec![])?;
        let zero_here = match forced {
            Some(m) => b.op("Or", &[&small, m], vec![])?,
            None => small,
        };
        let zero = sp.scalar(b, if f64_path { "zero_f64" } else { "zero" }, 0.0)?;
        b.op("Where", &[&zero_here, &zero, v], vec![])
    };
    let fr = snap(b, fr, None)?;
    let fi = snap(b, fi, Some(&forced))?;
    Ok(vec![b.op("CastLike", &[&fr, x], vec![])?, b.op("CastLike", &[&fi, x], vec![])?])
}

/// Emit `irfft2(re, im, s = hw)` (products in the spectral precision; Im of DC and Nyquist columns ignored).
pub fn lower_irfft2(b: &mut dyn GraphBuilder, re: &str, im: &str, (h, w): (usize, usize)) -> Result<String> {
    let sp = spectral(b);
    let bases = DftBases::get(h, w, DType::F64, &candle_core::Device::Cpu)?;
    let tag = sp.tag((h, w));
    let to = sp.onnx;
    // Along H (from the left): `[[C, -S], [S, C]] @ [Re; Im]`, one batched product; along W (from the right):
    // Re and Im rows through the two halves of the complex-to-real basis, one flat GEMM each.
    let ih = sp.constant(b, &format!("{tag}.inv_h_left"), &bases.complex_h_left(true)?)?;
    let iw_re = sp.constant(b, &format!("{tag}.inv_w_re"), &bases.inv_w.narrow(0, 0, bases.wr)?.contiguous()?)?;
    let iw_im =
        sp.constant(b, &format!("{tag}.inv_w_im"), &bases.inv_w.narrow(0, bases.wr, bases.wr)?.contiguous()?)?;
    let outs = b.function("Irfft2", &[re, im, &ih, &iw_re, &iw_im], 1, &|b, i| {
        let z = b.op("Concat", &[&i[0], &i[1]], vec![("axis", Attr::Int(-2))])?;
        let z = b.op("Cast", &[&z], vec![("to", Attr::Int(to))])?;
        let y = b.op("MatMul", &[&i[2], &z], vec![])?;
        let parts = b.op_n("Split", &[&y], vec![("axis", Attr::Int(-2)), ("num_outputs", Attr::Int(2))], 2)?;
        let (a, c) = (b.op("MatMul", &[&parts[0], &i[3]], vec![])?, b.op("MatMul", &[&parts[1], &i[4]], vec![])?);
        let out = b.op("Add", &[&a, &c], vec![])?;
        Ok(vec![b.op("CastLike", &[&out, &i[0]], vec![])?])
    })?;
    Ok(outs[0].clone())
}
