//! LoRA (Hu et al.): `W x + (alpha / r) B A x` on chosen projections of every attention (encoder self,
//! decoder self, decoder cross). A is Kaiming-uniform, B zero, so a fresh LoRA is the identity; it merges
//! into the weights as `W + (alpha / r) B A`.
use adaptir_ops::graph::GraphBuilder;
use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

use super::{Method, MethodEntry};
use crate::hooks::{Attn, HostDims, LayerHooks, MethodModules, Proj, Site, Stack};
use crate::linear::{apply_linear_t, Linear};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    pub rank: usize,
    /// Scale numerator: the update is `alpha / rank * B A`.
    pub alpha: f64,
    /// Projections of every attention: any of `q`, `k`, `v`, `out`.
    pub targets: Vec<String>,
}

impl Default for LoraConfig {
    /// The paper's comparison setting: rank 12 on q and v (995,328 parameters on ipt-base).
    fn default() -> Self {
        Self { rank: 12, alpha: 12.0, targets: vec!["q".into(), "v".into()] }
    }
}

fn target(name: &str) -> std::result::Result<Proj, String> {
    match name {
        "q" => Ok(Proj::Q),
        "k" => Ok(Proj::K),
        "v" => Ok(Proj::V),
        "out" => Ok(Proj::Out),
        other => Err(format!("target `{other}` matches no module: expected q, k, v or out")),
    }
}

pub struct Lora {
    config: LoraConfig,
    projs: Vec<Proj>,
}

struct LoraPair {
    a: Tensor, // (r, in)
    b: Tensor, // (out, r)
}

struct LoraHooks {
    pairs: Vec<(Site, LoraPair)>,
    scale: f64,
}

impl LoraHooks {
    fn pair(&self, site: Site) -> Option<&LoraPair> {
        self.pairs.iter().find(|(s, _)| *s == site).map(|(_, p)| p)
    }
}

impl LayerHooks for LoraHooks {
    fn acts_at(&self, site: Site) -> bool {
        self.pair(site).is_some()
    }

    fn site(&self, site: Site, input: &Tensor, output: Tensor) -> Result<Tensor> {
        match self.pair(site) {
            Some(p) => output + (apply_linear_t(&p.b, &apply_linear_t(&p.a, input)?)? * self.scale)?,
            None => Ok(output),
        }
    }

    fn lower_site(&self, b: &mut dyn GraphBuilder, site: Site, input: &str, output: String) -> Result<String> {
        let Some(p) = self.pair(site) else { return Ok(output) };
        let at = b.constant("lora_A_t", &p.a.t()?.contiguous()?)?;
        let bt = b.constant("lora_B_t", &p.b.t()?.contiguous()?)?;
        let h = b.op("MatMul", &[input, &at], vec![])?;
        let d = b.op("MatMul", &[&h, &bt], vec![])?;
        let s = b.constant_f32("lora_scale", &[], &[self.scale as f32])?;
        let d = b.op("Mul", &[&d, &s], vec![])?;
        b.op("Add", &[&output, &d], vec![])
    }

    fn merge(&self, site: Site, map: &Linear) -> Result<Option<Linear>> {
        Ok(match self.pair(site) {
            Some(p) => Some(((&map.0 + (p.b.matmul(&p.a)? * self.scale)?)?, map.1.clone())),
            None => None,
        })
    }
}

impl Method for Lora {
    fn entry(&self) -> &'static super::MethodEntry {
        &ENTRY
    }
    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
    fn width_knob(&self) -> Option<&'static str> {
        Some("rank")
    }
    /// Keeps the update's scale `alpha / rank` (1 in the default configuration).
    fn with_width(&self, width: usize) -> Option<serde_json::Value> {
        let alpha = self.config.alpha / self.config.rank as f64 * width as f64;
        serde_json::to_value(LoraConfig { rank: width, alpha, ..self.config.clone() }).ok()
    }
    fn mergeable(&self) -> bool {
        true
    }
    fn build(&self, vb: VarBuilder, host: &HostDims) -> Result<MethodModules> {
        let r = self.config.rank;
        let mut layers: Vec<Box<dyn LayerHooks>> = vec![];
        for l in host.layers() {
            let attns: &[Attn] = match l.stack {
                Stack::Encoder | Stack::Swin => &[Attn::SelfAttn],
                Stack::Decoder => &[Attn::SelfAttn, Attn::Cross],
            };
            let mut pairs = vec![];
            for &attn in attns {
                for &proj in &self.projs {
                    let site = Site::Attn(attn, proj);
                    let vb = vb.pp(l.prefix()).pp(site.module_in(l.stack));
                    let (cin, cout) = site.widths(host);
                    let bound = 1.0 / (cin as f64).sqrt();
                    let a = vb.get_with_hints((r, cin), "lora_A", Init::Uniform { lo: -bound, up: bound })?;
                    let b = vb.get_with_hints((cout, r), "lora_B", Init::Const(0.0))?;
                    pairs.push((site, LoraPair { a, b }));
                }
            }
            layers.push(Box::new(LoraHooks { pairs, scale: self.config.alpha / r as f64 }));
        }
        Ok(MethodModules { layers })
    }
}

pub const ENTRY: MethodEntry = MethodEntry {
    name: "lora",
    summary: "LoRA on the q and v projections of every attention (rank 12)",
    from_config: |c, _| {
        let config: LoraConfig = super::parse_config(c)?;
        if config.rank == 0 {
            return Err("rank must be at least 1".into());
        }
        if config.targets.is_empty() {
            return Err("needs at least one target".into());
        }
        let projs = config.targets.iter().map(|t| target(t)).collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Box::new(Lora { config, projs }))
    },
};
