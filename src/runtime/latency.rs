//! How long one ONNX Runtime run of an exported model takes on an execution provider
//! (end to end: host input copied in, outputs copied back, as `validate` and `restore` run it). The command is
//! `commands::ort_latency` (scripts/gpu-check.sh's CUDA vs CPU provider row).
use std::path::Path;
use std::time::Instant;

use crate::error::{Error, Result, WithFile};
use crate::runtime::{RunOptions, Session};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Latency {
    pub model: String,
    pub ep: String,
    pub nodes_by_ep: std::collections::BTreeMap<String, usize>,
    pub input_shapes: Vec<(String, Vec<usize>)>,
    pub warmup: usize,
    pub iters: usize,
    /// Per run, milliseconds.
    pub mean_ms: f64,
    pub median_ms: f64,
    pub min_ms: f64,
    /// `RunOptions::denormal_as_zero`: the runs flushed f32 denormals to zero (`--denormal-as-zero`).
    pub denormal_as_zero: bool,
    /// With `RunOptions::profile`: the profile file and its kernel time per part of the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Profile {
    pub file: String,
    pub parts: Vec<super::profile::Part>,
}

/// Time `iters` runs of `model` after `warmup` runs, with the inputs of `golden` (a safetensors file holding a
/// tensor per model input by name, as `adaptir export --golden` writes).
pub fn latency(model: &Path, golden: &Path, opts: &RunOptions, warmup: usize, iters: usize) -> Result<Latency> {
    if iters == 0 {
        return Err(Error::invalid("--iters must be at least 1"));
    }
    if let Some(prefix) = &opts.profile {
        // ONNX Runtime would silently write nothing into a missing folder.
        let dir = prefix.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(Error::file(prefix, format!("--profile: the folder {} does not exist", dir.display())));
        }
    }
    let mut session = Session::new(model, opts)?;
    let tensors = candle_core::safetensors::load(golden, &candle_core::Device::Cpu).with_file(golden)?;
    let names: Vec<String> = session.input_names().to_vec();
    let mut inputs = Vec::with_capacity(names.len());
    for n in &names {
        let t = tensors.get(n).ok_or_else(|| {
            Error::file(golden, format!("no tensor `{n}` for the model's input `{n}` (it holds {:?})", tensors.keys()))
        })?;
        inputs.push((n.as_str(), t.clone()));
    }
    for _ in 0..warmup {
        session.run(&inputs)?;
    }
    let mut ms = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        session.run(&inputs)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let profile = match opts.profile {
        Some(_) => {
            let file = session.end_profiling()?;
            let (parts, _) = super::profile::summarize(&file)?;
            Some(Profile { file: file.display().to_string(), parts })
        }
        None => None,
    };
    let mean_ms = ms.iter().sum::<f64>() / iters as f64;
    ms.sort_by(f64::total_cmp);
    Ok(Latency {
        model: model.display().to_string(),
        ep: opts.ep.to_string(),
        nodes_by_ep: session.nodes_by_ep().clone(),
        input_shapes: inputs.iter().map(|(n, t)| (n.to_string(), t.dims().to_vec())).collect(),
        warmup,
        iters,
        mean_ms,
        median_ms: ms[iters / 2],
        min_ms: ms[0],
        denormal_as_zero: opts.denormal_as_zero,
        profile,
    })
}
