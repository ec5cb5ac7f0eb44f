//! `adaptir export`: backbone + adapter (or the backbone alone) for one task -> an ONNX file
//! (`compile::export`).
use std::path::PathBuf;

use adaptir_ops::graph::FftLowering;

use super::{line, Report};
use crate::compile::export::{export, ExportReport};
use crate::error::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Adapter file; the output defaults to its stem with `.onnx`.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Backbone weights (default: backbone.safetensors beside the adapter, else models/<its backbone>/ in the working
    /// folder, else in the repository of this executable; without --adapter: ipt-tiny).
    #[arg(long)]
    pub backbone: Option<PathBuf>,
    /// Backbone config JSON (default: the adapter's record, the backbone's metadata, or config.json beside it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Task name or index, for the backbone alone (default: the adapter's task).
    #[arg(long)]
    pub task: Option<String>,
    /// The ONNX file to write (default: the adapter's stem with `.onnx`, in the working folder).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// FFT lowering: `matmul` (constant DFT bases, every execution provider) or `dft` (the ONNX DFT op).
    #[arg(long, default_value = "matmul")]
    pub fft: String,
    /// Who the file is for: `portable` (standard ops only, no f64: ONNX Runtime, OpenVINO, tract, TensorRT),
    /// `ort` (ai.adaptir functions, f64 spectral products: ONNX Runtime), `tensorrt` (portable, checked
    /// against TensorRT's operator support matrix).
    #[arg(long, default_value = "portable")]
    pub target: String,
    /// Flatten the ai.adaptir functions into plain nodes (with --target ort; the portable targets always do).
    #[arg(long)]
    pub inline_functions: bool,
    /// Precision of the spectral products, overriding the target's: `f32` or `f64`.
    #[arg(long)]
    pub spectral: Option<String>,
    /// A graph that takes one image of any size, (1, 3, H, W) in [0, 1], and does restore's overlapped
    /// tiling and blending inside (output (1, 3, sH, sW)).
    #[arg(long)]
    pub whole_image: bool,
    /// With --whole-image: the most tiles one image may have (the graph runs them as one batch).
    #[arg(long, default_value_t = crate::compile::whole_image::DEFAULT_MAX_TILES)]
    pub max_tiles: usize,
    /// With --whole-image: pixels shared by neighbouring tiles (even, at most half a tile), as `restore --overlap`.
    #[arg(long, default_value_t = crate::restore::CLI_OVERLAP)]
    pub overlap: usize,
    /// Half-precision weights and compute (f32 input and output).
    #[arg(long)]
    pub fp16: bool,
    #[arg(long, help = no_passes_help())]
    pub no_passes: bool,
    /// ONNX opset of the standard domain (only 20 is supported: it has LayerNormalization and Gelu).
    #[arg(long, default_value_t = 20)]
    pub opset: i64,
    /// Also write seeded inputs and the candle reference outputs (tensors `input`, `output`) here.
    #[arg(long)]
    pub golden: Option<PathBuf>,
}

/// `--no-passes`'s help: the passes of the registry.
fn no_passes_help() -> String {
    let names: Vec<&str> = crate::compile::passes::PASSES.iter().map(|p| p.name()).collect();
    format!("Skip the folding passes ({}).", names.join(", "))
}

/// `--fft`.
fn parse_fft(s: &str) -> Result<FftLowering> {
    match s {
        "matmul" => Ok(FftLowering::MatMul),
        "dft" => Ok(FftLowering::Dft),
        other => Err(Error::invalid(format!("--fft: expected `matmul` or `dft`, found `{other}`"))),
    }
}

pub fn run(a: &Args) -> Result<ExportReport> {
    use crate::compile::ir::{IR_VERSION, OPSET};
    if a.opset != OPSET {
        return Err(Error::invalid(format!(
            "--opset: opset {} is not supported; adaptir writes opset {OPSET} (IR version {IR_VERSION})",
            a.opset
        )));
    }
    let spectral = a.spectral.as_deref().map(crate::compile::target::parse_spectral).transpose();
    let report = export(&crate::compile::export::ExportArgs {
        adapter: a.adapter.as_deref(),
        backbone: a.backbone.as_deref(),
        config: a.config.as_deref(),
        task: a.task.as_deref(),
        output: a.output.as_deref(),
        fft: parse_fft(&a.fft)?,
        target: a.target.parse().map_err(Error::invalid)?,
        inline_functions: a.inline_functions,
        spectral: spectral.map_err(Error::invalid)?,
        whole_image: a.whole_image.then_some(crate::restore::Tiling { batch: a.max_tiles, overlap: a.overlap }),
        fp16: a.fp16,
        no_passes: a.no_passes,
        golden: a.golden.as_deref(),
    })?;
    // What killed writers of these paths left behind (the paths are known only now: -o has a default).
    super::remove_stale_temps(&report.output);
    if let Some(g) = &report.golden {
        super::remove_stale_temps(g);
    }
    Ok(report)
}

impl Report for ExportReport {
    fn render(&self) -> String {
        let mut s = String::new();
        let total: usize = self.op_counts.values().sum();
        line(
            &mut s,
            format!(
                "wrote {} ({:.1} KiB, sha256 {}) in {:.2} s",
                self.output.display(),
                self.bytes as f64 / 1024.0,
                self.sha256,
                self.seconds
            ),
        );
        let ops: Vec<String> = self.op_counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        line(&mut s, format!("{total} nodes: {}", ops.join(", ")));
        let applied: Vec<String> =
            self.passes.iter().filter(|(_, n)| *n > 0).map(|(k, n)| format!("{k} x{n}")).collect();
        if !applied.is_empty() {
            line(&mut s, format!("passes: {}", applied.join(", ")));
        }
        if self.tensorrt.is_some() {
            line(
                &mut s,
                format!(
                    "target tensorrt: every op, type and checkable restriction within {}",
                    crate::compile::tensorrt::MATRIX
                ),
            );
        }
        if let Some(g) = &self.golden {
            line(&mut s, format!("golden input/output: {}", g.display()));
        }
        s
    }
}
