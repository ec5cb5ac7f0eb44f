//! `adaptir train`: a PETL method on a frozen backbone for one task (`train::adapt`); writes an adapter file.
use std::path::PathBuf;

use super::{Report, TrainRunArgs};
use crate::error::{Error, Result};
use crate::peft::{METHODS, PRETRAIN};
use crate::train::adapt::{train, TrainArgs, TrainReport};

/// `--method`'s help: the methods of the registry that train something.
fn method_help() -> String {
    let names: Vec<&str> = METHODS.iter().map(|m| m.name).filter(|n| *n != PRETRAIN.name).collect();
    let list = match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(", "),
    };
    format!("{list} (`adaptir methods` lists them with their sizes)")
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, help = method_help())]
    pub method: String,
    /// The method's JSON configuration (default: its defaults).
    #[arg(long)]
    pub method_config: Option<String>,
    /// sr2, sr3, sr4, derain, denoise30, denoise50, lr4-noise30, lr4-jpeg30, lr2-noise30, lowlight or realnoise.
    #[arg(long)]
    pub task: String,
    /// Folder of clean photos (the degraded inputs are synthesised); repeat for several folders. The last image by
    /// name of each folder is held out for validation.
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// A file stem never to train or validate on (e.g. a photo that is also a benchmark image); repeatable.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Folder of real pairs: clean/ plus one folder of degraded images (realnoise).
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// The frozen backbone (.safetensors written by `pretrain`, or any official-key state dict with --preset).
    #[arg(long)]
    pub backbone: PathBuf,
    /// Backbone size preset, for a backbone file that records no config.
    #[arg(long)]
    pub preset: Option<String>,
    /// The backbone's config JSON. An EDT config ({"arch": "edt", "task": "sr2", ...}: its task names the head
    /// the checkpoint holds) makes --backbone an official EDT checkpoint; --task is then any task of that head's
    /// scale, and --patch its input size (48 for SR, 192 for denoise and derain).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Training steps.
    #[arg(long)]
    pub steps: usize,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Side of the training patches: the backbone's patch size (EDT: the head's input size).
    #[arg(long, default_value_t = 48)]
    pub patch: usize,
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Adapter file to write; the checkpoint is X.ckpt.safetensors and the curve X.curve.png beside it.
    #[arg(long)]
    pub out: PathBuf,
    /// Steps between held-out evaluations.
    #[arg(long, default_value_t = 50)]
    pub eval_every: usize,
    #[command(flatten)]
    pub run: TrainRunArgs,
}

pub struct TrainOutput {
    pub report: TrainReport,
    pub steps: usize,
    pub out: PathBuf,
}

pub fn run(a: &Args) -> Result<TrainOutput> {
    a.run.prepare()?;
    super::prepare_training_outputs(&a.out)?;
    let method_config = match &a.method_config {
        Some(s) => {
            Some(serde_json::from_str(s).map_err(|e| Error::invalid(format!("--method-config is not JSON: {e}")))?)
        }
        None => None,
    };
    let report = train(&TrainArgs {
        method: a.method.clone(),
        method_config,
        task: a.task.clone(),
        data: a.data.clone(),
        exclude: a.exclude.clone(),
        pairs: a.pairs.clone(),
        backbone: a.backbone.clone(),
        preset: a.preset.clone(),
        config: a.config.clone(),
        steps: a.steps,
        batch: a.batch,
        patch: a.patch,
        lr: a.lr,
        seed: a.run.seed,
        out: a.out.clone(),
        resume: a.run.resume,
        checkpoint_every: a.run.checkpoint_every,
        eval_every: a.eval_every,
        stop_after: a.run.stop_after,
        quiet: false,
    })?;
    Ok(TrainOutput { report, steps: a.steps, out: a.out.clone() })
}

impl Report for TrainOutput {
    fn render(&self) -> String {
        let r = &self.report;
        let mut s = format!(
            "{} {} steps of {} in {:.1} s ({} trainable parameters), loss {}, held-out PSNR {}; checkpoint {}\n",
            if r.finished { "finished:" } else { "stopped:" },
            r.steps,
            self.steps,
            r.seconds,
            r.trainable,
            r.final_loss.map(|l| format!("{l:.5}")).unwrap_or_else(|| "-".into()),
            r.final_psnr.map(|p| format!("{p:.2} dB")).unwrap_or_else(|| "-".into()),
            r.checkpoint.display()
        );
        if r.finished {
            s += &format!("wrote {}\n", self.out.display());
        }
        s
    }
}
