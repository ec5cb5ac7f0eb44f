//! `adaptir eval`: an adapter (or the backbone alone) on whole images, PSNR / SSIM against a simple baseline
//! (`train::eval`).
use std::path::PathBuf;

use super::{DeviceArgs, Report};
use crate::error::{Error, Result};
use crate::train::eval::{eval, eval_with, EvalArgs, EvalReport, ExternalRestore};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The adapter file to evaluate.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Backbone file (default with --adapter: backbone.safetensors beside it, else models/<its backbone>/ in the
    /// working folder or in the repository of this executable).
    #[arg(long)]
    pub backbone: Option<PathBuf>,
    /// `pretrain`: evaluate the backbone without adapter.
    #[arg(long)]
    pub method: Option<String>,
    /// Backbone size preset, for a backbone file that records no config.
    #[arg(long)]
    pub preset: Option<String>,
    /// With --method pretrain: an EDT config ({"arch": "edt", "task": ...}) makes --backbone an official EDT
    /// checkpoint (adapters record their backbone's config themselves).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Task (default with --adapter: the adapter's).
    #[arg(long)]
    pub task: Option<String>,
    /// Folder of clean images (degraded inputs synthesised with --seed per file).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Folder of real pairs (clean/ and a degraded folder).
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// Print JSON: {"task", "psnr", "ssim", "images": [...], ...}.
    #[arg(long)]
    pub json: bool,
    /// Write input | output | target side by side, one PNG per image, to this folder.
    #[arg(long)]
    pub save_images: Option<PathBuf>,
    /// Seed of the synthesised degradations (each file's also depends on its stem).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Only the first N images by name.
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Restore with this exported file of the adapter instead of candle, e.g. an `export --int8` file, to measure
    /// what it costs against the f32 model on the same images.
    #[arg(long, value_name = "FILE", requires = "adapter")]
    pub onnx: Option<std::path::PathBuf>,
    /// The runtime that runs --onnx: onnx (ONNX Runtime, CPU), tract or openvino.
    #[arg(long, default_value = "onnx", requires = "onnx")]
    pub engine: String,
    /// With --engine openvino: f32, or bf16 (bf16 inference on the f32 file).
    #[arg(long, default_value = "f32", requires = "onnx")]
    pub precision: String,
}

pub struct EvalOutput {
    pub report: EvalReport,
    pub json: bool,
}

pub fn run(a: &Args) -> Result<EvalOutput> {
    a.device.select()?;
    let args = EvalArgs {
        adapter: a.adapter.clone(),
        backbone: a.backbone.clone(),
        method: a.method.clone(),
        preset: a.preset.clone(),
        config: a.config.clone(),
        task: a.task.clone(),
        data: a.data.clone(),
        pairs: a.pairs.clone(),
        save_images: a.save_images.clone(),
        seed: a.seed,
        limit: a.limit,
    };
    let report = match (&a.onnx, &a.adapter) {
        (Some(file), Some(adapter)) => {
            use crate::runtime::restorer::{Engine, Restorer, RestorerArgs};
            let engine: Engine = a.engine.parse()?;
            if engine == Engine::Candle {
                return Err(Error::invalid("--engine: --onnx runs in onnx, tract or openvino, found `candle`"));
            }
            let precision: crate::runtime::Precision = a.precision.parse()?;
            let mut restorer = Restorer::new(&RestorerArgs {
                adapter,
                backbone: a.backbone.as_deref(),
                engine,
                onnx: Some(file),
                run: crate::runtime::session::RunOptions { precision, ..Default::default() },
            })?;
            let mut restore =
                |img: &crate::data::Image| restorer.restore(img, crate::restore::Tiling::default(), &mut |_| {});
            let runtime = match engine {
                Engine::Tract => "tract".to_string(),
                Engine::OpenVino => format!("OpenVINO ({precision} inference)"),
                _ => "ONNX Runtime".to_string(),
            };
            let what = format!("ONNX file {} in {runtime}", file.display());
            eval_with(&args, Some(ExternalRestore { what, restore: &mut restore }))?
        }
        _ => eval(&args)?,
    };
    Ok(EvalOutput { report, json: a.json })
}

impl Report for EvalOutput {
    fn render(&self) -> String {
        let r = &self.report;
        if self.json {
            return serde_json::to_string_pretty(r).unwrap_or_default() + "\n";
        }
        let mut s = format!("{} on {} ({}):\n", r.task, r.model, r.metric);
        for i in &r.images {
            s += &format!(
                "  {:<24} {:>7.3} dB  SSIM {:.4}   ({} {:.3} dB, {:.4})\n",
                i.name, i.psnr, i.ssim, r.baseline, i.baseline_psnr, i.baseline_ssim
            );
        }
        s += &format!(
            "mean: {:.3} dB  SSIM {:.4}   ({} {:.3} dB, {:.4}) over {} images\n",
            r.psnr,
            r.ssim,
            r.baseline,
            r.baseline_psnr,
            r.baseline_ssim,
            r.images.len()
        );
        s
    }
}
