//! Houlsby adapters: a sequential bottleneck `y + up(relu(down(y)))` on the output of the attention
//! sub-block and of the FFN sub-block of every layer, before their residual adds. In a decoder layer, which
//! has two attention sub-blocks, the attention adapter follows the cross-attention (the last one), so every
//! layer has two adapters as in the original design. `up` starts at zero: a fresh adapter is the identity.
//! Default bottleneck 12: 48 adapters x 14,412 = 691,776 parameters on ipt-base (paper: 691K).
use adaptir_ops::graph::GraphBuilder;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::{Bottleneck, Method, MethodEntry};
use crate::hooks::{Attn, HostDims, LayerHooks, MethodModules, Stack};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HoulsbyConfig {
    pub bottleneck: usize,
}

impl Default for HoulsbyConfig {
    fn default() -> Self {
        Self { bottleneck: 12 }
    }
}

pub struct Houlsby(HoulsbyConfig);

struct HoulsbyHooks {
    attn: Bottleneck,
    ffn: Bottleneck,
    attn_site: Attn,
}

impl LayerHooks for HoulsbyHooks {
    fn acts_at(&self, _site: crate::hooks::Site) -> bool {
        false
    }

    fn after_attention(&self, attn: Attn, y: Tensor, _: bool) -> Result<Tensor> {
        if attn == self.attn_site {
            let a = self.attn.forward(&y, false)?;
            y + a
        } else {
            Ok(y)
        }
    }

    fn after_ffn(&self, y: Tensor, _: bool) -> Result<Tensor> {
        let a = self.ffn.forward(&y, false)?;
        y + a
    }

    fn lower_after_attention(&self, b: &mut dyn GraphBuilder, attn: Attn, y: String) -> Result<String> {
        if attn != self.attn_site {
            return Ok(y);
        }
        let a = self.attn.lower(b, &y, false, "adapter_attn")?;
        b.op("Add", &[&y, &a], vec![])
    }

    fn lower_after_ffn(&self, b: &mut dyn GraphBuilder, y: String) -> Result<String> {
        let a = self.ffn.lower(b, &y, false, "adapter_ffn")?;
        b.op("Add", &[&y, &a], vec![])
    }
}

impl Method for Houlsby {
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
        let b = self.0.bottleneck;
        let layers = host
            .layers()
            .iter()
            .map(|l| {
                let vb = vb.pp(l.prefix());
                let attn_site = if l.stack == Stack::Decoder { Attn::Cross } else { Attn::SelfAttn };
                Ok(Box::new(HoulsbyHooks {
                    attn: Bottleneck::new(vb.pp("adapter_attn"), host.embed, b, true)?,
                    ffn: Bottleneck::new(vb.pp("adapter_ffn"), host.embed, b, true)?,
                    attn_site,
                }) as Box<dyn LayerHooks>)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MethodModules { layers })
    }
}

pub const ENTRY: MethodEntry = MethodEntry {
    name: "adapter",
    summary: "Houlsby adapters after the attention and the FFN of every layer (bottleneck 12)",
    from_config: |c, _| {
        let config: HoulsbyConfig = super::parse_config(c)?;
        if config.bottleneck == 0 {
            return Err("bottleneck must be at least 1".into());
        }
        Ok(Box::new(Houlsby(config)))
    },
};
