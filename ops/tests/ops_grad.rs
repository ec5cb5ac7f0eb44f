//! Every backward against central finite differences in f64, and atan2's branch cut.
mod common;

use adaptir_ops::tolerance::{EXACT, F32_REL, F64_REL, FINITE_DIFFERENCE_REL};
use adaptir_ops::{amplitude, atan2, irfft2, polar, rfft2};
use candle_core::{DType, Device, Tensor};
use common::*;
use std::f64::consts::PI;

#[test]
fn rfft2_backward() {
    let mut rng = rng(10);
    for (h, w) in [(4, 4), (5, 3), (3, 6)] {
        let x = random(&mut rng, &[2, h, w], 1.0);
        let (wre, wim) = (random(&mut rng, &[2, h, w / 2 + 1], 1.0), random(&mut rng, &[2, h, w / 2 + 1], 1.0));
        let err = finite_difference_check(&[x], |t| {
            let (re, im) = rfft2(&t[0])?;
            weighted_sum(&re, &wre)? + weighted_sum(&im, &wim)?
        });
        assert!(err <= FINITE_DIFFERENCE_REL, "{h}x{w}: {err:e}");
    }
}

#[test]
fn irfft2_backward() {
    let mut rng = rng(11);
    for (h, w) in [(4, 4), (5, 3), (3, 6)] {
        let wr = w / 2 + 1;
        let re = random(&mut rng, &[2, h, wr], 1.0);
        let im = random(&mut rng, &[2, h, wr], 1.0);
        let wo = random(&mut rng, &[2, h, w], 1.0);
        let err = finite_difference_check(&[re, im], |t| weighted_sum(&irfft2(&t[0], &t[1], (h, w))?, &wo));
        assert!(err <= FINITE_DIFFERENCE_REL, "{h}x{w}: {err:e}");
    }
}

#[test]
fn atan2_amplitude_polar_backward() {
    let mut rng = rng(12);
    let y = random(&mut rng, &[3, 7], 2.0);
    let x = random(&mut rng, &[3, 7], 2.0);
    let w1 = random(&mut rng, &[3, 7], 1.0);
    let w2 = random(&mut rng, &[3, 7], 1.0);
    let err = finite_difference_check(&[y.clone(), x.clone()], |t| weighted_sum(&atan2(&t[0], &t[1])?, &w1));
    assert!(err <= FINITE_DIFFERENCE_REL, "atan2: {err:e}");
    let err = finite_difference_check(&[y.clone(), x.clone()], |t| weighted_sum(&amplitude(&t[0], &t[1])?, &w1));
    assert!(err <= FINITE_DIFFERENCE_REL, "amplitude: {err:e}");
    let err = finite_difference_check(&[y, x], |t| {
        let (re, im) = polar(&t[0], &t[1])?;
        weighted_sum(&re, &w1)? + weighted_sum(&im, &w2)?
    });
    assert!(err <= FINITE_DIFFERENCE_REL, "polar: {err:e}");
}

/// The whole frequency branch of AdaptIR (rfft2 -> amplitude/phase -> affine -> polar -> irfft2 -> abs).
#[test]
fn frequency_branch_backward() {
    let mut rng = rng(13);
    let (h, w) = (6, 5);
    let x = random(&mut rng, &[2, 2, h, w], 1.0);
    let aw = (random(&mut rng, &[1, 2, 1, 1], 0.2) + 1.0).unwrap();
    let ab = random(&mut rng, &[1, 2, 1, 1], 0.1);
    let pw = (random(&mut rng, &[1, 2, 1, 1], 0.2) + 1.0).unwrap();
    let pb = random(&mut rng, &[1, 2, 1, 1], 0.2);
    let wo = random(&mut rng, &[2, 2, h, w], 1.0);
    let err = finite_difference_check(&[x, aw, ab, pw, pb], |t| {
        let (re, im) = rfft2(&t[0])?;
        let mag = amplitude(&re, &im)?.broadcast_mul(&t[1])?.broadcast_add(&t[2])?;
        let pha = atan2(&im, &re)?.broadcast_mul(&t[3])?.broadcast_add(&t[4])?;
        let (zr, zi) = polar(&mag, &pha)?;
        weighted_sum(&irfft2(&zr, &zi, (h, w))?.abs()?, &wo)
    });
    assert!(err <= FINITE_DIFFERENCE_REL, "frequency branch: {err:e}");
}

/// Zero gradients (not NaN) at the origin, where atan2 and amplitude have no derivative (torch: 0).
#[test]
fn gradients_at_the_origin_are_zero() {
    let z = Tensor::zeros(4, DType::F64, &Device::Cpu).unwrap();
    let (vy, vx) = (candle_core::Var::from_tensor(&z).unwrap(), candle_core::Var::from_tensor(&z).unwrap());
    let l = (atan2(vy.as_tensor(), vx.as_tensor()).unwrap() + amplitude(vy.as_tensor(), vx.as_tensor()).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let g = l.backward().unwrap();
    for v in [&vy, &vx] {
        let gv = g.get(v).unwrap().to_vec1::<f64>().unwrap();
        assert!(gv.iter().all(|v| *v == 0.0), "{gv:?}");
    }
}

/// torch.angle's values at the branch cut and at signed zeros (listed in the adaptir_fft_edges README).
#[test]
fn atan2_branch_cut_and_signed_zeros() {
    let cases: &[(f32, f32, f64)] = &[
        (0.0, -1.0, PI),   // Re < 0, Im = +0 -> +pi
        (-0.0, -1.0, -PI), // Re < 0, Im = -0 -> -pi
        (0.0, 0.0, 0.0),
        (0.0, -0.0, PI), // angle(-0.0 + 0i) = +pi
        (1.0, 0.0, PI / 2.0),
        (-1.0, -1.0, -3.0 * PI / 4.0),
    ];
    let y = Tensor::new(cases.iter().map(|c| c.0).collect::<Vec<_>>(), &Device::Cpu).unwrap();
    let x = Tensor::new(cases.iter().map(|c| c.1).collect::<Vec<_>>(), &Device::Cpu).unwrap();
    let got = atan2(&y, &x).unwrap().to_vec1::<f32>().unwrap();
    for (g, c) in got.iter().zip(cases) {
        assert!(((*g as f64) - (c.2 as f32 as f64)).abs() <= EXACT, "atan2({}, {}) = {g}, want {}", c.0, c.1, c.2);
    }
    // atan2(-0, +0) = -0: the sign of the zero survives.
    let neg =
        atan2(&Tensor::new(&[-0.0f32], &Device::Cpu).unwrap(), &Tensor::new(&[0.0f32], &Device::Cpu).unwrap()).unwrap();
    assert_eq!(neg.to_vec1::<f32>().unwrap()[0].to_bits(), (-0.0f32).to_bits());
}

/// The im2col convolution (`conv.rs`) against candle's conv2d, in f64 (the same sums in another order) and f32,
/// for the kernel sizes and paddings of IPT's heads, tails and MeanShift, odd sizes, inputs smaller than the
/// kernel and a batch of 3; and the
/// frozen-kernel convolution's input gradient (the adjoint convolution) against central finite differences.
#[test]
fn conv2d_im2col_and_frozen_input_gradient() {
    let mut rng = rng(14);
    for (k, pad, height, width) in
        [(1, 0, 7, 5), (3, 1, 7, 5), (5, 2, 7, 5), (3, 0, 7, 5), (5, 1, 7, 5), (5, 2, 2, 3), (3, 1, 1, 1)]
    {
        let x = random(&mut rng, &[3, 3, height, width], 1.0);
        let w = random(&mut rng, &[4, 3, k, k], 0.5);
        let plain = x.conv2d(&w, pad, 1, 1, 1).unwrap();
        let scale = max_abs(&plain);
        let ours = adaptir_ops::conv::conv2d_untracked(&x, &w, pad).unwrap();
        assert_eq!(ours.dims(), plain.dims());
        assert!(max_abs_diff(&ours, &plain) <= F64_REL * scale, "{k}x{k} pad {pad}: f64 forward");
        let (x32, w32) = (x.to_dtype(DType::F32).unwrap(), w.to_dtype(DType::F32).unwrap());
        let ours32 = adaptir_ops::conv::conv2d_untracked(&x32, &w32, pad).unwrap().to_dtype(DType::F64).unwrap();
        assert!(max_abs_diff(&ours32, &plain) <= F32_REL * scale, "{k}x{k} pad {pad}: f32 forward");
        // Tracked input, frozen kernel: the forward is the untracked one, the gradient the adjoint convolution.
        let var = candle_core::Var::from_tensor(&x).unwrap();
        let tracked = adaptir_ops::frozen::conv2d(var.as_tensor(), &w, None, pad).unwrap();
        assert_eq!(max_abs_diff(&tracked, &ours), EXACT, "{k}x{k} pad {pad}: tracked forward");
        let wo = random(&mut rng, plain.dims(), 1.0);
        let bias = random(&mut rng, &[4], 1.0);
        let err = finite_difference_check(&[x], |t| {
            weighted_sum(&adaptir_ops::frozen::conv2d(&t[0], &w, Some(&bias), pad)?, &wo)
        });
        assert!(err <= FINITE_DIFFERENCE_REL, "{k}x{k} pad {pad}: {err:e}");
    }
}

/// The fused softmax and LayerNorm (frozen parameters) used in training: forward against the composed forms, and
/// the closed-form input gradients against central finite differences (f64 exercises the formulas; f32 runs
/// candle-nn's fused kernels).
#[test]
fn fused_softmax_and_layer_norm() {
    use adaptir_ops::fused::{layer_norm_frozen, softmax_last_dim};
    let mut rng = rng(15);
    let x = random(&mut rng, &[2, 3, 7], 2.0);
    let (w, b) = (random(&mut rng, &[7], 1.0), random(&mut rng, &[7], 1.0));
    let composed_softmax = candle_nn_softmax(&x);
    let composed_ln = composed_layer_norm(&x, &w, &b);
    let scale = |t: &Tensor| max_abs(t);
    for (t, reference, name) in [
        (softmax_last_dim(&x).unwrap(), &composed_softmax, "softmax f64"),
        (layer_norm_frozen(&x, &w, &b, 1e-5).unwrap(), &composed_ln, "layer norm f64"),
    ] {
        assert!(max_abs_diff(&t, reference) <= F64_REL * scale(reference), "{name}");
    }
    let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    let back = |t: Tensor| t.to_dtype(DType::F64).unwrap();
    let s32 = back(softmax_last_dim(&f32(&x)).unwrap());
    assert!(max_abs_diff(&s32, &composed_softmax) <= F32_REL * scale(&composed_softmax), "softmax f32");
    let l32 = back(layer_norm_frozen(&f32(&x), &f32(&w), &f32(&b), 1e-5).unwrap());
    assert!(max_abs_diff(&l32, &composed_ln) <= F32_REL * scale(&composed_ln), "layer norm f32");
    let wo = random(&mut rng, &[2, 3, 7], 1.0);
    let err = finite_difference_check(&[x.clone()], |t| weighted_sum(&softmax_last_dim(&t[0])?, &wo));
    assert!(err <= FINITE_DIFFERENCE_REL, "softmax: {err:e}");
    let err = finite_difference_check(&[x], |t| weighted_sum(&layer_norm_frozen(&t[0], &w, &b, 1e-5)?, &wo));
    assert!(err <= FINITE_DIFFERENCE_REL, "layer norm: {err:e}");
}

/// The frozen LayerNorm's f32 CPU value is candle-nn's `layer_norm` kernel bit for bit (inference and other devices
/// use that kernel; the graph node takes over its own buffer instead), tracked or not, for widths below, at and
/// above the 16 lanes of a vector and IPT's 576.
#[test]
fn layer_norm_f32_cpu_value_is_candle_nns() {
    use adaptir_ops::fused::layer_norm_frozen;
    let mut rng = rng(16);
    for dims in [vec![2usize, 3, 7], vec![5, 16], vec![64, 2, 576], vec![1, 1]] {
        let e = *dims.last().unwrap();
        let f32 = |t: Tensor| t.to_dtype(DType::F32).unwrap();
        let x = f32(random(&mut rng, &dims, 3.0));
        let (w, b) = (f32(random(&mut rng, &[e], 1.0)), f32(random(&mut rng, &[e], 1.0)));
        let want = candle_nn::ops::layer_norm(&x, &w, &b, 1e-5).unwrap();
        let tracked = candle_core::Var::from_tensor(&x).unwrap();
        for (input, name) in [(&x, "untracked"), (tracked.as_tensor(), "tracked")] {
            let got = layer_norm_frozen(input, &w, &b, 1e-5).unwrap();
            assert_eq!(got.dims(), want.dims());
            assert_eq!(
                max_abs_diff(&got.to_dtype(DType::F64).unwrap(), &want.to_dtype(DType::F64).unwrap()),
                EXACT,
                "{dims:?} {name}"
            );
        }
    }
}

/// Softmax over the last dim of a rank-3 tensor, written out.
fn candle_nn_softmax(x: &Tensor) -> Tensor {
    let e = x.broadcast_sub(&x.max_keepdim(2).unwrap()).unwrap().exp().unwrap();
    e.broadcast_div(&e.sum_keepdim(2).unwrap()).unwrap()
}

/// torch's LayerNorm written out: biased variance, eps inside the square root.
fn composed_layer_norm(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
    let n = x.dim(2).unwrap() as f64;
    let mean = (x.sum_keepdim(2).unwrap() / n).unwrap();
    let c = x.broadcast_sub(&mean).unwrap();
    let var = (c.sqr().unwrap().sum_keepdim(2).unwrap() / n).unwrap();
    let xhat = c.broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap()).unwrap();
    xhat.broadcast_mul(w).unwrap().broadcast_add(b).unwrap()
}

/// The attention core (sequence-first q, k, v; 2 heads; keys longer than queries) against the composed form,
/// and its three input gradients (recomputed attention weights) against central finite differences; and the
/// frozen linear map with bias, whose backward is the input gradient alone.
#[test]
fn attention_core_and_frozen_linear() {
    let mut rng = rng(16);
    let (lq, lk, n, e, heads) = (5, 7, 2, 6, 2);
    let q = random(&mut rng, &[lq, n, e], 1.0);
    let k = random(&mut rng, &[lk, n, e], 1.0);
    let v = random(&mut rng, &[lk, n, e], 1.0);
    let ours = adaptir_ops::fused::attention(&q, &k, &v, heads).unwrap();
    let d = e / heads;
    let split = |x: &Tensor| x.reshape((x.dim(0).unwrap(), n, heads, d)).unwrap().permute((1, 2, 0, 3)).unwrap();
    let qs = (split(&q).contiguous().unwrap() / (d as f64).sqrt()).unwrap();
    let p = candle_nn_softmax(
        &qs.matmul(&split(&k).contiguous().unwrap().t().unwrap()).unwrap().reshape((n * heads, lq, lk)).unwrap(),
    );
    let ctx = p.reshape((n, heads, lq, lk)).unwrap().matmul(&split(&v).contiguous().unwrap()).unwrap();
    let reference = ctx.permute((2, 0, 1, 3)).unwrap().reshape((lq, n, e)).unwrap();
    assert!(max_abs_diff(&ours, &reference) <= F64_REL * max_abs(&reference), "attention forward");
    let wo = random(&mut rng, &[lq, n, e], 1.0);
    let err = finite_difference_check(&[q, k, v], |t| {
        weighted_sum(&adaptir_ops::fused::attention(&t[0], &t[1], &t[2], heads)?, &wo)
    });
    assert!(err <= FINITE_DIFFERENCE_REL, "attention: {err:e}");

    let x = random(&mut rng, &[3, 2, 5], 1.0);
    let (w, b) = (random(&mut rng, &[4, 5], 1.0), random(&mut rng, &[4], 1.0));
    let plain = x.reshape((6, 5)).unwrap().matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
    let var = candle_core::Var::from_tensor(&x).unwrap();
    let tracked = adaptir_ops::frozen::linear(var.as_tensor(), &w, Some(&b)).unwrap();
    assert_eq!(max_abs_diff(&tracked.reshape((6, 4)).unwrap(), &plain), EXACT, "linear forward");
    let wo = random(&mut rng, &[3, 2, 4], 1.0);
    let err = finite_difference_check(&[x], |t| weighted_sum(&adaptir_ops::frozen::linear(&t[0], &w, Some(&b))?, &wo));
    assert!(err <= FINITE_DIFFERENCE_REL, "frozen linear: {err:e}");
}

/// The f32 CPU kernels of the attention core (`attention.rs`: one (batch, head) pair per task, strided q, k, v) and
/// of ReLU against the f64 path (the composed attention, checked above against finite differences; candle's
/// ReLU): the value and every input gradient, relative to their max |f64|. Sizes with lq != lk, several pairs per
/// thread, a head width that is not a multiple of the kernels' vector width, and rows longer than one vector.
#[test]
fn attention_and_relu_f32_cpu_kernels_against_f64() {
    let mut rng = rng(18);
    for (lq, lk, n, heads, d) in [(5, 7, 2, 2, 3), (16, 16, 3, 4, 12), (9, 33, 2, 3, 20)] {
        let e = heads * d;
        let inputs = [
            random(&mut rng, &[lq, n, e], 2.0),
            random(&mut rng, &[lk, n, e], 2.0),
            random(&mut rng, &[lk, n, e], 1.0),
        ];
        let wo = random(&mut rng, &[lq, n, e], 1.0);
        let run = |dtype: DType| {
            let vars: Vec<candle_core::Var> =
                inputs.iter().map(|t| candle_core::Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap()).collect();
            let t: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
            let y = adaptir_ops::fused::attention(t[0], t[1], t[2], heads).unwrap();
            let g = (y.to_dtype(DType::F64).unwrap() * &wo).unwrap().sum_all().unwrap().backward().unwrap();
            let mut out = vec![y];
            out.extend(t.iter().map(|t| g.get(t).unwrap().clone()));
            out
        };
        let (f32s, f64s) = (run(DType::F32), run(DType::F64));
        for (what, (a, b)) in ["value", "dq", "dk", "dv"].iter().zip(f32s.iter().zip(&f64s)) {
            let err = max_abs_diff(a, b) / max_abs(b);
            assert!(err <= F32_REL, "attention {lq}x{lk}, {heads} heads of {d}: {what} off by {err:e}");
        }
    }
    let x = random(&mut rng, &[3, 1000], 1.0);
    let wo = random(&mut rng, &[3, 1000], 1.0);
    let grad = |x: &Tensor, relu: &dyn Fn(&Tensor) -> Tensor| {
        let v = candle_core::Var::from_tensor(x).unwrap();
        let y = relu(v.as_tensor());
        let g = (y.to_dtype(DType::F64).unwrap() * &wo).unwrap().sum_all().unwrap().backward().unwrap();
        (y, g.get(v.as_tensor()).unwrap().clone())
    };
    let (y32, g32) = grad(&x.to_dtype(DType::F32).unwrap(), &|t| adaptir_ops::fused::relu(t).unwrap());
    let (y64, g64) = grad(&x, &|t| t.relu().unwrap());
    assert_eq!(max_abs_diff(&y32, &y64.to_dtype(DType::F32).unwrap()), EXACT, "relu value");
    assert_eq!(max_abs_diff(&g32, &g64.to_dtype(DType::F32).unwrap()), EXACT, "relu gradient");
}

/// The trainable convolution (pre-training): forward against candle's conv2d plus bias, and the gradients of
/// input, kernel and bias against central finite differences, with and without bias.
#[test]
fn conv2d_trainable_gradients() {
    let mut rng = rng(17);
    for (k, pad) in [(3, 1), (5, 2), (1, 0)] {
        let x = random(&mut rng, &[2, 3, 6, 5], 1.0);
        let w = random(&mut rng, &[4, 3, k, k], 0.5);
        let b = random(&mut rng, &[4], 0.5);
        let plain = x.conv2d(&w, pad, 1, 1, 1).unwrap().broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap()).unwrap();
        let ours = adaptir_ops::conv::conv2d_trainable(&x, &w, Some(&b), pad).unwrap();
        assert!(max_abs_diff(&ours, &plain) <= F64_REL * max_abs(&plain), "{k}x{k}: forward");
        let wo = random(&mut rng, plain.dims(), 1.0);
        let err = finite_difference_check(&[x.clone(), w.clone(), b], |t| {
            weighted_sum(&adaptir_ops::conv::conv2d_trainable(&t[0], &t[1], Some(&t[2]), pad)?, &wo)
        });
        assert!(err <= FINITE_DIFFERENCE_REL, "{k}x{k} with bias: {err:e}");
        let err = finite_difference_check(&[x, w], |t| {
            weighted_sum(&adaptir_ops::conv::conv2d_trainable(&t[0], &t[1], None, pad)?, &wo)
        });
        assert!(err <= FINITE_DIFFERENCE_REL, "{k}x{k} without bias: {err:e}");
    }
}

/// The CPU f32 softmax (vectorised exp) against softmax in f64, on rows spanning the whole f32 exp range, with
/// entries far below the row maximum (exact zeros), -inf entries, a NaN entry and an all -inf row.
#[test]
fn f32_softmax_against_f64() {
    let mut rng = rng(18);
    let rows = 64;
    let mut x = random(&mut rng, &[rows, 37], 40.0).to_vec2::<f64>().unwrap();
    x[1][3] = -1e30;
    x[2][0] = f64::NEG_INFINITY;
    x[3] = vec![f64::NEG_INFINITY; 37];
    x[4][5] = f64::NAN;
    x[5][7] = 200.0;
    let flat: Vec<f64> = x.concat();
    let x64 = Tensor::from_vec(flat, (rows, 37), &Device::Cpu).unwrap();
    let x32 = x64.to_dtype(DType::F32).unwrap();
    // The reference from the f32-rounded inputs, computed in f64.
    let reference = x32.to_dtype(DType::F64).unwrap().unsqueeze(0).unwrap();
    let reference = candle_nn_softmax(&reference).squeeze(0).unwrap().to_vec2::<f64>().unwrap();
    let ours =
        adaptir_ops::fused::softmax_last_dim(&x32).unwrap().to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
    for (r, (a, b)) in ours.iter().zip(&reference).enumerate() {
        for (p, q) in a.iter().zip(b) {
            if q.is_nan() {
                assert!(p.is_nan(), "row {r}: expected NaN, got {p}");
            } else {
                assert!((p - q).abs() <= F32_REL, "row {r}: {p} vs {q}");
                assert!(*q != 0.0 || *p == 0.0, "row {r}: exact zero expected, got {p}");
            }
        }
    }
}

/// Per-channel shift and scale of a trained vector, along the last dim, a middle dim and the first: forward equal
/// to candle's broadcast ops, and both gradients (input and vector) against central finite differences.
#[test]
fn channel_add_and_mul() {
    use adaptir_ops::channel::{add, mul};
    let mut rng = rng(17);
    let x = random(&mut rng, &[2, 3, 4, 5], 1.0);
    let wo = random(&mut rng, &[2, 3, 4, 5], 1.0);
    for axis in [3, 1, 0] {
        let c = x.dim(axis).unwrap();
        let v = random(&mut rng, &[c], 1.0);
        let mut shape = vec![1; 4];
        shape[axis] = c;
        let vb = v.reshape(shape).unwrap();
        // Forward: the tracked path (a variable) equals candle's broadcast ops.
        let var = candle_core::Var::from_tensor(&v).unwrap();
        let sum = add(&x, var.as_tensor(), axis).unwrap();
        assert_eq!(max_abs_diff(&sum, &x.broadcast_add(&vb).unwrap()), EXACT, "add, axis {axis}");
        let product = mul(&x, var.as_tensor(), axis).unwrap();
        assert_eq!(max_abs_diff(&product, &x.broadcast_mul(&vb).unwrap()), EXACT, "mul, axis {axis}");
        let err = finite_difference_check(&[x.clone(), v.clone()], |t| weighted_sum(&add(&t[0], &t[1], axis)?, &wo));
        assert!(err <= FINITE_DIFFERENCE_REL, "add, axis {axis}: {err:e}");
        let err = finite_difference_check(&[x.clone(), v.clone()], |t| weighted_sum(&mul(&t[0], &t[1], axis)?, &wo));
        assert!(err <= FINITE_DIFFERENCE_REL, "mul, axis {axis}: {err:e}");
        // Composed: a scale then a shift of the same input, as a LayerNorm's affine.
        let err = finite_difference_check(&[x.clone(), v.clone(), v.clone()], |t| {
            weighted_sum(&add(&mul(&t[0], &t[1], axis)?, &t[2], axis)?, &wo)
        });
        assert!(err <= FINITE_DIFFERENCE_REL, "mul then add, axis {axis}: {err:e}");
    }
    // The trained LayerNorm: candle-nn's values, and gradients for the input and both parameters.
    let (w, b) = (random(&mut rng, &[5], 1.0), random(&mut rng, &[5], 1.0));
    let (wv, bv) = (candle_core::Var::from_tensor(&w).unwrap(), candle_core::Var::from_tensor(&b).unwrap());
    let ln = adaptir_ops::channel::layer_norm(&x, wv.as_tensor(), bv.as_tensor(), 1e-5).unwrap();
    assert_eq!(max_abs_diff(&ln, &candle_nn::ops::layer_norm_slow(&x, &w, &b, 1e-5).unwrap()), EXACT);
    let err = finite_difference_check(&[x, w, b], |t| {
        weighted_sum(&adaptir_ops::channel::layer_norm(&t[0], &t[1], &t[2], 1e-5)?, &wo)
    });
    assert!(err <= FINITE_DIFFERENCE_REL, "layer norm: {err:e}");
}

/// The trained depthwise convolution on channels-last input (EDT's LePE and MLP convs in pre-training): its value
/// is the frozen op's plus the bias, and its three gradients (input, kernel, bias) match central finite
/// differences, for 3x3 and 5x5 kernels.
#[test]
fn depthwise_nhwc_trainable_gradients() {
    use adaptir_ops::conv::depthwise_nhwc_trainable;
    use adaptir_ops::conv::depthwise_taps;
    use adaptir_ops::frozen::depthwise_nhwc;
    let mut rng = rng(18);
    for k in [3usize, 5] {
        let c = 3;
        let x = random(&mut rng, &[2, 4, 5, c], 1.0);
        let (w, b) = (random(&mut rng, &[c, 1, k, k], 1.0), random(&mut rng, &[c], 1.0));
        let wo = random(&mut rng, &[2, 4, 5, c], 1.0);
        let (wv, bv) = (candle_core::Var::from_tensor(&w).unwrap(), candle_core::Var::from_tensor(&b).unwrap());
        let ours = depthwise_nhwc_trainable(&x, wv.as_tensor(), bv.as_tensor()).unwrap();
        let frozen = depthwise_nhwc(&x, &depthwise_taps(&w).unwrap(), k).unwrap().broadcast_add(&b).unwrap();
        assert_eq!(max_abs_diff(&ours, &frozen), EXACT, "{k}x{k}");
        let err =
            finite_difference_check(&[x, w, b], |t| weighted_sum(&depthwise_nhwc_trainable(&t[0], &t[1], &t[2])?, &wo));
        assert!(err <= FINITE_DIFFERENCE_REL, "{k}x{k}: {err:e}");
    }
}

/// The fused frozen FFN (`frozen::ffn_relu`, one graph node for linear, ReLU, linear): in f32 its value and input
/// gradient are bit-identical to the three-node form it replaces (same products; the unfused gradient is the
/// fused one plus zeros), and in f64 its input gradient agrees with central finite differences.
#[test]
fn fused_frozen_ffn() {
    use adaptir_ops::frozen::{ffn_relu, linear};
    let mut rng = rng(19);
    let (tokens, n, e, hidden) = (5, 3, 8, 20);
    let x = random(&mut rng, &[tokens, n, e], 1.0);
    let (w1, b1) = (random(&mut rng, &[hidden, e], 0.5), random(&mut rng, &[hidden], 0.5));
    let (w2, b2) = (random(&mut rng, &[e, hidden], 0.5), random(&mut rng, &[e], 0.5));
    let wo = random(&mut rng, &[tokens, n, e], 1.0);
    let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    let (x32, w1_32, b1_32, w2_32, b2_32) = (f32(&x), f32(&w1), f32(&b1), f32(&w2), f32(&b2));
    let run = |fused: bool| {
        let v = candle_core::Var::from_tensor(&x32).unwrap();
        let y = if fused {
            ffn_relu(v.as_tensor(), (&w1_32, Some(&b1_32)), (&w2_32, Some(&b2_32))).unwrap()
        } else {
            let h = adaptir_ops::fused::relu(&linear(v.as_tensor(), &w1_32, Some(&b1_32)).unwrap()).unwrap();
            linear(&h, &w2_32, Some(&b2_32)).unwrap()
        };
        let g = (y.to_dtype(DType::F64).unwrap() * &wo).unwrap().sum_all().unwrap().backward().unwrap();
        (y, g.get(v.as_tensor()).unwrap().clone())
    };
    let ((y_fused, g_fused), (y_plain, g_plain)) = (run(true), run(false));
    assert_eq!(max_abs_diff(&y_fused, &y_plain), EXACT, "ffn value");
    assert_eq!(max_abs_diff(&g_fused, &g_plain), EXACT, "ffn input gradient");
    let untracked = ffn_relu(&x32, (&w1_32, Some(&b1_32)), (&w2_32, Some(&b2_32))).unwrap();
    assert_eq!(max_abs_diff(&untracked, &y_plain), EXACT, "ffn value, untracked input");
    let err =
        finite_difference_check(&[x], |t| weighted_sum(&ffn_relu(&t[0], (&w1, Some(&b1)), (&w2, Some(&b2)))?, &wo));
    assert!(err <= FINITE_DIFFERENCE_REL, "frozen ffn: {err:e}");
}

/// The f32 CPU kernel of the frozen LayerNorm's input gradient against the f64 path (checked above against finite
/// differences), relative to the max |f64| gradient: IPT's width (576, a multiple of the kernel's 16 lanes) and
/// widths that are not.
#[test]
fn layer_norm_f32_cpu_gradient_against_f64() {
    let mut rng = rng(20);
    for (rows, e) in [(6, 576), (5, 7), (3, 35)] {
        let x = random(&mut rng, &[rows, e], 2.0);
        let (w, b) = (random(&mut rng, &[e], 1.0), random(&mut rng, &[e], 1.0));
        let wo = random(&mut rng, &[rows, e], 1.0);
        let grad = |dtype: DType| {
            let v = candle_core::Var::from_tensor(&x.to_dtype(dtype).unwrap()).unwrap();
            let (w, b) = (w.to_dtype(dtype).unwrap(), b.to_dtype(dtype).unwrap());
            let y = adaptir_ops::fused::layer_norm_frozen(v.as_tensor(), &w, &b, 1e-5).unwrap();
            let g = (y.to_dtype(DType::F64).unwrap() * &wo).unwrap().sum_all().unwrap().backward().unwrap();
            g.get(v.as_tensor()).unwrap().to_dtype(DType::F64).unwrap()
        };
        let (g32, g64) = (grad(DType::F32), grad(DType::F64));
        let err = max_abs_diff(&g32, &g64) / max_abs(&g64);
        assert!(err <= F32_REL, "layer norm {rows}x{e}: gradient off by {err:e}");
    }
}

/// The fused frozen attention block (`frozen::attention_block`, one graph node for the q, k, v projections, the
/// attention core and the output projection) on the CPU in f32, for the ways IPT feeds it: one tensor to all three
/// projections (encoder); the same with a frozen term (the task query) added to q's and k's input (decoder
/// self-attention); one tensor plus the term to q and another, longer one to k and v (cross-attention); and a
/// distinct tensor per projection. Its value is bit-identical to the unfused form (explicit adds, five nodes); each
/// input's gradient (summed here over the projections it feeds, in another order than candle's) agrees with the
/// unfused form's and with the f64 form's (checked above against finite differences) to f32 rounding.
#[test]
fn fused_frozen_attention_block() {
    use adaptir_ops::frozen::{attention_block, linear};
    let mut rng = rng(21);
    let (n, e, heads) = (2, 12, 3);
    let maps: Vec<(Tensor, Tensor)> =
        (0..4).map(|_| (random(&mut rng, &[e, e], 0.5), random(&mut rng, &[e], 0.5))).collect();
    let sources =
        [random(&mut rng, &[5, n, e], 1.0), random(&mut rng, &[7, n, e], 1.0), random(&mut rng, &[5, n, e], 1.0)];
    let query = random(&mut rng, &[5, n, e], 1.0);
    let cases = [
        ([0, 0, 0], [false, false, false], "encoder"),
        ([0, 0, 0], [true, true, false], "decoder self"),
        ([0, 1, 1], [true, false, false], "cross"),
        ([0, 2, 2], [false, false, false], "distinct q"),
    ];
    for (feeds, with_query, what) in cases {
        let wo = random(&mut rng, &[5, n, e], 1.0);
        let run = |dtype: DType, fused: bool| {
            let cast = |t: &Tensor| t.to_dtype(dtype).unwrap();
            let vars = sources.clone().map(|t| candle_core::Var::from_tensor(&cast(&t)).unwrap());
            let ms: Vec<(Tensor, Tensor)> = maps.iter().map(|(w, b)| (cast(w), cast(b))).collect();
            let m = |i: usize| (&ms[i].0, Some(&ms[i].1));
            let q = cast(&query);
            let inputs = feeds.map(|i| vars[i].as_tensor());
            let adds = with_query.map(|w| w.then_some(&q));
            let y = if fused {
                attention_block(inputs, adds, [m(0), m(1), m(2), m(3)], heads).unwrap()
            } else {
                let [q, k, v] = [0, 1, 2].map(|i| {
                    let x = match adds[i] {
                        Some(a) => (inputs[i] + a).unwrap(),
                        None => inputs[i].clone(),
                    };
                    linear(&x, m(i).0, m(i).1).unwrap()
                });
                linear(&adaptir_ops::fused::attention(&q, &k, &v, heads).unwrap(), m(3).0, m(3).1).unwrap()
            };
            let g = (y.to_dtype(DType::F64).unwrap() * &wo).unwrap().sum_all().unwrap().backward().unwrap();
            let grads: Vec<Tensor> = vars
                .iter()
                .filter(|v| feeds.iter().any(|&i| vars[i].as_tensor().id() == v.as_tensor().id()))
                .map(|v| g.get(v.as_tensor()).unwrap().to_dtype(DType::F64).unwrap())
                .collect();
            (y.to_dtype(DType::F64).unwrap(), grads)
        };
        let ((y_fused, g_fused), (y_plain, g_plain), (y64, g64)) =
            (run(DType::F32, true), run(DType::F32, false), run(DType::F64, false));
        assert_eq!(max_abs_diff(&y_fused, &y_plain), EXACT, "{what}: value");
        assert!(max_abs_diff(&y_fused, &y64) <= F32_REL * max_abs(&y64), "{what}: value against f64");
        assert_eq!(g_fused.len(), if feeds == [0, 0, 0] { 1 } else { 2 }, "{what}: gradients");
        for ((f, p), r) in g_fused.iter().zip(&g_plain).zip(&g64) {
            assert!(max_abs_diff(f, p) <= F32_REL * max_abs(r), "{what}: gradient against the unfused form");
            assert!(max_abs_diff(f, r) <= F32_REL * max_abs(r), "{what}: gradient against f64");
        }
    }
}
