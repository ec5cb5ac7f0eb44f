//! VPT-deep (Jia et al.): learnable prompt tokens prepended to the input of every encoder and decoder
//! layer and dropped after it. In the decoder, prompts get no task query embedding (it is 0 for them) and
//! they attend to the encoder output like the other queries.
//!
//! Unlike the other methods, VPT cannot start as the identity: the prompts take part in attention from the
//! first step (the shared tests record this exception). Prompts are initialised uniformly in +-sqrt(6 / (P + E))
//! (Xavier, as the paper). Default 64 prompts x 24 layers x 576 = 884,736 parameters on ipt-base.
use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

use super::{Method, MethodEntry};
use crate::hooks::{HostDims, LayerHooks, MethodModules};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VptConfig {
    pub prompts: usize,
}

impl Default for VptConfig {
    fn default() -> Self {
        Self { prompts: 64 }
    }
}

pub struct Vpt(VptConfig);

struct VptHooks(Tensor);

impl LayerHooks for VptHooks {
    fn acts_at(&self, _site: crate::hooks::Site) -> bool {
        false
    }

    fn prompts(&self) -> Option<&Tensor> {
        Some(&self.0)
    }
}

impl Method for Vpt {
    fn entry(&self) -> &'static super::MethodEntry {
        &ENTRY
    }
    fn config(&self) -> serde_json::Value {
        serde_json::to_value(self.0).unwrap_or_default()
    }
    fn width_knob(&self) -> Option<&'static str> {
        Some("prompts")
    }
    fn build(&self, vb: VarBuilder, host: &HostDims) -> Result<MethodModules> {
        let p = self.0.prompts;
        let bound = (6.0 / (p + host.embed) as f64).sqrt();
        let layers = host
            .layers()
            .iter()
            .map(|l| {
                let t = vb.pp(l.prefix()).get_with_hints(
                    (p, host.embed),
                    "vpt.prompts",
                    Init::Uniform { lo: -bound, up: bound },
                )?;
                Ok(Box::new(VptHooks(t)) as Box<dyn LayerHooks>)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MethodModules { layers })
    }
}

pub const ENTRY: MethodEntry = MethodEntry {
    name: "vpt",
    summary: "VPT-deep: 64 prompt tokens prepended at every layer and dropped after it",
    from_config: |c, host| {
        if host.is_swin() {
            return Err("does not apply to EDT: its prompt tokens extend a sequence, and EDT's windowed attention \
                        takes an image grid"
                .into());
        }
        let config: VptConfig = super::parse_config(c)?;
        if config.prompts == 0 {
            return Err("needs at least one prompt".into());
        }
        Ok(Box::new(Vpt(config)))
    },
};
