//! FacT-TT (Jie & Deng, "FacT: Factor-Tuning"): the weight updates of all layers form one tensor that is
//! factorised in tensor-train form: factors `U` (E x r) and `V` (r x E) shared by every layer, and a core
//! `S` (r x r) per E x E weight slice. The update of a slice is `scale * (U S V)` acting as `x -> x U S V`.
//! Slices: q, k, v, out of every attention, and the four E x E blocks of each FFN weight (FFN1's output and
//! FFN2's input are 4E wide). `V` starts at zero, so a fresh FacT is the identity; it merges into weights.
//! Default rank 38: 2 x 576 x 38 + 336 x 38^2 = 528,960 parameters on ipt-base (paper: 537K, whose exact
//! configuration is not published; rank 39 would give 555,984).
use adaptir_ops::graph::GraphBuilder;
use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

use super::{Method, MethodEntry};
use crate::hooks::{Attn, HostDims, LayerHooks, MethodModules, Proj, Site, Stack};
use crate::linear::Linear;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FactConfig {
    pub rank: usize,
    pub scale: f64,
}

impl Default for FactConfig {
    fn default() -> Self {
        Self { rank: 38, scale: 1.0 }
    }
}

pub struct Fact(FactConfig);

struct FactHooks {
    u: Tensor,
    v: Tensor,
    scale: f64,
    /// Cores per site; FFN sites have one per E-wide block.
    cores: Vec<(Site, Vec<Tensor>)>,
}

impl FactHooks {
    /// The E x E update of one slice, as an (out, in) weight: `scale * (U S V)^T`.
    fn slice_weight(&self, core: &Tensor) -> Result<Tensor> {
        self.u.matmul(core)?.matmul(&self.v)?.t()? * self.scale
    }

    /// The full (out, in) update at a site.
    fn delta(&self, site: Site, cores: &[Tensor]) -> Result<Tensor> {
        let blocks = cores.iter().map(|c| self.slice_weight(c)).collect::<Result<Vec<_>>>()?;
        match site {
            Site::Ffn1 => Tensor::cat(&blocks, 0), // output blocks stacked
            Site::Ffn2 => Tensor::cat(&blocks, 1), // input blocks side by side
            _ => Ok(blocks[0].clone()),
        }
    }
}

impl LayerHooks for FactHooks {
    fn acts_at(&self, site: Site) -> bool {
        self.cores.iter().any(|(s, _)| *s == site)
    }

    fn site(&self, site: Site, input: &Tensor, output: Tensor) -> Result<Tensor> {
        match self.cores.iter().find(|(s, _)| *s == site) {
            Some((_, cores)) => {
                let d = self.delta(site, cores)?;
                output + crate::linear::apply_linear_t(&d, input)?
            }
            None => Ok(output),
        }
    }

    /// The update as one constant product beside the frozen one (its factors are constants at export time).
    fn lower_site(&self, b: &mut dyn GraphBuilder, site: Site, input: &str, output: String) -> Result<String> {
        let Some((_, cores)) = self.cores.iter().find(|(s, _)| *s == site) else { return Ok(output) };
        let dt = b.constant("fact_delta_t", &self.delta(site, cores)?.t()?.contiguous()?)?;
        let d = b.op("MatMul", &[input, &dt], vec![])?;
        b.op("Add", &[&output, &d], vec![])
    }

    fn merge(&self, site: Site, map: &Linear) -> Result<Option<Linear>> {
        Ok(match self.cores.iter().find(|(s, _)| *s == site) {
            Some((_, cores)) => Some(((&map.0 + self.delta(site, cores)?)?, map.1.clone())),
            None => None,
        })
    }
}

/// The sites FacT adapts in a layer of this stack.
fn fact_sites(stack: Stack) -> Vec<Site> {
    let attns: &[Attn] = if stack == Stack::Decoder { &[Attn::SelfAttn, Attn::Cross] } else { &[Attn::SelfAttn] };
    let mut v = vec![];
    for &a in attns {
        v.extend([Proj::Q, Proj::K, Proj::V, Proj::Out].map(|p| Site::Attn(a, p)));
    }
    v.extend([Site::Ffn1, Site::Ffn2]);
    v
}

impl Method for Fact {
    fn entry(&self) -> &'static super::MethodEntry {
        &ENTRY
    }
    fn config(&self) -> serde_json::Value {
        serde_json::to_value(self.0).unwrap_or_default()
    }
    fn width_knob(&self) -> Option<&'static str> {
        Some("rank")
    }
    fn mergeable(&self) -> bool {
        true
    }
    fn build(&self, vb: VarBuilder, host: &HostDims) -> Result<MethodModules> {
        let (e, r) = (host.embed, self.0.rank);
        if host.ffn_hidden % e != 0 {
            candle_core::bail!("fact: FFN width {} is not a multiple of the model width {e}", host.ffn_hidden);
        }
        let blocks = host.ffn_hidden / e;
        let shared = vb.pp("body.fact");
        let bound = 1.0 / (e as f64).sqrt();
        let u = shared.get_with_hints((e, r), "u", Init::Uniform { lo: -bound, up: bound })?;
        let v = shared.get_with_hints((r, e), "v", Init::Const(0.0))?;
        let core_init = Init::Randn { mean: 0.0, stdev: 1.0 / (r as f64).sqrt() };
        let layers = host
            .layers()
            .iter()
            .map(|l| {
                let cores = fact_sites(l.stack)
                    .into_iter()
                    .map(|site| {
                        let vb = vb.pp(l.prefix()).pp(site.module_in(l.stack)).pp("fact_core");
                        let n = if matches!(site, Site::Ffn1 | Site::Ffn2) { blocks } else { 1 };
                        let cs = (0..n)
                            .map(|k| vb.get_with_hints((r, r), &k.to_string(), core_init))
                            .collect::<Result<Vec<_>>>()?;
                        Ok((site, cs))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Box::new(FactHooks { u: u.clone(), v: v.clone(), scale: self.0.scale, cores })
                    as Box<dyn LayerHooks>)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MethodModules { layers })
    }
}

pub const ENTRY: MethodEntry = MethodEntry {
    name: "fact",
    summary: "FacT-TT: shared factors and per-slice cores on attention and FFN weights (rank 38)",
    from_config: |c, _| {
        let config: FactConfig = super::parse_config(c)?;
        if config.rank == 0 {
            return Err("rank must be at least 1".into());
        }
        Ok(Box::new(Fact(config)))
    },
};
