//! `adaptir train`: a PETL method on a frozen pre-trained backbone (or the whole backbone for `full`), on
//! synthesised degradations of clean photos or on real pairs; the result is an adapter file.
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde_json::{json, Value};

use super::batch::{batch_tensors, Source};
use super::checkpoint::{Checkpoint, History};
use super::runner::{optimizer, restore_vars, run, trainable, RunSpec};
use crate::backbone::edt::config::is_edt_config_file;
use crate::backbone::{BackboneConfig, Edt, EdtConfig, Ipt, IptConfig};
use crate::data::Image;
use crate::error::{Error, Result};
use crate::model::Net;
use crate::params::{StateDict, Strict};
use crate::peft::file::{sha256_file, AdapterFile, AdapterMeta};

/// Salt of the stochastic-depth seeds, so that they differ from the data's for the same run seed.
const DROP_PATH_STREAM: u64 = 0xd809_7a70_0000_0001;

/// Fixed validation patches drawn from the held-out image(s).
pub const VAL_PATCHES: usize = 8;

#[derive(Clone, Debug)]
pub struct TrainArgs {
    pub method: String,
    /// The method's JSON configuration (`None`: its defaults).
    pub method_config: Option<Value>,
    pub task: String,
    /// Folders of clean photos (degradations synthesised); the last photo of each is held out.
    pub data: Vec<PathBuf>,
    /// Photo stems left out of training and held-out evaluation (e.g. benchmark images inside a training folder).
    pub exclude: Vec<String>,
    /// Real pairs: a folder with `clean/` and one degraded subfolder.
    pub pairs: Option<PathBuf>,
    pub backbone: PathBuf,
    /// Backbone preset when the backbone file records no config.
    pub preset: Option<String>,
    /// The backbone's config JSON: an EDT config (`"arch": "edt"`, its task selects the checkpoint's head) makes
    /// `backbone` an official EDT checkpoint; an IPT config replaces the one the backbone file records.
    pub config: Option<PathBuf>,
    pub steps: usize,
    pub batch: usize,
    pub patch: usize,
    pub lr: f64,
    pub seed: u64,
    pub out: PathBuf,
    pub resume: bool,
    pub checkpoint_every: usize,
    pub eval_every: usize,
    pub stop_after: Option<usize>,
    pub quiet: bool,
}

pub struct TrainReport {
    pub steps: usize,
    pub finished: bool,
    pub seconds: f64,
    pub trainable: usize,
    pub final_loss: Option<f64>,
    pub final_psnr: Option<f64>,
    pub checkpoint: PathBuf,
}

/// `--data` as the fingerprint and the adapter's metadata record it: null for real pairs, the folder for one (as
/// before several were allowed), the list for several.
fn data_field(dirs: &[PathBuf]) -> Value {
    if dirs.is_empty() {
        Value::Null
    } else {
        super::pretrain::data_record(dirs)
    }
}

/// Training and validation sources, and the names held out.
fn sources(a: &TrainArgs, scale: usize, patch: usize) -> Result<(Source, Option<Source>, Vec<String>)> {
    let synth = super::data_task(&a.task)?;
    match (&a.pairs, &a.data, synth) {
        (Some(p), _, _) => {
            let mut all = super::batch::pair_list(p, scale, patch)?;
            let val = if all.len() >= 2 { all.pop() } else { None };
            let held = val.iter().map(|v| v.name.clone()).collect();
            Ok((Source::Pairs(all, scale), val.map(|v| Source::Pairs(vec![v], scale)), held))
        }
        (None, dirs, Some(_)) if !dirs.is_empty() => {
            let photos = super::Photos::load(dirs, &a.exclude, patch * scale)?;
            Ok((photos.train, photos.val, photos.held_out))
        }
        (None, _, None) => Err(Error::invalid(format!(
            "--task {} trains on real pairs: give --pairs DIR (a folder with clean/ and noisy/)",
            a.task
        ))),
        (None, _, Some(_)) => Err(Error::invalid("give --data DIR (clean photos) or --pairs DIR (real pairs)")),
    }
}

/// The backbone's config (from --config, --preset or the backbone file), the task's scale, and IPT's head.
fn backbone_setup(a: &TrainArgs) -> Result<(BackboneConfig, usize, Option<usize>)> {
    if let Some(path) = a.config.as_deref().filter(|p| is_edt_config_file(p)) {
        let config = EdtConfig::from_json_file(path)?;
        let head = config.edt_task().map_err(|m| Error::file(path, m))?;
        // Any task whose scale the checkpoint's head has: AdaptIR adapts a head to a new degradation.
        let scale = match super::data_task(&a.task)? {
            Some(t) => t.scale(),
            None => 1,
        };
        if scale != head.scale() {
            return Err(Error::file(
                path,
                format!(
                    "--task {} is a x{scale} task, but the EDT head `{}` (task {}) is x{}: use a checkpoint and \
                     config whose head has the task's scale",
                    a.task,
                    head.head_key(),
                    config.task,
                    head.scale()
                ),
            ));
        }
        let side = head.input_size();
        if a.patch != side {
            return Err(Error::invalid(format!(
                "--patch {}: the EDT task {} takes {side}x{side} inputs, so --patch must be {side}",
                a.patch, config.task
            )));
        }
        return Ok((config.into(), scale, None));
    }
    let config = match &a.config {
        Some(p) => IptConfig::from_json_file(p)?,
        None => super::backbone_config(&a.backbone, a.preset.as_deref())?,
    };
    let head = super::head_of(&a.task, &config)?;
    if a.patch != config.patch_size {
        return Err(Error::invalid(format!(
            "--patch {}: IPT takes {p}x{p} inputs (its patch_size), so --patch must be {p}",
            a.patch,
            p = config.patch_size
        )));
    }
    Ok((BackboneConfig::Ipt(config.clone()), config.scales[head], Some(head)))
}

pub fn train(a: &TrainArgs) -> Result<TrainReport> {
    let (config, scale, head) = backbone_setup(a)?;
    if a.steps == 0 || a.batch == 0 {
        return Err(Error::invalid("--steps and --batch must be at least 1"));
    }
    let host = config.host_dims();
    let method = crate::peft::method(&a.method, a.method_config.as_ref().unwrap_or(&Value::Null), &host)
        .map_err(|m| Error::invalid(format!("--method: {m}")))?;
    if method.name() == "pretrain" {
        return Err(Error::invalid(
            "--method pretrain trains nothing: it is the unadapted backbone (use it with eval)",
        ));
    }
    let dev = super::device();
    let synth = super::data_task(&a.task)?;
    let (train, val, held) = sources(a, scale, a.patch)?;
    let backbone_sha = sha256_file(&a.backbone)?;
    let ckpt_path = super::checkpoint_path(&a.out);
    let mut fingerprint = json!({
        "command": "train", "method": method.name(), "method_config": method.config(), "task": a.task,
        "backbone_sha256": backbone_sha, "config": config.to_value(), "steps": a.steps, "batch": a.batch, "patch": a.patch,
        "lr": a.lr, "seed": a.seed, "data": data_field(&a.data),
        "pairs": a.pairs.as_ref().map(|p| p.display().to_string()),
    });
    if !a.exclude.is_empty() {
        fingerprint["exclude"] = json!(a.exclude);
    }
    super::record_run_mode(&mut fingerprint);
    let ckpt = if a.resume && ckpt_path.exists() { Some(Checkpoint::load(&ckpt_path, &fingerprint)?) } else { None };

    // Validation patches, fixed for the run.
    let task = synth.unwrap_or(crate::data::Task::Noise(0));
    let vsrc = val.as_ref().unwrap_or(&train);
    let vpairs = vsrc.batch(&task, VAL_PATCHES, a.patch, a.seed ^ 0x5a5a_5a5a, 0)?;
    let (vx, _) = batch_tensors(&vpairs, &dev)?;
    let vt: Vec<Image> = vpairs.into_iter().map(|p| p.target).collect();

    let vm = VarMap::new();
    let sd = StateDict::load(&a.backbone)?;
    if method.trains_backbone() {
        let mut data = vm.data().lock().map_err(|_| Error::invalid("VarMap lock poisoned"))?;
        for (k, t) in &sd.tensors {
            data.insert(k.clone(), Var::from_tensor(&t.to_device(&dev)?)?);
        }
    }
    if let Some(c) = &ckpt {
        restore_vars(&vm, c, &dev)?;
    }
    let strict = Strict::new(sd);
    let modules = method
        .build(super::init::Seeded::var_builder(&vm, a.seed, &dev), &host)
        .map_err(|e| Error::file(&a.backbone, e.to_string()))?;
    let bb = if method.trains_backbone() {
        VarBuilder::from_varmap(&vm, DType::F32, &dev)
    } else {
        strict.var_builder(DType::F32, &dev)
    };
    let model = match (&config, head) {
        (BackboneConfig::Ipt(c), Some(head)) => Ipt::new(bb, c, modules).map(|m| Net::Ipt(Box::new(m), head)),
        (BackboneConfig::Edt(c), _) => Edt::new(bb, c, modules.layers).map(|m| Net::Edt(Box::new(m))),
        (BackboneConfig::Ipt(_), None) => Err(candle_core::Error::Msg("IPT without a head".into())),
    }
    .map_err(|e| Error::file(&a.backbone, e.to_string()))?;
    if !method.trains_backbone() {
        strict.finish()?;
    }
    // Constants stored as tensors: IPT's mean shifts, EDT's shifted-window masks (full fine-tuning loads them).
    let constant = |k: &str| {
        k.starts_with("sub_mean")
            || k.starts_with("add_mean")
            || k.ends_with("attn_mask_h")
            || k.ends_with("attn_mask_v")
    };
    let vars = trainable(&vm, &|k: &str| !constant(k))?;
    let n_trainable: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
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
        let pairs = train.batch(&task, a.batch, a.patch, a.seed, step)?;
        let (x, y) = batch_tensors(&pairs, &dev)?;
        // EDT's stochastic depth draws from the run's seed and the step (its own stream: not the data's).
        model.seed_step(crate::data::seed::sample_seed(a.seed ^ DROP_PATH_STREAM, step as u64))?;
        Ok((model.forward(&x, true)? - y)?.abs()?.mean_all()?)
    };
    let mut eval = || super::patch_psnr_with(&mut |x| Ok(model.forward(x, false)?), &vx, &vt);
    let buffers = || Ok(model.method_buffers()?);
    let out = run(&spec, &vm, &mut opt, start, history, &mut loss_at, &mut eval, &buffers)?;
    let final_loss = out.history.losses().last().copied();
    let final_psnr = out.history.psnrs().last().map(|p| p.1);
    if out.finished {
        let tensors = crate::peft::file::method_tensors(&vm, model.method_buffers()?)?;
        let mut training = json!({
            "steps": out.step, "batch": a.batch, "patch": a.patch, "lr": a.lr, "seed": a.seed,
            "optimizer": "AdamW(0.9, 0.999, eps 1e-8, wd 0.01), lr halved at 50/80/90/95%", "loss": "L1",
            "data": data_field(&a.data),
            "pairs": a.pairs.as_ref().map(|p| p.display().to_string()),
            "held_out": held, "trainable_params": n_trainable,
            "final_loss": final_loss.map(|l| format!("{l:.6}")),
            "final_val_psnr": final_psnr.map(|p| format!("{p:.3}")),
        });
        if !a.exclude.is_empty() {
            training["exclude"] = json!(a.exclude);
        }
        let meta = AdapterMeta {
            method: method.name().to_string(),
            method_config: method.config(),
            task: a.task.clone(),
            backbone: backbone_name(&a.backbone),
            backbone_sha256: backbone_sha,
            backbone_config: config.clone(),
            training,
        };
        AdapterFile::save(&a.out, &meta, &tensors)?;
        super::progress::write_curve(&super::curve_path(&a.out), &out.history.losses(), &out.history.psnrs())?;
    }
    Ok(TrainReport {
        steps: out.step,
        finished: out.finished,
        seconds: out.seconds,
        trainable: n_trainable,
        final_loss,
        final_psnr,
        checkpoint: ckpt_path,
    })
}

/// The name an adapter records for its backbone: the backbone file's folder and name (`ipt-tiny/backbone.safetensors`).
pub fn backbone_name(p: &Path) -> String {
    let file = p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    match p.parent().and_then(|d| d.file_name()) {
        Some(d) => format!("{}/{file}", d.to_string_lossy()),
        None => file,
    }
}
