//! Forward values computed without a graph (a fused kernel, or a detached composition), given a closed-form
//! backward by one graph node: softmax over the last dim, LayerNorm with frozen parameters, and the frozen-kernel
//! convolution of `frozen.rs`.
//!
//! Why: candle's autograd keeps every intermediate of a composed op until the backward, and candle's fused
//! softmax / LayerNorm kernels have no backward at all. On ipt-base training at batch 16 the composed softmax
//! alone kept four (N, heads, L, L) tensors per attention. Here the graph holds the op's input and output only,
//! as torch does, and the forward is the same kernel that inference uses.
use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor, D};

use crate::products::with_f32;

/// `(args, value, grad) -> gradient of each arg` (`None` where an arg needs none).
type Backward = Box<dyn Fn(&[&Tensor], &Tensor, &Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// A carried node's value: a tensor, or f32 CPU elements that are handed to the node as they are (`products.rs`
/// writes a product into a buffer of its own, so the node needs no copy of it).
pub(crate) enum Value {
    Tensor(Tensor),
    F32Cpu(Vec<f32>, Shape),
}

impl From<Tensor> for Value {
    fn from(t: Tensor) -> Self {
        Value::Tensor(t)
    }
}

impl Value {
    fn into_tensor(self) -> Result<Tensor> {
        match self {
            Value::Tensor(t) => Ok(t),
            Value::F32Cpu(v, shape) => Tensor::from_vec(v, shape, &candle_core::Device::Cpu),
        }
    }
}

/// One graph node on its args whose value is `value`, computed beforehand, with a given backward. The value is
/// handed over once (a tensor is then copied into the node's own storage, as custom ops must return fresh storage;
/// [`Value::F32Cpu`] elements become that storage), so the graph holds no second copy of it.
struct Carry {
    name: &'static str,
    value: Mutex<Option<Value>>,
    backward: Backward,
}

impl Carry {
    fn take(&self) -> Result<Value> {
        let value = self.value.lock().map_err(|_| candle_core::Error::Msg("carry: poisoned".into()))?.take();
        value.ok_or_else(|| candle_core::Error::Msg(format!("{}: forward run twice", self.name)))
    }

    fn cpu_value(&self) -> Result<(CpuStorage, Shape)> {
        let value = match self.take()? {
            Value::F32Cpu(v, shape) => return Ok((CpuStorage::F32(v), shape)),
            Value::Tensor(t) => t.contiguous()?,
        };
        let (storage, layout) = value.storage_and_layout();
        match &*storage {
            Storage::Cpu(s) => Ok((copy_contiguous(s, layout)?, layout.shape().clone())),
            _ => candle_core::bail!("{}: the value is not on the CPU", self.name),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_value(&self) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::{BackendDevice, BackendStorage};
        let Value::Tensor(value) = self.take()? else {
            candle_core::bail!("{}: the value is not on the CUDA device", self.name)
        };
        let value = value.contiguous()?;
        let (storage, layout) = value.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => {
                // SAFETY: every element is written by the strided copy below.
                let mut dst = unsafe { s.device().alloc_uninit(layout.shape(), s.dtype())? };
                s.copy_strided_src(&mut dst, 0, layout)?;
                Ok((dst, layout.shape().clone()))
            }
            _ => candle_core::bail!("{}: the value is not on the CUDA device", self.name),
        }
    }

    fn grads(&self, args: &[&Tensor], res: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let started = backward_timer::start();
        let grads = (self.backward)(args, res, grad)?;
        backward_timer::stop(self.name, started);
        // No gradient for an untracked arg: candle would otherwise accumulate it for nothing.
        Ok(grads.into_iter().zip(args).map(|(g, a)| g.filter(|_| a.track_op())).collect())
    }
}

impl CustomOp1 for Carry {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, _arg: &CpuStorage, _layout: &Layout) -> Result<(CpuStorage, Shape)> {
        self.cpu_value()
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, _: &candle_core::CudaStorage, _: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        self.cuda_value()
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(self.grads(&[arg], res, grad)?.pop().flatten())
    }
}

impl CustomOp3 for Carry {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu_value()
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.cuda_value()
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let mut g = self.grads(&[a, b, c], res, grad)?.into_iter();
        Ok((g.next().flatten(), g.next().flatten(), g.next().flatten()))
    }
}

/// Opt-in wall time of each carried node's backward, by node name (`bench_train` prints it to say where a
/// training step's backward goes). Off unless [`backward_timer::enable`] was called: then one clock read per node.
pub mod backward_timer {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    static ON: AtomicBool = AtomicBool::new(false);
    /// name -> (calls, total time).
    static TOTALS: Mutex<BTreeMap<&'static str, (usize, Duration)>> = Mutex::new(BTreeMap::new());

    /// Start timing (and clear what was timed so far).
    pub fn enable() {
        if let Ok(mut t) = TOTALS.lock() {
            t.clear();
        }
        ON.store(true, Ordering::Relaxed);
    }

    /// (node name, calls, seconds) since [`enable`], sorted by name; clears the totals.
    pub fn take() -> Vec<(&'static str, usize, f64)> {
        let Ok(mut t) = TOTALS.lock() else { return vec![] };
        std::mem::take(&mut *t).into_iter().map(|(k, (n, d))| (k, n, d.as_secs_f64())).collect()
    }

    pub(super) fn start() -> Option<Instant> {
        ON.load(Ordering::Relaxed).then(Instant::now)
    }

    pub(super) fn stop(name: &'static str, started: Option<Instant>) {
        if let (Some(t0), Ok(mut t)) = (started, TOTALS.lock()) {
            let e = t.entry(name).or_default();
            e.0 += 1;
            e.1 += t0.elapsed();
        }
    }
}

/// The elements of a contiguous layout, as a new storage of exactly that size.
fn copy_contiguous(s: &CpuStorage, layout: &Layout) -> Result<CpuStorage> {
    let (start, end) =
        layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("carry: value not contiguous".into()))?;
    Ok(match s {
        CpuStorage::F32(v) => CpuStorage::F32(v[start..end].to_vec()),
        CpuStorage::F64(v) => CpuStorage::F64(v[start..end].to_vec()),
        CpuStorage::F16(v) => CpuStorage::F16(v[start..end].to_vec()),
        CpuStorage::BF16(v) => CpuStorage::BF16(v[start..end].to_vec()),
        _ => candle_core::bail!("carry: float values only"),
    })
}

/// `value` (computed from `arg` without a graph) as a node on `arg` whose gradient is `backward(arg, value,
/// grad)`; `value` itself when `arg` is not tracked.
pub(crate) fn carry(
    name: &'static str,
    arg: &Tensor,
    value: impl Into<Value>,
    backward: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
) -> Result<Tensor> {
    let value = value.into();
    if !arg.track_op() {
        return value.into_tensor();
    }
    let backward: Backward = Box::new(move |args, res, grad| Ok(vec![Some(backward(args[0], res, grad)?)]));
    arg.apply_op1(Carry { name, value: Mutex::new(Some(value)), backward })
}

/// As [`carry`] with three args; `backward(args, value, grad)` returns the three gradients.
pub(crate) fn carry3(
    name: &'static str,
    args: [&Tensor; 3],
    value: impl Into<Value>,
    backward: impl Fn(&[&Tensor], &Tensor, &Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
) -> Result<Tensor> {
    let value = value.into();
    if !args.iter().any(|a| a.track_op()) {
        return value.into_tensor();
    }
    let op = Carry { name, value: Mutex::new(Some(value)), backward: Box::new(backward) };
    args[0].apply_op3(args[1], args[2], op)
}

/// Softmax over the last dim: `softmax.rs` (f32 on the CPU), candle-nn's fused kernel (f32 elsewhere) or the
/// composed form without graph (other dtypes); backward `y * (g - sum(g * y))`.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let y = softmax_value(&x.detach())?;
    carry("softmax-last-dim", x, y, |_x, y, g| softmax_backward(y, g))
}

fn softmax_value(x: &Tensor) -> Result<Tensor> {
    if let Some(y) = crate::softmax::softmax_last_dim_f32_cpu(x) {
        y
    } else if x.dtype() == DType::F32 {
        candle_nn::ops::softmax_last_dim(&x.contiguous()?)
    } else {
        let e = x.broadcast_sub(&x.max_keepdim(D::Minus1)?)?.exp()?;
        e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
    }
}

/// The input gradient of a softmax over the last dim, from its output `y` and output gradient `g`.
fn softmax_backward(y: &Tensor, g: &Tensor) -> Result<Tensor> {
    let dot = (g * y)?.sum_keepdim(D::Minus1)?;
    y * g.broadcast_sub(&dot)?
}

/// Multi-head attention's core on sequence-first projections (torch `nn.MultiheadAttention` after its in-projections):
/// q (Lq, N, E), k and v (Lk, N, E) -> per head `softmax(q k^T / sqrt(d)) v`, (Lq, N, E). When tracked, one graph node
/// holding q, k, v and the output: the backward recomputes the attention weights (one more q k^T product and softmax
/// per attention: about 2 % of an ipt-base training step's FLOPs, about 1.7 s of 19 s before the vectorised softmax)
/// instead of keeping two (N, heads, Lq, Lk) tensors per attention alive from the forward to the backward (about
/// 3.6 GB on ipt-base at batch 16 by their sizes; with the frozen-linear node the measured peak fell from 14.1 to 6.8
/// GiB, BENCHMARKS.md).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    let (_, n, e) = q.dims3()?;
    let (lk, nk, ek) = k.dims3()?;
    if e % heads != 0 || (nk, ek) != (n, e) || v.dims() != [lk, n, e] {
        candle_core::bail!("attention: q {:?}, k {:?}, v {:?} with {heads} heads", q.dims(), k.dims(), v.dims());
    }
    let d = e / heads;
    let scale = 1.0 / (d as f64).sqrt();
    if q.device().is_cpu() && [q, k, v].iter().all(|t| t.dtype() == DType::F32) {
        return attention_f32_cpu(q, k, v, crate::attention::Dims { lq: q.dim(0)?, lk, n, heads, d }, scale as f32);
    }
    // (L, N, E) -> (N, heads, L, d) and back.
    let split = move |x: &Tensor| -> Result<Tensor> {
        let l = x.dim(0)?;
        x.reshape((l, n, heads, d))?.permute((1, 2, 0, 3))?.contiguous()
    };
    let merge = move |x: &Tensor| -> Result<Tensor> {
        let l = x.dim(2)?;
        x.permute((2, 0, 1, 3))?.reshape((l, n, heads * d))
    };
    let qs = (split(&q.detach())? * scale)?;
    let (ks, vs) = (split(&k.detach())?, split(&v.detach())?);
    let ctx = merge(&softmax_value(&qs.matmul(&ks.t()?)?)?.matmul(&vs)?)?;
    carry3("attention", [q, k, v], ctx, move |args, _ctx, grad| {
        let qs = (split(&args[0].detach())? * scale)?;
        let (ks, vs) = (split(&args[1].detach())?, split(&args[2].detach())?);
        let p = softmax_value(&qs.matmul(&ks.t()?)?)?;
        let dc = split(grad)?;
        let dv = p.t()?.matmul(&dc)?;
        let ds = softmax_backward(&p, &dc.matmul(&vs.t()?)?)?;
        let dq = (ds.matmul(&ks)? * scale)?;
        let dk = ds.t()?.matmul(&qs)?;
        Ok(vec![Some(merge(&dq)?), Some(merge(&dk)?), Some(merge(&dv)?)])
    })
}

/// [`attention`] on the CPU in f32: `attention.rs`'s kernels, one graph node as above.
fn attention_f32_cpu(q: &Tensor, k: &Tensor, v: &Tensor, dm: crate::attention::Dims, scale: f32) -> Result<Tensor> {
    let [qd, kd, vd] = [q, k, v].map(|t| t.detach().contiguous());
    let (qd, kd, vd) = (qd?, kd?, vd?);
    let ctx =
        with_f32(&qd, |qs| with_f32(&kd, |ks| with_f32(&vd, |vs| crate::attention::forward(qs, ks, vs, dm, scale))))???;
    let shape = q.shape().clone();
    let ctx = Tensor::from_vec(ctx, shape.clone(), q.device())?;
    carry3("attention", [q, k, v], ctx, move |args, _ctx, grad| {
        // From the node's args (not the forward's contiguous copies, which would stay alive until the backward).
        let [dq, dk, dv] = attention_grads_f32_cpu([args[0], args[1], args[2]], grad, dm, scale)?;
        Ok(vec![Some(dq), Some(dk), Some(dv)])
    })
}

/// The input gradients (dq, dk, dv) of [`attention`] on the CPU in f32, given the values of q, k and v and the
/// gradient of the output: `attention.rs`'s backward kernel (attention weights recomputed).
pub(crate) fn attention_grads_f32_cpu(
    [q, k, v]: [&Tensor; 3],
    grad: &Tensor,
    dm: crate::attention::Dims,
    scale: f32,
) -> Result<[Tensor; 3]> {
    let [qd, kd, vd] = [q, k, v].map(|t| t.detach().contiguous());
    let (qd, kd, vd, grad) = (qd?, kd?, vd?, grad.contiguous()?);
    let (dq, dk, dv) = with_f32(&qd, |qs| {
        with_f32(&kd, |ks| {
            with_f32(&vd, |vs| with_f32(&grad, |g| crate::attention::backward(qs, ks, vs, g, dm, scale)))
        })
    })????;
    let dev = q.device();
    Ok([
        Tensor::from_vec(dq, q.shape(), dev)?,
        Tensor::from_vec(dk, k.shape(), dev)?,
        Tensor::from_vec(dv, v.shape(), dev)?,
    ])
}

/// Whether [`attention`] on these tensors runs `attention.rs`'s f32 CPU kernels, and their dims and scale.
pub(crate) fn attention_f32_cpu_dims(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
) -> Result<Option<(crate::attention::Dims, f32)>> {
    let (lq, n, e) = q.dims3()?;
    let lk = k.dim(0)?;
    let f32_cpu = q.device().is_cpu() && [q, k, v].iter().all(|t| t.dtype() == DType::F32);
    if !f32_cpu || e % heads != 0 || k.dims() != [lk, n, e] || v.dims() != [lk, n, e] {
        return Ok(None);
    }
    let d = e / heads;
    Ok(Some((crate::attention::Dims { lq, lk, n, heads, d }, (1.0 / (d as f64).sqrt()) as f32)))
}

/// ReLU, `max(x, 0)`, whose input gradient is `grad` where the output is positive and 0 elsewhere (torch's rule),
/// in one pass on the CPU in f32. Why: candle's ReLU backward builds `x >= 0` from four whole-tensor passes
/// (zeros, compare, cast, multiply); on ipt-base at batch 16 this kernel took 0.7 s off a 15 s backward
/// (BENCHMARKS.md). Elsewhere, candle's ReLU (its gradient at exactly 0 is 1, not 0).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(Relu)
    } else {
        x.relu()
    }
}

struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "relu-f32"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let (CpuStorage::F32(v), Some((start, end))) = (storage, layout.contiguous_offsets()) else {
            candle_core::bail!("relu: a contiguous f32 tensor expected");
        };
        let mut y = vec![0f32; end - start];
        y.par_chunks_mut(1 << 16).zip(v[start..end].par_chunks(1 << 16)).for_each(|(y, x)| {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = if x > 0.0 { x } else { 0.0 };
            }
        });
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(relu_backward(grad, y)?))
    }
}

/// `grad` where `y > 0`, else 0: the backward of [`relu`] from its output `y`.
pub fn relu_backward(grad: &Tensor, y: &Tensor) -> Result<Tensor> {
    if grad.device().is_cpu() && grad.dtype() == DType::F32 {
        grad.contiguous()?.apply_op2_no_bwd(&y.contiguous()?, &ReluMask)
    } else {
        grad.mul(&y.gt(0.0)?.to_dtype(grad.dtype())?)
    }
}

/// [`relu`] of a tensor the caller holds alone (a fresh, untracked product): in place on the CPU in f32, so
/// that no second activation is allocated and zero-filled (on ipt-base an FFN's hidden activation is 38 MB at
/// batch 16); [`relu`] elsewhere. Same values.
pub(crate) fn relu_owned(x: Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && x.is_contiguous() && !x.track_op() {
        x.inplace_op1(&InPlace(|v: &mut [f32], _: Option<&[f32]>| {
            for x in v {
                *x = if *x > 0.0 { *x } else { 0.0 };
            }
        }))?;
        Ok(x)
    } else {
        relu(&x)
    }
}

/// [`relu_backward`] writing into `grad`, which the caller holds alone; [`relu_backward`] elsewhere.
pub(crate) fn relu_backward_owned(grad: Tensor, y: &Tensor) -> Result<Tensor> {
    let f32_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous();
    if f32_cpu(&grad) && f32_cpu(y) && !grad.track_op() && grad.dims() == y.dims() {
        grad.inplace_op2(
            y,
            &InPlace(|g: &mut [f32], y: Option<&[f32]>| {
                for (g, &y) in g.iter_mut().zip(y.unwrap_or_default()) {
                    *g = if y > 0.0 { *g } else { 0.0 };
                }
            }),
        )?;
        Ok(grad)
    } else {
        relu_backward(&grad, y)
    }
}

/// An elementwise f32 CPU kernel applied in place to a contiguous tensor, chunk by chunk on rayon, with the
/// matching chunk of a second contiguous tensor of the same size where there is one.
struct InPlace<F>(F);

impl<F: Fn(&mut [f32], Option<&[f32]>) + Sync> InPlace<F> {
    fn run(&self, dst: &mut CpuStorage, ld: &Layout, src: Option<(&CpuStorage, &Layout)>) -> Result<()> {
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 16;
        let (CpuStorage::F32(d), Some((d0, d1))) = (dst, ld.contiguous_offsets()) else {
            candle_core::bail!("in place: a contiguous f32 tensor expected");
        };
        let chunks = d[d0..d1].par_chunks_mut(CHUNK);
        match src {
            None => chunks.for_each(|d| (self.0)(d, None)),
            Some((CpuStorage::F32(s), ls)) => {
                let Some((s0, s1)) = ls.contiguous_offsets().filter(|(s0, s1)| s1 - s0 == d1 - d0) else {
                    candle_core::bail!("in place: a contiguous f32 operand of the same size expected");
                };
                chunks.zip(s[s0..s1].par_chunks(CHUNK)).for_each(|(d, s)| (self.0)(d, Some(s)));
            }
            Some(_) => candle_core::bail!("in place: an f32 operand expected"),
        }
        Ok(())
    }
}

impl<F: Fn(&mut [f32], Option<&[f32]>) + Sync> candle_core::InplaceOp1 for InPlace<F> {
    fn name(&self) -> &'static str {
        "in-place-f32"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        self.run(storage, layout, None)
    }
}

impl<F: Fn(&mut [f32], Option<&[f32]>) + Sync> candle_core::InplaceOp2 for InPlace<F> {
    fn name(&self) -> &'static str {
        "in-place-f32"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        self.run(s1, l1, Some((s2, l2)))
    }
}

/// `grad` where `y > 0`, else 0 (the ReLU backward from its output), f32 CPU.
struct ReluMask;

impl candle_core::CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "relu-mask-f32"
    }

    fn cpu_fwd(&self, g: &CpuStorage, lg: &Layout, y: &CpuStorage, ly: &Layout) -> Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let (CpuStorage::F32(g), CpuStorage::F32(y), Some((g0, g1)), Some((y0, y1))) =
            (g, y, lg.contiguous_offsets(), ly.contiguous_offsets())
        else {
            candle_core::bail!("relu backward: contiguous f32 gradient and output expected");
        };
        if lg.shape() != ly.shape() {
            candle_core::bail!("relu backward: gradient {:?} for an output {:?}", lg.shape(), ly.shape());
        }
        let mut out = vec![0f32; g1 - g0];
        out.par_chunks_mut(1 << 16).zip(g[g0..g1].par_chunks(1 << 16).zip(y[y0..y1].par_chunks(1 << 16))).for_each(
            |(o, (g, y))| {
                for ((o, &g), &y) in o.iter_mut().zip(g).zip(y) {
                    *o = if y > 0.0 { g } else { 0.0 };
                }
            },
        );
        Ok((CpuStorage::F32(out), lg.shape().clone()))
    }
}

/// LayerNorm over the last dim, `(x - mean) / sqrt(var + eps) * w + b`, with `w` and `b` frozen (gradient for `x`
/// only): candle-nn's fused kernel (f32) or the composed form without graph; backward
/// `(g - mean(g) - xhat * mean(g * xhat)) / sigma` with `g = grad * w`, recomputing `xhat` and `sigma` from `x`.
pub fn layer_norm_frozen(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if w.track_op() || b.track_op() {
        candle_core::bail!("layer_norm_frozen: weight and bias must be frozen");
    }
    let detached = x.detach().contiguous()?;
    let y: Value = match layer_norm_f32_cpu(&detached, w, b, eps as f32)? {
        Some(v) => v,
        None if x.dtype() == DType::F32 => candle_nn::ops::layer_norm(&detached, w, b, eps as f32)?.into(),
        None => {
            let (xhat, _) = normalise(&detached, eps)?;
            xhat.broadcast_mul(w)?.broadcast_add(b)?.into()
        }
    };
    let w = w.clone();
    carry("layer-norm-frozen", x, y, move |x, _y, grad| {
        if let Some(dx) = layer_norm_backward_f32_cpu(x, &w, grad, eps)? {
            return Ok(dx);
        }
        let (xhat, sigma) = normalise(x, eps)?;
        let g = grad.broadcast_mul(&w)?;
        let mean_g = g.mean_keepdim(D::Minus1)?;
        let mean_gx = (&g * &xhat)?.mean_keepdim(D::Minus1)?;
        g.broadcast_sub(&mean_g)?.sub(&xhat.broadcast_mul(&mean_gx)?)?.broadcast_div(&sigma)
    })
}

/// [`layer_norm_frozen`]'s value on the CPU in f32: candle-nn's `layer_norm` kernel, the same arithmetic in the same
/// order (serial f32 sums of x and x^2 per row, `(x - mean) * inv_std * w + b`), so the same bits, written into a
/// buffer that is not zeroed first and that the graph node takes over (`Value::F32Cpu`): candle-nn's zero-fills its
/// output and the node then copied it, two passes over each (L, N, E) activation. `None` where it does not apply.
fn layer_norm_f32_cpu(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Option<Value>> {
    use rayon::prelude::*;
    let Some(&e) = x.dims().last() else { return Ok(None) };
    let f32_cpu = [x, w, b].iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous());
    if !f32_cpu || e == 0 || w.dims() != [e] || b.dims() != [e] {
        return Ok(None);
    }
    let n = x.elem_count();
    let mut dst: Vec<f32> = Vec::with_capacity(n);
    with_f32(x, |xs| {
        with_f32(w, |ws| {
            with_f32(b, |bs| {
                dst.spare_capacity_mut()[..n].par_chunks_mut(e).zip(xs.par_chunks(e)).for_each(|(dst, src)| {
                    let (mut sum, mut sum2) = (0f32, 0f32);
                    for &v in src {
                        sum += v;
                        sum2 += v * v;
                    }
                    let mean = sum / e as f32;
                    let var = sum2 / e as f32 - mean * mean;
                    let inv_std = (var + eps).sqrt().recip();
                    for ((d, &s), (&alpha, &beta)) in dst.iter_mut().zip(src).zip(ws.iter().zip(bs)) {
                        d.write((s - mean) * inv_std * alpha + beta);
                    }
                })
            })
        })
    })???;
    // SAFETY: the loop above wrote every one of the n elements (rows of e cover n = rows * e).
    unsafe { dst.set_len(n) };
    Ok(Some(Value::F32Cpu(dst, x.shape().clone())))
}

/// [`layer_norm_frozen`]'s input gradient on the CPU in f32, row by row (rows on rayon): the composed form below
/// makes about a dozen whole-tensor passes and allocations (0.66 s of a 7 s backward on ipt-base at batch 16,
/// 0.4 s with this). `None` where it does not apply.
fn layer_norm_backward_f32_cpu(x: &Tensor, w: &Tensor, grad: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    use rayon::prelude::*;
    let f32_cpu = [x, w, grad].iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32);
    let e = x.dim(D::Minus1)?;
    if !f32_cpu || grad.dims() != x.dims() || w.dims() != [e] || e == 0 {
        return Ok(None);
    }
    let (x, w, grad) = (x.detach().contiguous()?, w.contiguous()?, grad.contiguous()?);
    let mut dx = vec![0f32; x.elem_count()];
    with_f32(&x, |x| {
        with_f32(&w, |w| {
            with_f32(&grad, |g| {
                dx.par_chunks_mut(e).zip(x.par_chunks(e).zip(g.par_chunks(e))).for_each(|(dx, (x, g))| {
                    let n = e as f32;
                    let mean = lane_sum(x.iter().copied()) / n;
                    let var = lane_sum(x.iter().map(|&v| (v - mean) * (v - mean))) / n;
                    let inv_sigma = 1.0 / (var + eps as f32).sqrt();
                    let mean_g = lane_sum(g.iter().zip(w).map(|(&g, &w)| g * w)) / n;
                    let mean_gx =
                        lane_sum(g.iter().zip(w).zip(x).map(|((&g, &w), &x)| g * w * (x - mean) * inv_sigma)) / n;
                    for (((dx, &x), &g), &w) in dx.iter_mut().zip(x).zip(g).zip(w) {
                        *dx = (g * w - mean_g - (x - mean) * inv_sigma * mean_gx) * inv_sigma;
                    }
                })
            })
        })
    })???;
    Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
}

/// The sum of `values` in 16 interleaved partial sums, so that the compiler can keep them in one vector register
/// instead of waiting on one add after another.
fn lane_sum(values: impl Iterator<Item = f32>) -> f32 {
    let mut lanes = [0f32; 16];
    let mut values = values.peekable();
    while values.peek().is_some() {
        for (lane, v) in lanes.iter_mut().zip(values.by_ref().take(16)) {
            *lane += v;
        }
    }
    lanes.iter().sum()
}

/// (xhat, sigma) over the last dim, biased variance as torch.
fn normalise(x: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let sigma = (centred.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    Ok((centred.broadcast_div(&sigma)?, sigma))
}
