//! IPT (Chen et al., "Pre-Trained Image Processing Transformer") as in the official AdaptIR release,
//! `net/ipt.py`: per-task heads and tails around one shared encoder-decoder transformer over 3x3 patches.
//! Key names equal the official state dict (see `fixtures/parity/KEYS.md`).
mod lower;

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::config::IptConfig;
use super::layers::{conv, linear, Attention, Conv, FeedForward, LayerNorm, ResBlock, Upsampler};
use crate::hooks::{Attn, LayerHooks, MethodModules, NoHooks, Proj, Site};
use crate::linear::{apply_linear, Linear};

/// Per-task head: conv3x3 3->F, then two ResBlocks of 5x5 convs.
struct Head {
    conv: Conv,
    res1: ResBlock,
    res2: ResBlock,
}

/// Per-task tail: Upsampler for the task's scale, then conv3x3 F->3.
struct Tail {
    up: Upsampler,
    conv: Conv,
}

/// Pre-norm encoder layer; the method acts through `hooks`.
struct EncoderLayer {
    norm1: LayerNorm,
    self_attn: Attention,
    norm2: LayerNorm,
    ffn: FeedForward,
    hooks: Box<dyn LayerHooks>,
}

/// Pre-norm decoder layer: self-attention (q, k get the task query), cross-attention on the encoder output
/// (q gets the task query), FFN.
struct DecoderLayer {
    norm1: LayerNorm,
    self_attn: Attention,
    norm2: LayerNorm,
    cross_attn: Attention,
    norm3: LayerNorm,
    ffn: FeedForward,
    hooks: Box<dyn LayerHooks>,
}

/// The FFN sub-block with the method's terms beside and after it, before the residual add.
fn ffn_block(ffn: &FeedForward, hooks: &dyn LayerHooks, x: &Tensor, train: bool) -> Result<Tensor> {
    let y = hooks.after_ffn(ffn.forward(x, hooks)?, train)?;
    match hooks.beside_ffn(x, train)? {
        Some(extra) => y + extra,
        None => Ok(y),
    }
}

/// Prepend the layer's prompt tokens (VPT), returning how many were added.
fn with_prompts(x: &Tensor, hooks: &dyn LayerHooks) -> Result<(Tensor, usize)> {
    match hooks.prompts() {
        Some(p) => {
            let (pl, n, e) = (p.dim(0)?, x.dim(1)?, x.dim(2)?);
            let p = p.unsqueeze(1)?.broadcast_as((pl, n, e))?.to_dtype(x.dtype())?;
            Ok((Tensor::cat(&[&p, x], 0)?, pl))
        }
        None => Ok((x.clone(), 0)),
    }
}

fn drop_prompts(x: Tensor, n: usize) -> Result<Tensor> {
    if n == 0 {
        return Ok(x);
    }
    let l = x.dim(0)? - n;
    x.narrow(0, n, l)
}

impl EncoderLayer {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let hooks = self.hooks.as_ref();
        let (x, np) = with_prompts(x, hooks)?;
        let h = self.norm1.forward(&x, hooks)?;
        let a = self.self_attn.forward([&h, &h, &h], [None, None, None], hooks)?;
        let x = (&x + hooks.after_attention(Attn::SelfAttn, a, train)?)?;
        let h = self.norm2.forward(&x, hooks)?;
        drop_prompts((&x + ffn_block(&self.ffn, hooks, &h, train)?)?, np)
    }

    fn sites(&mut self) -> Vec<(Site, &mut Linear)> {
        let mut v = vec![(Site::Norm(1), &mut self.norm1.map), (Site::Norm(2), &mut self.norm2.map)];
        v.extend(attention_sites(&mut self.self_attn, Attn::SelfAttn));
        v.push((Site::Ffn1, &mut self.ffn.linear1));
        v.push((Site::Ffn2, &mut self.ffn.linear2));
        v
    }
}

impl DecoderLayer {
    fn forward(&self, x: &Tensor, memory: &Tensor, query: &Tensor, train: bool) -> Result<Tensor> {
        let hooks = self.hooks.as_ref();
        let (x, np) = with_prompts(x, hooks)?;
        // Prompts carry no task query: pad it with zeros in front.
        let query = if np > 0 {
            Tensor::cat(&[&query.narrow(0, 0, 1)?.zeros_like()?.repeat((np, 1, 1))?, query], 0)?
        } else {
            query.clone()
        };
        let h = self.norm1.forward(&x, hooks)?;
        // The task query joins q's and k's inputs inside the attention (one fused node in training).
        let a = self.self_attn.forward([&h, &h, &h], [Some(&query), Some(&query), None], hooks)?;
        let x = (&x + hooks.after_attention(Attn::SelfAttn, a, train)?)?;
        let h = self.norm2.forward(&x, hooks)?;
        let a = self.cross_attn.forward([&h, memory, memory], [Some(&query), None, None], hooks)?;
        let x = (&x + hooks.after_attention(Attn::Cross, a, train)?)?;
        let h = self.norm3.forward(&x, hooks)?;
        drop_prompts((&x + ffn_block(&self.ffn, hooks, &h, train)?)?, np)
    }

    fn sites(&mut self) -> Vec<(Site, &mut Linear)> {
        let mut v = vec![
            (Site::Norm(1), &mut self.norm1.map),
            (Site::Norm(2), &mut self.norm2.map),
            (Site::Norm(3), &mut self.norm3.map),
        ];
        v.extend(attention_sites(&mut self.self_attn, Attn::SelfAttn));
        v.extend(attention_sites(&mut self.cross_attn, Attn::Cross));
        v.push((Site::Ffn1, &mut self.ffn.linear1));
        v.push((Site::Ffn2, &mut self.ffn.linear2));
        v
    }
}

fn attention_sites(a: &mut Attention, kind: Attn) -> Vec<(Site, &mut Linear)> {
    let [q, k, v, o] = &mut a.maps;
    vec![
        (Site::Attn(kind, Proj::Q), q),
        (Site::Attn(kind, Proj::K), k),
        (Site::Attn(kind, Proj::V), v),
        (Site::Attn(kind, Proj::Out), o),
    ]
}

/// The official buffer that says which learned position embedding each token takes.
pub const POSITION_IDS: &str = "body.position_encoding.position_ids";

/// The `position_ids` buffer (read from `vb`, `body.position_encoding`), checked, as U32 indices. The official
/// model loads this buffer like a weight and looks its position embeddings up by it, so a file's value is
/// honoured, never assumed: a file whose ids are all 0 is, in PyTorch, a model in which every token takes the
/// first embedding. [`Ipt::fresh`] gives a model being created the official 0..L-1.
fn position_ids(vb: &VarBuilder, l: usize) -> Result<Tensor> {
    let ids = vb.get_with_hints_dtype((1, l), "position_ids", Init::Const(0.0), candle_core::DType::I64)?;
    let ids: Vec<i64> = ids.flatten_all()?.to_vec1()?;
    if let Some(bad) = ids.iter().find(|&&i| i < 0 || i >= l as i64) {
        candle_core::bail!("{POSITION_IDS} holds {bad}: expected indices of the {l} learned positions");
    }
    Tensor::from_vec(ids.iter().map(|&i| i as u32).collect::<Vec<u32>>(), l, vb.device())
}

/// IPT with a PETL method's modules in its layers.
pub struct Ipt {
    pub config: IptConfig,
    sub_mean: Conv,
    add_mean: Conv,
    heads: Vec<Head>,
    tails: Vec<Tail>,
    linear_encoding: candle_nn::Linear,
    mlp_head: (candle_nn::Linear, candle_nn::Linear),
    query_embed: Tensor,
    /// `pe.weight`: one learned embedding per position, (L, E).
    position: Tensor,
    /// Which row of `position` each token takes (U32, L): the file's `position_ids` buffer.
    position_ids: Tensor,
    encoder: Vec<EncoderLayer>,
    decoder: Vec<DecoderLayer>,
}

impl Ipt {
    /// Build from `vb` (official keys), with a method's modules (`MethodModules::none` for the backbone alone).
    pub fn new(vb: VarBuilder, config: &IptConfig, modules: MethodModules) -> Result<Self> {
        config.validate().map_err(candle_core::Error::Msg)?;
        let (f, e, hidden, l) = (config.n_feats, config.embed_dim(), config.hidden_dim(), config.num_tokens());
        let n_layers = config.num_layers;
        if modules.layers.len() != 2 * n_layers {
            candle_core::bail!("method modules for {} layers, the model has {}", modules.layers.len(), 2 * n_layers);
        }
        let mut hooks = modules.layers.into_iter();
        let mut next_hooks = || hooks.next().ok_or_else(|| candle_core::Error::Msg("missing layer hooks".into()));

        let mean_shift = |vb: VarBuilder| -> Result<Conv> {
            // Fixed buffers-as-parameters in the official code: identity weight, +-rgb_range * DIV2K mean bias.
            let w = vb.get_with_hints((3, 3, 1, 1), "weight", Init::Const(0.0))?;
            let b = vb.get_with_hints(3, "bias", Init::Const(0.0))?;
            Ok(Conv { weight: w, bias: Some(b), padding: 0 })
        };
        let heads = (0..config.num_tasks)
            .map(|t| {
                let vb = vb.pp("head").pp(t);
                Ok(Head {
                    conv: conv(vb.pp(0), 3, f, 3)?,
                    res1: ResBlock::new(vb.pp(1), f, 5)?,
                    res2: ResBlock::new(vb.pp(2), f, 5)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let tails = config
            .scales
            .iter()
            .enumerate()
            .map(|(t, &s)| {
                let vb = vb.pp("tail").pp(t);
                Ok(Tail { up: Upsampler::new(vb.pp(0), s, f)?, conv: conv(vb.pp(1), f, 3, 3)? })
            })
            .collect::<Result<Vec<_>>>()?;

        let body = vb.pp("body");
        let encoder = (0..n_layers)
            .map(|i| {
                let vb = body.pp("encoder.layers").pp(i);
                Ok(EncoderLayer {
                    norm1: LayerNorm::new(vb.pp("norm1"), e, 1)?,
                    self_attn: Attention::new(vb.pp("self_attn"), e, config.num_heads, Attn::SelfAttn)?,
                    norm2: LayerNorm::new(vb.pp("norm2"), e, 2)?,
                    ffn: FeedForward::new(&vb, e, hidden)?,
                    hooks: next_hooks()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let decoder = (0..n_layers)
            .map(|i| {
                let vb = body.pp("decoder.layers").pp(i);
                Ok(DecoderLayer {
                    norm1: LayerNorm::new(vb.pp("norm1"), e, 1)?,
                    self_attn: Attention::new(vb.pp("self_attn"), e, config.num_heads, Attn::SelfAttn)?,
                    norm2: LayerNorm::new(vb.pp("norm2"), e, 2)?,
                    cross_attn: Attention::new(vb.pp("multihead_attn"), e, config.num_heads, Attn::Cross)?,
                    norm3: LayerNorm::new(vb.pp("norm3"), e, 3)?,
                    ffn: FeedForward::new(&vb, e, hidden)?,
                    hooks: next_hooks()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let position = body.pp("position_encoding");
        let position_ids = position_ids(&position, l)?;
        Ok(Self {
            config: config.clone(),
            sub_mean: mean_shift(vb.pp("sub_mean"))?,
            add_mean: mean_shift(vb.pp("add_mean"))?,
            heads,
            tails,
            linear_encoding: linear(body.pp("linear_encoding"), e, e)?,
            mlp_head: (linear(body.pp("mlp_head.0"), e, hidden)?, linear(body.pp("mlp_head.3"), hidden, e)?),
            query_embed: body.get_with_hints(
                (config.num_tasks, e * l),
                "query_embed.weight",
                Init::Randn { mean: 0.0, stdev: 1.0 },
            )?,
            position: position.get_with_hints((l, e), "pe.weight", Init::Randn { mean: 0.0, stdev: 1.0 })?,
            position_ids,
            encoder,
            decoder,
        })
    }

    /// The official `forward_train(x * rgb_range) / rgb_range` for task `task`: x is (N, 3, P, P) in [0, 1]
    /// with P = patch_size; the output is (N, 3, P s, P s) on the [0, 1] scale, not clamped.
    pub fn forward(&self, x: &Tensor, task: usize, train: bool) -> Result<Tensor> {
        let cfg = &self.config;
        let (_, c, h, w) = x.dims4()?;
        if task >= cfg.num_tasks {
            candle_core::bail!("task index {task} out of range: the model has {} tasks", cfg.num_tasks);
        }
        if (c, h, w) != (3, cfg.patch_size, cfg.patch_size) {
            candle_core::bail!("input is (N, {c}, {h}, {w}), expected (N, 3, {p}, {p})", p = cfg.patch_size);
        }
        let x = self.sub_mean.forward(&(x * cfg.rgb_range)?)?;
        let head = &self.heads[task];
        let x = head.res2.forward(&head.res1.forward(&head.conv.forward(&x)?)?)?;
        let res = (self.body(&x, task, train)? + &x)?;
        let tail = &self.tails[task];
        let y = self.add_mean.forward(&tail.conv.forward(&tail.up.forward(&res)?)?)?;
        y / cfg.rgb_range
    }

    /// The position embedding each token gets, (L, E): `pe.weight` looked up by `position_ids`, as the official
    /// `LearnedPositionalEncoding` does (0..L-1 in every official checkpoint, so usually `pe.weight` itself).
    pub fn position_embedding(&self) -> Result<Tensor> {
        self.position.index_select(&self.position_ids, 0)
    }

    /// The transformer on (N, F, P, P) features: unfold into tokens, encoder, decoder, fold back.
    fn body(&self, x: &Tensor, task: usize, train: bool) -> Result<Tensor> {
        let cfg = &self.config;
        let (n, f, p, _) = x.dims4()?;
        let (k, g) = (cfg.patch_dim, cfg.patch_size / cfg.patch_dim);
        let (l, e) = (g * g, cfg.embed_dim());
        // unfold(k, stride k): token (row * g + col), feature (c * k^2 + ky * k + kx); sequence-first.
        let tokens = x.reshape((n, f, g, k, g, k))?.permute((2, 4, 0, 1, 3, 5))?.reshape((l, n, e))?;
        let tokens = (apply_linear(&self.linear_encoding, &tokens)? + &tokens)?;
        let query = self.query_embed.get(task)?.reshape((l, 1, e))?.broadcast_as((l, n, e))?.contiguous()?;
        let mut h = tokens.broadcast_add(&self.position_embedding()?.unsqueeze(1)?)?;
        for layer in &self.encoder {
            h = layer.forward(&h, train)?;
        }
        let memory = h.clone();
        for layer in &self.decoder {
            h = layer.forward(&h, &memory, &query, train)?;
        }
        let (fc1, fc2) = &self.mlp_head;
        let h = (apply_linear(fc2, &apply_linear(fc1, &h)?.relu()?)? + &h)?;
        // fold: the inverse of the unfold above.
        h.reshape((g, g, n, f, k, k))?.permute((2, 3, 0, 4, 1, 5))?.reshape((n, f, p, p))
    }

    /// Fold the method into the backbone's weights (LoRA, SSF, FacT) and drop its modules. Every site the
    /// method adapts must be foldable; the caller checks `Method::mergeable` first.
    pub fn merge_method(&mut self) -> Result<()> {
        fn fold(hooks: &dyn LayerHooks, sites: Vec<(Site, &mut Linear)>) -> Result<()> {
            for (site, map) in sites {
                if let Some(merged) = hooks.merge(site, map)? {
                    *map = merged;
                }
            }
            Ok(())
        }
        for layer in &mut self.encoder {
            let hooks = std::mem::replace(&mut layer.hooks, Box::new(NoHooks));
            fold(hooks.as_ref(), layer.sites())?;
        }
        for layer in &mut self.decoder {
            let hooks = std::mem::replace(&mut layer.hooks, Box::new(NoHooks));
            fold(hooks.as_ref(), layer.sites())?;
        }
        Ok(())
    }

    /// The buffers the method's modules keep up to date themselves (BatchNorm running statistics), by model path.
    pub fn method_buffers(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![];
        for h in self.encoder.iter().map(|l| &l.hooks).chain(self.decoder.iter().map(|l| &l.hooks)) {
            out.extend(h.buffers()?);
        }
        Ok(out)
    }

    /// A freshly initialised model whose weights live in `vm` (pre-training, tests, benchmarks). The
    /// MeanShift convs get their fixed official values (identity weight, -/+ rgb_range x DIV2K mean bias), and
    /// `position_ids` 0..L-1, which no `Init` can express.
    pub fn fresh(
        vm: &candle_nn::VarMap,
        config: &IptConfig,
        modules: MethodModules,
        device: &candle_core::Device,
    ) -> Result<Self> {
        const DIV2K_MEAN: [f64; 3] = [0.4488, 0.4371, 0.4040];
        {
            let mut data = vm.data().lock().map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
            for (name, sign) in [("sub_mean", -1.0), ("add_mean", 1.0)] {
                let w = Tensor::eye(3, candle_core::DType::F32, device)?.reshape((3, 3, 1, 1))?;
                let b: Vec<f32> = DIV2K_MEAN.iter().map(|m| (sign * config.rgb_range * m) as f32).collect();
                data.insert(format!("{name}.weight"), candle_core::Var::from_tensor(&w)?);
                data.insert(format!("{name}.bias"), candle_core::Var::from_tensor(&Tensor::new(b, device)?)?);
            }
            // Never trained either: the official registers 0..L-1 (a variable created as zeros here would make
            // every token take the first embedding, in this model and in PyTorch).
            let l = config.num_tokens() as i64;
            let ids = Tensor::arange(0i64, l, device)?.unsqueeze(0)?;
            data.insert(POSITION_IDS.to_string(), candle_core::Var::from_tensor(&ids)?);
        }
        Self::new(candle_nn::VarBuilder::from_varmap(vm, candle_core::DType::F32, device), config, modules)
    }
}
