//! `adaptir eval`: whole images through the tiled model (`restore`), PSNR / SSIM per image and mean, against
//! the simple baseline (bicubic upscaling of the input for scaled tasks, the degraded input itself otherwise).
//!
//! Inputs: clean images (`--data`; the degraded input is synthesised with a per-file seed, as
//! `adaptir degrade` does) or real pairs (`--pairs`). Metrics as the papers: Y channel with `scale` pixels
//! cropped from each border for SR and the hybrids, Y without crop for deraining, RGB for denoising, low light
//! and real noise.
use std::path::PathBuf;

use candle_core::DType;
use serde::Serialize;

use crate::backbone::edt::config::is_edt_config_file;
use crate::backbone::EdtConfig;
use crate::data::degrade::imresize;
use crate::data::pairs::{list_images, PairedFolder};
use crate::data::seed::stem_seed;
use crate::data::{load_image, save_png, BitDepth, Image};
use crate::error::{Error, Result};
use crate::metrics::{evaluate, MetricOptions};
use crate::model::Net;
use crate::peft::file::AdapterFile;
use crate::restore::{restore_with, Tiling};

#[derive(Clone, Debug, Default)]
pub struct EvalArgs {
    pub adapter: Option<PathBuf>,
    /// Backbone file; with an adapter, found by `crate::model`'s rule (`backbone.safetensors` beside it first).
    pub backbone: Option<PathBuf>,
    /// `pretrain` (the backbone alone) when there is no adapter.
    pub method: Option<String>,
    pub preset: Option<String>,
    /// `--method pretrain` on an EDT checkpoint: its EDT config (the task is the config's).
    pub config: Option<PathBuf>,
    pub task: Option<String>,
    pub data: Option<PathBuf>,
    pub pairs: Option<PathBuf>,
    pub save_images: Option<PathBuf>,
    pub seed: u64,
    /// Evaluate only the first N images (by name).
    pub limit: Option<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ImageScore {
    pub name: String,
    pub psnr: f64,
    pub ssim: f64,
    pub baseline_psnr: f64,
    pub baseline_ssim: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub task: String,
    pub model: String,
    pub metric: String,
    pub psnr: f64,
    pub ssim: f64,
    /// `bicubic` or `input`.
    pub baseline: String,
    pub baseline_psnr: f64,
    pub baseline_ssim: f64,
    pub images: Vec<ImageScore>,
}

/// The model to evaluate (`crate::model`: the backbone found by its rule, checked against the adapter), its task
/// and a description.
/// IPT with the head of `task`.
fn ipt_net(ipt: crate::backbone::Ipt, task: &str) -> Result<Net> {
    let head = super::head_of(task, &ipt.config)?;
    Ok(Net::Ipt(Box::new(ipt), head))
}

fn load_model(a: &EvalArgs) -> Result<(Net, String, String)> {
    let dev = super::device();
    let edt_adapter = match &a.adapter {
        Some(ad) => Some(AdapterFile::load(ad)?).filter(|f| f.meta.backbone_config.edt().is_some()),
        None => None,
    };
    match (&a.adapter, &a.method) {
        // An adapter trained on an EDT checkpoint: that checkpoint, given or found beside the adapter.
        (Some(ad), _) if edt_adapter.is_some() => {
            let file = edt_adapter.ok_or_else(|| Error::file(ad, "not an EDT adapter"))?;
            let task = a.task.clone().unwrap_or_else(|| file.meta.task.clone());
            if task != file.meta.task {
                return Err(Error::file(
                    ad,
                    format!("was trained for task `{}`, --task says `{task}`", file.meta.task),
                ));
            }
            let beside: Vec<&std::path::Path> = file.path.parent().into_iter().collect();
            let bb = crate::model::find_backbone(a.backbone.as_deref(), &file.meta.backbone, &beside, "")?;
            let model = crate::model::edt::load_edt_with_adapter(&bb, &file, DType::F32, &dev)?;
            let desc = format!("{} adapter {} on EDT {}", file.meta.method, ad.display(), bb.display());
            Ok((Net::Edt(Box::new(model)), task, desc))
        }
        (None, Some(m)) if m == crate::peft::PRETRAIN.name && a.config.as_deref().is_some_and(is_edt_config_file) => {
            let bb = a.backbone.clone().ok_or_else(|| Error::invalid("--method pretrain needs --backbone FILE"))?;
            let path = a.config.as_deref().unwrap_or(std::path::Path::new(""));
            let config = EdtConfig::from_json_file(path)?;
            let task = a.task.clone().unwrap_or_else(|| config.task.clone());
            let (model, sizes) = crate::model::edt::load_edt(&bb, &config, DType::F32, &dev)?;
            let desc = match sizes {
                Some(_) => format!("EDT {} with the AdaptIR modules it holds", bb.display()),
                None => format!("EDT {} (no adapter)", bb.display()),
            };
            Ok((Net::Edt(Box::new(model)), task, desc))
        }
        (Some(ad), _) => {
            let file = AdapterFile::load(ad)?;
            let task = a.task.clone().unwrap_or_else(|| file.meta.task.clone());
            if task != file.meta.task {
                return Err(Error::file(
                    ad,
                    format!("was trained for task `{}`, --task says `{task}`", file.meta.task),
                ));
            }
            let desc = format!("{} adapter {}", file.meta.method, ad.display());
            let model = crate::model::load_model_with(a.backbone.as_deref(), Some(file), None, DType::F32, &dev)?;
            Ok((ipt_net(model.ipt, &task)?, task, desc))
        }
        (None, Some(m)) if m == crate::peft::PRETRAIN.name => {
            let bb = a.backbone.clone().ok_or_else(|| Error::invalid("--method pretrain needs --backbone FILE"))?;
            let task = a.task.clone().ok_or_else(|| Error::invalid("--method pretrain needs --task"))?;
            let config = super::backbone_config(&bb, a.preset.as_deref())?;
            let model = crate::model::load_model_with(Some(&bb), None, Some(config), DType::F32, &dev)?;
            Ok((ipt_net(model.ipt, &task)?, task, format!("backbone {} (no adapter)", bb.display())))
        }
        (None, Some(m)) => Err(Error::invalid(format!(
            "--method {m} without --adapter: only `pretrain` (the backbone alone) needs no adapter file"
        ))),
        (None, None) => Err(Error::invalid("give --adapter FILE, or --backbone FILE --method pretrain")),
    }
}

/// (name, degraded input, clean target) of every evaluation image.
fn images(a: &EvalArgs, task: &str, scale: usize) -> Result<Vec<(String, Image, Image)>> {
    let mut out = vec![];
    match (&a.pairs, &a.data) {
        (Some(p), _) => {
            let (d, c) = super::batch::pair_folders(p)?;
            let f = PairedFolder::open(&d, &c, scale)?;
            for i in 0..f.len().min(a.limit.unwrap_or(usize::MAX)) {
                let pair = f.load(i)?;
                out.push((pair.name, pair.input, pair.target));
            }
        }
        (None, Some(d)) => {
            let Some(t) = super::data_task(task)? else {
                return Err(Error::invalid(format!("--task {task} is evaluated on real pairs: give --pairs DIR")));
            };
            for (stem, path) in list_images(d)?.into_iter().take(a.limit.unwrap_or(usize::MAX)) {
                let clean = t.target(&load_image(&path)?)?;
                let input = t.apply(&clean, stem_seed(a.seed, &stem))?;
                out.push((stem, input, clean));
            }
        }
        (None, None) => return Err(Error::invalid("give --data DIR (clean images) or --pairs DIR (real pairs)")),
    }
    if out.is_empty() {
        return Err(Error::invalid("no image to evaluate: the folder has no PNG/JPEG/BMP/TIFF file"));
    }
    Ok(out)
}

/// The metric convention of a task (see the module doc).
pub fn metric_for(task: &str, scale: usize) -> MetricOptions {
    match task {
        "sr2" | "sr3" | "sr4" | "lr4-noise30" | "lr4-jpeg30" | "lr2-noise30" => {
            MetricOptions { y_channel: true, crop_border: scale }
        }
        "derain" => MetricOptions { y_channel: true, crop_border: 0 },
        _ => MetricOptions { y_channel: false, crop_border: 0 },
    }
}

/// Restores one whole image with another engine than candle (`eval --onnx`: an exported file in ONNX Runtime,
/// with restore's tiling), and says what it is.
pub struct ExternalRestore<'a> {
    pub what: String,
    pub restore: &'a mut dyn FnMut(&Image) -> Result<Image>,
}

pub fn eval(a: &EvalArgs) -> Result<EvalReport> {
    eval_with(a, None)
}

/// [`eval`], the images restored by `external` when given (the candle model still defines task and scale).
pub fn eval_with(a: &EvalArgs, mut external: Option<ExternalRestore>) -> Result<EvalReport> {
    let (model, task, desc) = load_model(a)?;
    let desc = match &external {
        Some(e) => format!("{} ({desc})", e.what),
        None => desc,
    };
    let (p, scale) = (model.input_size(), model.scale());
    let opts = metric_for(&task, scale);
    let dev = super::device();
    if let Some(dir) = &a.save_images {
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create folder: {e}")))?;
    }
    let mut rows = vec![];
    for (name, input, target) in images(a, &task, scale)? {
        if input.width * scale != target.width || input.height * scale != target.height {
            return Err(Error::invalid(format!(
                "{name}: target {}x{} is not {scale} x the input {}x{}",
                target.width, target.height, input.width, input.height
            )));
        }
        let output = match external.as_mut() {
            Some(e) => (e.restore)(&input)?,
            None => restore_with(p, scale, &input, Tiling::default(), &dev, &mut |x| Ok(model.forward(x, false)?))?,
        };
        let base = if scale > 1 { imresize(&input, target.width, target.height)? } else { input.clone() };
        let m = evaluate(&output, &target, &opts)?;
        let b = evaluate(&base, &target, &opts)?;
        if let Some(dir) = &a.save_images {
            save_png(dir.join(format!("{name}.png")), &side_by_side(&[&base, &output, &target])?, BitDepth::Eight)?;
        }
        rows.push(ImageScore { name, psnr: m.psnr, ssim: m.ssim, baseline_psnr: b.psnr, baseline_ssim: b.ssim });
    }
    let mean = |f: &dyn Fn(&ImageScore) -> f64| rows.iter().map(f).sum::<f64>() / rows.len() as f64;
    Ok(EvalReport {
        task,
        model: desc,
        metric: format!(
            "{}{}",
            if opts.y_channel { "Y" } else { "RGB" },
            if opts.crop_border > 0 { format!(", crop {}", opts.crop_border) } else { String::new() }
        ),
        psnr: mean(&|r| r.psnr),
        ssim: mean(&|r| r.ssim),
        baseline: if scale > 1 { "bicubic".into() } else { "input".into() },
        baseline_psnr: mean(&|r| r.baseline_psnr),
        baseline_ssim: mean(&|r| r.baseline_ssim),
        images: rows,
    })
}

/// Images of equal height placed left to right.
fn side_by_side(imgs: &[&Image]) -> Result<Image> {
    let h = imgs[0].height;
    let w: usize = imgs.iter().map(|i| i.width).sum();
    let mut out = Image::zeros(w, h, 3);
    let mut x0 = 0;
    for img in imgs {
        for y in 0..h.min(img.height) {
            for x in 0..img.width {
                for c in 0..3 {
                    out.data[(y * w + x0 + x) * 3 + c] = img.get(x, y, c);
                }
            }
        }
        x0 += img.width;
    }
    Ok(out)
}
