//! `adaptir forward`: run an IPT checkpoint (official key names, with or without AdaptIR), or a backbone with an
//! adapter file, on a tensor file, in eval mode.
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::{DeviceArgs, Report};
use crate::backbone::config::task_index;
use crate::backbone::IptConfig;
use crate::error::{Error, Result};
use crate::params::StateDict;
use crate::peft::file::AdapterFile;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// State dict with the official IPT key names (.safetensors or .pt).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Model config JSON, e.g. {"arch": "ipt", "n_feats": 22, "num_heads": 6, "num_layers": 1}
    /// (optional with --adapter, which records its backbone's).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// An adapter file to apply; the checkpoint must be the backbone it was trained on.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Task index (official map: 0 sr2, 1 sr3, 2 sr4, 3 derain, 4 denoise30, 5 denoise50);
    /// optional with --adapter, which records its task.
    #[arg(long)]
    pub task_index: Option<usize>,
    /// safetensors file with an (N, 3, 48, 48) tensor in [0, 1].
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
    pub task: usize,
    pub scale: usize,
    pub output: PathBuf,
}

/// Read the input tensor `name` from a safetensors file and check it is (N, 3, P, P).
pub fn read_input(path: &Path, name: &str, config: &IptConfig, device: &Device) -> Result<Tensor> {
    let sd = StateDict::load(path)?;
    let Some(x) = sd.get(name) else {
        let names: Vec<&String> = sd.tensors.keys().collect();
        return Err(Error::file(
            path,
            format!("no tensor named `{name}`; it holds {names:?} (choose one with --input-name)"),
        ));
    };
    let p = config.patch_size;
    match x.dims() {
        [_, 3, h, w] if *h == p && *w == p => {}
        other => {
            return Err(Error::file(path, format!("tensor `{name}` has shape {other:?}, expected (N, 3, {p}, {p})")))
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
    let config = match (&a.config, &adapter) {
        (Some(p), _) => IptConfig::from_json_file(p)?,
        (None, Some(f)) => f.meta.backbone_config.clone(),
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
            let (model, sizes) = crate::model::load_ipt(&a.checkpoint, &config, &device)?;
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
        task,
        scale: config.scales[task],
        output: a.output.clone(),
    })
}

impl Report for ForwardReport {
    fn render(&self) -> String {
        format!(
            "task {} (x{}), {}: input {:?} -> output {:?}, written to {}\n",
            self.task,
            self.scale,
            self.method,
            self.input_shape,
            self.output_shape,
            self.output.display()
        )
    }
}
