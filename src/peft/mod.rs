//! Parameter-efficient fine-tuning methods behind one interface.
//!
//! A method acts on a transformer layer through [`LayerHooks`]: the points the backbone calls at every linear
//! map and LayerNorm ([`Site`]), around its attention and FFN sub-blocks, and at its input (prompt tokens).
//! Each method is one file that implements [`Method`] and is listed once in [`METHODS`]; the backbone knows
//! nothing about any particular method. Method tensors are named by their path in the model (AdaptIR keeps the
//! official `body.encoder.layers.{i}.adaptir.*` keys), so one state dict can hold backbone and method.
pub mod adaptformer;
pub mod adaptir;
pub mod fact;
pub mod file;
pub mod houlsby;
pub mod lora;
pub mod moe;
pub mod ssf;
pub mod vpt;

use adaptir_ops::graph::GraphBuilder;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde_json::Value;

pub use adaptir::{AdaptIr, AdaptIrConfig, Layout};

/// Which stack a layer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stack {
    Encoder,
    Decoder,
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

/// One layer of the host: `body.encoder.layers.3` and so on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LayerId {
    pub stack: Stack,
    pub index: usize,
}

impl LayerId {
    pub fn prefix(&self) -> String {
        match self.stack {
            Stack::Encoder => format!("body.encoder.layers.{}", self.index),
            Stack::Decoder => format!("body.decoder.layers.{}", self.index),
        }
    }
}

/// What a method needs to know of its host transformer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostDims {
    pub embed: usize,
    pub ffn_hidden: usize,
    pub heads: usize,
    pub tokens: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
}

impl HostDims {
    pub fn layers(&self) -> Vec<LayerId> {
        let enc = (0..self.encoder_layers).map(|index| LayerId { stack: Stack::Encoder, index });
        let dec = (0..self.decoder_layers).map(|index| LayerId { stack: Stack::Decoder, index });
        enc.chain(dec).collect()
    }
}

/// A merged linear map: weight (out, in) and optional bias (out).
pub type Linear = (Tensor, Option<Tensor>);

/// What a method does inside one layer. Every hook defaults to "nothing".
pub trait LayerHooks: Send + Sync {
    /// The output of the linear map or LayerNorm at `site`, given its input; LoRA and FacT add a low-rank
    /// term, SSF scales and shifts.
    fn site(&self, _site: Site, _input: &Tensor, output: Tensor) -> Result<Tensor> {
        Ok(output)
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
impl LayerHooks for NoHooks {}

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

/// A PETL method with its configuration.
pub trait Method: Send + Sync {
    /// CLI name (`adaptir`, `lora`, ...).
    fn name(&self) -> &'static str;
    /// The configuration, as stored in adapter files.
    fn config(&self) -> Value;
    /// Build the method's modules; `vb` is rooted at the model (tensors are named by their model path).
    /// A fresh build (from a `VarMap`) starts as the identity: the adapted model equals the backbone.
    fn build(&self, vb: VarBuilder, host: &HostDims) -> Result<MethodModules>;
    /// Whether every backbone weight is trained (full fine-tuning).
    fn trains_backbone(&self) -> bool {
        false
    }
    /// Whether the method can be folded into the backbone's weights entirely ([`LayerHooks::merge`]).
    fn mergeable(&self) -> bool {
        false
    }
}

/// One entry of the registry.
pub struct MethodEntry {
    pub name: &'static str,
    pub summary: &'static str,
    /// The method from its JSON configuration; `Value::Null` gives the default configuration.
    pub from_config: fn(&Value, &HostDims) -> std::result::Result<Box<dyn Method>, String>,
}

/// The registry: adding a method is one file and one line here.
pub const METHODS: &[MethodEntry] = &[
    adaptir::ENTRY,
    lora::ENTRY,
    houlsby::ENTRY,
    adaptformer::ENTRY,
    ssf::ENTRY,
    vpt::ENTRY,
    fact::ENTRY,
    moe::ENTRY,
    FULL,
    PRETRAIN,
];

/// Look a method up by name and build it from its configuration (`Value::Null`: defaults).
pub fn method(name: &str, config: &Value, host: &HostDims) -> std::result::Result<Box<dyn Method>, String> {
    match METHODS.iter().find(|m| m.name == name) {
        Some(m) => (m.from_config)(config, host),
        None => Err(format!(
            "unknown method `{name}`: expected one of {}",
            METHODS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Parse a method's JSON configuration, refusing unknown fields; `null` gives the defaults.
pub fn parse_config<T: serde::de::DeserializeOwned + Default>(
    name: &str,
    config: &Value,
) -> std::result::Result<T, String> {
    if config.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(config.clone()).map_err(|e| format!("{name} configuration: {e}"))
}

/// Full fine-tuning: no extra modules; every backbone weight is trainable.
struct Full;
impl Method for Full {
    fn name(&self) -> &'static str {
        "full"
    }
    fn config(&self) -> Value {
        Value::Object(Default::default())
    }
    fn build(&self, _: VarBuilder, host: &HostDims) -> Result<MethodModules> {
        Ok(MethodModules::none(host))
    }
    fn trains_backbone(&self) -> bool {
        true
    }
}

/// No adaptation: the pre-trained backbone as it is (the baseline row of the comparison).
struct Pretrain;
impl Method for Pretrain {
    fn name(&self) -> &'static str {
        "pretrain"
    }
    fn config(&self) -> Value {
        Value::Object(Default::default())
    }
    fn build(&self, _: VarBuilder, host: &HostDims) -> Result<MethodModules> {
        Ok(MethodModules::none(host))
    }
}

fn no_config(name: &str, config: &Value) -> std::result::Result<(), String> {
    match config {
        Value::Null => Ok(()),
        Value::Object(m) if m.is_empty() => Ok(()),
        other => Err(format!("{name} takes no configuration, got {other}")),
    }
}

const FULL: MethodEntry = MethodEntry {
    name: "full",
    summary: "full fine-tuning of every backbone weight",
    from_config: |c, _| no_config("full", c).map(|_| Box::new(Full) as Box<dyn Method>),
};

const PRETRAIN: MethodEntry = MethodEntry {
    name: "pretrain",
    summary: "no adaptation (the frozen pre-trained backbone)",
    from_config: |c, _| no_config("pretrain", c).map(|_| Box::new(Pretrain) as Box<dyn Method>),
};

/// A bottleneck `up(act(down(x)))` on the last dim, shared by the adapter-style methods.
pub struct Bottleneck {
    pub down: candle_nn::Linear,
    pub up: candle_nn::Linear,
}

impl Bottleneck {
    /// down: PyTorch default init; up: zeros, so a fresh bottleneck outputs exactly 0.
    pub fn new(vb: VarBuilder, dim: usize, mid: usize, up_bias: bool) -> Result<Self> {
        use candle_nn::Init;
        let bound = 1.0 / (dim as f64).sqrt();
        let init = Init::Uniform { lo: -bound, up: bound };
        let down = candle_nn::Linear::new(
            vb.pp("down").get_with_hints((mid, dim), "weight", init)?,
            Some(vb.pp("down").get_with_hints(mid, "bias", init)?),
        );
        let up_w = vb.pp("up").get_with_hints((dim, mid), "weight", Init::Const(0.0))?;
        let up_b = if up_bias { Some(vb.pp("up").get_with_hints(dim, "bias", Init::Const(0.0))?) } else { None };
        Ok(Self { down, up: candle_nn::Linear::new(up_w, up_b) })
    }

    pub fn num_params(dim: usize, mid: usize, up_bias: bool) -> usize {
        dim * mid + mid + mid * dim + if up_bias { dim } else { 0 }
    }

    pub fn lower(&self, b: &mut dyn GraphBuilder, x: &str, gelu: bool, hint: &str) -> Result<String> {
        let lin = |l: &candle_nn::Linear| (l.weight().clone(), l.bias().cloned());
        let h = crate::backbone::layers::lower_linear(b, x, &lin(&self.down), &format!("{hint}.down"))?;
        let h = b.op(if gelu { "Gelu" } else { "Relu" }, &[&h], vec![])?;
        crate::backbone::layers::lower_linear(b, &h, &lin(&self.up), &format!("{hint}.up"))
    }

    /// With ReLU (AdaptFormer, Houlsby) or GELU (MoE experts) in the middle.
    pub fn forward(&self, x: &Tensor, gelu: bool) -> Result<Tensor> {
        let h = crate::backbone::layers::apply_linear(&self.down, x)?;
        let h = if gelu { h.gelu_erf()? } else { h.relu()? };
        crate::backbone::layers::apply_linear(&self.up, &h)
    }
}

/// Trainable parameters of a method on a host: its own tensors (counted without allocating), or every
/// backbone parameter for full fine-tuning (`backbone_params`).
pub fn trainable_params(method: &dyn Method, host: &HostDims, backbone_params: usize) -> Result<usize> {
    if method.trains_backbone() {
        return Ok(backbone_params);
    }
    let rec = crate::params::ShapeOnly::default();
    method.build(rec.var_builder(), host)?;
    let entries = rec.entries();
    Ok(crate::params::count_parameters(entries.iter().map(|(k, (s, _))| (k, s.as_slice()))))
}
