//! Products with frozen weights (a linear map, a convolution) whose backward produces the gradient for the input
//! only.
//!
//! candle's autograd computes the gradient of *both* operands of a product, tracked or not, so every frozen
//! backbone weight between an adapter and the loss would cost a weight-gradient product per step that is thrown
//! away, and each bias add would be one more node keeping its input alive until the backward. Training an adapter
//! needs only the gradient with respect to the activations: here a frozen product with its bias is one graph node
//! (`fused::carry`) holding its input and output, whose backward is the input gradient alone. The value is computed
//! exactly as inference computes it (candle's matmul, or on the CPU in f32 `products.rs`'s bit-identical call into
//! an unzeroed buffer; `conv::conv2d_untracked`), on every device.
use candle_core::{DType, Result, Tensor};

/// `x @ w^T` over the last dim of `x` (any rank), with `w` (out, in): [`linear`] without bias.
pub fn linear_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    linear(x, w, None)
}

/// `x @ w^T + b` over the last dim of `x` (any rank). With `w` and `b` frozen (not derived from a variable) and `x`
/// tracked: one graph node holding `x` and the output, whose backward is `grad @ w` (no weight gradient, no
/// separate node for the bias add). Otherwise candle's matmul and broadcast add with their own autograd. The value
/// is the same either way.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let value = |x: &Tensor| -> Result<Tensor> {
        // `products.rs` builds no graph: only for a value that needs none (here or in the frozen node below).
        let untracked = [Some(x), Some(w), b].into_iter().flatten().all(|t| !t.track_op());
        if untracked {
            if let Some(y) = crate::products::linear(x, w, b)? {
                return Ok(y);
            }
        }
        let mut dims = x.dims().to_vec();
        let last = dims.len() - 1;
        let y = x.reshape(((), dims[last]))?.matmul(&w.t()?)?;
        dims[last] = y.dim(1)?;
        let y = y.reshape(dims)?;
        match b {
            Some(b) => crate::channel::add(&y, b, last),
            None => Ok(y),
        }
    };
    let frozen = !w.track_op() && b.is_none_or(|b| !b.track_op());
    if !(x.track_op() && frozen) {
        return value(x);
    }
    let y = linear_value(&x.detach(), w, b)?;
    let w = w.clone();
    crate::fused::carry("frozen-linear", x, y, move |x, _y, grad| input_gradient(&[(grad, &w)])?.reshape(x.dims()))
}

/// [`linear`] of an untracked `x` as a carried node's value: `products.rs`'s own buffer where it applies.
fn linear_value(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<crate::fused::Value> {
    match crate::products::linear_elements(x, w, b)? {
        Some((v, dims)) => Ok(crate::fused::Value::F32Cpu(v, dims.into())),
        None => Ok(linear(x, w, b)?.into()),
    }
}

/// `sum_i g_i @ w_i` (each `g_i` (..., out_i), `w_i` (out_i, in)) as (rows, in): the input gradient of frozen linear
/// maps that read one input. `products.rs` on f32 CPU tensors, candle's matmul and add elsewhere.
fn input_gradient(terms: &[(&Tensor, &Tensor)]) -> Result<Tensor> {
    let terms = terms
        .iter()
        .map(|(g, w)| Ok((g.reshape(((), g.dim(g.rank() - 1)?))?.contiguous()?, (*w).clone())))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<_> = terms.iter().map(|(g, w)| (g, w)).collect();
    if let Some(sum) = crate::products::input_gradient_sum(&refs)? {
        return Ok(sum);
    }
    let mut sum: Option<Tensor> = None;
    for (g, w) in &terms {
        let term = g.matmul(w)?;
        sum = Some(match sum {
            Some(s) => (s + term)?,
            None => term,
        });
    }
    sum.ok_or_else(|| candle_core::Error::Msg("input_gradient: no terms".into()))
}

/// `linear(relu(linear(x, w1, b1)), w2, b2)`, a transformer's FFN, with all four frozen. Under a tracked `x` it is
/// one graph node instead of three (two frozen products and the ReLU): its backward is `((grad @ w2) masked by
/// hidden > 0) @ w1`, keeping only the ReLU output. Why: candle accumulates every gradient it hands back into a
/// fresh zero tensor (`GradStore::or_insert`), and on ipt-base at batch 16 each of the two hidden-width gradients
/// so avoided is a zero fill, an add and two allocations of 38 MB per layer; the pre-ReLU activation (38 MB per
/// layer) is no longer kept either. The value is computed by the same calls as the unfused form.
pub fn ffn_relu(
    x: &Tensor,
    (w1, b1): (&Tensor, Option<&Tensor>),
    (w2, b2): (&Tensor, Option<&Tensor>),
) -> Result<Tensor> {
    let frozen = [Some(w1), b1, Some(w2), b2].into_iter().flatten().all(|t| !t.track_op());
    if !(x.track_op() && frozen) {
        let hidden = linear(x, w1, b1)?;
        let hidden = if hidden.track_op() { crate::fused::relu(&hidden)? } else { crate::fused::relu_owned(hidden)? };
        return linear(&hidden, w2, b2);
    }
    let hidden = crate::fused::relu_owned(linear(&x.detach(), w1, b1)?)?;
    let y = linear_value(&hidden, w2, b2)?;
    let (w1, w2) = (w1.clone(), w2.clone());
    crate::fused::carry("frozen-ffn-relu", x, y, move |x, _y, grad| {
        let grad_hidden = input_gradient(&[(grad, &w2)])?;
        let grad_hidden = crate::fused::relu_backward_owned(grad_hidden, &hidden.reshape(((), w2.dim(1)?))?)?;
        input_gradient(&[(&grad_hidden, &w1)])?.reshape(x.dims())
    })
}

/// `nn.MultiheadAttention` with frozen projections on sequence-first (L, N, E) inputs:
/// `out(attention(q(q_in + q_add), k(k_in + k_add), v(v_in + v_add)))`, each map a `(weight, bias)`, each `add` an
/// optional frozen term (IPT's decoder adds its task query to the inputs of q and k). On the CPU in f32 with a
/// tracked input it is one graph node instead of five or more (the adds, three projections, the attention core, the
/// output projection): its backward is the output projection's, the attention core's (`attention.rs`'s kernel) and
/// each input's share of the projections' input gradients, summed here when one tensor feeds several projections
/// (IPT's encoder and decoder feed all three from one LayerNorm output). It keeps q, k and v for the backward, as
/// the five nodes did, but not the attention's output. Why: each node it replaces cost a copy of its value in the
/// forward and a zero fill and an add of its gradient in the backward (`GradStore::or_insert`; for an add, also
/// for its frozen operand). The value is computed by the same calls as the unfused form; elsewhere, or with a
/// tracked map or add, the unfused form.
pub fn attention_block(
    inputs: [&Tensor; 3],
    adds: [Option<&Tensor>; 3],
    maps: [(&Tensor, Option<&Tensor>); 4],
    heads: usize,
) -> Result<Tensor> {
    let project = |inputs: [Tensor; 3]| -> Result<[Tensor; 3]> {
        let [q, k, v] = [0, 1, 2].map(|i| linear(&inputs[i], maps[i].0, maps[i].1));
        Ok([q?, k?, v?])
    };
    let unfused = || {
        let [q, k, v] = project(projection_inputs(inputs, adds)?)?;
        linear(&crate::fused::attention(&q, &k, &v, heads)?, maps[3].0, maps[3].1)
    };
    let frozen = maps.iter().all(|(w, b)| !w.track_op() && b.is_none_or(|b| !b.track_op()))
        && adds.iter().flatten().all(|a| !a.track_op());
    let f32_cpu =
        inputs.iter().chain(maps.iter().map(|(w, _)| w)).all(|t| t.device().is_cpu() && t.dtype() == DType::F32);
    if !(frozen && f32_cpu && inputs.iter().any(|t| t.track_op())) {
        return unfused();
    }
    let [q, k, v] = project(projection_inputs(inputs.map(|t| t.detach()).each_ref(), adds)?)?;
    let Some((dims, scale)) = crate::fused::attention_f32_cpu_dims(&q, &k, &v, heads)? else {
        return unfused();
    };
    let y = linear_value(&crate::fused::attention(&q, &k, &v, heads)?, maps[3].0, maps[3].1)?;
    let weights = maps.map(|(w, _)| w.clone());
    crate::fused::carry3("frozen-attention-block", inputs, y, move |args, _y, grad| {
        let grad_ctx = input_gradient(&[(grad, &weights[3])])?.reshape(q.shape())?;
        let grads = crate::fused::attention_grads_f32_cpu([&q, &k, &v], &grad_ctx, dims, scale)?;
        // Each distinct input's gradient at its first position, summed over the projections it feeds (an add is
        // frozen: the gradient of `x + add` for `x` is the gradient itself).
        let mut out: Vec<Option<Tensor>> = vec![None, None, None];
        for i in 0..3 {
            if (0..i).any(|j| args[j].id() == args[i].id()) {
                continue;
            }
            let terms: Vec<_> =
                (i..3).filter(|&j| args[j].id() == args[i].id()).map(|j| (&grads[j], &weights[j])).collect();
            out[i] = Some(input_gradient(&terms)?.reshape(args[i].shape())?);
        }
        Ok(out)
    })
}

/// Each projection's input of [`attention_block`], `inputs[i] + adds[i]`, computed once for projections fed the same
/// tensor and the same add (IPT's decoder feeds q and k its LayerNorm output plus the task query).
pub fn projection_inputs(inputs: [&Tensor; 3], adds: [Option<&Tensor>; 3]) -> Result<[Tensor; 3]> {
    let same = |a: Option<&Tensor>, b: Option<&Tensor>| match (a, b) {
        (Some(a), Some(b)) => a.id() == b.id(),
        (None, None) => true,
        _ => false,
    };
    let mut out: Vec<Tensor> = Vec::with_capacity(3);
    for i in 0..3 {
        let earlier = (0..i).find(|&j| inputs[j].id() == inputs[i].id() && same(adds[j], adds[i]));
        out.push(match (earlier, adds[i]) {
            (Some(j), _) => out[j].clone(),
            (None, Some(a)) => (inputs[i] + a)?,
            (None, None) => inputs[i].clone(),
        });
    }
    out.try_into().map_err(|_| candle_core::Error::Msg("projection_inputs: three inputs".into()))
}

/// `conv2d(x, w)` (stride 1, dilation 1, `padding` on each side) with the same rule as [`linear_t`]: a frozen
/// kernel under a tracked input gets the input gradient only: one adjoint convolution, `conv2d(grad, w')` with `w'`
/// the kernel with in/out swapped and spatially flipped, padded by `k - 1 - p`, instead of candle's two (input and
/// kernel gradient), and no graph of slices for an im2col;
/// a tracked kernel or bias, `conv::conv2d_trainable` (every gradient); neither tracked, `conv::conv2d_untracked`. The forward of
/// a frozen kernel is `conv2d_untracked` whether the input is tracked or not, so training and inference compute the
/// same values.
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, padding: usize) -> Result<Tensor> {
    let add_bias = |y: Tensor| match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
        None => Ok(y),
    };
    if w.track_op() || bias.is_some_and(|b| b.track_op()) {
        return crate::conv::conv2d_trainable(x, w, bias, padding);
    }
    if !x.track_op() {
        return add_bias(crate::conv::conv2d_untracked(x, w, padding)?);
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
    let y = add_bias(crate::conv::conv2d_untracked(x, w, padding)?)?;
    let adjoint_kernel = w.transpose(0, 1)?.contiguous()?.flip(&[2, 3])?.contiguous()?;
    let adjoint_padding = kh - 1 - padding;
    crate::fused::carry("frozen-conv2d", x, y, move |_x, _y, grad| {
        crate::conv::conv2d_untracked(grad, &adjoint_kernel, adjoint_padding)
    })
}

/// A depthwise k x k convolution (zero padding k / 2, stride 1) of a channels-last (N, H, W, C) input with frozen
/// taps: `taps[ky * k + kx]` holds the (C,) weights of kernel position (ky, kx) (cross-correlation, as torch's
/// `Conv2d(groups=C)`). The value is the sum of the k^2 shifted, scaled copies of the padded input, computed without
/// a graph; a tracked input gets its gradient from one adjoint: the same sum over the gradient with the taps
/// reversed (the kernel flipped), instead of a graph of k^2 slices, products and sums whose intermediates all stay
/// alive until the backward (EDT's 5x5 MLP convs made that gigabytes per step).
pub fn depthwise_nhwc(x: &Tensor, taps: &[Tensor], k: usize) -> Result<Tensor> {
    if taps.len() != k * k || k.is_multiple_of(2) {
        candle_core::bail!("depthwise_nhwc: {} taps for an odd k x k kernel, k = {k}", taps.len());
    }
    if taps.iter().any(|t| t.track_op()) {
        candle_core::bail!("depthwise_nhwc: the taps must be frozen (untracked)");
    }
    let y = crate::conv::shifted_sum(&x.detach(), taps, k)?;
    let flipped: Vec<Tensor> = taps.iter().rev().cloned().collect();
    crate::fused::carry("frozen-depthwise-nhwc", x, y, move |_x, _y, grad| crate::conv::shifted_sum(grad, &flipped, k))
}
