//! `conv2d` for the backbone's dense convolutions (stride 1, dilation 1, one group, the same zero padding on every
//! side) on the CPU: per sample, im2col into a `(C·kh·kw, OH·OW)` matrix, then one GEMM `W (Co, C·kh·kw) @ cols`
//! written straight into the sample's `(Co, OH·OW)` output, which is already NCHW.
//!
//! Why not candle's conv2d: its CPU im2col copies one element at a time with index arithmetic per element and
//! builds the whole batch's column matrix at once; measured on `adaptir train` (ipt-tiny, x4, batch 16) that copy
//! alone was half of all CPU time. Here each im2col row is a few `copy_from_slice` runs per output row, the
//! column buffer holds one sample (8 MiB for the x4 tail's 96x96 stage, not 16 x that), and the GEMM is the same
//! `gemm` crate candle uses, with the same threading. Other devices, dtypes and shapes go to candle's conv2d.
//! [`conv2d_trainable`] gives the same forward every gradient (pre-training, full fine-tuning).
//! The summation order differs from candle's by rounding only; `ops/tests/ops_grad.rs` checks both against each
//! other and the frozen input gradient against finite differences.
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

struct Im2colConv2d {
    padding: usize,
}

/// Shapes of one call: input (n, c, h, w), kernel (co, c, k, k), output (n, co, oh, ow).
struct Dims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    k: usize,
    oh: usize,
    ow: usize,
}

impl Im2colConv2d {
    fn dims(&self, lx: &Layout, lw: &Layout) -> Result<Dims> {
        let (n, c, h, w) = lx.shape().dims4()?;
        let (co, ci, kh, kw) = lw.shape().dims4()?;
        if ci != c || kh != kw || !lx.is_contiguous() || !lw.is_contiguous() {
            candle_core::bail!("im2col conv2d: needs contiguous (n, c, h, w) and (co, c, k, k) operands");
        }
        let (hp, wp) = (h + 2 * self.padding, w + 2 * self.padding);
        if hp < kh || wp < kw {
            candle_core::bail!("im2col conv2d: a {kh}x{kw} kernel does not fit a padded {hp}x{wp} input");
        }
        Ok(Dims { n, c, h, w, co, k: kh, oh: hp + 1 - kh, ow: wp + 1 - kw })
    }

    /// `one` is 1 in `T` (gemm's `beta`).
    fn run<T: Copy + Default + Send + Sync + 'static>(&self, x: &[T], wt: &[T], d: &Dims, one: T) -> Vec<T> {
        let (p, k) = (self.padding, d.k);
        let (rows, cols_len, out_len) = (d.c * k * k, d.oh * d.ow, d.co * d.oh * d.ow);
        let mut out = vec![T::default(); d.n * out_len];
        let direct = k == 1 && p == 0; // a 1x1 convolution's column matrix is the input itself
        let mut cols = if direct { vec![] } else { vec![T::default(); rows * cols_len] };
        let threads = candle_core::utils::get_num_threads();
        let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
        for (s, y) in out.chunks_mut(out_len).enumerate() {
            let xs = &x[s * d.c * d.h * d.w..(s + 1) * d.c * d.h * d.w];
            if !direct {
                fill_columns(xs, d, p, &mut cols);
            }
            let rhs = if direct { xs.as_ptr() } else { cols.as_ptr() };
            // SAFETY: y is (co, oh·ow) row-major, wt (co, rows) row-major and rhs (rows, oh·ow) row-major, all in
            // bounds by construction; `read_dst = false` so y's zeros are not read.
            unsafe {
                gemm::gemm(
                    d.co,
                    cols_len,
                    rows,
                    y.as_mut_ptr(),
                    1,
                    cols_len as isize,
                    false,
                    wt.as_ptr(),
                    1,
                    rows as isize,
                    rhs,
                    1,
                    cols_len as isize,
                    T::default(),
                    one,
                    false,
                    false,
                    false,
                    parallelism,
                );
            }
        }
        out
    }
}

/// One sample's column matrix: row `(c, ky, kx)` holds input channel `c` shifted by `(ky - p, kx - p)`, zero
/// outside, as `(oh, ow)`; `cols` is `(c·k·k, oh·ow)`.
fn fill_columns<T: Copy + Default + Send + Sync>(xs: &[T], d: &Dims, p: usize, cols: &mut [T]) {
    let k = d.k;
    cols.par_chunks_mut(d.oh * d.ow).enumerate().for_each(|(r, row)| {
        let (c, ky, kx) = (r / (k * k), r / k % k, r % k);
        // Output column ox reads input column ox + kx - p where that lies inside [0, w).
        let lo = p.saturating_sub(kx).min(d.ow);
        let hi = (d.w + p).saturating_sub(kx).clamp(lo, d.ow);
        for (oy, dst) in row.chunks_mut(d.ow).enumerate() {
            let iy = (oy + ky).wrapping_sub(p);
            if iy >= d.h || lo == hi {
                dst.fill(T::default());
                continue;
            }
            let src = &xs[(c * d.h + iy) * d.w..(c * d.h + iy + 1) * d.w];
            dst[..lo].fill(T::default());
            dst[lo..hi].copy_from_slice(&src[lo + kx - p..hi + kx - p]);
            dst[hi..].fill(T::default());
        }
    });
}

/// Every sample's column matrix, `(n, c·k·k, oh·ow)`: the operand of the kernel gradient.
struct Im2col {
    k: usize,
    padding: usize,
}

impl CustomOp1 for Im2col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, x: &CpuStorage, lx: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = lx.shape().dims4()?;
        let (hp, wp) = (h + 2 * self.padding, w + 2 * self.padding);
        if !lx.is_contiguous() || hp < self.k || wp < self.k {
            candle_core::bail!("im2col: needs a contiguous input at least as large as the {0}x{0} kernel", self.k);
        }
        let d = Dims { n, c, h, w, co: 0, k: self.k, oh: hp + 1 - self.k, ow: wp + 1 - self.k };
        let per_sample = c * self.k * self.k * d.oh * d.ow;
        fn all<T: Copy + Default + Send + Sync>(x: &[T], d: &Dims, p: usize, per_sample: usize) -> Vec<T> {
            let mut cols = vec![T::default(); d.n * per_sample];
            for (s, out) in cols.chunks_mut(per_sample).enumerate() {
                fill_columns(&x[s * d.c * d.h * d.w..(s + 1) * d.c * d.h * d.w], d, p, out);
            }
            cols
        }
        let off = lx.start_offset();
        let out = match x {
            CpuStorage::F32(v) => CpuStorage::F32(all(&v[off..], &d, self.padding, per_sample)),
            CpuStorage::F64(v) => CpuStorage::F64(all(&v[off..], &d, self.padding, per_sample)),
            _ => candle_core::bail!("im2col: f32 or f64 expected"),
        };
        Ok((out, Shape::from((n, c * self.k * self.k, d.oh * d.ow))))
    }
}

impl CustomOp2 for Im2colConv2d {
    fn name(&self) -> &'static str {
        "im2col-conv2d"
    }

    fn cpu_fwd(&self, x: &CpuStorage, lx: &Layout, w: &CpuStorage, lw: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = self.dims(lx, lw)?;
        let shape = Shape::from((d.n, d.co, d.oh, d.ow));
        let (ox, ow) = (lx.start_offset(), lw.start_offset());
        let out = match (x, w) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => CpuStorage::F32(self.run(&x[ox..], &w[ow..], &d, 1.0)),
            (CpuStorage::F64(x), CpuStorage::F64(w)) => CpuStorage::F64(self.run(&x[ox..], &w[ow..], &d, 1.0)),
            _ => candle_core::bail!("im2col conv2d: f32 or f64 operands of one dtype expected"),
        };
        Ok((out, shape))
    }
}

/// `conv2d(x, w)`, stride 1, dilation 1, `padding` zeros on each side, without gradient tracking: the im2col
/// path above for square kernels of f32 / f64 CPU tensors, candle's conv2d otherwise. Callers that need
/// gradients use candle's conv2d (tracked kernels) or `frozen::conv2d` (tracked input, frozen kernel).
pub fn conv2d_untracked(x: &Tensor, w: &Tensor, padding: usize) -> Result<Tensor> {
    if !im2col_path(x, w)? {
        return x.detach().conv2d(&w.detach(), padding, 1, 1, 1);
    }
    x.detach().contiguous()?.apply_op2_no_bwd(&w.detach().contiguous()?, &Im2colConv2d { padding })
}

/// Whether [`conv2d_untracked`] takes the im2col path for these operands.
fn im2col_path(x: &Tensor, w: &Tensor) -> Result<bool> {
    let (_, _, kh, kw) = w.dims4()?;
    Ok(x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) && x.dtype() == w.dtype() && kh == kw)
}

/// `conv2d(x, w) + bias` with gradients for whichever of `x`, `w`, `bias` are tracked (full training, the
/// pre-training of a backbone): on the im2col path one graph node holding the operands and the output, whose
/// backward is the adjoint convolution for `x`, `sum_n dY_n cols_n^T` for `w` (the columns recomputed) and the
/// sum of `dY` for `bias`; candle's conv2d (and its conv-transpose backward) otherwise.
pub fn conv2d_trainable(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, padding: usize) -> Result<Tensor> {
    let add_bias = |y: Tensor| match bias {
        Some(b) => crate::channel::add(&y, b, 1),
        None => Ok(y),
    };
    let (co, ci, k, _) = w.dims4()?;
    if !im2col_path(x, w)? || padding >= k {
        return add_bias(x.conv2d(w, padding, 1, 1, 1)?);
    }
    let y = add_bias(conv2d_untracked(x, w, padding)?)?;
    // Without a bias, the third arg is `w` again and gets no gradient through it.
    let third = bias.unwrap_or(w).clone();
    let has_bias = bias.is_some();
    crate::fused::carry3("conv2d", [x, w, &third], y, move |args, _y, grad| {
        let (x, w) = (args[0], args[1]);
        let gx = if x.track_op() {
            let adjoint = w.detach().transpose(0, 1)?.contiguous()?.flip(&[2, 3])?.contiguous()?;
            Some(conv2d_untracked(grad, &adjoint, k - 1 - padding)?)
        } else {
            None
        };
        let gw = if w.track_op() {
            let (n, _, oh, ow) = grad.dims4()?;
            let cols = x.detach().contiguous()?.apply_op1_no_bwd(&Im2col { k, padding })?; // (n, K, HW)
            let dy = grad.contiguous()?.reshape((n, co, oh * ow))?;
            Some(dy.matmul(&cols.transpose(1, 2)?)?.sum(0)?.reshape((co, ci, k, k))?)
        } else {
            None
        };
        let gb = if has_bias { Some(crate::channel::sum_except(grad, 1)?) } else { None };
        Ok(vec![gx, gw, gb])
    })
}

/// A depthwise k x k convolution (zero padding k / 2) of a channels-last (N, H, W, C) input with a trained kernel
/// (C, 1, k, k) and bias (C) (pre-training EDT's LePE and MLP convs): one graph node holding the input and the
/// output, as [`crate::frozen::depthwise_nhwc`] computes the value. Backward: the input's gradient is the same sum
/// over the gradient with the kernel flipped; tap (ky, kx)'s is the sum over (N, H, W) of the gradient times the
/// input shifted by that tap; the bias's the sum of the gradient (both sums by `channel::sum_except`). Composing
/// it from candle ops instead kept k^2 full-size products alive per conv and summed each with candle's strided
/// reduction.
pub fn depthwise_nhwc_trainable(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (c, _, k, _) = weight.dims4()?;
    if k.is_multiple_of(2) {
        candle_core::bail!("depthwise_nhwc_trainable: an odd k x k kernel, not k = {k}");
    }
    let taps = depthwise_taps(&weight.detach())?;
    let y = shifted_sum(&x.detach(), &taps, k)?.broadcast_add(&bias.detach())?;
    let flipped: Vec<Tensor> = taps.into_iter().rev().collect();
    crate::fused::carry3("depthwise-nhwc", [x, weight, bias], y, move |args, _, grad| {
        let (x, weight, bias) = (args[0], args[1], args[2]);
        let gx = if x.track_op() { Some(shifted_sum(grad, &flipped, k)?) } else { None };
        let gw = if weight.track_op() {
            let (_, h, w, _) = grad.dims4()?;
            let p = k / 2;
            let padded = x.detach().pad_with_zeros(1, p, p)?.pad_with_zeros(2, p, p)?;
            let mut per_tap = Vec::with_capacity(k * k);
            for ky in 0..k {
                for kx in 0..k {
                    let shifted = padded.narrow(1, ky, h)?.narrow(2, kx, w)?;
                    per_tap.push(crate::channel::sum_except(&(shifted * grad)?, 3)?);
                }
            }
            // (k^2, C) -> (C, 1, k, k)
            Some(Tensor::stack(&per_tap, 0)?.t()?.contiguous()?.reshape((c, 1, k, k))?)
        } else {
            None
        };
        let gb = if bias.track_op() { Some(crate::channel::sum_except(grad, 3)?) } else { None };
        Ok(vec![gx, gw, gb])
    })
}

/// The taps of a depthwise kernel (C, 1, k, k) as [`crate::frozen::depthwise_nhwc`] and
/// [`depthwise_nhwc_trainable`] take them: tap `ky * k + kx` is the (C,) vector of kernel position (ky, kx).
pub fn depthwise_taps(weight: &Tensor) -> Result<Vec<Tensor>> {
    let (c, _, k, _) = weight.dims4()?;
    let w = weight.reshape((c, k * k))?.t()?.contiguous()?;
    (0..k * k).map(|i| w.get(i)).collect()
}

/// `sum over (ky, kx) of pad(x)[:, ky.., kx.., :] * taps[ky k + kx]`: the correlation of the depthwise convs
/// ([`crate::frozen::depthwise_nhwc`], [`depthwise_nhwc_trainable`]).
pub(crate) fn shifted_sum(x: &Tensor, taps: &[Tensor], k: usize) -> Result<Tensor> {
    let (_, h, w, _) = x.dims4()?;
    let p = k / 2;
    let padded = x.pad_with_zeros(1, p, p)?.pad_with_zeros(2, p, p)?;
    let mut acc: Option<Tensor> = None;
    for ky in 0..k {
        for kx in 0..k {
            let term = padded.narrow(1, ky, h)?.narrow(2, kx, w)?.broadcast_mul(&taps[ky * k + kx])?;
            acc = Some(match acc {
                Some(a) => (a + term)?,
                None => term,
            });
        }
    }
    acc.ok_or_else(|| candle_core::Error::Msg("depthwise conv with an empty kernel".into()))
}
