//! EDT hyper-parameters: the JSON model config, our task names and their official heads, and the checks that
//! reject sizes the official code cannot build.
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Feature channels of the first head conv (`num_feat` in the official `EDT.__init__`, hard-coded).
pub const NUM_FEAT: usize = 32;
/// ResBlocks in each head and tail (`depth`, hard-coded 2): the denoise / derain heads halve the image this many
/// times, and each of them doubles the channels.
pub const HEAD_DEPTH: usize = 2;
/// Hidden width of the Swin blocks' MLP over the embedding (`mlp_ratio=2`).
pub const MLP_RATIO: usize = 2;
/// The body's construction resolution (`SwinBody(img_size=48)`): the shifted-window masks stored in a
/// checkpoint are for this grid. Every task feeds the body a 48x48 grid at its training size.
pub const BODY_SIZE: usize = 48;
/// `EDT.mean`: the RGB mean subtracted before the head and added back after the tail (DIV2K, as f32).
pub const RGB_MEAN: [f32; 3] = [0.4488, 0.4371, 0.4040];

fn default_depths() -> Vec<usize> {
    vec![6; 6]
}
fn default_num_heads() -> Vec<usize> {
    vec![6; 6]
}
fn default_embed_dim() -> usize {
    180
}
fn default_window_size() -> [usize; 2] {
    [6, 24]
}
fn default_drop_path_rate() -> f64 {
    0.1
}

/// `{"arch": "edt", "task": "sr2"}` plus optional `depths`, `num_heads`, `embed_dim`, `window_size` with the
/// official EDT-B defaults (six stages of 6 blocks, 6 heads each, embed 180, windows [6, 24]). Unknown fields
/// are an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdtConfig {
    /// Always `edt` (the field that tells an EDT config from an IPT one).
    pub arch: String,
    /// Our task name: sr2, sr3, sr4, denoise<level> (denoise15, denoise25, denoise30, denoise50), derain.
    pub task: String,
    /// Swin blocks in each stage (RSTB); every odd block of a stage uses shifted windows.
    #[serde(default = "default_depths")]
    pub depths: Vec<usize>,
    /// Heads of each of the two attention branches of a block, per stage.
    #[serde(default = "default_num_heads")]
    pub num_heads: Vec<usize>,
    #[serde(default = "default_embed_dim")]
    pub embed_dim: usize,
    /// [short, long] side of the stripe windows: the first attention branch uses (short rows x long columns),
    /// the second (long rows x short columns).
    #[serde(default = "default_window_size")]
    pub window_size: [usize; 2],
    /// Stochastic depth in training (official `drop_path_rate` 0.1): block k of n drops its two residual branches
    /// per sample with probability `rate k / (n - 1)` (torch's `linspace(0, rate, n)`). Eval is unaffected.
    #[serde(default = "default_drop_path_rate")]
    pub drop_path_rate: f64,
}

/// The task an EDT checkpoint is built for: one head and one tail (the official `de_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdtTask {
    /// Super-resolution by this factor (2, 3, 4): `head_sr_x{s}`, `tail_sr_x{s}`.
    Sr(usize),
    /// Denoising at this noise level: `head_dn_g{level}`, `tail_dn_g{level}`.
    Denoise(usize),
    /// Deraining (heavy rain, the only level the official code defines): `head_dr_H`, `tail_dr_H`.
    Derain,
}

/// The task names an EDT config accepts, for messages.
pub const TASK_NAMES: &str = "sr2, sr3, sr4, denoise15, denoise25, denoise30, denoise50, derain";

impl EdtTask {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sr2" => Some(Self::Sr(2)),
            "sr3" => Some(Self::Sr(3)),
            "sr4" => Some(Self::Sr(4)),
            "derain" => Some(Self::Derain),
            // The official comment lists levels 15, 25 and 50; our IPT task names add 30.
            "denoise15" => Some(Self::Denoise(15)),
            "denoise25" => Some(Self::Denoise(25)),
            "denoise30" => Some(Self::Denoise(30)),
            "denoise50" => Some(Self::Denoise(50)),
            _ => None,
        }
    }

    /// The official `de_type` string (`sr_2`, `denoise_30`, `derain`).
    pub fn official_de_type(&self) -> String {
        match self {
            Self::Sr(s) => format!("sr_{s}"),
            Self::Denoise(l) => format!("denoise_{l}"),
            Self::Derain => "derain".into(),
        }
    }

    /// The official attribute suffix of the head and tail: `sr_x2`, `dn_g30`, `dr_H`.
    pub fn module_suffix(&self) -> String {
        match self {
            Self::Sr(s) => format!("sr_x{s}"),
            Self::Denoise(l) => format!("dn_g{l}"),
            Self::Derain => "dr_H".into(),
        }
    }

    pub fn head_key(&self) -> String {
        format!("head_{}", self.module_suffix())
    }

    pub fn tail_key(&self) -> String {
        format!("tail_{}", self.module_suffix())
    }

    /// Output side / input side.
    pub fn scale(&self) -> usize {
        match self {
            Self::Sr(s) => *s,
            _ => 1,
        }
    }

    /// Whether the head halves the image [`HEAD_DEPTH`] times (denoise, derain) or keeps it (SR).
    pub fn downsamples(&self) -> bool {
        !matches!(self, Self::Sr(_))
    }

    /// The side of the square input the task takes at its training size: 48 for SR, 48 x 2^depth = 192 for
    /// denoise and derain (the official `sr_resolution` / `dn_resolution`).
    pub fn input_size(&self) -> usize {
        if self.downsamples() {
            BODY_SIZE << HEAD_DEPTH
        } else {
            BODY_SIZE
        }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The EDT presets `adaptir pretrain --preset` builds (docs/training.md "edt-tiny").
pub const PRESETS: &[&str] = &["edt-tiny"];

impl EdtConfig {
    /// A named size, or `None` when the name is not an EDT preset. `edt-tiny`: the official x2 model with a small
    /// body (two stages of 2 blocks, embed 60, 2 heads per branch: the official head width of 15 channels),
    /// the official windows and stochastic depth; light enough to pre-train on two CPU cores.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "edt-tiny" => {
                Some(Self { depths: vec![2, 2], num_heads: vec![2, 2], embed_dim: 60, ..Self::official("sr2") })
            }
            _ => None,
        }
    }

    /// The official EDT-B for `task`.
    pub fn official(task: &str) -> Self {
        Self {
            arch: "edt".into(),
            task: task.into(),
            depths: default_depths(),
            num_heads: default_num_heads(),
            embed_dim: default_embed_dim(),
            window_size: default_window_size(),
            drop_path_rate: default_drop_path_rate(),
        }
    }

    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        let cfg: Self =
            serde_json::from_str(&text).map_err(|e| Error::file(path, format!("not a valid EDT config: {e}")))?;
        cfg.validate().map_err(|msg| Error::file(path, msg))?;
        Ok(cfg)
    }

    /// The task, parsed (call after [`EdtConfig::validate`], which refuses unknown names).
    pub fn edt_task(&self) -> std::result::Result<EdtTask, String> {
        EdtTask::parse(&self.task)
            .ok_or_else(|| format!("task `{}` is not an EDT task: expected one of {TASK_NAMES}", self.task))
    }

    /// Each block's stochastic-depth rate, in forward order: `linspace(0, drop_path_rate, blocks)`.
    pub fn drop_path_rates(&self) -> Vec<f64> {
        let n = self.num_blocks();
        (0..n).map(|k| if n > 1 { self.drop_path_rate * k as f64 / (n - 1) as f64 } else { 0.0 }).collect()
    }

    /// Total Swin blocks over all stages.
    pub fn num_blocks(&self) -> usize {
        self.depths.iter().sum()
    }

    /// What a PETL method needs to know of this body: its Swin blocks stage by stage (`HostDims::layers`, the
    /// order `Edt::new` takes their hooks, prefixes `body.layers.{i}.residual_group.blocks.{j}`), the width, the
    /// MLP width, and the tokens of the 48x48 body grid every task has at its training size.
    pub fn host_dims(&self) -> crate::hooks::HostDims {
        crate::hooks::HostDims {
            embed: self.embed_dim,
            ffn_hidden: MLP_RATIO * self.embed_dim,
            heads: self.num_heads.first().copied().unwrap_or(0),
            tokens: BODY_SIZE * BODY_SIZE,
            encoder_layers: 0,
            decoder_layers: 0,
            swin_depths: self.depths.clone(),
        }
    }

    /// The shift of the odd blocks of a stage, (short, long): half of each window side (`window_size // 2`).
    pub fn shift_size(&self) -> [usize; 2] {
        [self.window_size[0] / 2, self.window_size[1] / 2]
    }

    /// The body grid must be a multiple of this in both directions: both branches tile it with their windows
    /// (short x long and long x short).
    pub fn grid_multiple(&self) -> usize {
        let [a, b] = self.window_size;
        a / gcd(a, b) * b
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.arch != "edt" {
            return Err(format!("arch is `{}`, expected `edt`", self.arch));
        }
        self.edt_task()?;
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return Err(format!("drop_path_rate is {}, expected at least 0 and below 1", self.drop_path_rate));
        }
        if self.depths.is_empty() {
            return Err("depths is empty, expected at least one stage".into());
        }
        if self.num_heads.len() != self.depths.len() {
            return Err(format!(
                "num_heads has {} entries but depths has {}: expected one head count per stage",
                self.num_heads.len(),
                self.depths.len()
            ));
        }
        if let Some(i) = self.depths.iter().position(|&d| d == 0) {
            return Err(format!("depths[{i}] is 0, expected at least 1 block per stage"));
        }
        // Each block splits the embedding into two attention branches of embed_dim / 2 channels.
        if self.embed_dim == 0 || !self.embed_dim.is_multiple_of(2) {
            return Err(format!(
                "embed_dim is {}, expected a positive even number (two attention branches)",
                self.embed_dim
            ));
        }
        let branch = self.embed_dim / 2;
        for (i, &h) in self.num_heads.iter().enumerate() {
            if h == 0 || !branch.is_multiple_of(h) {
                return Err(format!(
                    "num_heads[{i}] = {h} does not divide the attention branch width {branch} (= embed_dim {} / 2)",
                    self.embed_dim
                ));
            }
        }
        let [a, b] = self.window_size;
        // A window side of 1 has shift 0, which the official code still treats as shifted (a (0, 0) tuple is
        // truthy) and builds a mask from empty slices; 2 is the least that means anything.
        if a < 2 || b < 2 {
            return Err(format!("window_size is [{a}, {b}], expected both sides at least 2"));
        }
        // The official model builds its masks for the 48x48 body grid at construction; windows must tile it.
        if !BODY_SIZE.is_multiple_of(self.grid_multiple()) {
            return Err(format!(
                "window_size [{a}, {b}] does not tile the {BODY_SIZE}x{BODY_SIZE} body grid: both sides must divide {BODY_SIZE}"
            ));
        }
        Ok(())
    }
}

/// Whether the JSON file at `path` is a config with `"arch": "edt"` (false for anything else, unreadable files
/// included: the IPT reader then says what is wrong).
pub fn is_edt_config_file(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("arch").and_then(|a| a.as_str()).map(|a| a == "edt"))
        .unwrap_or(false)
}
