//! IPT (Chen et al., "Pre-Trained Image Processing Transformer") as in the official AdaptIR release,
//! `net/ipt.py`: per-task heads and tails around one shared encoder-decoder transformer over 3x3 patches.
//! Key names equal the official state dict (see `fixtures/parity/KEYS.md`).
use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::config::IptConfig;
use super::layers::{
    apply_linear, conv, linear, Attention, FeedForward, LayerNorm, ResBlock, Upsampler,
};
use crate::peft::{AdaptIr, AdaptIrConfig};

/// Per-task head: conv3x3 3->F, then two ResBlocks of 5x5 convs.
struct Head {
    conv: candle_nn::Conv2d,
    res1: ResBlock,
    res2: ResBlock,
}

/// Per-task tail: Upsampler for the task's scale, then conv3x3 F->3.
struct Tail {
    up: Upsampler,
    conv: candle_nn::Conv2d,
}

/// Pre-norm encoder layer; the adapter sits in parallel to the FFN on the same LayerNorm output.
struct EncoderLayer {
    norm1: LayerNorm,
    self_attn: Attention,
    norm2: LayerNorm,
    ffn: FeedForward,
    adapter: Option<AdaptIr>,
}

/// Pre-norm decoder layer: self-attention (q, k get the task query), cross-attention on the encoder output
/// (q gets the task query), FFN with the adapter in parallel.
struct DecoderLayer {
    norm1: LayerNorm,
    self_attn: Attention,
    norm2: LayerNorm,
    cross_attn: Attention,
    norm3: LayerNorm,
    ffn: FeedForward,
    adapter: Option<AdaptIr>,
}

/// FFN output plus the adapter's, on the same normalised input.
fn ffn_with_adapter(
    ffn: &FeedForward,
    adapter: &Option<AdaptIr>,
    x: &Tensor,
    train: bool,
) -> Result<Tensor> {
    let y = ffn.forward(x)?;
    match adapter {
        Some(a) => y + a.forward_t(x, train)?,
        None => Ok(y),
    }
}

impl EncoderLayer {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.norm1.forward(x, train)?;
        let x = (x + self.self_attn.forward(&h, &h, &h, train)?)?;
        let h = self.norm2.forward(&x, train)?;
        x + ffn_with_adapter(&self.ffn, &self.adapter, &h, train)?
    }
}

impl DecoderLayer {
    fn forward(&self, x: &Tensor, memory: &Tensor, query: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.norm1.forward(x, train)?;
        let qk = (&h + query)?;
        let x = (x + self.self_attn.forward(&qk, &qk, &h, train)?)?;
        let h = self.norm2.forward(&x, train)?;
        let x = (&x
            + self
                .cross_attn
                .forward(&(h + query)?, memory, memory, train)?)?;
        let h = self.norm3.forward(&x, train)?;
        x + ffn_with_adapter(&self.ffn, &self.adapter, &h, train)?
    }
}

/// IPT with optional AdaptIR adapters in every encoder and decoder layer.
pub struct Ipt {
    pub config: IptConfig,
    pub adapter: Option<AdaptIrConfig>,
    sub_mean: candle_nn::Conv2d,
    add_mean: candle_nn::Conv2d,
    heads: Vec<Head>,
    tails: Vec<Tail>,
    linear_encoding: candle_nn::Linear,
    mlp_head: (candle_nn::Linear, candle_nn::Linear),
    query_embed: Tensor,
    position: Tensor,
    encoder: Vec<EncoderLayer>,
    decoder: Vec<DecoderLayer>,
}

impl Ipt {
    /// Build from `vb` (official keys). `adapter` adds AdaptIR with those sizes to every layer.
    pub fn new(vb: VarBuilder, config: &IptConfig, adapter: Option<AdaptIrConfig>) -> Result<Self> {
        config.validate().map_err(candle_core::Error::Msg)?;
        let (f, e, hidden, l) = (
            config.n_feats,
            config.embed_dim(),
            config.hidden_dim(),
            config.num_tokens(),
        );
        let adapter_at = |vb: VarBuilder| {
            adapter
                .map(|a| AdaptIr::new(vb.pp("adaptir"), a))
                .transpose()
        };

        let mean_shift = |vb: VarBuilder| -> Result<candle_nn::Conv2d> {
            // Fixed buffers-as-parameters in the official code: identity weight, +-rgb_range * DIV2K mean bias.
            let w = vb.get_with_hints((3, 3, 1, 1), "weight", Init::Const(0.0))?;
            let b = vb.get_with_hints(3, "bias", Init::Const(0.0))?;
            Ok(candle_nn::Conv2d::new(w, Some(b), Default::default()))
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
                Ok(Tail {
                    up: Upsampler::new(vb.pp(0), s, f)?,
                    conv: conv(vb.pp(1), f, 3, 3)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;

        let body = vb.pp("body");
        let encoder = (0..config.num_layers)
            .map(|i| {
                let vb = body.pp("encoder.layers").pp(i);
                Ok(EncoderLayer {
                    norm1: LayerNorm::new(vb.pp("norm1"), e)?,
                    self_attn: Attention::new(vb.pp("self_attn"), e, config.num_heads)?,
                    norm2: LayerNorm::new(vb.pp("norm2"), e)?,
                    ffn: FeedForward::new(&vb, e, hidden)?,
                    adapter: adapter_at(vb.clone())?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let decoder = (0..config.num_layers)
            .map(|i| {
                let vb = body.pp("decoder.layers").pp(i);
                Ok(DecoderLayer {
                    norm1: LayerNorm::new(vb.pp("norm1"), e)?,
                    self_attn: Attention::new(vb.pp("self_attn"), e, config.num_heads)?,
                    norm2: LayerNorm::new(vb.pp("norm2"), e)?,
                    cross_attn: Attention::new(vb.pp("multihead_attn"), e, config.num_heads)?,
                    norm3: LayerNorm::new(vb.pp("norm3"), e)?,
                    ffn: FeedForward::new(&vb, e, hidden)?,
                    adapter: adapter_at(vb.clone())?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let position = body.pp("position_encoding");
        position.get_with_hints_dtype(
            (1, l),
            "position_ids",
            Init::Const(0.0),
            candle_core::DType::I64,
        )?;
        Ok(Self {
            config: config.clone(),
            adapter,
            sub_mean: mean_shift(vb.pp("sub_mean"))?,
            add_mean: mean_shift(vb.pp("add_mean"))?,
            heads,
            tails,
            linear_encoding: linear(body.pp("linear_encoding"), e, e)?,
            mlp_head: (
                linear(body.pp("mlp_head.0"), e, hidden)?,
                linear(body.pp("mlp_head.3"), hidden, e)?,
            ),
            query_embed: body.get_with_hints(
                (config.num_tasks, e * l),
                "query_embed.weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )?,
            position: position.get_with_hints(
                (l, e),
                "pe.weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )?,
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
            candle_core::bail!(
                "task index {task} out of range: the model has {} tasks",
                cfg.num_tasks
            );
        }
        if (c, h, w) != (3, cfg.patch_size, cfg.patch_size) {
            candle_core::bail!(
                "input is (N, {c}, {h}, {w}), expected (N, 3, {p}, {p})",
                p = cfg.patch_size
            );
        }
        let x = self.sub_mean.forward(&(x * cfg.rgb_range)?)?;
        let head = &self.heads[task];
        let x = head
            .res2
            .forward(&head.res1.forward(&head.conv.forward(&x)?)?)?;
        let res = (self.body(&x, task, train)? + &x)?;
        let tail = &self.tails[task];
        let y = self
            .add_mean
            .forward(&tail.conv.forward(&tail.up.forward(&res)?)?)?;
        y / cfg.rgb_range
    }

    /// The transformer on (N, F, P, P) features: unfold into tokens, encoder, decoder, fold back.
    fn body(&self, x: &Tensor, task: usize, train: bool) -> Result<Tensor> {
        let cfg = &self.config;
        let (n, f, p, _) = x.dims4()?;
        let (k, g) = (cfg.patch_dim, cfg.patch_size / cfg.patch_dim);
        let (l, e) = (g * g, cfg.embed_dim());
        // unfold(k, stride k): token (row * g + col), feature (c * k^2 + ky * k + kx); sequence-first.
        let tokens = x
            .reshape((n, f, g, k, g, k))?
            .permute((2, 4, 0, 1, 3, 5))?
            .reshape((l, n, e))?;
        let tokens = (apply_linear(&self.linear_encoding, &tokens)? + &tokens)?;
        let query = self
            .query_embed
            .get(task)?
            .reshape((l, 1, e))?
            .broadcast_as((l, n, e))?
            .contiguous()?;
        let mut h = tokens.broadcast_add(&self.position.unsqueeze(1)?)?;
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
        h.reshape((g, g, n, f, k, k))?
            .permute((2, 3, 0, 4, 1, 5))?
            .reshape((n, f, p, p))
    }
}
