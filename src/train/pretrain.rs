//! `adaptir pretrain`: the IPT backbone from scratch on clean photos, multi-task as IPT: one shared body,
//! one head and tail per task (sr2, sr3, sr4, derain, denoise30, denoise50). Step `s` trains task `s mod 6`
//! (round robin: every task gets the same number of steps, and a batch is one task, as IPT's per-task
//! batches); the degraded inputs are synthesised from the clean photos (derain: heavy synthetic rain).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use candle_nn::VarMap;
use serde_json::json;

use super::batch::batch_tensors;
use super::checkpoint::{Checkpoint, History};
use super::runner::{optimizer, restore_vars, run, trainable, RunSpec};
use super::Photos;
use crate::backbone::edt::config::{EdtConfig, PRESETS as EDT_PRESETS};
use crate::backbone::IptConfig;
use crate::data::{Image, Task};
use crate::error::{Error, Result};

/// (head index, task name, synthesis) for pre-training.
pub const TASKS: [(usize, &str, Task); 6] = [
    (0, "sr2", Task::Sr(2)),
    (1, "sr3", Task::Sr(3)),
    (2, "sr4", Task::Sr(4)),
    (3, "derain", Task::RainHeavy),
    (4, "denoise30", Task::Noise(30)),
    (5, "denoise50", Task::Noise(50)),
];

/// Validation patches per task, from the held-out image(s).
pub const VAL_PATCHES: usize = 4;

pub struct PretrainArgs {
    pub preset: String,
    /// Folders of clean photos (each not recursive); the last image by name of each is held out.
    pub data: Vec<PathBuf>,
    /// File stems never trained on (e.g. photos that are also benchmark images).
    pub exclude: Vec<String>,
    /// Start from this backbone's weights (same config) instead of the seeded initialisation.
    pub init: Option<PathBuf>,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
    pub out: PathBuf,
    pub resume: bool,
    pub checkpoint_every: usize,
    pub eval_every: usize,
    pub stop_after: Option<usize>,
    pub quiet: bool,
}

pub struct PretrainReport {
    pub steps: usize,
    pub finished: bool,
    pub seconds: f64,
    pub params: usize,
    pub final_psnr: Option<f64>,
    pub checkpoint: PathBuf,
}

/// IPT presets; `commands::pretrain` sends EDT presets to [`super::pretrain_edt`].
pub fn pretrain(a: &PretrainArgs) -> Result<PretrainReport> {
    let config = IptConfig::preset(&a.preset).map_err(|_| {
        let all: Vec<&str> = crate::backbone::config::PRESETS.iter().chain(EDT_PRESETS).copied().collect();
        Error::invalid(format!("unknown backbone preset `{}`: expected one of {}", a.preset, all.join(", ")))
    })?;
    if config.num_tasks != TASKS.len() {
        return Err(Error::invalid(format!(
            "preset `{}` has {} tasks, pre-training needs 6",
            a.preset, config.num_tasks
        )));
    }
    if a.steps == 0 || a.batch == 0 {
        return Err(Error::invalid("--steps and --batch must be at least 1"));
    }
    let patch = config.patch_size;
    let dev = super::device();
    let ckpt_path = super::checkpoint_path(&a.out);
    if a.data.is_empty() {
        return Err(Error::invalid("pretrain needs at least one --data DIR"));
    }
    let init_sha = match &a.init {
        Some(p) => Some(crate::peft::file::sha256_file(p)?),
        None => None,
    };
    let data = data_record(&a.data);
    let mut fingerprint = run_fingerprint(a, json!(config));
    if let Some(sha) = &init_sha {
        fingerprint["init_sha256"] = json!(sha);
    }
    let ckpt = if a.resume && ckpt_path.exists() { Some(Checkpoint::load(&ckpt_path, &fingerprint)?) } else { None };

    let photos = Photos::load(&a.data, &a.exclude, patch * 4)?;
    let (train, hold) = (&photos.train, &photos.held_out);
    let val_src = photos.val.as_ref().unwrap_or(train);
    let val: Vec<(usize, Tensor, Vec<Image>)> = TASKS
        .iter()
        .map(|(idx, _, task)| {
            let pairs = val_src.batch(task, VAL_PATCHES, patch, a.seed ^ 0x5a5a_5a5a, *idx)?;
            let (x, _) = batch_tensors(&pairs, &dev)?;
            Ok((*idx, x, pairs.into_iter().map(|p| p.target).collect()))
        })
        .collect::<Result<_>>()?;

    let vm = VarMap::new();
    if let Some(c) = &ckpt {
        restore_vars(&vm, c, &dev)?;
    } else if let Some(init) = &a.init {
        init_vars(&vm, init, &config, &dev)?;
    }
    // Seeded initial values (candle's own are unseeded) for every variable not restored above.
    let model = super::init::seeded_ipt(&vm, &config, a.seed, &dev)?;
    // MeanShift is fixed in the official model (requires_grad = False).
    let vars = trainable(&vm, &|k: &str| !k.starts_with("sub_mean") && !k.starts_with("add_mean"))?;
    let params: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let mut opt = optimizer(vars, ckpt.as_ref())?;
    let (start, history) = ckpt.map(|c| (c.step, c.history)).unwrap_or((0, History::default()));
    let spec = RunSpec {
        steps: a.steps,
        lr: a.lr,
        checkpoint: ckpt_path.clone(),
        checkpoint_every: a.checkpoint_every,
        eval_every: a.eval_every,
        stop_after: a.stop_after,
        fingerprint,
        quiet: a.quiet,
    };
    let mut loss_at = |step: usize| -> Result<Tensor> {
        let (idx, _, task) = &TASKS[step % TASKS.len()];
        let pairs = train.batch(task, a.batch, patch, a.seed, step)?;
        let (x, y) = batch_tensors(&pairs, &dev)?;
        Ok((model.forward(&x, *idx, true)? - y)?.abs()?.mean_all()?)
    };
    let mut eval = || -> Result<f64> {
        let mut s = 0.0;
        for (idx, x, t) in &val {
            s += super::patch_psnr(&model, *idx, x, t)?;
        }
        Ok(s / val.len() as f64)
    };
    let out = run(&spec, &vm, &mut opt, start, history, &mut loss_at, &mut eval, &|| Ok(vec![]))?;
    let final_psnr = out.history.psnrs().last().map(|p| p.1);
    if out.finished {
        write_backbone(
            &a.out,
            &vm,
            &config,
            &json!({
                "steps": out.step, "batch": a.batch, "lr": a.lr, "seed": a.seed, "tasks": TASKS.map(|t| t.1),
                "data": data, "exclude": a.exclude, "init_sha256": init_sha, "held_out": hold,
                "final_val_psnr": final_psnr,
            }),
        )?;
        super::progress::write_curve(&super::curve_path(&a.out), &out.history.losses(), &out.history.psnrs())?;
    }
    Ok(PretrainReport {
        steps: out.step,
        finished: out.finished,
        seconds: out.seconds,
        params,
        final_psnr,
        checkpoint: ckpt_path,
    })
}

/// The checkpoint fingerprint of a pre-training run of `config` (a resumed run must match it).
pub(super) fn run_fingerprint(a: &PretrainArgs, config: serde_json::Value) -> serde_json::Value {
    let mut fingerprint = json!({
        "command": "pretrain", "config": config, "steps": a.steps, "batch": a.batch, "lr": a.lr, "seed": a.seed,
        "data": data_record(&a.data),
    });
    // Only runs that use it record this, so the checkpoints of earlier runs still resume.
    if !a.exclude.is_empty() {
        fingerprint["exclude"] = json!(a.exclude);
    }
    super::record_run_mode(&mut fingerprint);
    fingerprint
}

/// `--data` as the metadata records it: the folder for one (as before), the list for several.
pub(super) fn data_record(dirs: &[PathBuf]) -> serde_json::Value {
    match dirs {
        [one] => json!(one.display().to_string()),
        many => json!(many.iter().map(|d| d.display().to_string()).collect::<Vec<_>>()),
    }
}

/// Fill `vm` with the weights of the backbone file `init`, which must have `config` (`--init`: continue an
/// earlier pre-training on other data or with another schedule; the optimizer starts afresh).
fn init_vars(vm: &VarMap, init: &Path, config: &IptConfig, dev: &candle_core::Device) -> Result<()> {
    let theirs = crate::model::backbone_config(init)?;
    if &theirs != config {
        return Err(Error::file(
            init,
            format!(
                "--init: its config is {}, but the preset is {}",
                serde_json::to_string(&theirs).unwrap_or_default(),
                serde_json::to_string(config).unwrap_or_default()
            ),
        ));
    }
    let sd = crate::params::StateDict::load(init)?;
    let mut data = vm.data().lock().map_err(|_| Error::invalid("VarMap lock poisoned"))?;
    for (k, t) in &sd.tensors {
        data.insert(k.clone(), candle_core::Var::from_tensor(&t.to_device(dev)?)?);
    }
    Ok(())
}

pub(super) fn vm_tensors(vm: &VarMap) -> Result<BTreeMap<String, Tensor>> {
    Ok(vm
        .data()
        .lock()
        .map_err(|_| Error::invalid("VarMap lock poisoned"))?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect())
}

/// The backbone from the model variables (all of them, with `position_ids` as I64 like the official file).
fn write_backbone(path: &Path, vm: &VarMap, config: &IptConfig, summary: &serde_json::Value) -> Result<()> {
    let mut t = vm_tensors(vm)?;
    for v in t.values_mut() {
        if v.dtype() != DType::I64 {
            *v = v.to_dtype(DType::F32)?;
        }
    }
    super::save_backbone(path, &t, config, summary)
}

/// Export the backbone from a checkpoint (e.g. of an unfinished run) to `out`.
pub fn backbone_from_checkpoint(ckpt_path: &Path, out: &Path) -> Result<usize> {
    let bytes = std::fs::read(ckpt_path).map_err(|e| Error::file(ckpt_path, format!("cannot read: {e}")))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::file(ckpt_path, format!("not a checkpoint: {e}")))?;
    let fp: serde_json::Value = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("fingerprint"))
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| Error::file(ckpt_path, "checkpoint has no fingerprint"))?;
    let summary = |step: usize| {
        json!({"from_checkpoint_step": step, "of_steps": fp["steps"],
        "batch": fp["batch"], "lr": fp["lr"], "seed": fp["seed"], "data": fp["data"]})
    };
    if fp["config"]["arch"] == "edt" {
        let config: EdtConfig = serde_json::from_value(fp["config"].clone())
            .map_err(|e| Error::file(ckpt_path, format!("not an EDT pre-training checkpoint: {e}")))?;
        let c = Checkpoint::load(ckpt_path, &fp)?;
        super::write_edt_backbone(out, &c.vars, &config, &summary(c.step))?;
        return Ok(c.step);
    }
    let config: IptConfig = serde_json::from_value(fp["config"].clone())
        .map_err(|e| Error::file(ckpt_path, format!("not a pre-training checkpoint: {e}")))?;
    let c = Checkpoint::load(ckpt_path, &fp)?;
    super::save_backbone(out, &c.vars, &config, &summary(c.step))?;
    Ok(c.step)
}
