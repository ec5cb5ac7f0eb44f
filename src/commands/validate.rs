//! `adaptir validate`: an exported ONNX file run in ONNX Runtime (or tract, OpenVINO) and compared with its
//! reference (`runtime::validate`, which also renders the report).
use std::path::PathBuf;

use super::{Report, RuntimeArgs};
use crate::error::Result;
use crate::runtime::engine::Runtime;
use crate::runtime::validate::{validate, ValidateArgs, ValidateReport};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ONNX file to validate (written by `adaptir export`, or any file with --golden).
    pub model: PathBuf,
    /// Runtime(s): ort (ONNX Runtime), tract (pure Rust), openvino (CPU, f32), or all (one matrix).
    #[arg(long, default_value = "ort")]
    pub runtime: String,
    /// Timed runs after a warm-up run, for the matrix's latency column (median; 0: not timed).
    #[arg(long, default_value_t = 3)]
    pub latency_runs: usize,
    /// Golden inputs and reference outputs (.safetensors: one tensor per model input and output, by name).
    #[arg(long)]
    pub golden: Option<PathBuf>,
    #[command(flatten)]
    pub runtime_options: RuntimeArgs,
    /// Print JSON: {"passed", "ep", "outputs": [{"name", "max_abs", "mean_abs", "psnr_db", ...}], "nodes_by_ep",
    /// "runtimes": [{"runtime", "loaded", "nodes", "placement", "max_abs", "passed", "latency_ms", "error", ...}]}.
    #[arg(long)]
    pub json: bool,
    /// Backbone of the reference (default: backbone.safetensors beside the adapter or the model, else
    /// models/<backbone in the metadata>/ in the working folder or in the repository of this executable).
    #[arg(long)]
    pub backbone: Option<PathBuf>,
    /// Adapter of the reference (default: the metadata's file name, beside the model or in models/<backbone>/).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Feed patches of these real images instead of seeded noise (required for an `export --int8` file, which is
    /// then judged by the PSNR of its difference from the f32 model, INT8_MIN_PSNR_DB).
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
}

pub struct ValidateOutput {
    pub report: ValidateReport,
    pub json: bool,
}

pub fn run(a: &Args) -> Result<ValidateOutput> {
    let run = a.runtime_options.options(None)?;
    let report = validate(&ValidateArgs {
        model: &a.model,
        golden: a.golden.as_deref(),
        backbone: a.backbone.as_deref(),
        adapter: a.adapter.as_deref(),
        run,
        runtimes: Runtime::parse_list(&a.runtime)?,
        latency_runs: a.latency_runs,
        images: a.images.as_deref(),
    })?;
    Ok(ValidateOutput { report, json: a.json })
}

impl Report for ValidateOutput {
    fn render(&self) -> String {
        let mut s = self.report.render(self.json);
        if self.json {
            s.push('\n');
        }
        s
    }

    /// 1 on a mismatch or a file a runtime refused.
    fn exit_code(&self) -> u8 {
        u8::from(!self.report.passed)
    }
}
