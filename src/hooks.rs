//! The extension interface between a backbone and the PETL methods: where a method may act on a transformer
//! layer ([`LayerHooks`]: at every linear map and LayerNorm ([`Site`]), around the attention and FFN sub-blocks,
//! and at the layer's input), what it knows of its host ([`HostDims`]), and a method's modules for a whole host
//! ([`MethodModules`]).
//!
//! A leaf: it knows neither `backbone` nor `peft`. The backbone calls the hooks; each method in `peft`
//! implements them. Neither knows the other.
use adaptir_ops::graph::GraphBuilder;
use candle_core::{Result, Tensor};

use crate::linear::Linear;

/// Which stack a layer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stack {
    Encoder,
    Decoder,
    /// An EDT Swin block: one (windowed) self-attention whose q, k and v come from one fused `qkv` map, and an
    /// MLP; its tokens are an (N, H, W, C) grid.
    Swin,
}

/// Which attention of a layer: the encoder has `SelfAttn`; the decoder has both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Attn {
    SelfAttn,
    Cross,
}

/// The projections of an attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proj {
    Q,
    K,
    V,
    Out,
}

/// A linear map or LayerNorm of a layer, where a method may act on the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Site {
    /// LayerNorm 1..=3 (the decoder has three).
    Norm(u8),
    Attn(Attn, Proj),
    Ffn1,
    Ffn2,
}

impl Site {
    /// The official module path of the site inside its layer (for parameter names).
    pub fn module(&self) -> String {
        match self {
            Site::Norm(k) => format!("norm{k}"),
            Site::Attn(a, p) => {
                let attn = match a {
                    Attn::SelfAttn => "self_attn",
                    Attn::Cross => "multihead_attn",
                };
                let proj = match p {
                    Proj::Q => "q",
                    Proj::K => "k",
                    Proj::V => "v",
                    Proj::Out => "out_proj",
                };
                format!("{attn}.{proj}")
            }
            Site::Ffn1 => "linear1".into(),
            Site::Ffn2 => "linear2".into(),
        }
    }

    /// The module path of the site inside a layer of `stack`: EDT's blocks name theirs `qkv` (q, k and v are
    /// its three slices: `qkv.q`, ...), `proj` and `mlp.fc1` / `mlp.fc2`.
    pub fn module_in(&self, stack: Stack) -> String {
        match (stack, self) {
            (Stack::Swin, Site::Attn(_, Proj::Q)) => "qkv.q".into(),
            (Stack::Swin, Site::Attn(_, Proj::K)) => "qkv.k".into(),
            (Stack::Swin, Site::Attn(_, Proj::V)) => "qkv.v".into(),
            (Stack::Swin, Site::Attn(_, Proj::Out)) => "proj".into(),
            (Stack::Swin, Site::Ffn1) => "mlp.fc1".into(),
            (Stack::Swin, Site::Ffn2) => "mlp.fc2".into(),
            _ => self.module(),
        }
    }

    /// Every site of a layer of this stack, in forward order.
    pub fn all(stack: Stack) -> Vec<Site> {
        let attn = |a| [Proj::Q, Proj::K, Proj::V, Proj::Out].map(|p| Site::Attn(a, p));
        let mut v = vec![Site::Norm(1)];
        v.extend(attn(Attn::SelfAttn));
        v.push(Site::Norm(2));
        if stack == Stack::Decoder {
            v.extend(attn(Attn::Cross));
            v.push(Site::Norm(3));
        }
        v.extend([Site::Ffn1, Site::Ffn2]);
        v
    }

    /// (input width, output width) of the site's map.
    pub fn widths(&self, host: &HostDims) -> (usize, usize) {
        match self {
            Site::Norm(_) | Site::Attn(..) => (host.embed, host.embed),
            Site::Ffn1 => (host.embed, host.ffn_hidden),
            Site::Ffn2 => (host.ffn_hidden, host.embed),
        }
    }
}

/// One layer of the host: `body.encoder.layers.3`, `body.layers.1.residual_group.blocks.4` and so on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LayerId {
    pub stack: Stack,
    /// The stage of a Swin block (0 for IPT's layers).
    pub stage: usize,
    /// The layer's index in its stack (a Swin block's in its stage).
    pub index: usize,
}

impl LayerId {
    pub fn prefix(&self) -> String {
        match self.stack {
            Stack::Encoder => format!("body.encoder.layers.{}", self.index),
            Stack::Decoder => format!("body.decoder.layers.{}", self.index),
            Stack::Swin => format!("body.layers.{}.residual_group.blocks.{}", self.stage, self.index),
        }
    }
}

/// What a method needs to know of its host transformer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostDims {
    pub embed: usize,
    pub ffn_hidden: usize,
    pub heads: usize,
    /// Tokens per sample; a square grid of this many (IPT's patch grid, EDT's body grid at its training size).
    pub tokens: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    /// EDT: the Swin blocks of each stage of the body (empty for IPT).
    pub swin_depths: Vec<usize>,
}

impl HostDims {
    /// Every layer, in the order the backbone takes their hooks: IPT's encoder then decoder; EDT's blocks
    /// stage by stage.
    pub fn layers(&self) -> Vec<LayerId> {
        let enc = (0..self.encoder_layers).map(|index| LayerId { stack: Stack::Encoder, stage: 0, index });
        let dec = (0..self.decoder_layers).map(|index| LayerId { stack: Stack::Decoder, stage: 0, index });
        let swin = self
            .swin_depths
            .iter()
            .enumerate()
            .flat_map(|(stage, &d)| (0..d).map(move |index| LayerId { stack: Stack::Swin, stage, index }));
        enc.chain(dec).chain(swin).collect()
    }

    /// Whether the host is EDT's Swin body (tokens on an (N, H, W, C) grid) rather than IPT's sequence.
    pub fn is_swin(&self) -> bool {
        !self.swin_depths.is_empty()
    }
}

/// What a method does inside one layer. Every hook defaults to "nothing".
pub trait LayerHooks: Send + Sync {
    /// The output of the linear map or LayerNorm at `site`, given its input; LoRA and FacT add a low-rank
    /// term, SSF scales and shifts.
    fn site(&self, _site: Site, _input: &Tensor, output: Tensor) -> Result<Tensor> {
        Ok(output)
    }

    /// Whether [`site`](Self::site) may change the output at `site`. `false` lets the backbone run the frozen
    /// maps around the site as one fused graph node (IPT's FFN and attention: `adaptir_ops::frozen::ffn_relu`,
    /// `attention_block`). The default `true` is always safe; a method says `false` for the sites it leaves alone
    /// (`tests/peft_methods.rs` checks every method's answer against its `site`).
    fn acts_at(&self, _site: Site) -> bool {
        true
    }

    /// An attention sub-block's output before its residual add (Houlsby adapters).
    fn after_attention(&self, _attn: Attn, y: Tensor, _train: bool) -> Result<Tensor> {
        Ok(y)
    }

    /// A term added to the FFN output, computed from the FFN's normalised input (AdaptIR, AdaptFormer, MoE).
    fn beside_ffn(&self, _x: &Tensor, _train: bool) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// The FFN sub-block's output before its residual add (Houlsby adapters).
    fn after_ffn(&self, y: Tensor, _train: bool) -> Result<Tensor> {
        Ok(y)
    }

    /// Prompt tokens (P, E) prepended to the layer's input and dropped after it (VPT-deep).
    fn prompts(&self) -> Option<&Tensor> {
        None
    }

    /// Buffers the method updates itself during training (BatchNorm running statistics), named by their
    /// model path; they belong in the adapter file beside the trained parameters.
    fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(vec![])
    }

    // ---- ONNX lowering: each mirrors the forward hook of the same name (identity by default) ----

    fn lower_site(&self, _b: &mut dyn GraphBuilder, _site: Site, _input: &str, output: String) -> Result<String> {
        Ok(output)
    }

    fn lower_after_attention(&self, _b: &mut dyn GraphBuilder, _attn: Attn, y: String) -> Result<String> {
        Ok(y)
    }

    fn lower_beside_ffn(&self, _b: &mut dyn GraphBuilder, _x: &str) -> Result<Option<String>> {
        Ok(None)
    }

    fn lower_after_ffn(&self, _b: &mut dyn GraphBuilder, y: String) -> Result<String> {
        Ok(y)
    }

    /// The site's map with the method folded in, for methods whose effect there is linear (LoRA, SSF, FacT).
    /// `None`: nothing to fold at this site. A LayerNorm's (weight, bias) are passed as (weight, Some(bias)).
    fn merge(&self, _site: Site, _map: &Linear) -> Result<Option<Linear>> {
        Ok(None)
    }
}

/// No adaptation: used for layers a method leaves alone and for `pretrain` / `full`.
pub struct NoHooks;
impl LayerHooks for NoHooks {
    fn acts_at(&self, _site: Site) -> bool {
        false
    }
}

/// A method's modules for one host: the hooks of every layer, in [`HostDims::layers`] order.
pub struct MethodModules {
    pub layers: Vec<Box<dyn LayerHooks>>,
}

impl MethodModules {
    /// Every layer's buffers.
    pub fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![];
        for l in &self.layers {
            out.extend(l.buffers()?);
        }
        Ok(out)
    }

    pub fn none(host: &HostDims) -> Self {
        Self { layers: host.layers().iter().map(|_| Box::new(NoHooks) as Box<dyn LayerHooks>).collect() }
    }
}
