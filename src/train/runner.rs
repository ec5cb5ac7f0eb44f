//! The training loop shared by `train` and `pretrain`: L1 loss from a caller's closure, AdamW with the step
//! schedule, periodic held-out evaluation, atomic checkpoints, NaN guard, progress.
use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;
use serde_json::Value;

use super::checkpoint::{Checkpoint, History};
use super::optim::{lr_at, AdamW, AdamWConfig};
use super::progress::Progress;
use crate::error::{Error, Result};

/// How a run goes.
pub struct RunSpec {
    pub steps: usize,
    pub lr: f64,
    pub checkpoint: PathBuf,
    pub checkpoint_every: usize,
    pub eval_every: usize,
    /// Stop (after checkpointing) once this many steps are done: an interruption on purpose.
    pub stop_after: Option<usize>,
    pub fingerprint: Value,
    pub quiet: bool,
}

/// Where a run ended.
pub struct Outcome {
    pub step: usize,
    pub history: History,
    pub finished: bool,
    pub seconds: f64,
}

/// Put a checkpoint's variables into `vm` before the model is built (the model then picks them up, buffers
/// included), and return its step and history.
pub fn restore_vars(vm: &VarMap, ckpt: &Checkpoint, device: &candle_core::Device) -> Result<()> {
    let mut data = vm.data().lock().map_err(|_| Error::invalid("VarMap lock poisoned"))?;
    for (k, t) in &ckpt.vars {
        // The checkpoint is read on the CPU; training may run on CUDA.
        data.insert(k.clone(), Var::from_tensor(&t.to_device(device)?)?);
    }
    Ok(())
}

/// The variables of `vm` that train: floating point, not buffers, accepted by `keep`; sorted by name.
pub fn trainable(vm: &VarMap, keep: &dyn Fn(&str) -> bool) -> Result<Vec<(String, Var)>> {
    let data = vm.data().lock().map_err(|_| Error::invalid("VarMap lock poisoned"))?;
    let mut v: Vec<(String, Var)> = data
        .iter()
        .filter(|(k, var)| var.dtype().is_float() && !crate::params::is_buffer(k) && keep(k))
        .map(|(k, var)| (k.clone(), var.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// AdamW over `vars`, with moments from the checkpoint when resuming.
pub fn optimizer(vars: Vec<(String, Var)>, ckpt: Option<&Checkpoint>) -> Result<AdamW> {
    let mut opt = AdamW::new(vars, AdamWConfig::default())?;
    if let Some(c) = ckpt {
        for (i, (name, _)) in opt.vars.iter().enumerate() {
            if let Some((m, v, t)) = c.moments.get(name) {
                let device = opt.vars[i].1.device().clone();
                opt.m[i] = m.to_dtype(DType::F32)?.to_device(&device)?;
                opt.v[i] = v.to_dtype(DType::F32)?.to_device(&device)?;
                opt.t[i] = *t;
            }
        }
    }
    Ok(opt)
}

/// Train from `start` to `spec.steps`. `loss_at(step)` builds the step's L1 loss; `eval()` gives the held-out
/// PSNR; `buffers()` the live buffers to checkpoint.
#[allow(clippy::too_many_arguments)]
pub fn run(
    spec: &RunSpec,
    vm: &VarMap,
    opt: &mut AdamW,
    start: usize,
    mut history: History,
    loss_at: &mut dyn FnMut(usize) -> Result<Tensor>,
    eval: &mut dyn FnMut() -> Result<f64>,
    buffers: &dyn Fn() -> Result<Vec<(String, Tensor)>>,
) -> Result<Outcome> {
    let t0 = std::time::Instant::now();
    let progress = Progress::new(spec.steps, start, spec.quiet);
    let save = |step: usize, history: &History, opt: &AdamW| -> Result<()> {
        let vars: BTreeMap<String, Tensor> = crate::peft::file::method_tensors(vm, buffers()?)?;
        let moments = opt
            .vars
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), (opt.m[i].clone(), opt.v[i].clone(), opt.t[i])))
            .collect();
        Checkpoint { step, fingerprint: spec.fingerprint.clone(), history: history.clone(), vars, moments }
            .save(&spec.checkpoint)
    };
    let mut last_psnr = history.psnrs().last().map(|p| p.1);
    let mut step = start;
    while step < spec.steps {
        if spec.stop_after.is_some_and(|k| step >= k) {
            break;
        }
        let loss = loss_at(step)?;
        let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !l.is_finite() {
            progress.finish();
            return Err(Error::invalid(format!(
                "the loss is {l} at step {}: training stopped. The last good checkpoint is kept at {}; \
                 resume from it with a lower --lr (or check the data for broken images)",
                step + 1,
                spec.checkpoint.display()
            )));
        }
        let grads = loss.backward()?;
        opt.step(&grads, lr_at(spec.lr, step, spec.steps))?;
        step += 1;
        history.push_loss(l);
        let evaluated = step % spec.eval_every.max(1) == 0 || step == spec.steps;
        if evaluated {
            let p = eval()?;
            history.push_psnr(step, p);
            last_psnr = Some(p);
        }
        progress.update(step, l, last_psnr, evaluated);
        if step % spec.checkpoint_every.max(1) == 0 || step == spec.steps || spec.stop_after == Some(step) {
            save(step, &history, opt)?;
        }
    }
    progress.finish();
    Ok(Outcome { step, history, finished: step >= spec.steps, seconds: t0.elapsed().as_secs_f64() })
}
