//! The building blocks of IPT, each with its official key layout: convolutions with `k // 2` padding,
//! the EDSR ResBlock, the pixel-shuffle Upsampler, bias-free multi-head attention and the ReLU FFN.
use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::hooks::{Attn, LayerHooks, Proj, Site};
use crate::linear::{linear_map, lower_linear, Linear};

/// PyTorch's default init bound for a layer with this fan-in.
pub fn default_init(fan_in: usize) -> Init {
    let b = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform { lo: -b, up: b }
}

/// A 2-D convolution (stride 1, `k // 2` padding) with bias; no kernel gradient when the kernel is frozen.
pub struct Conv {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub padding: usize,
}

impl Conv {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        adaptir_ops::frozen::conv2d(x, &self.weight, self.bias.as_ref(), self.padding)
    }
}

/// `common.default_conv`: k x k, stride 1, padding k // 2, with bias.
pub fn conv(vb: VarBuilder, cin: usize, cout: usize, k: usize) -> Result<Conv> {
    let init = default_init(cin * k * k);
    let weight = vb.get_with_hints((cout, cin, k, k), "weight", init)?;
    let bias = vb.get_with_hints(cout, "bias", init)?;
    Ok(Conv { weight, bias: Some(bias), padding: k / 2 })
}

pub fn linear(vb: VarBuilder, cin: usize, cout: usize) -> Result<candle_nn::Linear> {
    let init = default_init(cin);
    let w = vb.get_with_hints((cout, cin), "weight", init)?;
    let b = vb.get_with_hints(cout, "bias", init)?;
    Ok(candle_nn::Linear::new(w, Some(b)))
}

/// `common.ResBlock`: conv, ReLU, conv, plus the input (res_scale 1, no BatchNorm). Keys `body.0`, `body.2`.
pub struct ResBlock {
    c1: Conv,
    c2: Conv,
}

impl ResBlock {
    pub fn new(vb: VarBuilder, n: usize, k: usize) -> Result<Self> {
        Ok(Self { c1: conv(vb.pp("body.0"), n, n, k)?, c2: conv(vb.pp("body.2"), n, n, k)? })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.c2.forward(&self.c1.forward(x)?.relu()?)? + x
    }
}

/// `nn.PixelShuffle(r)`: (N, C r^2, H, W) -> (N, C, H r, W r).
pub fn pixel_shuffle(x: &Tensor, r: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let c_out = c / (r * r);
    x.reshape((n, c_out, r, r, h, w))?.permute((0, 1, 4, 2, 5, 3))?.reshape((n, c_out, h * r, w * r))
}

/// `common.Upsampler` without BatchNorm or activation: log2(s) x [conv F->4F, shuffle 2] for powers of two,
/// [conv F->9F, shuffle 3] for 3, nothing for 1. Keys `0`, `2`, ... (the shuffles hold no weights).
pub struct Upsampler {
    stages: Vec<(Conv, usize)>,
}

impl Upsampler {
    pub fn new(vb: VarBuilder, scale: usize, n: usize) -> Result<Self> {
        let mut stages = vec![];
        if scale == 3 {
            stages.push((conv(vb.pp("0"), n, 9 * n, 3)?, 3));
        } else {
            for i in 0..scale.trailing_zeros() as usize {
                stages.push((conv(vb.pp(2 * i), n, 4 * n, 3)?, 2));
            }
        }
        Ok(Self { stages })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for (c, r) in &self.stages {
            x = pixel_shuffle(&c.forward(&x)?, *r)?;
        }
        Ok(x)
    }
}

/// `nn.MultiheadAttention(E, heads)` on sequence-first (L, N, E) tensors. IPT's has no biases; merged
/// methods (SSF) may add them. Each projection's output passes through the layer's method hooks.
pub struct Attention {
    /// q, k, v, out projections as (weight (out, in), bias).
    pub maps: [Linear; 4],
    heads: usize,
    kind: Attn,
}

impl Attention {
    pub fn new(vb: VarBuilder, e: usize, heads: usize, kind: Attn) -> Result<Self> {
        // torch: xavier_uniform on the packed in-projection; the out-projection as a Linear.
        let bound = (6.0 / (e + 3 * e) as f64).sqrt();
        let in_proj = vb.get_with_hints((3 * e, e), "in_proj_weight", Init::Uniform { lo: -bound, up: bound })?;
        let out = vb.get_with_hints((e, e), "out_proj.weight", default_init(e))?;
        let part = |i: usize| -> Result<Linear> { Ok((in_proj.narrow(0, i * e, e)?, None)) };
        Ok(Self { maps: [part(0)?, part(1)?, part(2)?, (out, None)], heads, kind })
    }

    fn index(p: Proj) -> usize {
        match p {
            Proj::Q => 0,
            Proj::K => 1,
            Proj::V => 2,
            Proj::Out => 3,
        }
    }

    pub fn map_mut(&mut self, p: Proj) -> &mut Linear {
        &mut self.maps[Self::index(p)]
    }

    fn project(&self, x: &Tensor, p: Proj, hooks: &dyn LayerHooks) -> Result<Tensor> {
        let y = linear_map(&self.maps[Self::index(p)], x)?;
        hooks.site(Site::Attn(self.kind, p), x, y)
    }

    /// (L, N, E) x3 -> (L, N, E); keys and values may have another length than queries. `adds[i]`, if any, is
    /// added to `inputs[i]` before its projection (IPT's decoder: the task query, to q's and k's input).
    pub fn forward(&self, inputs: [&Tensor; 3], adds: [Option<&Tensor>; 3], hooks: &dyn LayerHooks) -> Result<Tensor> {
        if [Proj::Q, Proj::K, Proj::V, Proj::Out].iter().all(|&p| !hooks.acts_at(Site::Attn(self.kind, p))) {
            let map = |i: usize| (&self.maps[i].0, self.maps[i].1.as_ref());
            return adaptir_ops::frozen::attention_block(inputs, adds, [map(0), map(1), map(2), map(3)], self.heads);
        }
        let [q, k, v] = adaptir_ops::frozen::projection_inputs(inputs, adds)?;
        let (q, k, v) =
            (self.project(&q, Proj::Q, hooks)?, self.project(&k, Proj::K, hooks)?, self.project(&v, Proj::V, hooks)?);
        let ctx = adaptir_ops::fused::attention(&q, &k, &v, self.heads)?;
        self.project(&ctx, Proj::Out, hooks)
    }
}

/// The transformer FFN: linear1, ReLU, linear2 (dropout is the identity in eval), with method hooks.
pub struct FeedForward {
    pub linear1: Linear,
    pub linear2: Linear,
}

impl FeedForward {
    pub fn new(vb: &VarBuilder, e: usize, hidden: usize) -> Result<Self> {
        let l1 = linear(vb.pp("linear1"), e, hidden)?;
        let l2 = linear(vb.pp("linear2"), hidden, e)?;
        Ok(Self {
            linear1: (l1.weight().clone(), l1.bias().cloned()),
            linear2: (l2.weight().clone(), l2.bias().cloned()),
        })
    }

    pub fn forward(&self, x: &Tensor, hooks: &dyn LayerHooks) -> Result<Tensor> {
        if !hooks.acts_at(Site::Ffn1) && !hooks.acts_at(Site::Ffn2) {
            let ((w1, b1), (w2, b2)) = (&self.linear1, &self.linear2);
            return adaptir_ops::frozen::ffn_relu(x, (w1, b1.as_ref()), (w2, b2.as_ref()));
        }
        let h = adaptir_ops::fused::relu(&hooks.site(Site::Ffn1, x, linear_map(&self.linear1, x)?)?)?;
        hooks.site(Site::Ffn2, &h, linear_map(&self.linear2, &h)?)
    }
}

/// Softmax over the last dim: candle's fused kernel (f32) or the composed form (f64), with a closed-form backward
/// when the input is tracked (`adaptir_ops::fused`).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    adaptir_ops::fused::softmax_last_dim(x)
}

/// LayerNorm (eps 1e-5) over the last dim. Its output passes through the method hooks at `site`.
pub struct LayerNorm {
    /// (weight, Some(bias)).
    pub map: Linear,
    site: Site,
}

impl LayerNorm {
    pub fn new(vb: VarBuilder, e: usize, k: u8) -> Result<Self> {
        let weight = vb.get_with_hints(e, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(e, "bias", Init::Const(0.0))?;
        Ok(Self { map: (weight, Some(bias)), site: Site::Norm(k) })
    }

    pub fn forward(&self, x: &Tensor, hooks: &dyn LayerHooks) -> Result<Tensor> {
        let (w, b) = &self.map;
        // Frozen parameters under a tracked input (adapter training): the fused kernel with the input gradient
        // (`adaptir_ops::fused`). Trained parameters: the composed form, whose autograd covers them. f64 inference:
        // the composed form (the fused kernel is f32 only).
        let frozen = !w.track_op() && b.as_ref().is_none_or(|b| !b.track_op());
        let zero_bias;
        let bias = match b {
            Some(b) => b,
            None => {
                zero_bias = w.zeros_like()?;
                &zero_bias
            }
        };
        let y = if frozen && (x.track_op() || x.dtype() == candle_core::DType::F32) {
            adaptir_ops::fused::layer_norm_frozen(x, w, bias, 1e-5)?
        } else {
            adaptir_ops::channel::layer_norm(x, w, bias, 1e-5)?
        };
        hooks.site(self.site, x, y)
    }
}

// ---- ONNX lowering (each mirrors the forward above) ----------------------------------------------------

use adaptir_ops::graph::{Attr as GAttr, GraphBuilder};

impl Conv {
    pub fn lower(&self, b: &mut dyn GraphBuilder, x: &str, hint: &str) -> Result<String> {
        let w = b.constant(&format!("{hint}.weight"), &self.weight)?;
        let p = self.padding as i64;
        let attrs = vec![("pads", GAttr::Ints(vec![p, p, p, p]))];
        match &self.bias {
            Some(bias) => {
                let c = b.constant(&format!("{hint}.bias"), bias)?;
                b.op("Conv", &[x, &w, &c], attrs)
            }
            None => b.op("Conv", &[x, &w], attrs),
        }
    }
}

impl ResBlock {
    pub fn lower(&self, b: &mut dyn GraphBuilder, x: &str, hint: &str) -> Result<String> {
        let h = self.c1.lower(b, x, &format!("{hint}.body.0"))?;
        let h = b.op("Relu", &[&h], vec![])?;
        let h = self.c2.lower(b, &h, &format!("{hint}.body.2"))?;
        b.op("Add", &[&h, x], vec![])
    }
}

impl Upsampler {
    /// PixelShuffle is DepthToSpace in CRD mode.
    pub fn lower(&self, b: &mut dyn GraphBuilder, x: &str, hint: &str) -> Result<String> {
        let mut x = x.to_string();
        for (i, (c, r)) in self.stages.iter().enumerate() {
            let y = c.lower(b, &x, &format!("{hint}.{}", 2 * i))?;
            x = b.op(
                "DepthToSpace",
                &[&y],
                vec![("blocksize", GAttr::Int(*r as i64)), ("mode", GAttr::Str("CRD".into()))],
            )?;
        }
        Ok(x)
    }
}

impl Attention {
    fn lower_project(
        &self,
        b: &mut dyn GraphBuilder,
        x: &str,
        p: Proj,
        hooks: &dyn LayerHooks,
        hint: &str,
    ) -> Result<String> {
        let site = Site::Attn(self.kind, p);
        let y = lower_linear(b, x, &self.maps[Self::index(p)], &format!("{hint}.{}", site.module()))?;
        hooks.lower_site(b, site, x, y)
    }

    /// (Lq, N, E) and (Lk, N, E) -> (Lq, N, E); the lengths are static, the batch is not.
    #[allow(clippy::too_many_arguments)]
    pub fn lower(
        &self,
        b: &mut dyn GraphBuilder,
        q: &str,
        k: &str,
        v: &str,
        (lq, lk, e): (usize, usize, usize),
        hooks: &dyn LayerHooks,
        hint: &str,
    ) -> Result<String> {
        let (h, d) = (self.heads as i64, (e / self.heads) as i64);
        let split = |b: &mut dyn GraphBuilder, x: &str, l: usize, perm: Vec<i64>| -> Result<String> {
            let shape = b.constant_i64("shape_l_n_h_d", &[l as i64, -1, h, d])?;
            let r = b.op("Reshape", &[x, &shape], vec![])?;
            b.op("Transpose", &[&r], vec![("perm", GAttr::Ints(perm))])
        };
        let qp = self.lower_project(b, q, Proj::Q, hooks, hint)?;
        let kp = self.lower_project(b, k, Proj::K, hooks, hint)?;
        let vp = self.lower_project(b, v, Proj::V, hooks, hint)?;
        let qh = split(b, &qp, lq, vec![1, 2, 0, 3])?; // (N, h, Lq, d)
        let scale = b.constant_f32("attn_scale", &[], &[1.0 / (d as f32).sqrt()])?;
        let qh = b.op("Mul", &[&qh, &scale], vec![])?;
        let kt = split(b, &kp, lk, vec![1, 2, 3, 0])?; // (N, h, d, Lk)
        let vh = split(b, &vp, lk, vec![1, 2, 0, 3])?; // (N, h, Lk, d)
        let scores = b.op("MatMul", &[&qh, &kt], vec![])?;
        let attn = b.op("Softmax", &[&scores], vec![("axis", GAttr::Int(-1))])?;
        let ctx = b.op("MatMul", &[&attn, &vh], vec![])?;
        let ctx = b.op("Transpose", &[&ctx], vec![("perm", GAttr::Ints(vec![2, 0, 1, 3]))])?;
        let shape = b.constant_i64("shape_l_n_e", &[lq as i64, -1, e as i64])?;
        let ctx = b.op("Reshape", &[&ctx, &shape], vec![])?;
        self.lower_project(b, &ctx, Proj::Out, hooks, hint)
    }
}

impl FeedForward {
    pub fn lower(&self, b: &mut dyn GraphBuilder, x: &str, hooks: &dyn LayerHooks, hint: &str) -> Result<String> {
        let h = lower_linear(b, x, &self.linear1, &format!("{hint}.linear1"))?;
        let h = hooks.lower_site(b, Site::Ffn1, x, h)?;
        let h = b.op("Relu", &[&h], vec![])?;
        let y = lower_linear(b, &h, &self.linear2, &format!("{hint}.linear2"))?;
        hooks.lower_site(b, Site::Ffn2, &h, y)
    }
}

impl LayerNorm {
    pub fn lower(&self, b: &mut dyn GraphBuilder, x: &str, hooks: &dyn LayerHooks, hint: &str) -> Result<String> {
        let (w, bias) = &self.map;
        let name = format!("{hint}.{}", self.site.module());
        let wc = b.constant(&format!("{name}.weight"), w)?;
        let bc = match bias {
            Some(bias) => b.constant(&format!("{name}.bias"), bias)?,
            None => b.constant(&format!("{name}.bias"), &w.zeros_like()?)?,
        };
        let y = b.op(
            "LayerNormalization",
            &[x, &wc, &bc],
            vec![("axis", GAttr::Int(-1)), ("epsilon", GAttr::Float(1e-5))],
        )?;
        hooks.lower_site(b, self.site, x, y)
    }
}
