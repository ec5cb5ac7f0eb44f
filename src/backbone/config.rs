//! IPT hyper-parameters: the JSON model config, presets, and the checks that reject impossible sizes.
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The official task map of IPT: index -> (name, scale). Hybrid LR4&Noise30 / LR4&JPEG30 reuse the x4 head and
/// tail (index 2); low-light reuses the denoise50 one (index 5).
pub const OFFICIAL_TASKS: &[(&str, usize)] =
    &[("sr2", 2), ("sr3", 3), ("sr4", 4), ("derain", 1), ("denoise30", 1), ("denoise50", 1)];

/// Every model task name, for error messages: the official heads, then the tasks that reuse one of them.
pub const MODEL_TASK_NAMES: &str =
    "sr2, sr3, sr4, derain, denoise30, denoise50, lr4-noise30, lr4-jpeg30, lr2-noise30, lowlight, realnoise";

/// Task name -> head/tail index on the official task map, hybrids and new degradations included: the
/// x4 hybrids reuse the x4 head (lr2-noise30 the x2 one), low light the denoise50 one, real noise the denoise30 one.
pub fn task_index(name: &str) -> Option<usize> {
    Some(match name {
        "sr2" | "lr2-noise30" => 0,
        "sr3" => 1,
        "sr4" | "lr4-noise30" | "lr4-jpeg30" => 2,
        "derain" => 3,
        "denoise30" | "realnoise" => 4,
        "denoise50" | "lowlight" => 5,
        _ => return None,
    })
}

fn default_rgb_range() -> f64 {
    255.0
}
fn default_patch_size() -> usize {
    48
}
fn default_patch_dim() -> usize {
    3
}
fn default_num_tasks() -> usize {
    6
}
fn default_scales() -> Vec<usize> {
    vec![2, 3, 4, 1, 1, 1]
}
fn default_arch() -> String {
    "ipt".into()
}

/// `{"arch": "ipt", "n_feats": 22, "num_heads": 6, "num_layers": 1}` plus optional fields with the official
/// defaults. Unknown fields are an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IptConfig {
    #[serde(default = "default_arch")]
    pub arch: String,
    /// Feature channels F of heads and tails; the transformer width is `F * patch_dim^2`.
    pub n_feats: usize,
    pub num_heads: usize,
    /// Encoder layers, and as many decoder layers.
    pub num_layers: usize,
    #[serde(default = "default_rgb_range")]
    pub rgb_range: f64,
    /// Side of the square input the transformer sees (48).
    #[serde(default = "default_patch_size")]
    pub patch_size: usize,
    /// Side of the patches unfolded into tokens (3).
    #[serde(default = "default_patch_dim")]
    pub patch_dim: usize,
    #[serde(default = "default_num_tasks")]
    pub num_tasks: usize,
    /// Upscaling factor of each task's tail.
    #[serde(default = "default_scales")]
    pub scales: Vec<usize>,
}

impl IptConfig {
    pub fn new(n_feats: usize, num_heads: usize, num_layers: usize) -> Self {
        Self {
            arch: default_arch(),
            n_feats,
            num_heads,
            num_layers,
            rgb_range: default_rgb_range(),
            patch_size: default_patch_size(),
            patch_dim: default_patch_dim(),
            num_tasks: default_num_tasks(),
            scales: default_scales(),
        }
    }

    /// Named presets: `ipt-base` is the released IPT (119.6M parameters with AdaptIR).
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "ipt-base" => Ok(Self::new(64, 12, 12)),
            "ipt-small" => Ok(Self::new(22, 6, 1)),
            // The default backbone pre-trained here (docs/training.md: why this size).
            "ipt-tiny" => Ok(Self::new(24, 6, 1)),
            other => Err(Error::invalid(format!(
                "unknown backbone preset `{other}`: expected one of {}",
                PRESETS.join(", ")
            ))),
        }
    }

    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        let cfg: Self =
            serde_json::from_str(&text).map_err(|e| Error::file(path, format!("not a valid IPT config: {e}")))?;
        cfg.validate().map_err(|msg| Error::file(path, msg))?;
        Ok(cfg)
    }

    /// Transformer width E = F * patch_dim^2.
    pub fn embed_dim(&self) -> usize {
        self.n_feats * self.patch_dim * self.patch_dim
    }

    /// FFN and mlp_head hidden width (the official 4E).
    pub fn hidden_dim(&self) -> usize {
        4 * self.embed_dim()
    }

    /// What a PETL method needs to know of this transformer.
    pub fn host_dims(&self) -> crate::hooks::HostDims {
        crate::hooks::HostDims {
            embed: self.embed_dim(),
            ffn_hidden: self.hidden_dim(),
            heads: self.num_heads,
            tokens: self.num_tokens(),
            encoder_layers: self.num_layers,
            decoder_layers: self.num_layers,
            swin_depths: vec![],
        }
    }

    /// Tokens per image: (patch_size / patch_dim)^2.
    pub fn num_tokens(&self) -> usize {
        let side = self.patch_size / self.patch_dim;
        side * side
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.arch != "ipt" {
            return Err(format!(
                "arch is `{}`, expected `ipt` (this command takes IPT models; EDT runs in `adaptir forward` so far)",
                self.arch
            ));
        }
        let positive = [
            ("n_feats", self.n_feats),
            ("num_heads", self.num_heads),
            ("num_layers", self.num_layers),
            ("patch_size", self.patch_size),
            ("patch_dim", self.patch_dim),
            ("num_tasks", self.num_tasks),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} is 0, expected at least 1"));
            }
        }
        if self.embed_dim() % self.num_heads != 0 {
            return Err(format!(
                "num_heads = {} does not divide the transformer width {} (= n_feats {} x patch_dim^2 {})",
                self.num_heads,
                self.embed_dim(),
                self.n_feats,
                self.patch_dim * self.patch_dim
            ));
        }
        if self.patch_size % self.patch_dim != 0 {
            return Err(format!("patch_size {} is not a multiple of patch_dim {}", self.patch_size, self.patch_dim));
        }
        if self.scales.len() != self.num_tasks {
            return Err(format!("scales has {} entries, expected num_tasks = {}", self.scales.len(), self.num_tasks));
        }
        if let Some(s) = self.scales.iter().find(|&&s| !(s == 3 || (s >= 1 && s.is_power_of_two()))) {
            return Err(format!("scale {s} is not supported: expected 1, 3 or a power of two"));
        }
        if !(self.rgb_range.is_finite() && self.rgb_range > 0.0) {
            return Err(format!("rgb_range is {}, expected a positive number", self.rgb_range));
        }
        Ok(())
    }
}

pub const PRESETS: &[&str] = &["ipt-base", "ipt-small", "ipt-tiny"];
