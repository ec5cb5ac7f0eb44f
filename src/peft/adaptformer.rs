//! AdaptFormer (Chen et al.): a bottleneck `s * up(relu(down(x)))` in parallel to the FFN, on the FFN's
//! normalised input, added inside the same residual. `up` starts at zero, so a fresh one is the identity.
//! Default bottleneck 24 and scale 0.1 (the paper's): 24 x 28,248 = 677,952 parameters on ipt-base.
use adaptir_ops::graph::GraphBuilder;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::{Bottleneck, Method, MethodEntry};
use crate::hooks::{HostDims, LayerHooks, MethodModules};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptFormerConfig {
    pub bottleneck: usize,
    pub scale: f64,
}

impl Default for AdaptFormerConfig {
    fn default() -> Self {
        Self { bottleneck: 24, scale: 0.1 }
    }
}

pub struct AdaptFormer(AdaptFormerConfig);

struct AdaptFormerHooks {
    branch: Bottleneck,
    scale: f64,
}

impl LayerHooks for AdaptFormerHooks {
    fn acts_at(&self, _site: crate::hooks::Site) -> bool {
        false
    }

    fn beside_ffn(&self, x: &Tensor, _: bool) -> Result<Option<Tensor>> {
        Ok(Some((self.branch.forward(x, false)? * self.scale)?))
    }

    fn lower_beside_ffn(&self, b: &mut dyn GraphBuilder, x: &str) -> Result<Option<String>> {
        let y = self.branch.lower(b, x, false, "adaptformer")?;
        let s = b.constant_f32("adaptformer_scale", &[], &[self.scale as f32])?;
        b.op("Mul", &[&y, &s], vec![]).map(Some)
    }
}

impl Method for AdaptFormer {
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
                let branch = Bottleneck::new(vb.pp(l.prefix()).pp("adaptformer"), host.embed, self.0.bottleneck, true)?;
                Ok(Box::new(AdaptFormerHooks { branch, scale: self.0.scale }) as Box<dyn LayerHooks>)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MethodModules { layers })
    }
}

pub const ENTRY: MethodEntry = MethodEntry {
    name: "adaptformer",
    summary: "AdaptFormer: a scaled bottleneck beside every FFN (bottleneck 24, scale 0.1)",
    from_config: |c, _| {
        let config: AdaptFormerConfig = super::parse_config(c)?;
        if config.bottleneck == 0 {
            return Err("bottleneck must be at least 1".into());
        }
        Ok(Box::new(AdaptFormer(config)))
    },
};
