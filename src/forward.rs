//! `adaptir forward`: run an IPT checkpoint (official key names, with or without AdaptIR) on a tensor file.
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::backbone::config::task_index;
use crate::backbone::{Ipt, IptConfig};
use crate::error::{Error, Result};
use crate::params::{StateDict, Strict};
use crate::peft::adaptir::AdaptIrMethod;
use crate::peft::file::AdapterFile;
use crate::peft::{AdaptIrConfig, Layout, Method, MethodModules};

/// Where the first adapter's keys live in an IPT state dict.
const FIRST_ADAPTER: &str = "body.encoder.layers.0.adaptir.";

/// Build IPT from a checkpoint; AdaptIR is present, with its sizes, iff the checkpoint holds its keys.
/// Every missing, unexpected or mis-shaped key is reported in one error naming the file.
/// Returns the model and the adapter sizes found.
pub fn load_ipt(checkpoint: &Path, config: &IptConfig, device: &Device) -> Result<(Ipt, Option<AdaptIrConfig>)> {
    let sd = StateDict::load(checkpoint)?;
    let adapter = AdaptIrConfig::from_state_dict(&sd, FIRST_ADAPTER, Layout::Ipt);
    if let Some(a) = &adapter {
        a.validate().map_err(|m| Error::file(checkpoint, m))?;
        if a.dim != config.embed_dim() {
            return Err(Error::file(
                checkpoint,
                format!(
                    "its adapters take {} channels, but the config's transformer width is {} (n_feats {} x {}^2)",
                    a.dim,
                    config.embed_dim(),
                    config.n_feats,
                    config.patch_dim
                ),
            ));
        }
    }
    let strict = Strict::new(sd);
    let vb = strict.var_builder(DType::F32, device);
    let host = config.host_dims();
    let modules = match adapter {
        Some(a) => AdaptIrMethod::with_sizes(a).build(vb.clone(), &host),
        None => Ok(MethodModules::none(&host)),
    };
    let model = modules.and_then(|m| Ipt::new(vb, config, m));
    strict.finish()?;
    Ok((model.map_err(|e| Error::file(checkpoint, e.to_string()))?, adapter))
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

/// What `adaptir forward` did.
pub struct ForwardReport {
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    /// "AdaptIR (hidden 8, rank 4)", "lora from derain.safetensors", "no adapter".
    pub method: String,
    pub task: usize,
    pub scale: usize,
}

/// Arguments of `adaptir forward`.
pub struct ForwardArgs<'a> {
    pub checkpoint: &'a Path,
    /// Model config; optional with an adapter file, which records its backbone's.
    pub config: Option<&'a Path>,
    /// An adapter file to apply on the checkpoint (which must then be the backbone alone).
    pub adapter: Option<&'a Path>,
    /// Task index; optional with an adapter file, which records its task.
    pub task: Option<usize>,
    pub input: &'a Path,
    pub input_name: &'a str,
    pub output: &'a Path,
}

/// `adaptir forward`: load, check, run in eval mode, write `output`.
pub fn forward_files(args: &ForwardArgs) -> Result<ForwardReport> {
    let device = crate::device::current();
    let adapter = args.adapter.map(AdapterFile::load).transpose()?;
    let config = match (args.config, &adapter) {
        (Some(p), _) => IptConfig::from_json_file(p)?,
        (None, Some(a)) => a.meta.backbone_config.clone(),
        (None, None) => return Err(Error::invalid("--config is required unless --adapter gives the backbone's")),
    };
    let task = match (args.task, &adapter) {
        (Some(t), _) => t,
        (None, Some(a)) => task_index(&a.meta.task)
            .ok_or_else(|| Error::file(&a.path, format!("unknown task `{}`: give --task-index", a.meta.task)))?,
        (None, None) => return Err(Error::invalid("--task-index is required unless --adapter gives the task")),
    };
    if task >= config.num_tasks {
        return Err(Error::invalid(format!(
            "--task-index {task} is out of range: the model defines {} tasks (0..={})",
            config.num_tasks,
            config.num_tasks - 1
        )));
    }
    let x = read_input(args.input, args.input_name, &config, &device)?;
    let (model, method) = match &adapter {
        Some(file) => {
            file.check_backbone(args.checkpoint, &config)?;
            let strict = Strict::new(StateDict::load(args.checkpoint)?);
            let modules = file.modules(DType::F32, &device)?;
            let model = Ipt::new(strict.var_builder(DType::F32, &device), &config, modules);
            strict.finish()?;
            let name = file.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (
                model.map_err(|e| Error::file(args.checkpoint, e.to_string()))?,
                format!("{} from {name}", file.meta.method),
            )
        }
        None => {
            let (model, sizes) = load_ipt(args.checkpoint, &config, &device)?;
            let method = match sizes {
                Some(a) => format!("AdaptIR (hidden {}, rank {})", a.hidden, a.rank),
                None => "no adapter".into(),
            };
            (model, method)
        }
    };
    let y = model.forward(&x, task, false)?;
    crate::params::write_safetensors(args.output, &[("output", y.clone())])?;
    Ok(ForwardReport {
        input_shape: x.dims().to_vec(),
        output_shape: y.dims().to_vec(),
        method,
        task,
        scale: config.scales[task],
    })
}
