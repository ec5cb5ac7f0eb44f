//! `adaptir forward`: run an IPT checkpoint (official key names, with or without AdaptIR), or a backbone with an
//! adapter file, on a tensor file, in eval mode; or an EDT checkpoint (official keys, with or without AdaptIR)
//! when the config's arch is `edt`.
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::{DeviceArgs, Report};
use crate::backbone::config::task_index;
use crate::backbone::edt::config::is_edt_config_file;
use crate::backbone::edt::is_edt_state_dict;
use crate::backbone::{EdtConfig, IptConfig};
use crate::error::{Error, Result};
use crate::params::StateDict;
use crate::peft::file::AdapterFile;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// State dict with the official IPT (or, with an EDT config, EDT) key names (.safetensors or .pt).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Model config JSON, e.g. {"arch": "ipt", "n_feats": 22, "num_heads": 6, "num_layers": 1}
    /// (optional with --adapter, which records its backbone's), or {"arch": "edt", "task": "sr2"}.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// An adapter file to apply; the checkpoint must be the backbone it was trained on.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Task index (official map: 0 sr2, 1 sr3, 2 sr4, 3 derain, 4 denoise30, 5 denoise50);
    /// optional with --adapter, which records its task. Not for EDT: its config's task selects the head.
    #[arg(long)]
    pub task_index: Option<usize>,
    /// safetensors file with an (N, 3, 48, 48) tensor in [0, 1] (EDT denoise / derain: (N, 3, 192, 192)).
    #[arg(long)]
    pub input: PathBuf,
    /// Name of the input tensor in that file.
    #[arg(long, default_value = "x")]
    pub input_name: String,
    /// Output safetensors file; its tensor is named `output`, on the [0, 1] scale.
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// What `adaptir forward` did.
pub struct ForwardReport {
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    /// "AdaptIR (hidden 8, rank 4)", "lora from derain.safetensors", "no adapter".
    pub method: String,
    /// "task 2" (IPT's index) or "EDT sr2".
    pub task: String,
    pub scale: usize,
    pub output: PathBuf,
}

/// Read the input tensor `name` from a safetensors file and check it is (N, 3, P, P).
pub fn read_input(path: &Path, name: &str, config: &IptConfig, device: &Device) -> Result<Tensor> {
    read_square_input(path, name, config.patch_size, "", device)
}

/// Read the input tensor `name` and check it is (N, 3, p, p); `for_what` ends the size message (" for ...").
fn read_square_input(path: &Path, name: &str, p: usize, for_what: &str, device: &Device) -> Result<Tensor> {
    let sd = StateDict::load(path)?;
    let Some(x) = sd.get(name) else {
        let names: Vec<&String> = sd.tensors.keys().collect();
        return Err(Error::file(
            path,
            format!("no tensor named `{name}`; it holds {names:?} (choose one with --input-name)"),
        ));
    };
    match x.dims() {
        [_, 3, h, w] if *h == p && *w == p => {}
        other => {
            return Err(Error::file(
                path,
                format!("tensor `{name}` has shape {other:?}, expected (N, 3, {p}, {p}){for_what}"),
            ))
        }
    }
    if !x.dtype().is_float() {
        return Err(Error::file(path, format!("tensor `{name}` is {:?}, expected a float tensor", x.dtype())));
    }
    Ok(x.to_dtype(DType::F32)?.to_device(device)?)
}

/// Load, check, run in eval mode, write `--output`.
pub fn run(a: &Args) -> Result<ForwardReport> {
    let device = a.device.select()?;
    let adapter = a.adapter.as_deref().map(AdapterFile::load).transpose()?;
    let edt_adapter = adapter.as_ref().and_then(|f| f.meta.backbone_config.edt().cloned());
    if let Some(p) = a.config.as_deref().filter(|p| is_edt_config_file(p)) {
        let config = EdtConfig::from_json_file(p)?;
        return match (adapter, edt_adapter) {
            (Some(f), None) => {
                Err(Error::file(&f.path, "an adapter for an IPT backbone, but --config is an EDT config"))
            }
            (Some(f), Some(recorded)) if recorded != config => Err(Error::file(
                &f.path,
                format!("was trained on the EDT config {recorded:?}, but --config gives {config:?}"),
            )),
            (adapter, _) => run_edt(a, config, p, adapter, &device),
        };
    }
    if let (Some(config), Some(f)) = (edt_adapter, adapter.as_ref()) {
        let recorded = f.path.clone();
        return run_edt(a, config, &recorded, adapter, &device);
    }
    let config = match (&a.config, &adapter) {
        (Some(p), _) => IptConfig::from_json_file(p)?,
        (None, Some(f)) => f.ipt_config("forward")?.clone(),
        (None, None) => return Err(Error::invalid("--config is required unless --adapter gives the backbone's")),
    };
    let task = match (a.task_index, &adapter) {
        (Some(t), _) => t,
        (None, Some(f)) => task_index(&f.meta.task)
            .ok_or_else(|| Error::file(&f.path, format!("unknown task `{}`: give --task-index", f.meta.task)))?,
        (None, None) => return Err(Error::invalid("--task-index is required unless --adapter gives the task")),
    };
    if task >= config.num_tasks {
        return Err(Error::invalid(format!(
            "--task-index {task} is out of range: the model defines {} tasks (0..={})",
            config.num_tasks,
            config.num_tasks - 1
        )));
    }
    let x = read_input(&a.input, &a.input_name, &config, &device)?;
    let (model, method) = match adapter {
        Some(file) => {
            let name = file.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let method = format!("{} from {name}", file.meta.method);
            let m = crate::model::load_model_with(
                Some(&a.checkpoint),
                Some(file),
                Some(config.clone()),
                DType::F32,
                &device,
            )?;
            (m.ipt, method)
        }
        None => {
            let (model, sizes) = crate::model::load_ipt(&a.checkpoint, &config, &device)
                .map_err(|e| edt_checkpoint_or(&a.checkpoint, e))?;
            let method = match sizes {
                Some(s) => format!("AdaptIR (hidden {}, rank {})", s.hidden, s.rank),
                None => "no adapter".into(),
            };
            (model, method)
        }
    };
    let y = model.forward(&x, task, false)?;
    crate::params::write_safetensors(&a.output, &[("output", y.clone())])?;
    Ok(ForwardReport {
        input_shape: x.dims().to_vec(),
        output_shape: y.dims().to_vec(),
        method,
        task: format!("task {task}"),
        scale: config.scales[task],
        output: a.output.clone(),
    })
}

/// A checkpoint the IPT loader refused: if it is an EDT state dict, say so (the config is the wrong one) instead
/// of listing every IPT key it lacks.
fn edt_checkpoint_or(checkpoint: &Path, refused: Error) -> Error {
    match StateDict::load(checkpoint) {
        Ok(sd) if is_edt_state_dict(sd.tensors.keys()) => Error::file(
            checkpoint,
            "an EDT state dict (keys `head_<task>.*`, `body.layers.*`), but the config's arch is `ipt`: expected an \
             IPT checkpoint, or an EDT config such as {\"arch\": \"edt\", \"task\": \"sr2\"}",
        ),
        _ => refused,
    }
}

/// EDT: the config's task selects the head; the input must have the task's size (48x48 for SR, 192x192 for
/// denoise and derain).
/// An EDT checkpoint as it is (with the AdaptIR modules it holds), or with an adapter trained on it; `config` comes
/// from `config_source` (the --config file, else the adapter's record).
fn run_edt(
    a: &Args,
    config: EdtConfig,
    config_source: &Path,
    adapter: Option<AdapterFile>,
    device: &Device,
) -> Result<ForwardReport> {
    let task = config.edt_task().map_err(|m| Error::file(config_source, m))?;
    if let Some(t) = a.task_index {
        return Err(Error::invalid(format!(
            "--task-index {t}: EDT takes no task index; the config's task `{}` selects the head, and an EDT \
             checkpoint holds that one head",
            config.task
        )));
    }
    let side = task.input_size();
    let x = read_square_input(&a.input, &a.input_name, side, &format!(" for EDT task {}", config.task), device)?;
    let (model, method) = match &adapter {
        Some(f) => {
            let name = f.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let model = crate::model::edt::load_edt_with_adapter(&a.checkpoint, f, DType::F32, device)?;
            (model, format!("{} from {name}", f.meta.method))
        }
        None => {
            let (model, sizes) = crate::model::edt::load_edt(&a.checkpoint, &config, DType::F32, device)?;
            let method = match sizes {
                Some(s) => format!("AdaptIR (hidden {}, rank {})", s.hidden, s.rank),
                None => "no adapter".into(),
            };
            (model, method)
        }
    };
    let y = model.forward(&x, false)?;
    crate::params::write_safetensors(&a.output, &[("output", y.clone())])?;
    Ok(ForwardReport {
        input_shape: x.dims().to_vec(),
        output_shape: y.dims().to_vec(),
        method,
        task: format!("EDT {}", config.task),
        scale: task.scale(),
        output: a.output.clone(),
    })
}

impl Report for ForwardReport {
    fn render(&self) -> String {
        format!(
            "{} (x{}), {}: input {:?} -> output {:?}, written to {}\n",
            self.task,
            self.scale,
            self.method,
            self.input_shape,
            self.output_shape,
            self.output.display()
        )
    }
}
