//! `adaptir pretrain --preset edt-tiny`: an EDT backbone from scratch on clean photos. Unlike IPT's multi-task
//! pre-training, an EDT checkpoint holds one task's head and tail (as the official per-task models), so the run
//! trains the preset's task alone (edt-tiny: x2 super-resolution) with the same recipe: L1 loss, AdamW and the
//! step schedule of [`super::runner`], seeded batches synthesised from the photos, resumable checkpoints. The
//! official stochastic depth is on, seeded per step so that a resumed run draws the same masks.
//!
//! Writes the state dict under the official key names (no shifted-window masks: `Edt::new` computes them) with
//! the config in the metadata (`edt_config`), and the config beside it as `X.edt.json`, the `--config` that
//! `train`, `eval`, `forward` and `export` take for an EDT checkpoint.

use candle_core::Tensor;
use candle_nn::VarMap;
use serde_json::json;

use super::batch::batch_tensors;
use super::checkpoint::{Checkpoint, History};
use super::pretrain::{data_record, run_fingerprint, vm_tensors, PretrainArgs, PretrainReport, VAL_PATCHES};
use super::runner::{optimizer, restore_vars, run, trainable, RunSpec};
use super::Photos;
use crate::backbone::{Edt, EdtConfig};
use crate::data::Image;
use crate::error::{Error, Result};

/// Seed stream of the stochastic-depth masks (another stream than the batches').
const DROP_PATH_STREAM: u64 = 0xd809_7a70_0000_0002;

pub fn pretrain_edt(a: &PretrainArgs, config: EdtConfig) -> Result<PretrainReport> {
    if a.init.is_some() {
        return Err(Error::invalid(format!(
            "--init is for IPT presets: the EDT preset `{}` pre-trains from its seeded initialisation only",
            a.preset
        )));
    }
    if a.steps == 0 || a.batch == 0 {
        return Err(Error::invalid("--steps and --batch must be at least 1"));
    }
    if a.data.is_empty() {
        return Err(Error::invalid("pretrain needs at least one --data DIR"));
    }
    let task_name = config.task.clone();
    let task = super::data_task(&task_name)?
        .ok_or_else(|| Error::invalid(format!("EDT task {task_name} has no synthetic inputs")))?;
    let side = config.edt_task().map_err(Error::invalid)?.input_size();
    let dev = super::device();
    let ckpt_path = super::checkpoint_path(&a.out);
    let fingerprint = run_fingerprint(a, json!(config));
    let ckpt = if a.resume && ckpt_path.exists() { Some(Checkpoint::load(&ckpt_path, &fingerprint)?) } else { None };

    let photos = Photos::load(&a.data, &a.exclude, side * 4)?;
    let val_src = photos.val.as_ref().unwrap_or(&photos.train);
    let vpairs = val_src.batch(&task, VAL_PATCHES, side, a.seed ^ 0x5a5a_5a5a, 0)?;
    let (vx, _) = batch_tensors(&vpairs, &dev)?;
    let vt: Vec<Image> = vpairs.into_iter().map(|p| p.target).collect();

    let vm = VarMap::new();
    if let Some(c) = &ckpt {
        restore_vars(&vm, c, &dev)?;
    }
    // Seeded initial values (candle's own are unseeded); restored variables are taken as they are.
    let model = Edt::new(super::init::Seeded::var_builder(&vm, a.seed, &dev), &config, Edt::no_hooks(&config))?;
    let vars = trainable(&vm, &|_| true)?;
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
        let pairs = photos.train.batch(&task, a.batch, side, a.seed, step)?;
        let (x, y) = batch_tensors(&pairs, &dev)?;
        model.body.seed_drop_path(crate::data::seed::sample_seed(a.seed ^ DROP_PATH_STREAM, step as u64))?;
        Ok((model.forward(&x, true)? - y)?.abs()?.mean_all()?)
    };
    let mut eval = || super::patch_psnr_with(&mut |x| Ok(model.forward(x, false)?), &vx, &vt);
    let out = run(&spec, &vm, &mut opt, start, history, &mut loss_at, &mut eval, &|| Ok(vec![]))?;
    let final_psnr = out.history.psnrs().last().map(|p| p.1);
    if out.finished {
        let summary = json!({
            "steps": out.step, "batch": a.batch, "lr": a.lr, "seed": a.seed, "tasks": [task_name],
            "data": data_record(&a.data), "exclude": a.exclude, "held_out": photos.held_out,
            "final_val_psnr": final_psnr,
        });
        super::write_edt_backbone(&a.out, &vm_tensors(&vm)?, &config, &summary)?;
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
