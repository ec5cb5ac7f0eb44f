//! `adaptir ort-latency`: time ONNX Runtime runs of an exported model on an execution provider
//! (`runtime::latency`).
use std::path::PathBuf;

use super::{Report, RuntimeArgs};
use crate::error::Result;
use crate::runtime::latency::{latency, Latency};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The exported ONNX file.
    pub model: PathBuf,
    /// safetensors with one tensor per model input, by name (`adaptir export --golden`).
    #[arg(long)]
    pub golden: PathBuf,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Untimed runs first.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 50)]
    pub iters: usize,
    /// Also write ONNX Runtime's per-node profile (PREFIX_DATE.json) and print its kernel time per part
    /// of the model: backbone, adapter nodes, each ai.adaptir function.
    #[arg(long, value_name = "PREFIX")]
    pub profile: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub struct LatencyOutput {
    pub report: Latency,
    pub json: bool,
}

pub fn run(a: &Args) -> Result<LatencyOutput> {
    let options = a.runtime.options(a.profile.clone())?;
    Ok(LatencyOutput { report: latency(&a.model, &a.golden, &options, a.warmup, a.iters)?, json: a.json })
}

impl Report for LatencyOutput {
    fn render(&self) -> String {
        let r = &self.report;
        if self.json {
            return serde_json::to_string(r).unwrap_or_default() + "\n";
        }
        let profile = match &r.profile {
            Some(p) => format!(
                "\nprofile {} (timings above include the profiler's cost):\n{}",
                p.file,
                crate::runtime::profile::render(&p.parts)
            ),
            None => String::new(),
        };
        let daz = if r.denormal_as_zero { ", denormals flushed to zero" } else { "" };
        let mut s = format!(
            "{} on {}: median {:.3} ms, mean {:.3} ms, min {:.3} ms over {} runs (after {} warm-up), inputs {:?}, \
             nodes {:?}{daz}{profile}",
            r.model, r.ep, r.median_ms, r.mean_ms, r.min_ms, r.iters, r.warmup, r.input_shapes, r.nodes_by_ep
        );
        s.push('\n');
        s
    }
}
