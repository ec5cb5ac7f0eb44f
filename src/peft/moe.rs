//! Classic mixture of experts (the AdaptIR paper's Appendix H baseline): identical bottleneck experts in
//! parallel to the FFN, on its normalised input, summed. Unlike AdaptIR's heterogeneous experts they all
//! have the same structure: `up(gelu(down(x)))`, down with bias, up without, up zero-initialised.
//! Default 4 experts of bottleneck 6: 24 x 4 x 6,918 = 664,128 parameters on ipt-base (paper: 667K).
use adaptir_ops::graph::GraphBuilder;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::{Bottleneck, Method, MethodEntry};
use crate::hooks::{HostDims, LayerHooks, MethodModules};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MoeConfig {
    pub experts: usize,
    pub bottleneck: usize,
}

impl Default for MoeConfig {
    fn default() -> Self {
        Self { experts: 4, bottleneck: 6 }
    }
}

pub struct Moe(MoeConfig);

struct MoeHooks(Vec<Bottleneck>);

impl LayerHooks for MoeHooks {
    fn acts_at(&self, _site: crate::hooks::Site) -> bool {
        false
    }

    fn lower_beside_ffn(&self, b: &mut dyn GraphBuilder, x: &str) -> Result<Option<String>> {
        let mut sum: Option<String> = None;
        for (k, e) in self.0.iter().enumerate() {
            let y = e.lower(b, x, true, &format!("moe.experts.{k}"))?;
            sum = Some(match sum {
                Some(s) => b.op("Add", &[&s, &y], vec![])?,
                None => y,
            });
        }
        Ok(sum)
    }

    fn beside_ffn(&self, x: &Tensor, _: bool) -> Result<Option<Tensor>> {
        let mut sum: Option<Tensor> = None;
        for e in &self.0 {
            let y = e.forward(x, true)?;
            sum = Some(match sum {
                Some(s) => (s + y)?,
                None => y,
            });
        }
        Ok(sum)
    }
}

impl Method for Moe {
    fn entry(&self) -> &'static super::MethodEntry {
        &ENTRY
    }
    fn config(&self) -> serde_json::Value {
        serde_json::to_value(self.0).unwrap_or_default()
    }
    fn width_knob(&self) -> Option<&'static str> {
        Some("bottleneck")
    }
    fn build(&self, vb: VarBuilder, host: &HostDims) -> Result<MethodModules> {
        let layers = host
            .layers()
            .iter()
            .map(|l| {
                let vb = vb.pp(l.prefix()).pp("moe.experts");
                let experts = (0..self.0.experts)
                    .map(|k| Bottleneck::new(vb.pp(k), host.embed, self.0.bottleneck, false))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Box::new(MoeHooks(experts)) as Box<dyn LayerHooks>)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MethodModules { layers })
    }
}

pub const ENTRY: MethodEntry = MethodEntry {
    name: "moe",
    summary: "classic MoE: identical bottleneck experts beside every FFN, summed (4 x bottleneck 6)",
    from_config: |c, _| {
        let config: MoeConfig = super::parse_config(c)?;
        if config.experts == 0 || config.bottleneck == 0 {
            return Err("needs at least one expert of bottleneck at least 1".into());
        }
        Ok(Box::new(Moe(config)))
    },
};
