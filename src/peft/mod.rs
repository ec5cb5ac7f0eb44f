//! Parameter-efficient fine-tuning methods behind one interface.
//!
//! A method acts on a transformer layer through [`LayerHooks`] (defined with the rest of the extension interface
//! in [`crate::hooks`], which the backbone calls): at every linear map and LayerNorm ([`Site`]), around its
//! attention and FFN sub-blocks, and at its input (prompt tokens). Each method is one file that implements
//! [`Method`] and is listed once in [`METHODS`]; the backbone knows nothing about peft, nor peft about the
//! backbone's layers. Method tensors are named by their path in the model (AdaptIR keeps the
//! official `body.encoder.layers.{i}.adaptir.*` keys), so one state dict can hold backbone and method.
pub mod adaptformer;
pub mod adaptir;
pub mod budget;
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

pub use crate::hooks::{Attn, HostDims, LayerHooks, LayerId, MethodModules, NoHooks, Proj, Site, Stack};
pub use crate::linear::Linear;
pub use adaptir::{AdaptIr, AdaptIrConfig, Layout};

/// A PETL method with its configuration.
pub trait Method: Send + Sync {
    /// The method's entry in [`METHODS`] (`&ENTRY` of its file): its name is written there, once.
    fn entry(&self) -> &'static MethodEntry;
    /// CLI name (`adaptir`, `lora`, ...), from [`Method::entry`].
    fn name(&self) -> &'static str {
        self.entry().name
    }
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
    /// The configuration key that sets the method's size (`rank`, `bottleneck`, `hidden`, ...), for matching
    /// trainable-parameter budgets ([`budget`]); `None` (the default): the method has no width (SSF).
    fn width_knob(&self) -> Option<&'static str> {
        None
    }
    /// This configuration with its width set to `width`, every other setting kept; `None` without a knob.
    /// Override it where another setting depends on the width (LoRA keeps `alpha / rank`).
    fn with_width(&self, width: usize) -> Option<Value> {
        let mut config = self.config();
        config.as_object_mut()?.insert(self.width_knob()?.to_string(), width.into());
        Some(config)
    }
}

/// One entry of the registry.
pub struct MethodEntry {
    pub name: &'static str,
    pub summary: &'static str,
    /// The method from its JSON configuration; `Value::Null` gives the default configuration. Its errors leave
    /// out the method's name: call it through [`MethodEntry::build`], which puts the name in front.
    pub from_config: fn(&Value, &HostDims) -> std::result::Result<Box<dyn Method>, String>,
}

impl MethodEntry {
    /// The method from its JSON configuration (`Value::Null`: defaults); an error starts with the method's name
    /// (`lora rank must be at least 1`).
    pub fn build(&self, config: &Value, host: &HostDims) -> std::result::Result<Box<dyn Method>, String> {
        (self.from_config)(config, host).map_err(|e| format!("{} {e}", self.name))
    }
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
        Some(m) => m.build(config, host),
        None => Err(format!("unknown method `{name}`: expected one of {}", method_names())),
    }
}

/// The names of the registered methods, `, `-separated (for help texts and messages).
pub fn method_names() -> String {
    METHODS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}

/// Parse a method's JSON configuration, refusing unknown fields; `null` gives the defaults.
pub fn parse_config<T: serde::de::DeserializeOwned + Default>(config: &Value) -> std::result::Result<T, String> {
    if config.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(config.clone()).map_err(|e| format!("configuration: {e}"))
}

/// `from_config` of a method that takes no configuration: `null` or `{}` give `method`, anything else is refused.
pub fn no_config(config: &Value, method: impl Method + 'static) -> std::result::Result<Box<dyn Method>, String> {
    match config {
        Value::Null => Ok(Box::new(method)),
        Value::Object(m) if m.is_empty() => Ok(Box::new(method)),
        other => Err(format!("takes no configuration, got {other}")),
    }
}

/// Full fine-tuning: no extra modules; every backbone weight is trainable.
struct Full;
impl Method for Full {
    fn entry(&self) -> &'static MethodEntry {
        &FULL
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
    fn entry(&self) -> &'static MethodEntry {
        &PRETRAIN
    }
    fn config(&self) -> Value {
        Value::Object(Default::default())
    }
    fn build(&self, _: VarBuilder, host: &HostDims) -> Result<MethodModules> {
        Ok(MethodModules::none(host))
    }
}

pub const FULL: MethodEntry = MethodEntry {
    name: "full",
    summary: "full fine-tuning of every backbone weight",
    from_config: |c, _| no_config(c, Full),
};

/// The backbone alone: `eval --method pretrain`, and what an export without adapter records as its method.
pub const PRETRAIN: MethodEntry = MethodEntry {
    name: "pretrain",
    summary: "no adaptation (the frozen pre-trained backbone)",
    from_config: |c, _| no_config(c, Pretrain),
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
        let h = crate::linear::lower_linear(b, x, &lin(&self.down), &format!("{hint}.down"))?;
        let h = b.op(if gelu { "Gelu" } else { "Relu" }, &[&h], vec![])?;
        crate::linear::lower_linear(b, &h, &lin(&self.up), &format!("{hint}.up"))
    }

    /// With ReLU (AdaptFormer, Houlsby) or GELU (MoE experts) in the middle.
    pub fn forward(&self, x: &Tensor, gelu: bool) -> Result<Tensor> {
        let h = crate::linear::apply_linear(&self.down, x)?;
        let h = if gelu { h.gelu_erf()? } else { h.relu()? };
        crate::linear::apply_linear(&self.up, &h)
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
