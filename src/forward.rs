//! `adaptir forward`: run an IPT checkpoint (official key names, with or without AdaptIR) on a tensor file.
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::backbone::{Ipt, IptConfig};
use crate::error::{Error, Result};
use crate::params::{StateDict, Strict};
use crate::peft::adaptir::AdaptIrMethod;
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

/// Write tensors to a safetensors file atomically (temp file in the same folder, then rename).
pub fn write_safetensors(path: &Path, tensors: &[(&str, Tensor)]) -> Result<()> {
    let map: std::collections::HashMap<String, Tensor> =
        tensors.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let tmp = temp_sibling(path);
    candle_core::safetensors::save(&map, &tmp).map_err(|e| Error::file(path, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::file(path, format!("cannot write: {e}"))
    })
}

/// `dir/.name.PID.tmp` beside `path`, so the final rename stays on one filesystem.
pub fn temp_sibling(path: &Path) -> std::path::PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// What `adaptir forward` did.
pub struct ForwardReport {
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub adapter: Option<AdaptIrConfig>,
    pub task: usize,
    pub scale: usize,
}

/// `adaptir forward`: load, check, run in eval mode, write `output`.
pub fn forward_files(
    checkpoint: &Path,
    config_path: &Path,
    task: usize,
    input: &Path,
    input_name: &str,
    output: &Path,
) -> Result<ForwardReport> {
    let device = Device::Cpu;
    let config = IptConfig::from_json_file(config_path)?;
    if task >= config.num_tasks {
        return Err(Error::invalid(format!(
            "--task-index {task} is out of range: {} defines {} tasks (0..={})",
            config_path.display(),
            config.num_tasks,
            config.num_tasks - 1
        )));
    }
    let x = read_input(input, input_name, &config, &device)?;
    let (model, adapter) = load_ipt(checkpoint, &config, &device)?;
    let y = model.forward(&x, task, false)?;
    write_safetensors(output, &[("output", y.clone())])?;
    Ok(ForwardReport {
        input_shape: x.dims().to_vec(),
        output_shape: y.dims().to_vec(),
        adapter,
        task,
        scale: config.scales[task],
    })
}
