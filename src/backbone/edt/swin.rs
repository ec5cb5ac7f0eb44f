//! EDT's transformer body (official `SwinBody` of `net/edt.py`): stages (RSTB) of CSwin-style blocks whose two
//! attention branches see stripe windows, short x long and long x short, with a locally-enhanced positional term
//! (LePE: a depthwise 3x3 conv of each window's values) in place of a relative position bias; odd blocks shift
//! their windows by half a window and mask attention across the wrapped edge. Tokens stay channels-last,
//! (N, H, W, C), throughout, which is also the layout AdaptIR's EDT variant takes.
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::{EdtConfig, BODY_SIZE, MLP_RATIO};
use crate::backbone::layers::{conv, Conv, LayerNorm};
use crate::hooks::{Attn, LayerHooks, NoHooks, Proj, Site};
use crate::linear::{linear_map, Linear};

/// The official `_init_weights`: Linear weights ~ trunc_normal(std .02) (a normal here: fresh models only), bias 0.
fn linear(vb: VarBuilder, cin: usize, cout: usize) -> Result<Linear> {
    let w = vb.get_with_hints((cout, cin), "weight", Init::Randn { mean: 0.0, stdev: 0.02 })?;
    let b = vb.get_with_hints(cout, "bias", Init::Const(0.0))?;
    Ok((w, Some(b)))
}

/// A depthwise k x k convolution (zero padding k / 2, bias) on channels-last (N, H, W, C): the sum of the k^2
/// shifted copies of the padded input, each scaled per channel. Exact, and needs no transpose to NCHW and back (the
/// official code permutes around an `nn.Conv2d(groups=C)`). One graph node either way: `frozen::depthwise_nhwc`
/// for a frozen kernel, `conv::depthwise_nhwc_trainable` for a trained one.
struct DepthwiseNhwc {
    /// The official (C, 1, k, k) kernel, as loaded (a trained variable when the backbone is trained).
    weight: Tensor,
    /// Tap (ky, kx) at `ky * k + kx`: the (C,) weights of that kernel position, copied out of `weight` once.
    /// Only a frozen kernel may use them: an optimizer updates `weight` in place, not this copy.
    taps: Vec<Tensor>,
    bias: Tensor,
    k: usize,
}

impl DepthwiseNhwc {
    fn new(vb: VarBuilder, c: usize, k: usize) -> Result<Self> {
        let init = crate::backbone::layers::default_init(k * k);
        let weight = vb.get_with_hints((c, 1, k, k), "weight", init)?;
        let bias = vb.get_with_hints(c, "bias", init)?;
        let taps = adaptir_ops::conv::depthwise_taps(&weight.detach())?;
        Ok(Self { weight, taps, bias, k })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Frozen kernel (inference, adapter training): the op with the one-adjoint backward.
        if !self.weight.track_op() && !self.bias.track_op() {
            return adaptir_ops::frozen::depthwise_nhwc(x, &self.taps, self.k)?.broadcast_add(&self.bias);
        }
        // Trained kernel (pre-training, full fine-tuning): computed from the variable's current values, with
        // every gradient.
        adaptir_ops::conv::depthwise_nhwc_trainable(x, &self.weight, &self.bias)
    }
}

/// (N, H, W, C) -> (N * windows, wh, ww, C), windows in row-major order per image (`window_partition`).
fn partition(x: &Tensor, (wh, ww): (usize, usize)) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    x.reshape((n, h / wh, wh, w / ww, ww, c))?.permute((0, 1, 3, 2, 4, 5))?.reshape((
        n * (h / wh) * (w / ww),
        wh,
        ww,
        c,
    ))
}

/// The inverse of [`partition`] (`window_reverse`).
fn unpartition(x: &Tensor, (wh, ww): (usize, usize), (h, w): (usize, usize)) -> Result<Tensor> {
    let (bw, _, _, c) = x.dims4()?;
    let n = bw / ((h / wh) * (w / ww));
    x.reshape((n, h / wh, w / ww, wh, ww, c))?.permute((0, 1, 3, 2, 4, 5))?.reshape((n, h, w, c))
}

/// The attention mask of a shifted branch on an (h, w) grid, (windows, wh ww, wh ww): 0 between tokens of the
/// same region of the rolled image, -100 (not -inf, as the official code) between tokens that came from
/// different sides of the wrap. Regions: per axis, [0, size - window), [size - window, size - shift),
/// [size - shift, size) (`calculate_mask`).
pub fn shifted_window_mask(
    (h, w): (usize, usize),
    (wh, ww): (usize, usize),
    (sh, sw): (usize, usize),
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let region = |i: usize, size: usize, window: usize, shift: usize| -> usize {
        if i + window < size {
            0
        } else if i + shift < size {
            1
        } else {
            2
        }
    };
    let (nh, nw, len) = (h / wh, w / ww, wh * ww);
    let mut mask = vec![0f32; nh * nw * len * len];
    for (widx, chunk) in mask.chunks_mut(len * len).enumerate() {
        let (by, bx) = (widx / nw, widx % nw);
        let labels: Vec<usize> = (0..len)
            .map(|t| {
                let (y, x) = (by * wh + t / ww, bx * ww + t % ww);
                region(y, h, wh, sh) * 3 + region(x, w, ww, sw)
            })
            .collect();
        for i in 0..len {
            for j in 0..len {
                if labels[i] != labels[j] {
                    chunk[i * len + j] = -100.0;
                }
            }
        }
    }
    Tensor::from_vec(mask, (nh * nw, len, len), device)?.to_dtype(dtype)
}

/// One attention branch (`WindowAttention`): multi-head attention inside each window over half of the block's
/// channels, q and k from the block's qkv projection, v plus its LePE term.
struct WindowAttention {
    lepe: DepthwiseNhwc,
    heads: usize,
    /// (rows, columns) of this branch's windows.
    window: (usize, usize),
}

impl WindowAttention {
    /// q, k, v: (N, H, W, c) -> (N, H, W, c).
    fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (n, h, w, c) = q.dims4()?;
        let (wh, ww) = self.window;
        let (len, windows, d) = (wh * ww, (h / wh) * (w / ww), c / self.heads);
        // (N windows, wh, ww, c) -> (N windows, heads, len, d): channel `head * d + j`, as the official views.
        let heads = |t: &Tensor| -> Result<Tensor> {
            t.reshape((n * windows, len, self.heads, d))?.transpose(1, 2)?.contiguous()
        };
        // `head_dim ** -0.5`, as the official scale (pow, not 1 / sqrt).
        let scale = (d as f64).powf(-0.5);
        let qh = (heads(&partition(q, self.window)?)? * scale)?;
        let kh = heads(&partition(k, self.window)?)?;
        let vw = partition(v, self.window)?;
        let lepe = heads(&self.lepe.forward(&vw)?)?;
        let vh = heads(&vw)?;
        let mut scores = qh.matmul(&kh.t()?)?; // (N windows, heads, len, len)
        if let Some(m) = mask {
            let m = m.reshape((1, windows, 1, len, len))?;
            scores = scores.reshape((n, windows, self.heads, len, len))?.broadcast_add(&m)?.reshape((
                n * windows,
                self.heads,
                len,
                len,
            ))?;
        }
        let attn = adaptir_ops::fused::softmax_last_dim(&scores)?;
        let out = (attn.matmul(&vh)? + lepe)?; // (N windows, heads, len, d)
        let out = out.transpose(1, 2)?.reshape((n * windows, wh, ww, c))?;
        unpartition(&out, self.window, (h, w))
    }
}

/// The block's MLP: fc1, GELU, depthwise 5x5 conv, GELU, fc2, channels-last.
struct Mlp {
    fc1: Linear,
    dwconv: DepthwiseNhwc,
    fc2: Linear,
}

impl Mlp {
    /// A method acts at fc1 and fc2 as at IPT's FFN linears (sites `Ffn1`, `Ffn2`).
    fn forward(&self, x: &Tensor, hooks: &dyn LayerHooks) -> Result<Tensor> {
        let h = hooks.site(Site::Ffn1, x, linear_map(&self.fc1, x)?)?.gelu_erf()?;
        let h = self.dwconv.forward(&h)?.gelu_erf()?;
        hooks.site(Site::Ffn2, &h, linear_map(&self.fc2, &h)?)
    }
}

/// Where a projection's output sits in the fused `qkv` output (q, k, v; `Out` is `proj`'s own).
fn proj_index(p: Proj) -> usize {
    match p {
        Proj::Q => 0,
        Proj::K => 1,
        Proj::V | Proj::Out => 2,
    }
}

/// `CSwinTransformerBlock`: `x + proj(attention)`, then `x + mlp(norm2 x) + method(norm2 x)`. AdaptIR (any
/// method's `beside_ffn`) runs on the same norm2 output as the MLP, inside the same residual, as the official
/// block calls `self.adaptir`. The other hooks act where they act in an IPT layer: at the LayerNorms, at q, k
/// and v (the three slices of the fused `qkv` output, before the branches split their channels), at `proj`
/// (`Out`), after the attention and after the MLP, and at fc1 / fc2.
pub struct SwinBlock {
    norm1: LayerNorm,
    qkv: Linear,
    attns: [WindowAttention; 2],
    proj: Linear,
    norm2: LayerNorm,
    mlp: Mlp,
    /// Stochastic-depth rate of this block (training only).
    drop_path: f64,
    /// Shift of each branch, (rows, columns); `None` for the even, unshifted blocks.
    shifts: Option<[(usize, usize); 2]>,
    /// Each branch's mask on the 48x48 construction grid: the checkpoint's `attn_mask_h` / `attn_mask_v` buffers
    /// when it has them (the official model uses its buffers at that size), computed otherwise.
    construction_masks: Option<[Tensor; 2]>,
    pub hooks: Box<dyn LayerHooks>,
}

impl SwinBlock {
    fn new(
        vb: VarBuilder,
        config: &EdtConfig,
        heads: usize,
        (shifted, drop_path): (bool, f64),
        hooks: Box<dyn LayerHooks>,
    ) -> Result<Self> {
        let e = config.embed_dim;
        let [a, b] = config.window_size;
        let [sa, sb] = config.shift_size();
        // Branch 0 (`_h`): a-row x b-column windows, shifted by (sa, sb); branch 1 (`_v`): the transpose.
        let windows = [(a, b), (b, a)];
        let attns = [0, 1].map(|i| -> Result<WindowAttention> {
            Ok(WindowAttention {
                lepe: DepthwiseNhwc::new(vb.pp("attns").pp(i).pp("lepe"), e / 2, 3)?,
                heads,
                window: windows[i],
            })
        });
        let [a0, a1] = attns;
        let shifts = shifted.then_some([(sa, sb), (sb, sa)]);
        let construction_masks = match shifts {
            Some(s) => {
                let mask = |i: usize, name: &str| -> Result<Tensor> {
                    let grid = (BODY_SIZE, BODY_SIZE);
                    let computed = shifted_window_mask(grid, windows[i], s[i], vb.dtype(), vb.device())?;
                    if vb.contains_tensor(name) {
                        vb.get_with_hints(computed.dims(), name, Init::Const(0.0))
                    } else {
                        Ok(computed)
                    }
                };
                Some([mask(0, "attn_mask_h")?, mask(1, "attn_mask_v")?])
            }
            None => None,
        };
        let hidden = MLP_RATIO * e;
        Ok(Self {
            norm1: LayerNorm::new(vb.pp("norm1"), e, 1)?,
            qkv: linear(vb.pp("qkv"), e, 3 * e)?,
            attns: [a0?, a1?],
            proj: linear(vb.pp("proj"), e, e)?,
            norm2: LayerNorm::new(vb.pp("norm2"), e, 2)?,
            mlp: Mlp {
                fc1: linear(vb.pp("mlp.fc1"), e, hidden)?,
                dwconv: DepthwiseNhwc::new(vb.pp("mlp.dwconv"), hidden, 5)?,
                fc2: linear(vb.pp("mlp.fc2"), hidden, e)?,
            },
            drop_path,
            shifts,
            construction_masks,
            hooks,
        })
    }

    /// The mask of branch `i` on an (h, w) grid: the construction one at 48x48, computed at any other size.
    fn mask(&self, i: usize, (h, w): (usize, usize), dtype: DType, device: &Device) -> Result<Option<Tensor>> {
        let (Some(shifts), Some(stored)) = (&self.shifts, &self.construction_masks) else {
            return Ok(None);
        };
        if (h, w) == (BODY_SIZE, BODY_SIZE) {
            return Ok(Some(stored[i].to_dtype(dtype)?));
        }
        shifted_window_mask((h, w), self.attns[i].window, shifts[i], dtype, device).map(Some)
    }

    /// x: (N, H, W, C) -> (N, H, W, C). `drop`: the training step's stochastic-depth RNG (see
    /// [`SwinBody::seed_drop_path`]); with it and a positive rate, each residual branch is kept per sample with
    /// probability `1 - rate` and scaled by its inverse (timm's `DropPath`), else passed as it is.
    pub fn forward(&self, x: &Tensor, train: bool, mut drop: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        let mut drop_path = |branch: Tensor| -> Result<Tensor> {
            match drop.as_deref_mut() {
                Some(rng) if train && self.drop_path > 0.0 => {
                    let keep = 1.0 - self.drop_path;
                    let m: Vec<f32> =
                        (0..n).map(|_| if rng.random::<f64>() < keep { (1.0 / keep) as f32 } else { 0.0 }).collect();
                    let m = Tensor::from_vec(m, (n, 1, 1, 1), branch.device())?.to_dtype(branch.dtype())?;
                    branch.broadcast_mul(&m)
                }
                _ => Ok(branch),
            }
        };
        let half = c / 2;
        let hooks = self.hooks.as_ref();
        let y = self.norm1.forward(x, hooks)?;
        let qkv = linear_map(&self.qkv, &y)?; // (N, H, W, 3C): q | k | v
        let [q_all, k_all, v_all] = [Proj::Q, Proj::K, Proj::V]
            .map(|p| hooks.site(Site::Attn(Attn::SelfAttn, p), &y, qkv.narrow(3, proj_index(p) * c, c)?));
        let (q_all, k_all, v_all) = (q_all?, k_all?, v_all?);
        let mut outs = vec![];
        for (i, attn) in self.attns.iter().enumerate() {
            // Branch i takes channels [i C/2, (i+1) C/2) of each of q, k and v.
            let (mut q, mut k, mut v) =
                (q_all.narrow(3, i * half, half)?, k_all.narrow(3, i * half, half)?, v_all.narrow(3, i * half, half)?);
            if let Some(s) = &self.shifts {
                let (dy, dx) = (s[i].0 as i32, s[i].1 as i32);
                let roll = |t: &Tensor| t.roll(-dy, 1)?.roll(-dx, 2);
                (q, k, v) = (roll(&q)?, roll(&k)?, roll(&v)?);
            }
            let mask = self.mask(i, (h, w), x.dtype(), x.device())?;
            let mut out = attn.forward(&q, &k, &v, mask.as_ref())?;
            if let Some(s) = &self.shifts {
                out = out.roll(s[i].0 as i32, 1)?.roll(s[i].1 as i32, 2)?;
            }
            outs.push(out);
        }
        let cat = Tensor::cat(&outs, 3)?;
        let a = hooks.site(Site::Attn(Attn::SelfAttn, Proj::Out), &cat, linear_map(&self.proj, &cat)?)?;
        let x = (x + drop_path(hooks.after_attention(Attn::SelfAttn, a, train)?)?)?;
        let y = self.norm2.forward(&x, hooks)?;
        let ffn = hooks.after_ffn(self.mlp.forward(&y, hooks)?, train)?;
        let ffn = match hooks.beside_ffn(&y, train)? {
            Some(extra) => (ffn + extra)?,
            None => ffn,
        };
        x + drop_path(ffn)?
    }
}

/// `SwinBody`: LayerNorm on the tokens (`patch_embed.norm`), stages of blocks each with a residual around the
/// stage, a final LayerNorm, then `conv_after_body` on the image plus the body's input.
pub struct SwinBody {
    /// The stochastic-depth RNG of the current training step, if one was seeded.
    drop_rng: std::sync::Mutex<Option<ChaCha8Rng>>,
    patch_norm: LayerNorm,
    pub stages: Vec<Vec<SwinBlock>>,
    norm: LayerNorm,
    conv_after_body: Conv,
}

impl SwinBody {
    /// `hooks`: one per block, in [`EdtConfig::host_dims`]' layer order.
    pub fn new(vb: VarBuilder, config: &EdtConfig, hooks: Vec<Box<dyn LayerHooks>>) -> Result<Self> {
        if hooks.len() != config.num_blocks() {
            candle_core::bail!("method modules for {} blocks, the model has {}", hooks.len(), config.num_blocks());
        }
        let mut hooks = hooks.into_iter();
        let mut rates = config.drop_path_rates().into_iter();
        let e = config.embed_dim;
        let mut stages = vec![];
        for (i, (&depth, &heads)) in config.depths.iter().zip(&config.num_heads).enumerate() {
            let vb = vb.pp("layers").pp(i).pp("residual_group.blocks");
            let blocks = (0..depth)
                .map(|j| {
                    let h = hooks.next().ok_or_else(|| candle_core::Error::Msg("missing block hooks".into()))?;
                    let rate = rates.next().unwrap_or(0.0);
                    SwinBlock::new(vb.pp(j), config, heads, (j % 2 == 1, rate), h)
                })
                .collect::<Result<Vec<_>>>()?;
            stages.push(blocks);
        }
        Ok(Self {
            drop_rng: std::sync::Mutex::new(None),
            patch_norm: LayerNorm::new(vb.pp("patch_embed.norm"), e, 1)?,
            stages,
            norm: LayerNorm::new(vb.pp("norm"), e, 1)?,
            conv_after_body: conv(vb.pp("conv_after_body"), e, e, 3)?,
        })
    }

    /// The next training forward (`train = true`) applies stochastic depth with masks drawn from this seed (the
    /// trainer seeds it from the run's seed and the step, so a resumed run draws the same masks). Without a seed,
    /// and in eval, no block drops anything.
    pub fn seed_drop_path(&self, seed: u64) -> Result<()> {
        let mut rng = self.drop_rng.lock().map_err(|_| candle_core::Error::Msg("drop-path RNG poisoned".into()))?;
        *rng = Some(ChaCha8Rng::seed_from_u64(seed));
        Ok(())
    }

    /// x: (N, E, H, W) -> (N, E, H, W).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut rng = self.drop_rng.lock().map_err(|_| candle_core::Error::Msg("drop-path RNG poisoned".into()))?;
        // A seed serves one training forward.
        let mut drop_rng = if train { rng.take() } else { None };
        std::mem::drop(rng);
        let mut t = self.patch_norm.forward(&x.permute((0, 2, 3, 1))?.contiguous()?, &NoHooks)?;
        for stage in &self.stages {
            let input = t.clone();
            for block in stage {
                t = block.forward(&t, train, drop_rng.as_mut())?;
            }
            t = (t + input)?;
        }
        let t = self.norm.forward(&t, &NoHooks)?.permute((0, 3, 1, 2))?.contiguous()?;
        self.conv_after_body.forward(&t)? + x
    }

    pub fn blocks(&self) -> impl Iterator<Item = &SwinBlock> {
        self.stages.iter().flatten()
    }
}

// ---- ONNX lowering (each mirrors the forward above; standard ops only, static shapes but the batch) --------

use adaptir_ops::graph::{Attr, GraphBuilder};

use crate::linear::lower_linear;

impl DepthwiseNhwc {
    /// The conv of a channels-first (B, C, H, W) graph value: one grouped Conv with the official (C, 1, k, k)
    /// kernel, at the variable's current values (as the forward uses them).
    fn lower_nchw(&self, b: &mut dyn GraphBuilder, x: &str, hint: &str) -> Result<String> {
        let (k, c) = (self.k, self.bias.dim(0)?);
        let w = b.constant(&format!("{hint}.weight"), &self.weight.detach().contiguous()?)?;
        let bias = b.constant(&format!("{hint}.bias"), &self.bias)?;
        let p = (k / 2) as i64;
        b.op("Conv", &[x, &w, &bias], vec![("group", Attr::Int(c as i64)), ("pads", Attr::Ints(vec![p, p, p, p]))])
    }

    /// The conv of a channels-last (B, H, W, C) graph value, as the forward takes it.
    fn lower_nhwc(&self, b: &mut dyn GraphBuilder, x: &str, hint: &str) -> Result<String> {
        let t = b.op("Transpose", &[x], vec![("perm", Attr::Ints(vec![0, 3, 1, 2]))])?;
        let y = self.lower_nchw(b, &t, hint)?;
        b.op("Transpose", &[&y], vec![("perm", Attr::Ints(vec![0, 2, 3, 1]))])
    }
}

/// `torch.roll(x, shift, axis)` of a graph value whose `axis` has `size` entries: two Slices and a Concat
/// (`y[i] = x[(i - shift) mod size]`), the form every runtime of the matrix has.
fn lower_roll(b: &mut dyn GraphBuilder, x: &str, shift: i64, axis: i64, size: usize) -> Result<String> {
    let size = size as i64;
    let cut = (size - shift.rem_euclid(size)) % size;
    if cut == 0 {
        return Ok(x.to_string());
    }
    let ax = b.constant_i64(&format!("axis{axis}"), &[axis])?;
    let (zero, mid, end) = (
        b.constant_i64("zero", &[0])?,
        b.constant_i64(&format!("roll_cut{cut}"), &[cut])?,
        b.constant_i64("end", &[i64::MAX])?,
    );
    let tail = b.op("Slice", &[x, &mid, &end, &ax], vec![])?;
    let head = b.op("Slice", &[x, &zero, &mid, &ax], vec![])?;
    b.op("Concat", &[&tail, &head], vec![("axis", Attr::Int(axis))])
}

impl WindowAttention {
    /// As [`WindowAttention::forward`] on (N, H, W, c) graph values of an (h, w) grid with `c` channels.
    fn lower(
        &self,
        b: &mut dyn GraphBuilder,
        (q, k, v): (&str, &str, &str),
        (h, w, c): (usize, usize, usize),
        mask: Option<&Tensor>,
        hint: &str,
    ) -> Result<String> {
        let (wh, ww) = self.window;
        let (len, windows, heads, d) = (wh * ww, (h / wh) * (w / ww), self.heads, c / self.heads);
        let ints = |v: &[usize]| v.iter().map(|&x| x as i64).collect::<Vec<i64>>();
        // (N, H, W, c) -> (N windows, heads, len, d), with `perm` choosing the last two axes' order.
        let to_heads = |b: &mut dyn GraphBuilder, t: &str, perm: Vec<i64>| -> Result<String> {
            let s = b.constant_i64("edt_grid6", &[&[-1i64][..], &ints(&[h / wh, wh, w / ww, ww, c])].concat())?;
            let t = b.op("Reshape", &[t, &s], vec![])?;
            let t = b.op("Transpose", &[&t], vec![("perm", Attr::Ints(vec![0, 1, 3, 2, 4, 5]))])?;
            let s = b.constant_i64("edt_window_heads", &[&[-1i64][..], &ints(&[len, heads, d])].concat())?;
            let t = b.op("Reshape", &[&t, &s], vec![])?;
            b.op("Transpose", &[&t], vec![("perm", Attr::Ints(perm))])
        };
        let scale = b.constant_f32("edt_attn_scale", &[], &[(d as f64).powf(-0.5) as f32])?;
        let qh = to_heads(b, q, vec![0, 2, 1, 3])?;
        let qh = b.op("Mul", &[&qh, &scale], vec![])?;
        let kt = to_heads(b, k, vec![0, 2, 3, 1])?; // (B, heads, d, len)
        let vh = to_heads(b, v, vec![0, 2, 1, 3])?;
        let mut scores = b.op("MatMul", &[&qh, &kt], vec![])?;
        if let Some(m) = mask {
            let m =
                b.constant(&format!("{hint}.mask"), &m.to_dtype(DType::F32)?.reshape((1, windows, 1, len, len))?)?;
            let s = b.constant_i64("edt_scores5", &[&[-1i64][..], &ints(&[windows, heads, len, len])].concat())?;
            let t = b.op("Reshape", &[&scores, &s], vec![])?;
            let t = b.op("Add", &[&t, &m], vec![])?;
            let s = b.constant_i64("edt_scores4", &[&[-1i64][..], &ints(&[heads, len, len])].concat())?;
            scores = b.op("Reshape", &[&t, &s], vec![])?;
        }
        let attn = b.op("Softmax", &[&scores], vec![("axis", Attr::Int(-1))])?;
        let ctx = b.op("MatMul", &[&attn, &vh], vec![])?;
        // LePE on each window's values, channels-first: (B, c, wh, ww) -> (B, heads, len, d).
        let s = b.constant_i64("edt_grid6", &[&[-1i64][..], &ints(&[h / wh, wh, w / ww, ww, c])].concat())?;
        let vw = b.op("Reshape", &[v, &s], vec![])?;
        let vw = b.op("Transpose", &[&vw], vec![("perm", Attr::Ints(vec![0, 1, 3, 5, 2, 4]))])?;
        let s = b.constant_i64("edt_window_nchw", &[&[-1i64][..], &ints(&[c, wh, ww])].concat())?;
        let vw = b.op("Reshape", &[&vw, &s], vec![])?;
        let lepe = self.lepe.lower_nchw(b, &vw, &format!("{hint}.lepe"))?;
        let s = b.constant_i64("edt_lepe_heads", &[&[-1i64][..], &ints(&[heads, d, len])].concat())?;
        let lepe = b.op("Reshape", &[&lepe, &s], vec![])?;
        let lepe = b.op("Transpose", &[&lepe], vec![("perm", Attr::Ints(vec![0, 1, 3, 2]))])?;
        let out = b.op("Add", &[&ctx, &lepe], vec![])?; // (B, heads, len, d)
                                                        // -> (N, H, W, c): window tokens back to their places.
        let out = b.op("Transpose", &[&out], vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))])?;
        let s = b.constant_i64("edt_windows6", &[&[-1i64][..], &ints(&[h / wh, w / ww, wh, ww, c])].concat())?;
        let out = b.op("Reshape", &[&out, &s], vec![])?;
        let out = b.op("Transpose", &[&out], vec![("perm", Attr::Ints(vec![0, 1, 3, 2, 4, 5]))])?;
        let s = b.constant_i64("edt_nhwc", &[&[-1i64][..], &ints(&[h, w, c])].concat())?;
        b.op("Reshape", &[&out, &s], vec![])
    }
}

impl Mlp {
    fn lower(&self, b: &mut dyn GraphBuilder, x: &str, hooks: &dyn LayerHooks, hint: &str) -> Result<String> {
        let h = lower_linear(b, x, &self.fc1, &format!("{hint}.fc1"))?;
        let h = hooks.lower_site(b, Site::Ffn1, x, h)?;
        let h = b.op("Gelu", &[&h], vec![])?;
        let h = self.dwconv.lower_nhwc(b, &h, &format!("{hint}.dwconv"))?;
        let h = b.op("Gelu", &[&h], vec![])?;
        let y = lower_linear(b, &h, &self.fc2, &format!("{hint}.fc2"))?;
        hooks.lower_site(b, Site::Ffn2, &h, y)
    }
}

impl SwinBlock {
    /// As [`SwinBlock::forward`] on an (N, H, W, C) graph value of an (h, w) grid; the masks are constants.
    pub fn lower(&self, b: &mut dyn GraphBuilder, x: &str, (h, w): (usize, usize), hint: &str) -> Result<String> {
        let c = self.qkv.0.dim(1)?;
        let half = c / 2;
        let hooks = self.hooks.as_ref();
        b.push_scope(hint);
        let y = self.norm1.lower(b, x, hooks, hint)?;
        let qkv = lower_linear(b, &y, &self.qkv, &format!("{hint}.qkv"))?;
        let last = b.constant_i64("axis3", &[3])?;
        let slice = |b: &mut dyn GraphBuilder, t: &str, start: usize, len: usize| -> Result<String> {
            let (s, e) = (start as i64, (start + len) as i64);
            let (s, e) = (b.constant_i64(&format!("start{s}"), &[s])?, b.constant_i64(&format!("end{e}"), &[e])?);
            b.op("Slice", &[t, &s, &e, &last], vec![])
        };
        let mut all = vec![];
        for p in [Proj::Q, Proj::K, Proj::V] {
            let t = slice(b, &qkv, proj_index(p) * c, c)?;
            all.push(hooks.lower_site(b, Site::Attn(Attn::SelfAttn, p), &y, t)?);
        }
        let mut outs = vec![];
        for (i, attn) in self.attns.iter().enumerate() {
            let mut part = |j: usize| -> Result<String> {
                let mut t = slice(b, &all[j], i * half, half)?;
                if let Some(sh) = &self.shifts {
                    t = lower_roll(b, &t, -(sh[i].0 as i64), 1, h)?;
                    t = lower_roll(b, &t, -(sh[i].1 as i64), 2, w)?;
                }
                Ok(t)
            };
            let (q, k, v) = (part(0)?, part(1)?, part(2)?);
            let mask = self.mask(i, (h, w), DType::F32, &Device::Cpu)?;
            let mut out = attn.lower(b, (&q, &k, &v), (h, w, half), mask.as_ref(), &format!("{hint}.attns.{i}"))?;
            if let Some(sh) = &self.shifts {
                out = lower_roll(b, &out, sh[i].0 as i64, 1, h)?;
                out = lower_roll(b, &out, sh[i].1 as i64, 2, w)?;
            }
            outs.push(out);
        }
        let cat = b.op("Concat", &[&outs[0], &outs[1]], vec![("axis", Attr::Int(3))])?;
        let a = lower_linear(b, &cat, &self.proj, &format!("{hint}.proj"))?;
        let a = hooks.lower_site(b, Site::Attn(Attn::SelfAttn, Proj::Out), &cat, a)?;
        let a = hooks.lower_after_attention(b, Attn::SelfAttn, a)?;
        let x = b.op("Add", &[x, &a], vec![])?;
        let y = self.norm2.lower(b, &x, hooks, hint)?;
        let ffn = self.mlp.lower(b, &y, hooks, &format!("{hint}.mlp"))?;
        let ffn = hooks.lower_after_ffn(b, ffn)?;
        let ffn = match hooks.lower_beside_ffn(b, &y)? {
            Some(extra) => b.op("Add", &[&ffn, &extra], vec![])?,
            None => ffn,
        };
        let out = b.op("Add", &[&x, &ffn], vec![]);
        b.pop_scope();
        out
    }
}

impl SwinBody {
    /// As [`SwinBody::forward`] on an (N, E, h, w) graph value.
    pub fn lower(&self, b: &mut dyn GraphBuilder, x: &str, (h, w): (usize, usize)) -> Result<String> {
        let t = b.op("Transpose", &[x], vec![("perm", Attr::Ints(vec![0, 2, 3, 1]))])?;
        let mut t = self.patch_norm.lower(b, &t, &NoHooks, "body.patch_embed")?;
        for (i, stage) in self.stages.iter().enumerate() {
            let input = t.clone();
            for (j, block) in stage.iter().enumerate() {
                t = block.lower(b, &t, (h, w), &format!("body.layers.{i}.residual_group.blocks.{j}"))?;
            }
            t = b.op("Add", &[&t, &input], vec![])?;
        }
        let t = self.norm.lower(b, &t, &NoHooks, "body")?;
        let t = b.op("Transpose", &[&t], vec![("perm", Attr::Ints(vec![0, 3, 1, 2]))])?;
        let t = self.conv_after_body.lower(b, &t, "body.conv_after_body")?;
        b.op("Add", &[&t, x], vec![])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adaptir_ops::tolerance::F64_REL;

    fn max_abs(t: &Tensor) -> f64 {
        t.to_dtype(DType::F64).and_then(|t| t.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()).unwrap_or(f64::NAN)
    }

    /// The channels-last depthwise conv equals candle's grouped conv2d (groups = C, zero padding k / 2).
    #[test]
    fn depthwise_nhwc_equals_grouped_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        for k in [3usize, 5] {
            let c = 4;
            let w = Tensor::randn(0f64, 1.0, (c, 1, k, k), &dev)?;
            let b = Tensor::randn(0f64, 1.0, c, &dev)?;
            let x = Tensor::randn(0f64, 1.0, (2, 6, 7, c), &dev)?;
            let vb = VarBuilder::from_tensors(
                [("weight".to_string(), w.clone()), ("bias".to_string(), b.clone())].into(),
                DType::F64,
                &dev,
            );
            let ours = DepthwiseNhwc::new(vb, c, k)?.forward(&x)?;
            let nchw = x.permute((0, 3, 1, 2))?.contiguous()?;
            let want = nchw.conv2d(&w, k / 2, 1, 1, c)?.broadcast_add(&b.reshape((1, c, 1, 1))?)?;
            let want = want.permute((0, 2, 3, 1))?;
            assert!(max_abs(&(ours - &want)?) <= F64_REL * max_abs(&want), "{k}x{k}");
        }
        Ok(())
    }

    /// Window partition and its reverse are inverse; with no shift and windows as large as the grid, every token
    /// of the mask is in one region.
    #[test]
    fn partition_round_trip_and_trivial_mask() -> Result<()> {
        let x = Tensor::arange(0f32, (2 * 8 * 12 * 3) as f32, &Device::Cpu)?.reshape((2, 8, 12, 3))?;
        let back = unpartition(&partition(&x, (2, 4))?, (2, 4), (8, 12))?;
        assert_eq!(max_abs(&(back - &x)?), 0.0);
        // Window (2, 4) at 4 windows per row: window 1 holds columns 4..8 of rows 0..2.
        let w1 = partition(&x, (2, 4))?.get(1)?;
        assert_eq!(max_abs(&(w1 - x.get(0)?.narrow(0, 0, 2)?.narrow(1, 4, 4)?)?), 0.0);
        // A 4x4 grid, 2x2 windows shifted by 1: the last window mixes four regions, the first one region.
        let m = shifted_window_mask((4, 4), (2, 2), (1, 1), DType::F32, &Device::Cpu)?;
        assert_eq!(m.dims(), &[4, 4, 4]);
        assert_eq!(max_abs(&m.get(0)?), 0.0);
        let last: Vec<Vec<f32>> = m.get(3)?.to_vec2()?;
        assert_eq!(last[0], vec![0.0, -100.0, -100.0, -100.0]);
        Ok(())
    }
}
