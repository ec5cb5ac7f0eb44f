//! Training: `adaptir train` (a PETL method on a frozen backbone), `adaptir pretrain` (the multi-task IPT
//! backbone from scratch), `adaptir eval`. See `docs/training.md`.
//!
//! - [`optim`]: AdamW with open state, and the step schedule.
//! - [`checkpoint`]: atomic, resumable checkpoints.
//! - [`batch`]: in-memory training data and seeded batches.
//! - [`runner`]: the loop shared by both trainings.
//! - [`init`]: seeded initialisation (candle's own is unseeded).
//! - [`progress`]: the progress bar and the curve PNG.
pub mod adapt;
pub mod batch;
pub mod checkpoint;
pub mod eval;
pub mod init;
pub mod optim;
pub mod pretrain;
pub mod pretrain_edt;
pub mod progress;
pub mod runner;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::backbone::config::MODEL_TASK_NAMES;
use crate::backbone::{Ipt, IptConfig};
use crate::data::pairs::list_images;
use crate::data::{Image, Task};
use crate::error::{Error, Result};
use batch::Source;

/// Metadata format of a backbone file written by `pretrain` (its config travels with it).
pub const BACKBONE_FORMAT: &str = "adaptir-backbone";

/// The data task that synthesises training inputs for a model task name, or `None` for tasks that need real
/// pairs (`realnoise`). Pre-training uses heavy rain for `derain`; adapters train on light rain.
pub fn data_task(task: &str) -> Result<Option<Task>> {
    Ok(Some(match task {
        "sr2" => Task::Sr(2),
        "sr3" => Task::Sr(3),
        "sr4" => Task::Sr(4),
        "derain" => Task::RainLight,
        "denoise30" => Task::Noise(30),
        "denoise50" => Task::Noise(50),
        "lr4-noise30" => Task::Lr4Noise30,
        "lr4-jpeg30" => Task::Lr4Jpeg30,
        "lr2-noise30" => Task::Lr2Noise30,
        "lowlight" => Task::LowLight,
        "realnoise" => return Ok(None),
        other => {
            return Err(Error::invalid(format!(
                "--task `{other}`: the backbone has no head for it; expected one of {MODEL_TASK_NAMES}"
            )))
        }
    }))
}

/// Head / tail index of a task name on the backbone, with the error the CLI prints.
pub fn head_of(task: &str, config: &IptConfig) -> Result<usize> {
    let idx = crate::backbone::config::task_index(task).ok_or_else(|| {
        Error::invalid(format!("--task `{task}`: the backbone has no head for it; expected one of {MODEL_TASK_NAMES}"))
    })?;
    if idx >= config.num_tasks {
        return Err(Error::invalid(format!(
            "--task `{task}` uses head {idx}, but the backbone has {} heads",
            config.num_tasks
        )));
    }
    Ok(idx)
}

/// The stem held out of a training folder for validation: the last file by name, if there are at least two.
pub fn held_out(dir: &Path) -> Result<Vec<String>> {
    let files = list_images(dir)?;
    Ok(if files.len() >= 2 { files.keys().last().cloned().into_iter().collect() } else { vec![] })
}

/// The stems held out of several training folders: [`held_out`] of each, in order.
pub fn held_out_dirs(dirs: &[&Path]) -> Result<Vec<String>> {
    let mut out = vec![];
    for d in dirs {
        out.extend(held_out(d)?);
    }
    Ok(out)
}

/// The clean photos of `--data` folders (`pretrain`, `train`): the training set, and the held-out photos (the
/// last by name of each folder, less `--exclude`d stems) with their source for validation; photos are cut to
/// `crop`-sided crops. An `--exclude` stem that names no photo of the folders is an error: it is there to keep a
/// benchmark image out, and a misspelt one would keep nothing out.
pub struct Photos {
    pub train: Source,
    pub val: Option<Source>,
    pub held_out: Vec<String>,
}

impl Photos {
    pub fn load(data: &[PathBuf], exclude: &[String], crop: usize) -> Result<Self> {
        let dirs: Vec<&Path> = data.iter().map(|d| d.as_path()).collect();
        let mut stems = std::collections::BTreeSet::new();
        for d in &dirs {
            stems.extend(list_images(d)?.into_keys());
        }
        if let Some(x) = exclude.iter().find(|x| !stems.contains(x.as_str())) {
            let folders: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            return Err(Error::invalid(format!(
                "--exclude {x}: no photo with that file stem in {}; expected a stem such as `{}`",
                folders.join(", "),
                stems.iter().next().map(String::as_str).unwrap_or("-")
            )));
        }
        let excluded = |s: &str| exclude.iter().any(|x| x == s);
        let held_out: Vec<String> = held_out_dirs(&dirs)?.into_iter().filter(|h| !excluded(h)).collect();
        let held = |s: &str| held_out.iter().any(|h| h == s);
        let train = Source::clean_dirs(&dirs, crop, &|s: &str| !held(s) && !excluded(s))?;
        let val = if held_out.is_empty() { None } else { Source::clean_dirs(&dirs, crop, &held).ok() };
        Ok(Self { train, val, held_out })
    }
}

/// The named preset, else the IPT config a backbone file records: the one reader of `crate::model` (metadata
/// `ipt_config` as `pretrain` writes it, or `config.json` beside the file).
pub fn backbone_config(path: &Path, preset: Option<&str>) -> Result<IptConfig> {
    match preset {
        Some(p) => IptConfig::preset(p),
        None => crate::model::backbone_config(path).map_err(|e| match e {
            Error::File { path, msg } => {
                Error::File { path, msg: format!("{msg}; for training, --preset NAME gives a size") }
            }
            other => other,
        }),
    }
}

/// Write a backbone: every tensor of the model by its official key, with the config and a summary in the
/// metadata. Deterministic bytes (sorted tensors; metadata keys sorted), written atomically.
pub fn save_backbone(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    config: &IptConfig,
    summary: &serde_json::Value,
) -> Result<()> {
    save_backbone_with(path, tensors, ("ipt_config", serde_json::to_string(config).unwrap_or_default()), summary)
}

/// [`save_backbone`] with the config (as JSON text) under another metadata key (`edt_config` for EDT).
pub fn save_backbone_with(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    (config_key, config): (&str, String),
    summary: &serde_json::Value,
) -> Result<()> {
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), BACKBONE_FORMAT.to_string());
    meta.insert(config_key.to_string(), config);
    meta.insert("training".to_string(), summary.to_string());
    let data: Vec<(String, Tensor)> = tensors.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let bytes = safetensors::tensor::serialize(data, Some(meta))
        .map_err(|e| Error::file(path, format!("cannot serialise: {e}")))?;
    let bytes = sorted_header(&bytes).map_err(|e| Error::file(path, format!("cannot serialise: {e}")))?;
    Ok(crate::fsutil::write_atomic(path, &bytes)?)
}

/// A safetensors buffer with its JSON header's keys sorted at every level, so the same tensors and metadata give
/// the same bytes in every process (safetensors writes `__metadata__` in `HashMap` order, which is random per
/// process; without this a resumed `pretrain` ended with the same tensors but different bytes). The data
/// section and its offsets are unchanged; the header stays padded to 8 bytes with spaces. The adapter file does
/// the same (`peft::file`).
fn sorted_header(bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let sorted: BTreeMap<String, serde_json::Value> = m.into_iter().map(|(k, v)| (k, sort(v))).collect();
                serde_json::Value::Object(sorted.into_iter().collect())
            }
            other => other,
        }
    }
    let len: [u8; 8] = bytes.get(..8).and_then(|b| b.try_into().ok()).ok_or("short buffer")?;
    let n = usize::try_from(u64::from_le_bytes(len)).map_err(|_| "header too long")?;
    let header = bytes.get(8..8usize.saturating_add(n)).ok_or("short header")?;
    let header: serde_json::Value = serde_json::from_slice(header).map_err(|e| e.to_string())?;
    let mut text = serde_json::to_vec(&sort(header)).map_err(|e| e.to_string())?;
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

/// Clamp a model output (N, 3, H, W) and turn it into images.
pub fn to_images(t: &Tensor) -> Result<Vec<Image>> {
    let (n, _, h, w) = t.dims4()?;
    let t = t.clamp(0f32, 1f32)?;
    (0..n)
        .map(|i| {
            let v: Vec<f32> = t.get(i)?.flatten_all()?.to_vec1()?;
            Ok(Image::from_chw(w, h, 3, &v)?)
        })
        .collect()
}

/// Mean RGB PSNR (8-bit, no crop) of a model on fixed validation patches of one task.
pub fn patch_psnr(model: &Ipt, task: usize, x: &Tensor, targets: &[Image]) -> Result<f64> {
    patch_psnr_with(&mut |x| Ok(model.forward(x, task, false)?), x, targets)
}

/// [`patch_psnr`] of any model, given as its eval-mode forward.
pub fn patch_psnr_with(
    forward: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    x: &Tensor,
    targets: &[Image],
) -> Result<f64> {
    let y = to_images(&forward(x)?)?;
    let opts = crate::metrics::MetricOptions::default();
    let mut sum = 0.0;
    for (a, b) in y.iter().zip(targets) {
        let p = crate::metrics::psnr(a, b, &opts)?;
        sum += if p.is_finite() { p } else { 100.0 };
    }
    Ok(sum / targets.len().max(1) as f64)
}

/// Record in a checkpoint fingerprint what of the process's CPU mode changes a run's bits (`--flush-denormals`).
/// Only flushed runs record it, so the checkpoints of earlier runs still resume.
pub(crate) fn record_run_mode(fingerprint: &mut serde_json::Value) {
    if crate::device::denormals_flushed() {
        fingerprint["flush_denormals"] = serde_json::json!(true);
    }
}

/// The checkpoint path of an output: `X.safetensors` -> `X.ckpt.safetensors`.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    out.with_file_name(format!("{stem}.ckpt.safetensors"))
}

/// The curve PNG of an output: `X.safetensors` -> `X.curve.png`.
pub fn curve_path(out: &Path) -> PathBuf {
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    out.with_file_name(format!("{stem}.curve.png"))
}

/// The device training and evaluation run on: the CLI's `--device` (crate::device), the CPU by default.
pub fn device() -> Device {
    crate::device::current()
}

/// The config file written beside an EDT backbone: `X.safetensors` -> `X.edt.json`.
pub fn edt_config_path(out: &Path) -> PathBuf {
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    out.with_file_name(format!("{stem}.edt.json"))
}

/// Write an EDT backbone (f32 tensors, config and summary in the metadata) and its config JSON beside it.
pub fn write_edt_backbone(
    out: &Path,
    tensors: &BTreeMap<String, Tensor>,
    config: &crate::backbone::EdtConfig,
    summary: &serde_json::Value,
) -> Result<()> {
    let t: BTreeMap<String, Tensor> =
        tensors.iter().map(|(k, v)| Ok((k.clone(), v.to_dtype(candle_core::DType::F32)?))).collect::<Result<_>>()?;
    let text = serde_json::to_string(config).unwrap_or_default();
    save_backbone_with(out, &t, ("edt_config", text.clone()), summary)?;
    let path = edt_config_path(out);
    Ok(crate::fsutil::write_atomic(&path, format!("{text}\n").as_bytes())?)
}
