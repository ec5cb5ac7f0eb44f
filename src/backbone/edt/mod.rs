//! EDT (Li et al., "On Efficient Transformer-Based Image Pre-training for Low-Level Vision") as in the official
//! AdaptIR release, `net/edt.py`: one task's convolutional head, a windowed-transformer body, and the task's tail
//! fed by the head's skips; key names equal the official state dict (`fixtures/parity/KEYS.md`, section 2).
//! docs/core.md ("EDT") lists what we decided where the official code leaves room.
pub mod config;
pub mod heads;
pub mod swin;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

pub use config::{EdtConfig, EdtTask};
use config::{HEAD_DEPTH, RGB_MEAN};
use heads::{bilinear_upsample, Head, Tail};
use swin::SwinBody;

use crate::hooks::{LayerHooks, NoHooks};

/// EDT for one task, with a method's modules (`hooks`, one per Swin block) beside each block's MLP.
pub struct Edt {
    pub config: EdtConfig,
    pub task: EdtTask,
    head: Head,
    pub body: SwinBody,
    tail: Tail,
}

impl Edt {
    /// Build from `vb` (official keys). `hooks`: one per block in [`EdtConfig::host_dims`]' layer order
    /// ([`Edt::no_hooks`] for the backbone alone).
    pub fn new(vb: VarBuilder, config: &EdtConfig, hooks: Vec<Box<dyn LayerHooks>>) -> Result<Self> {
        config.validate().map_err(candle_core::Error::Msg)?;
        let task = config.edt_task().map_err(candle_core::Error::Msg)?;
        let e = config.embed_dim;
        Ok(Self {
            config: config.clone(),
            task,
            head: Head::new(vb.pp(task.head_key()), task, e)?,
            body: SwinBody::new(vb.pp("body"), config, hooks)?,
            tail: Tail::new(vb.pp(task.tail_key()), task, e)?,
        })
    }

    /// No method in any block.
    pub fn no_hooks(config: &EdtConfig) -> Vec<Box<dyn LayerHooks>> {
        (0..config.num_blocks()).map(|_| Box::new(NoHooks) as Box<dyn LayerHooks>).collect()
    }

    /// A freshly initialised model whose weights live in `vm` (tests; pre-training later). The shifted-window
    /// masks are computed, as the official constructor does.
    pub fn fresh(
        vm: &candle_nn::VarMap,
        config: &EdtConfig,
        hooks: Vec<Box<dyn LayerHooks>>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::new(VarBuilder::from_varmap(vm, dtype, device), config, hooks)
    }

    /// Whether an (h, w) input fits this model: the head's down-sampling must divide it, and the body grid it
    /// leaves must be tiled by both branches' windows.
    pub fn check_input(&self, (h, w): (usize, usize)) -> std::result::Result<(), String> {
        let down = if self.task.downsamples() { 1 << HEAD_DEPTH } else { 1 };
        let m = self.config.grid_multiple() * down;
        if h == 0 || w == 0 || !h.is_multiple_of(m) || !w.is_multiple_of(m) {
            return Err(format!(
                "input is {h}x{w}: task {} needs sides that are multiples of {m} (its training size is {s}x{s})",
                self.config.task,
                s = self.task.input_size()
            ));
        }
        Ok(())
    }

    /// The official `forward_train`: x is (N, 3, H, W) in [0, 1]; the output (N, 3, H s, W s) on the same scale,
    /// not clamped. `train` only selects the methods' training behaviour (AdaptIR's BatchNorm statistics).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        if c != 3 {
            candle_core::bail!("input has {c} channels, expected 3 (RGB)");
        }
        self.check_input((h, w)).map_err(candle_core::Error::Msg)?;
        let mean = Tensor::new(&RGB_MEAN, x.device())?.to_dtype(x.dtype())?.reshape((1, 3, 1, 1))?;
        // img_range is 1: the official `(x - mean) * img_range` and `x / img_range + mean` are the mean alone.
        let x_inp = x.broadcast_sub(&mean)?;
        let (features, skips) = self.head.forward(&x_inp)?;
        let body = self.body.forward(&features, train)?;
        let y = self.tail.forward(&body, &skips)?;
        let y = match self.task {
            EdtTask::Sr(s) => (bilinear_upsample(&x_inp, s)? + y)?,
            // The official adds `x_inp[0]`, sample 0 of the batch, to every sample (written for a list of
            // inputs); each sample's own input is what it means, and the same at batch 1 (docs/core.md).
            _ => (x_inp + y)?,
        };
        y.broadcast_add(&mean)
    }

    /// Lower [`Edt::forward`] (eval mode) for the graph input `input`, (N, 3, S, S) at the task's training size
    /// S ([`EdtTask::input_size`]); returns the output, (N, 3, S s, S s). The body grid is then
    /// [`config::BODY_SIZE`] square, so the shifted-window masks are the checkpoint's own.
    pub fn lower(&self, b: &mut dyn adaptir_ops::graph::GraphBuilder, input: &str) -> Result<String> {
        let side = self.task.input_size();
        self.check_input((side, side)).map_err(candle_core::Error::Msg)?;
        let mean = b.constant_f32("edt_rgb_mean", &[1, 3, 1, 1], &RGB_MEAN)?;
        let x_inp = b.op("Sub", &[input, &mean], vec![])?;
        let (features, skips) = self.head.lower(b, &x_inp, &self.task.head_key())?;
        let grid = if self.task.downsamples() { side >> HEAD_DEPTH } else { side };
        let body = self.body.lower(b, &features, (grid, grid))?;
        let y = self.tail.lower(b, &body, &skips, &self.task.tail_key())?;
        let skip = match self.task {
            EdtTask::Sr(s) => heads::lower_bilinear_upsample(b, &x_inp, (side, side), s)?,
            _ => x_inp,
        };
        let y = b.op("Add", &[&skip, &y], vec![])?;
        b.op("Add", &[&y, &mean], vec![])
    }

    /// The buffers the methods keep up to date themselves (BatchNorm running statistics), by model path.
    pub fn method_buffers(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![];
        for b in self.body.blocks() {
            out.extend(b.hooks.buffers()?);
        }
        Ok(out)
    }
}

/// Key prefixes that only an EDT state dict has (its task heads and the Swin body).
pub const EDT_KEY_PREFIXES: &[&str] = &["head_sr_x", "head_dn_g", "head_dr_", "body.layers.", "body.patch_embed."];

/// Whether these state-dict keys are an EDT model's.
pub fn is_edt_state_dict<'a>(mut keys: impl Iterator<Item = &'a String>) -> bool {
    keys.any(|k| EDT_KEY_PREFIXES.iter().any(|p| k.starts_with(p)))
}

/// The task heads a state dict holds, as official module names (`head_sr_x2`, `head_dn_g30`, `head_dr_H`).
pub fn heads_in<'a>(keys: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut heads: Vec<String> =
        keys.filter(|k| k.starts_with("head_")).filter_map(|k| k.split('.').next().map(str::to_string)).collect();
    heads.sort();
    heads.dedup();
    heads
}

/// The block counts per stage of a state dict (`body.layers.{i}.residual_group.blocks.{j}.*`).
pub fn depths_in<'a>(keys: impl Iterator<Item = &'a String>) -> Vec<usize> {
    let mut depths: Vec<usize> = vec![];
    for k in keys {
        let Some(rest) = k.strip_prefix("body.layers.") else { continue };
        let mut parts = rest.split('.');
        let (Some(i), Some("residual_group"), Some("blocks"), Some(j)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Ok(i), Ok(j)) = (i.parse::<usize>(), j.parse::<usize>()) else { continue };
        if depths.len() <= i {
            depths.resize(i + 1, 0);
        }
        depths[i] = depths[i].max(j + 1);
    }
    depths
}
