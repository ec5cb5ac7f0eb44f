//! `adaptir export`: backbone + adapter (or the backbone alone) for one task -> an ONNX file
//! (`compile::export`).
use std::path::PathBuf;

use adaptir_ops::graph::FftLowering;

use super::{line, Report};
use crate::compile::export::{export, ExportReport};
use crate::compile::shared::{export_shared, SharedArgs, SharedReport};
use crate::error::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Adapter file; the output defaults to its stem with `.onnx`. Repeat it with --out-dir: one task file per
    /// adapter, all sharing one backbone weight file.
    #[arg(long)]
    pub adapter: Vec<PathBuf>,
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
    /// Write DIR/<task>.onnx for every --adapter and one weight file they share through ONNX external data
    /// (DIR/backbone.weights; backbone.fp16.weights with --fp16). All adapters must be for the same backbone.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// FFT lowering: `matmul` (constant DFT bases, every execution provider) or `dft` (the ONNX DFT op).
    #[arg(long, default_value = "matmul")]
    pub fft: String,
    /// Who the file is for: `portable` (standard ops only, f64 spectral products: ONNX Runtime, OpenVINO,
    /// tract), `ort` (ai.adaptir functions, f64 spectral products: ONNX Runtime), `tensorrt` (portable with f32
    /// spectral products, checked against TensorRT's operator support matrix).
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
    /// Also run an opt-in pass (repeatable): `subpixel-conv` moves the SR tail's last conv before its pixel shuffle,
    /// 0.79-0.87x the latency of an x4 file in ONNX Runtime and 0.94-0.96x in OpenVINO, but 1.7x in tract
    /// (docs/compiler.md "Passes").
    #[arg(long = "pass", value_name = "NAME")]
    pub passes: Vec<String>,
    /// ONNX opset of the standard domain (only 20 is supported: it has LayerNormalization and Gelu).
    #[arg(long, default_value_t = 20)]
    pub opset: i64,
    /// Also write seeded inputs and the candle reference outputs (tensors `input`, `output`) here.
    #[arg(long)]
    pub golden: Option<PathBuf>,
    /// Static INT8 (QDQ): the backbone's projections, FFNs and convs with int8 weights per output channel and
    /// uint8 activations whose ranges come from --calibrate; the adapter, the first and last convs stay f32.
    #[arg(long, requires = "calibrate")]
    pub int8: bool,
    /// With --int8: a folder of real images, taken as the model's inputs (degraded photos of the task, as
    /// `restore` takes them), cut into patches to calibrate the activation ranges on.
    #[arg(long, value_name = "DIR", requires = "int8")]
    pub calibrate: Option<PathBuf>,
    /// With --int8: how many patches of the --calibrate images (the same number from each image).
    #[arg(long, default_value_t = 64)]
    pub calibrate_patches: usize,
    /// With --int8: the least PSNR (dB) of the int8 model's output from the f32 model's on the calibration patches
    /// (the bound `validate --images` applies). Below it (plus INT8_SELECTION_MARGIN_DB, 1 dB, for validate's other
    /// patches), the nodes that harm most stay f32, one at a time, until it is met (docs/compiler.md "INT8"); 0
    /// quantizes every node of the plan whatever the loss.
    #[arg(long, value_name = "DB", default_value_t = crate::tolerance::INT8_MIN_PSNR_DB)]
    pub int8_min_psnr: f64,
}

/// `--int8`'s refusals: what a quantized file cannot be (yet), said before any work.
fn check_int8(a: &Args) -> Result<()> {
    let refuse = |what: &str, why: &str| Err(Error::invalid(format!("--int8 cannot be used with {what}: {why}")));
    if a.fp16 {
        return refuse("--fp16", "a file is either f16 or int8 with f32 elsewhere");
    }
    if a.whole_image {
        return refuse(
            "--whole-image",
            "calibrate and quantize the patch model; whole-image int8 is not supported yet",
        );
    }
    if a.out_dir.is_some() {
        return refuse("--out-dir", "quantized weights are per file; export each task with -o");
    }
    if a.golden.is_some() {
        return refuse(
            "--golden",
            "a golden file holds the f32 model's outputs, which an int8 file does not reproduce to f32 \
             precision; judge it with `adaptir validate --images DIR`",
        );
    }
    if a.target == "ort" {
        return refuse("--target ort", "quantization works on the flat graph of the portable targets");
    }
    Ok(())
}

/// `--int8`: calibrate `graph` (inputs `side` x `side`) on the --calibrate images in ONNX Runtime and quantize it.
fn quantize_graph(
    a: &Args,
    graph: &mut crate::compile::ir::Graph,
    side: usize,
) -> Result<crate::compile::quantize::QuantReport> {
    use crate::compile::quantize;
    use crate::runtime::calibrate;
    let dir = a.calibrate.as_deref().ok_or_else(|| Error::invalid("--int8 needs --calibrate DIR"))?;
    let plan = quantize::plan(graph);
    let patches = calibrate::calibration_patches(dir, side, a.calibrate_patches)?;
    let opts = crate::runtime::session::RunOptions::default();
    let ranges = calibrate::ranges(graph, &plan.activations(), &patches, CALIBRATION_BATCH, &opts)?;
    let choice =
        calibrate::choose_sites(graph, plan, &ranges, &patches, CALIBRATION_BATCH, &opts, a.int8_min_psnr, &mut |m| {
            eprintln!("{m}")
        })?;
    let mut report = quantize::apply(graph, &choice.plan, &ranges)?;
    (report.kept_f32, report.psnr_db, report.psnr_all_db) = (choice.kept_f32, choice.psnr_db, choice.psnr_all_db);
    let md = &mut graph.metadata;
    md.insert("precision".into(), "int8".into());
    let folder = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    md.insert("int8_calibration".into(), format!("{} patches of {folder}", patches.dim(0)?));
    md.insert("int8_f32_nodes".into(), report.kept_f32.join(","));
    Ok(report)
}

/// Patches per ONNX Runtime call while calibrating.
const CALIBRATION_BATCH: usize = 16;

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

/// What `export` wrote: one file, or task files around a shared weight file (`--out-dir`).
pub enum ExportOutput {
    One(ExportReport),
    Shared(SharedReport),
}

pub fn run(a: &Args) -> Result<ExportOutput> {
    use crate::compile::ir::{IR_VERSION, OPSET};
    if a.opset != OPSET {
        return Err(Error::invalid(format!(
            "--opset: opset {} is not supported; adaptir writes opset {OPSET} (IR version {IR_VERSION})",
            a.opset
        )));
    }
    let spectral = a.spectral.as_deref().map(crate::compile::target::parse_spectral).transpose();
    let extra_passes = a
        .passes
        .iter()
        .map(|n| crate::compile::passes::opt_in(n))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(Error::invalid)?;
    if a.no_passes && !extra_passes.is_empty() {
        return Err(Error::invalid("--pass cannot be used with --no-passes: one adds a pass, the other runs none"));
    }
    let mut args = crate::compile::export::ExportArgs {
        adapter: None,
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
        extra_passes: &extra_passes,
        golden: a.golden.as_deref(),
        int8: None,
    };
    if a.int8 {
        check_int8(a)?;
    }
    let quantize = |graph: &mut crate::compile::ir::Graph, side: usize| quantize_graph(a, graph, side);
    // An EDT config (the official checkpoint given as --backbone, for the config's task), or an adapter trained on
    // an EDT checkpoint: compile::export_edt.
    let edt_config = a.config.as_deref().filter(|p| crate::backbone::edt::config::is_edt_config_file(p));
    let edt_adapter = match a.adapter.as_slice() {
        [one] => crate::peft::file::AdapterFile::load(one)?.meta.backbone_config.edt().is_some(),
        _ => false,
    };
    if edt_config.is_some() || edt_adapter {
        if a.out_dir.is_some() || a.adapter.len() > 1 {
            return Err(Error::invalid("--out-dir with an EDT config: EDT exports one file per checkpoint (-o)"));
        }
        args.adapter = a.adapter.first().map(PathBuf::as_path);
        if a.int8 {
            args.int8 = Some(&quantize);
        }
        let report = crate::compile::export_edt::export_edt(&args, edt_config)?;
        super::remove_stale_temps(&report.output);
        if let Some(g) = &report.golden {
            super::remove_stale_temps(g);
        }
        return Ok(ExportOutput::One(report));
    }
    if let Some(dir) = &a.out_dir {
        // What a shared export cannot honour is refused, not ignored (docs/compiler.md, "Many tasks, one weight file").
        if a.output.is_some() {
            return Err(Error::invalid("-o cannot be used with --out-dir: the task files are named DIR/<task>.onnx"));
        }
        if a.task.is_some() {
            return Err(Error::invalid("--task cannot be used with --out-dir: each adapter names its task"));
        }
        if a.golden.is_some() {
            return Err(Error::invalid(
                "--golden cannot be used with --out-dir: write each task's golden file with a one-file export \
                 (`adaptir export --adapter A -o A.onnx --golden G`); the outputs do not depend on where the weights \
                 are stored",
            ));
        }
        if a.adapter.is_empty() {
            return Err(Error::invalid(
                "--out-dir needs at least one --adapter (the backbone alone has no tasks to share it)",
            ));
        }
        (args.task, args.output, args.golden) = (None, None, None);
        let report = export_shared(&SharedArgs { adapters: &a.adapter, out_dir: dir, base: args })?;
        super::remove_stale_temps(&report.weights);
        for t in &report.tasks {
            super::remove_stale_temps(&t.path);
        }
        return Ok(ExportOutput::Shared(report));
    }
    if a.adapter.len() > 1 {
        return Err(Error::invalid(format!(
            "{} --adapter files: several tasks need --out-dir DIR (one file per task around one shared weight file)",
            a.adapter.len()
        )));
    }
    args.adapter = a.adapter.first().map(PathBuf::as_path);
    if a.int8 {
        args.int8 = Some(&quantize);
    }
    let report = export(&args)?;
    // What killed writers of these paths left behind (the paths are known only now: -o has a default).
    super::remove_stale_temps(&report.output);
    if let Some(g) = &report.golden {
        super::remove_stale_temps(g);
    }
    Ok(ExportOutput::One(report))
}

impl Report for ExportOutput {
    fn render(&self) -> String {
        match self {
            ExportOutput::One(r) => r.render(),
            ExportOutput::Shared(r) => r.render(),
        }
    }
}

impl Report for SharedReport {
    fn render(&self) -> String {
        let mut s = String::new();
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        line(
            &mut s,
            format!(
                "{} {} ({:.2} MiB, {} tensors, sha256 {}){}",
                if self.weights_written { "wrote" } else { "kept" },
                self.weights.display(),
                mib(self.weights_bytes),
                self.weights_tensors,
                self.weights_sha256,
                if self.weights_written { "" } else { ": the folder already held these bytes" }
            ),
        );
        for t in &self.tasks {
            line(
                &mut s,
                format!(
                    "wrote {} ({:.1} KiB; {} tensors shared, {} inline; from {})",
                    t.path.display(),
                    t.bytes as f64 / 1024.0,
                    t.external,
                    t.inline,
                    t.adapter.display()
                ),
            );
            if !t.replaced.is_empty() {
                line(
                    &mut s,
                    format!(
                        "  {} shared tensors folded into per-task copies: {}",
                        t.replaced.len(),
                        t.replaced.join(", ")
                    ),
                );
            }
        }
        line(
            &mut s,
            format!(
                "{} tasks: {:.2} MiB in all, against {:.2} MiB as separate files, in {:.2} s",
                self.tasks.len(),
                mib(self.total_bytes()),
                mib(self.standalone_bytes()),
                self.seconds
            ),
        );
        s
    }
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
        if let Some(q) = &self.int8 {
            line(
                &mut s,
                format!(
                    "int8: {} MatMul + {} Conv quantized ({} int8 weights; {} f32 values left), {} activation ranges \
                     calibrated; {:.2} dB from the f32 model on the calibration patches",
                    q.matmuls, q.convs, q.int8_weights, q.f32_weights, q.activations, q.psnr_db
                ),
            );
            if !q.kept_f32.is_empty() {
                line(
                    &mut s,
                    format!(
                        "int8: {} node(s) left f32 to meet --int8-min-psnr ({:.2} dB with every node quantized): {}",
                        q.kept_f32.len(),
                        q.psnr_all_db,
                        q.kept_f32.join(", ")
                    ),
                );
            }
        }
        s
    }
}
