//! `adaptir pretrain`: an IPT backbone from scratch on clean photos, all tasks (`train::pretrain`), or an EDT one
//! for its one task (`--preset edt-tiny`, `train::pretrain_edt`); or, with
//! `--export-checkpoint`, the backbone of an unfinished run.
use std::path::PathBuf;

use super::{Report, TrainRunArgs};
use crate::error::{Error, Result};
use crate::train::pretrain::{backbone_from_checkpoint, pretrain, PretrainArgs, PretrainReport};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Backbone size preset: ipt-tiny (the shipped default), ipt-small, ipt-base (all six IPT tasks), or edt-tiny
    /// (EDT, its one task: x2; also writes the `--config` for it beside --out, X.edt.json).
    #[arg(long, default_value = "ipt-tiny")]
    pub preset: String,
    /// Folder of clean training photos (not recursive); repeat for several folders. The last image by name of
    /// each folder is held out for validation.
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// A file stem never to train on (e.g. a photo that is also a benchmark image); repeatable.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Start from this backbone's weights (same preset) instead of the seeded initialisation; the optimizer
    /// starts afresh. Recorded (sha256) in the checkpoint and the backbone's metadata.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Training steps.
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// Output backbone (.safetensors); the checkpoint is X.ckpt.safetensors beside it.
    #[arg(long, default_value = "backbone.safetensors")]
    pub out: PathBuf,
    /// Steps between held-out evaluations.
    #[arg(long, default_value_t = 100)]
    pub eval_every: usize,
    /// Instead of training: write the backbone of the checkpoint beside --out (an unfinished run) to --out.
    #[arg(long)]
    pub export_checkpoint: bool,
    #[command(flatten)]
    pub run: TrainRunArgs,
}

pub enum PretrainOutput {
    Trained {
        report: PretrainReport,
        steps: usize,
        out: PathBuf,
        /// An EDT preset's config file, written beside `out` (`--config` for train / eval / forward / export).
        config_file: Option<PathBuf>,
    },
    /// `--export-checkpoint`: the checkpoint read, its step, the backbone written.
    Exported { checkpoint: PathBuf, step: usize, out: PathBuf },
}

pub fn run(a: &Args) -> Result<PretrainOutput> {
    a.run.prepare()?;
    super::prepare_training_outputs(&a.out)?;
    if a.export_checkpoint {
        let checkpoint = crate::train::checkpoint_path(&a.out);
        let step = backbone_from_checkpoint(&checkpoint, &a.out)?;
        return Ok(PretrainOutput::Exported { checkpoint, step, out: a.out.clone() });
    }
    let (false, Some(steps)) = (a.data.is_empty(), a.steps) else {
        return Err(Error::invalid("pretrain needs --data DIR and --steps N"));
    };
    let data = a.data.clone();
    let args = PretrainArgs {
        preset: a.preset.clone(),
        data,
        exclude: a.exclude.clone(),
        init: a.init.clone(),
        steps,
        batch: a.batch,
        lr: a.lr,
        seed: a.run.seed,
        out: a.out.clone(),
        resume: a.run.resume,
        checkpoint_every: a.run.checkpoint_every,
        eval_every: a.eval_every,
        stop_after: a.run.stop_after,
        quiet: false,
    };
    // EDT presets train one task (train::pretrain_edt); the IPT ones all six (train::pretrain).
    let edt = crate::backbone::EdtConfig::preset(&a.preset);
    let config_file = edt.as_ref().map(|_| crate::train::edt_config_path(&a.out));
    let report = match edt {
        Some(config) => crate::train::pretrain_edt::pretrain_edt(&args, config)?,
        None => pretrain(&args)?,
    };
    Ok(PretrainOutput::Trained { report, steps, out: a.out.clone(), config_file })
}

impl Report for PretrainOutput {
    fn render(&self) -> String {
        match self {
            PretrainOutput::Exported { checkpoint, step, out } => {
                format!("wrote the backbone of {} (step {step}) to {}\n", checkpoint.display(), out.display())
            }
            PretrainOutput::Trained { report: r, steps, out, config_file } => {
                let mut s = format!(
                    "{} {} steps of {steps} in {:.1} s ({} parameters), held-out PSNR {}; checkpoint {}\n",
                    if r.finished { "finished:" } else { "stopped:" },
                    r.steps,
                    r.seconds,
                    r.params,
                    r.final_psnr.map(|p| format!("{p:.2} dB")).unwrap_or_else(|| "-".into()),
                    r.checkpoint.display()
                );
                if r.finished {
                    s += &format!("wrote {}\n", out.display());
                    if let Some(c) = config_file {
                        s += &format!("wrote {} (its --config)\n", c.display());
                    }
                }
                s
            }
        }
    }
}
