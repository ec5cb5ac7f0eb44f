//! `adaptir validate`: run an exported ONNX file in ONNX Runtime on one execution provider, and / or in tract and
//! OpenVINO (`--runtime`, one matrix row each, `engine.rs`), and compare every output with one reference: stored
//! golden outputs (`--golden`), or the candle model the file was exported from (found through the file's
//! `metadata_props`, its backbone and adapter verified by sha256) on seeded inputs.
//! The tolerance is the named one for the file's precision (`F32_REASSOCIATION_REL`, or `F16_REL` for an
//! `--fp16` export). An f32 output beyond `F32_REASSOCIATION_REL` of the candle model is then judged against
//! the same candle model run in f64 (the peer check, per runtime): it passes if the runtime is at most `F32_PEER_FACTOR`
//! times further from the f64 result than candle's own f32 forward is. Deep models (ipt-base with random or
//! barely trained weights) amplify f32 rounding to 1e-4 whatever the engine; a wrong export is far outside
//! both bounds. See docs/validation.md.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use super::compare::{compare, Comparison, Tolerance};
use super::engine::{run_timed, Engine, Runtime};
use super::session::{Ep, RunOptions};
use crate::backbone::{EdtConfig, IptConfig};
use crate::compile::ir::{Dim, ElemType, Graph};
use crate::error::{Error, Result};
use crate::model::build_model;
use crate::peft::file::{sha256_file, AdapterFile};

/// Seed of the inputs `validate` makes when it has no golden file.
pub const INPUT_SEED: u64 = 0x5eed_0006;
/// Batch size of those inputs where the model's batch dimension is symbolic.
pub const INPUT_BATCH: usize = 2;

pub struct ValidateArgs<'a> {
    pub model: &'a Path,
    pub golden: Option<&'a Path>,
    pub backbone: Option<&'a Path>,
    pub adapter: Option<&'a Path>,
    /// ONNX Runtime's options; `threads` also sets tract's and OpenVINO's thread counts.
    pub run: RunOptions,
    /// The runtimes to run the file in, in order (`Runtime::parse_list`); one row of the matrix each.
    pub runtimes: Vec<Runtime>,
    /// Timed runs after the first (warm-up) run, for the latency column (0: not timed).
    pub latency_runs: usize,
    /// Real images whose patches are the inputs instead of seeded noise (required for an `--int8` file, whose
    /// activation ranges were calibrated on real images: noise lies outside them).
    pub images: Option<&'a Path>,
}

/// Patches of `--images` that `validate` feeds (the same number from each image; `runtime::calibrate`).
pub const IMAGE_PATCHES: usize = 32;

/// One output's comparison.
#[derive(Clone, Debug)]
pub struct OutputReport {
    pub name: String,
    pub comparison: Comparison,
    /// Only where `comparison` failed and an f64 candle model could be run (fp32 file, candle reference).
    pub peer: Option<PeerCheck>,
}

impl PeerCheck {
    /// The verdict from the two distances to the f64 forward and the f64 output's max |value|.
    pub fn judge(runtime_vs_f64: f64, candle_f32_vs_f64: f64, f64_max_abs: f64) -> PeerCheck {
        use adaptir_ops::tolerance::{F32_PEER_CEILING_REL, F32_PEER_FACTOR};
        let ceiling = F32_PEER_CEILING_REL * f64_max_abs;
        let passed = runtime_vs_f64 <= F32_PEER_FACTOR * candle_f32_vs_f64 && runtime_vs_f64 <= ceiling;
        PeerCheck { runtime_vs_f64, candle_f32_vs_f64, ceiling, passed }
    }
}

impl OutputReport {
    pub fn passed(&self) -> bool {
        self.comparison.passed || self.peer.as_ref().is_some_and(|p| p.passed)
    }
}

/// The runtime and candle's f32 forward, both against candle's f64 forward of the same model and inputs.
#[derive(Clone, Debug)]
pub struct PeerCheck {
    /// `max |runtime - f64|`.
    pub runtime_vs_f64: f64,
    /// `max |candle f32 - f64|`.
    pub candle_f32_vs_f64: f64,
    /// `F32_PEER_CEILING_REL * max |f64 forward|`: the most any runtime may be from the f64 forward.
    pub ceiling: f64,
    /// `runtime_vs_f64 <= F32_PEER_FACTOR * candle_f32_vs_f64` and `runtime_vs_f64 <= ceiling` (false for NaN).
    pub passed: bool,
}

/// One runtime's row of the matrix.
#[derive(Clone, Debug)]
pub struct RuntimeRow {
    pub runtime: Runtime,
    /// The runtime accepted the file.
    pub loaded: bool,
    /// The runtime's own message where it refused the file or failed to run it (the row then fails).
    pub error: Option<String>,
    /// Nodes of the graph the runtime executes, where it reports them.
    pub nodes: Option<usize>,
    /// Where the runtime placed the model, in words.
    pub placement: String,
    /// ONNX Runtime's nodes per execution provider (empty for the other runtimes).
    pub nodes_by_ep: BTreeMap<String, usize>,
    pub outputs: Vec<OutputReport>,
    /// Median of `latency_runs` timed runs after a warm-up, milliseconds; informational.
    pub latency_ms: Option<f64>,
    pub latency_runs: usize,
    pub passed: bool,
}

impl RuntimeRow {
    /// The largest `max_abs` over the outputs (NaN wins).
    pub fn max_abs(&self) -> Option<f64> {
        self.outputs.iter().map(|o| o.comparison.max_abs).reduce(|a, b| if a.is_nan() || b > a { b } else { a })
    }
}

/// What `validate` found.
#[derive(Clone, Debug)]
pub struct ValidateReport {
    pub model: PathBuf,
    pub ep: Ep,
    pub strict_ep: bool,
    /// "golden FILE" or "candle (backbone B, adapter A)".
    pub reference: String,
    pub precision: String,
    pub tolerance: Tolerance,
    pub input_shapes: Vec<(String, Vec<usize>)>,
    /// The first row's outputs (ONNX Runtime's with the default `--runtime ort` or with `all`).
    pub outputs: Vec<OutputReport>,
    /// ONNX Runtime's placements (empty if it did not run).
    pub nodes_by_ep: BTreeMap<String, usize>,
    /// One row per runtime, in the order asked.
    pub runtimes: Vec<RuntimeRow>,
    /// Ops of the flattened graph that `candle-onnx` cannot evaluate (empty: it could).
    pub candle_onnx_blockers: Vec<String>,
    pub passed: bool,
    pub seconds: f64,
}

fn meta<'a>(g: &'a Graph, model: &Path, key: &str) -> Result<&'a str> {
    g.metadata.get(key).map(String::as_str).ok_or_else(|| {
        Error::file(
            model,
            format!(
                "metadata_props has no `{key}`: expected a file written by `adaptir export`; to validate another \
                 file, pass --golden G.safetensors with its inputs and reference outputs"
            ),
        )
    })
}

fn check_sha(path: &Path, expected: &str, what: &str, model: &Path) -> Result<()> {
    let found = sha256_file(path)?;
    if found != expected {
        return Err(Error::file(
            path,
            format!(
                "sha256 {found}, but {} was exported from {} {what} with sha256 {expected}: pass the {what} it was \
                 exported from (--{what} PATH)",
                model.display(),
                if what.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
            ),
        ));
    }
    Ok(())
}

/// The first of `candidates` that exists.
fn first_existing(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates.iter().find(|p| p.is_file()).cloned()
}

/// Named inputs, named reference outputs, a description of where they come from, and (candle references) how
/// to run the same model in f64 for the peer check.
type Reference = (Vec<(String, Tensor)>, Vec<(String, Tensor)>, String, Option<F64Model>);

/// What the f64 forward needs; built only if an output fails the fixed bound (it costs an f64 forward).
enum F64Model {
    Ipt { backbone: PathBuf, config: IptConfig, adapter: Option<AdapterFile>, task: usize },
    Edt { checkpoint: PathBuf, config: EdtConfig, adapter: Option<AdapterFile> },
}

impl F64Model {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(DType::F64)?;
        match self {
            F64Model::Ipt { backbone, config, adapter, task } => {
                let model = build_model(backbone, config, adapter.as_ref(), DType::F64, &Device::Cpu)?;
                Ok(model.forward(&x, *task, false)?)
            }
            F64Model::Edt { checkpoint, config, adapter } => {
                let model = match adapter {
                    Some(a) => crate::model::edt::load_edt_with_adapter(checkpoint, a, DType::F64, &Device::Cpu)?,
                    None => crate::model::edt::load_edt(checkpoint, config, DType::F64, &Device::Cpu)?.0,
                };
                Ok(model.forward(&x, false)?)
            }
        }
    }
}

/// The reference's inputs and what they are: patches of `--images` (side x side), else seeded inputs of `dims`.
fn reference_inputs(images: Option<&Path>, dims: &[usize], side: usize) -> Result<(Tensor, String)> {
    Ok(match images {
        Some(dir) => {
            let x = super::calibrate::calibration_patches(dir, side, IMAGE_PATCHES)?;
            let what = format!("{} patches of the images in {}", x.dim(0)?, dir.display());
            (x, what)
        }
        None => (seeded_input(dims)?, format!("seeded inputs (seed {INPUT_SEED:#x})")),
    })
}

/// Seeded inputs in [0, 1) of these dims.
fn seeded_input(dims: &[usize]) -> Result<Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(INPUT_SEED);
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
    Ok(Tensor::from_vec(v, dims, &Device::Cpu)?)
}

/// The adapter `file` that the exported model records, checked against its sha256: `--adapter`, else beside the
/// model, in `models/<backbone>/` (working folder, then this executable's repository), beside `--backbone`, and in
/// the working folder, the first that exists (IPT and EDT files alike).
fn find_adapter(g: &Graph, args: &ValidateArgs, file: &str, backbone_name: &str) -> Result<PathBuf> {
    let model_path = args.model;
    let sha = meta(g, model_path, "adapter_sha256")?;
    let path = match args.adapter {
        Some(a) if !a.is_file() => {
            return Err(Error::file(a, "expected an adapter file (.safetensors), found no such file"));
        }
        Some(a) => a.to_path_buf(),
        None => {
            let mut candidates = vec![model_path.parent().unwrap_or(Path::new("")).join(file)];
            candidates.extend(crate::model::models_candidates(backbone_name, file));
            candidates.extend(args.backbone.and_then(Path::parent).map(|p| p.join(file)));
            candidates.push(PathBuf::from(file));
            first_existing(&candidates).ok_or_else(|| {
                let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
                Error::file(
                    model_path,
                    format!(
                        "adapter `{file}` (sha256 {sha}) not found; looked for {}: pass --adapter PATH, or --golden \
                         G.safetensors",
                        looked.join(", ")
                    ),
                )
            })?
        }
    };
    check_sha(&path, sha, "adapter", model_path)?;
    Ok(path)
}

/// The candle reference of an EDT file (`export` with an EDT config or an EDT adapter): the checkpoint it
/// records (given as --backbone; else beside the adapter or the file), and its adapter (given as --adapter, else
/// beside the file), each checked by sha256, on seeded inputs at the task's training size or on patches of
/// `--images` of that size.
fn edt_reference(g: &Graph, args: &ValidateArgs) -> Result<Reference> {
    let model_path = args.model;
    let config: EdtConfig = serde_json::from_str(meta(g, model_path, "backbone_config")?)
        .map_err(|e| Error::file(model_path, format!("metadata `backbone_config` is not an EDT config: {e}")))?;
    let task = config.edt_task().map_err(|m| Error::file(model_path, format!("metadata `backbone_config`: {m}")))?;
    let name = meta(g, model_path, "backbone")?;
    let sha = meta(g, model_path, "backbone_sha256")?;
    let model_dir = model_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let adapter = match g.metadata.get("adapter") {
        None => None,
        Some(file) => Some(AdapterFile::load(&find_adapter(g, args, file, name)?)?),
    };
    let checkpoint = match (args.backbone, &adapter) {
        (Some(b), _) => b.to_path_buf(),
        (None, Some(a)) => {
            let beside: Vec<&Path> = a.path.parent().into_iter().chain([model_dir.as_path()]).collect();
            crate::model::find_backbone(None, name, &beside, ", or --golden G.safetensors")?
        }
        (None, None) => {
            let beside = model_path.parent().map(Path::to_path_buf).unwrap_or_default().join(name);
            if !beside.is_file() {
                return Err(Error::file(
                    model_path,
                    format!(
                        "exported from the EDT checkpoint `{name}` (sha256 {sha}), not found at {}: pass --backbone \
                         PATH, or --golden G.safetensors",
                        beside.display()
                    ),
                ));
            }
            beside
        }
    };
    if !checkpoint.is_file() {
        return Err(Error::file(&checkpoint, "expected the EDT checkpoint (.safetensors or .pt), found no such file"));
    }
    check_sha(&checkpoint, sha, "backbone", model_path)?;
    let side = task.input_size();
    let model = match &adapter {
        Some(a) => crate::model::edt::load_edt_with_adapter(&checkpoint, a, DType::F32, &Device::Cpu)?,
        None => crate::model::edt::load_edt(&checkpoint, &config, DType::F32, &Device::Cpu)?.0,
    };
    if g.metadata.get("whole_image").is_some_and(|v| v == "1") {
        let described = format!("EDT checkpoint {}", model_files(&checkpoint, adapter.as_ref()));
        let ps = (side, task.scale());
        return whole_image_reference(g, model_path, ps, &mut |x| Ok(model.forward(x, false)?), described);
    }
    let vi = g.inputs.first().ok_or_else(|| Error::file(model_path, "the graph has no input"))?;
    let dims: Vec<usize> = vi.shape.iter().map(|d| if let Dim::Fixed(n) = d { *n } else { INPUT_BATCH }).collect();
    if g.inputs.len() != 1 || dims.len() != 4 || dims[1..] != [3, side, side] {
        return Err(Error::file(
            model_path,
            format!(
                "input `{}` has shape {:?}, but its EDT task {} takes (N, 3, {side}, {side})",
                vi.name, vi.shape, config.task
            ),
        ));
    }
    let (x, inputs) = reference_inputs(args.images, &dims, side)?;
    let y = model.forward(&x, false)?;
    let out_name = g.outputs.first().map(|o| o.name.clone()).unwrap_or_else(|| "output".into());
    let what = format!("candle (EDT checkpoint {}), {inputs}", model_files(&checkpoint, adapter.as_ref()));
    let f64_model = F64Model::Edt { checkpoint, config, adapter };
    Ok((vec![(vi.name.clone(), x)], vec![(out_name, y)], what, Some(f64_model)))
}

/// The candle reference: inputs (seeded) and outputs, plus a description.
fn candle_reference(g: &Graph, args: &ValidateArgs) -> Result<Reference> {
    if g.metadata.get("arch").map(String::as_str) == Some(crate::compile::export_edt::ARCH_EDT) {
        return edt_reference(g, args);
    }
    let model_path = args.model;
    let name = meta(g, model_path, "backbone")?;
    let backbone_sha = meta(g, model_path, "backbone_sha256")?;
    let config: IptConfig = serde_json::from_str(meta(g, model_path, "backbone_config")?)
        .map_err(|e| Error::file(model_path, format!("metadata `backbone_config` is not an IPT config: {e}")))?;
    config.validate().map_err(|m| Error::file(model_path, format!("metadata `backbone_config`: {m}")))?;
    let task: usize = meta(g, model_path, "task_index")?.parse().map_err(|_| {
        Error::file(model_path, format!("metadata `task_index` is `{}`, expected an integer", g.metadata["task_index"]))
    })?;
    let method = meta(g, model_path, "method")?;
    let model_dir = model_path.parent().map(Path::to_path_buf).unwrap_or_default();

    // The adapter's path first (its folder is where the backbone is looked for first), then the backbone by
    // `crate::model`'s rule; a missing backbone is reported before a missing adapter.
    let adapter_path = if method == crate::peft::PRETRAIN.name {
        None
    } else {
        Some(find_adapter(g, args, meta(g, model_path, "adapter")?, name))
    };
    let beside: Vec<&Path> = adapter_path
        .as_ref()
        .and_then(|found| found.as_deref().ok())
        .and_then(Path::parent)
        .into_iter()
        .chain([model_dir.as_path()])
        .collect();
    let backbone = crate::model::find_backbone(
        args.backbone,
        name,
        &beside,
        ", or --golden G.safetensors to validate against stored outputs",
    )?;
    check_sha(&backbone, backbone_sha, "backbone", model_path)?;
    let adapter = adapter_path.transpose()?.as_deref().map(AdapterFile::load).transpose()?;
    let device = Device::Cpu;
    let model = build_model(&backbone, &config, adapter.as_ref(), DType::F32, &device)?;

    if g.metadata.get("whole_image").is_some_and(|v| v == "1") {
        let ps = (config.patch_size, config.scales.get(task).copied().unwrap_or(1));
        let described = format!("backbone {}", model_files(&backbone, adapter.as_ref()));
        return whole_image_reference(g, model_path, ps, &mut |x| Ok(model.forward(x, task, false)?), described);
    }
    // Seeded inputs in [0, 1), shaped as the model's inputs (a symbolic batch gets INPUT_BATCH).
    if g.inputs.len() != 1 {
        return Err(Error::file(
            model_path,
            format!("expected one graph input (the image batch), found {}: pass --golden", g.inputs.len()),
        ));
    }
    let vi = &g.inputs[0];
    let dims: Vec<usize> = vi.shape.iter().map(|d| if let Dim::Fixed(n) = d { *n } else { INPUT_BATCH }).collect();
    let p = config.patch_size;
    if dims != [dims.first().copied().unwrap_or(0), 3, p, p] {
        return Err(Error::file(
            model_path,
            format!("input `{}` has shape {:?}, but its backbone_config says (N, 3, {p}, {p})", vi.name, vi.shape),
        ));
    }
    let (x, inputs) = reference_inputs(args.images, &dims, p)?;
    let y = model.forward(&x, task, false)?;
    let out_name = g.outputs.first().map(|o| o.name.clone()).unwrap_or_else(|| "output".into());
    let what = format!("candle (backbone {}), {inputs}", model_files(&backbone, adapter.as_ref()));
    let f64_model = F64Model::Ipt { backbone, config, adapter, task };
    Ok((vec![(vi.name.clone(), x)], vec![(out_name, y)], what, Some(f64_model)))
}

/// A whole-image file (`export --whole-image`): a seeded image of `WHOLE_IMAGE_GOLDEN_SIZE` and its restoration
/// by the candle model with `restore`'s tiling (the overlap the file records). No peer check: the reference is
/// the tiled restoration, not one forward.
fn whole_image_reference(
    g: &Graph,
    model_path: &Path,
    (p, s): (usize, usize),
    forward: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    described: String,
) -> Result<Reference> {
    let overlap: usize = meta(g, model_path, "tile_overlap")?.parse().map_err(|_| {
        Error::file(
            model_path,
            format!("metadata `tile_overlap` is `{}`, expected an integer", g.metadata["tile_overlap"]),
        )
    })?;
    let tiling = crate::restore::Tiling { overlap, ..Default::default() };
    let (x, y) = crate::compile::export::whole_image_golden_with(p, s, tiling, forward)?;
    let name = g.inputs.first().map(|i| i.name.clone()).unwrap_or_else(|| "image".into());
    let out_name = g.outputs.first().map(|o| o.name.clone()).unwrap_or_else(|| "output".into());
    let what =
        format!("candle `restore` (overlap {overlap}) of a seeded {}x{} image ({described})", x.dim(3)?, x.dim(2)?);
    Ok((vec![(name, x)], vec![(out_name, y)], what, None))
}

/// "backbone B, adapter A" (or "no adapter"), for a reference's description.
fn model_files(backbone: &Path, adapter: Option<&AdapterFile>) -> String {
    format!(
        "{}, {}",
        backbone.display(),
        adapter.map(|a| format!("adapter {}", a.path.display())).unwrap_or_else(|| "no adapter".into())
    )
}

/// Inputs and reference outputs from a golden file: one tensor per graph input and per graph output, by name.
fn golden_reference(g: &Graph, golden: &Path) -> Result<Reference> {
    if !golden.is_file() {
        return Err(Error::file(golden, "expected a golden .safetensors file, found no such file"));
    }
    let tensors = candle_core::safetensors::load(golden, &Device::Cpu)
        .map_err(|e| Error::file(golden, format!("not a readable safetensors file: {e}")))?;
    let names: Vec<&String> = tensors.keys().collect();
    let take = |name: &str, what: &str| {
        tensors.get(name).cloned().ok_or_else(|| {
            Error::file(golden, format!("expected a tensor `{name}` for the model's {what} `{name}`, found {names:?}"))
        })
    };
    let mut inputs = Vec::new();
    for vi in &g.inputs {
        let t = take(&vi.name, "input")?;
        let rank_ok = t.rank() == vi.shape.len();
        let dims_ok = rank_ok
            && vi.shape.iter().zip(t.dims()).all(|(d, &n)| match d {
                Dim::Fixed(m) => *m == n,
                Dim::Sym(_) => true,
            });
        let dtype_ok = matches!(
            (vi.elem, t.dtype()),
            (ElemType::F32, DType::F32)
                | (ElemType::F16, DType::F16)
                | (ElemType::F64, DType::F64)
                | (ElemType::I64, DType::I64)
        );
        if !dims_ok || !dtype_ok {
            return Err(Error::file(
                golden,
                format!(
                    "tensor `{}` is {:?} {:?}, but the model's input `{}` expects {:?} {:?}",
                    vi.name,
                    t.dtype(),
                    t.dims(),
                    vi.name,
                    vi.elem,
                    vi.shape
                ),
            ));
        }
        inputs.push((vi.name.clone(), t));
    }
    let mut outputs = Vec::new();
    for vi in &g.outputs {
        outputs.push((vi.name.clone(), take(&vi.name, "output")?));
    }
    Ok((inputs, outputs, format!("golden {}", golden.display()), None))
}

/// Run a loaded file on `feed` (a warm-up run, whose outputs are compared, then the timed runs) and compare every
/// reference output. `Err` is the runtime failing to run it or returning other outputs.
fn run_engine(
    mut engine: Engine,
    model: &Path,
    feed: &[(&str, Tensor)],
    references: &[(String, Tensor)],
    tolerance: Tolerance,
    latency_runs: usize,
) -> Result<(RuntimeRow, Vec<(String, Tensor)>)> {
    let rt = engine.runtime();
    let nodes_by_ep = match &engine {
        Engine::Ort(s) => s.nodes_by_ep().clone(),
        _ => BTreeMap::new(),
    };
    let (nodes, placement) = (engine.nodes(), engine.placement());
    let timed = run_timed(&mut engine, feed, latency_runs)?;
    let mut outputs = Vec::new();
    for (name, reference_tensor) in references {
        let ours = timed.outputs.iter().find(|(n, _)| n == name).map(|(_, t)| t).ok_or_else(|| {
            Error::file(model, format!("{} returned no output `{name}` (the reference has it)", runtime_name(rt)))
        })?;
        let c = compare(&format!("output `{name}`"), ours, reference_tensor, tolerance)
            .map_err(|e| Error::file(model, format!("{}: {e}", runtime_name(rt))))?;
        outputs.push(OutputReport { name: name.clone(), comparison: c, peer: None });
    }
    let row = RuntimeRow {
        runtime: rt,
        loaded: true,
        error: None,
        nodes,
        placement,
        nodes_by_ep,
        outputs,
        latency_ms: timed.median_ms,
        latency_runs: timed.runs,
        passed: false,
    };
    Ok((row, timed.outputs))
}

/// The runtime's name in messages.
fn runtime_name(rt: Runtime) -> &'static str {
    match rt {
        Runtime::Ort => "ONNX Runtime",
        Runtime::Tract => "tract",
        Runtime::OpenVino => "OpenVINO",
    }
}

/// The row of a runtime that refused the file (`loaded` false) or failed to run it: FAIL with its message.
fn failed_row(rt: Runtime, loaded: bool, error: String) -> RuntimeRow {
    RuntimeRow {
        runtime: rt,
        loaded,
        error: Some(error),
        nodes: None,
        placement: String::new(),
        nodes_by_ep: BTreeMap::new(),
        outputs: Vec::new(),
        latency_ms: None,
        latency_runs: 0,
        passed: false,
    }
}

/// Validate `args.model` in each of `args.runtimes` (see the module docs). `Ok` with `passed: false` is a numerical
/// mismatch or a file a runtime refused (exit 1); `Err` is bad input or a runtime that is not installed (exit 2).
/// ONNX Runtime alone (the default) keeps its earlier contract: any failure to load or run is an `Err`.
pub fn validate(args: &ValidateArgs) -> Result<ValidateReport> {
    let start = std::time::Instant::now();
    if !args.model.is_file() {
        return Err(Error::file(args.model, "expected an ONNX model file, found no such file"));
    }
    if args.runtimes.is_empty() {
        return Err(Error::invalid("--runtime: expected `ort`, `tract`, `openvino` or `all`, found no runtime"));
    }
    if args.run.threads == Some(0) {
        return Err(Error::invalid("--threads: expected at least 1, found 0"));
    }
    // Bad input before any work: a row that could not honour the option would only fail later.
    for rt in args.runtimes.iter().filter(|rt| **rt != Runtime::Ort) {
        args.run.refuse_denormal_as_zero(rt.as_str())?;
    }
    let g = crate::compile::onnx::read(args.model)?;
    let precision = g.metadata.get("precision").cloned().unwrap_or_else(|| "fp32".into());
    let bf16 = args.run.precision == crate::runtime::Precision::Bf16;
    let tolerance = match precision.as_str() {
        "fp16" => Tolerance::F16,
        "int8" => Tolerance::INT8,
        _ if bf16 => Tolerance::BF16,
        _ => Tolerance::F32,
    };
    if precision == "int8" && args.images.is_none() && args.golden.is_none() {
        return Err(Error::file(
            args.model,
            "an int8 file is judged on real images (its activation ranges were calibrated on them; seeded noise \
             lies outside them): give --images DIR, a folder of inputs for its task",
        ));
    }
    let (inputs, references, reference, f64_model) = match args.golden {
        Some(golden) => golden_reference(&g, golden)?,
        None => candle_reference(&g, args)?,
    };
    // A runtime that is not installed is an error about this machine, not about the file: exit 2 before any run.
    for rt in &args.runtimes {
        rt.check_installed()?;
    }
    let ort_alone = args.runtimes == [Runtime::Ort];
    let shapes: Vec<(String, Vec<usize>)> = inputs.iter().map(|(n, t)| (n.clone(), t.dims().to_vec())).collect();
    let feed: Vec<(&str, Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    // Candle in f64 on the same input, made at most once (it costs an f64 forward), for every row's peer check.
    let mut exact: Option<Tensor> = None;
    let mut rows = Vec::new();
    for &rt in &args.runtimes {
        let outcome = Engine::open(rt, args.model, &shapes, &args.run).map_err(|e| (false, e)).and_then(|engine| {
            run_engine(engine, args.model, &feed, &references, tolerance, args.latency_runs).map_err(|e| (true, e))
        });
        let (mut row, results) = match outcome {
            Ok(done) => done,
            // Bad options (a provider that cannot start) are exit 2 in every mode.
            Err((_, e)) if ort_alone || matches!(e, Error::Invalid(_)) => return Err(e),
            Err((loaded, e)) => (failed_row(rt, loaded, e.to_string()), Vec::new()),
        };
        // The peer check, for f32 files whose fixed-bound comparison failed (the model has one input and output).
        if let (Some(m), "fp32", false, [(_, x)]) = (&f64_model, precision.as_str(), bf16, inputs.as_slice()) {
            if exact.is_none() && row.outputs.iter().any(|o| !o.comparison.passed) {
                exact = Some(m.forward(x)?);
            }
            for o in row.outputs.iter_mut().filter(|o| !o.comparison.passed) {
                let Some(exact) = &exact else { break };
                let ours = results.iter().find(|(n, _)| *n == o.name).map(|(_, t)| t);
                let f32_ref = references.iter().find(|(n, _)| *n == o.name).map(|(_, t)| t);
                if let (Some(ours), Some(f32_ref)) = (ours, f32_ref) {
                    let d = |a: &Tensor| -> Result<f64> {
                        let diff = (a.to_dtype(DType::F64)? - exact)?.abs()?.flatten_all()?.max(0)?;
                        Ok(diff.to_scalar::<f64>()?)
                    };
                    let scale = exact.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
                    o.peer = Some(PeerCheck::judge(d(ours)?, d(f32_ref)?, scale));
                }
            }
        }
        row.passed = row.error.is_none() && row.outputs.iter().all(OutputReport::passed);
        rows.push(row);
    }
    let passed = rows.iter().all(|r| r.passed);
    Ok(ValidateReport {
        model: args.model.to_path_buf(),
        ep: args.run.ep,
        strict_ep: args.run.strict_ep,
        reference,
        precision,
        tolerance,
        input_shapes: shapes,
        outputs: rows.first().map(|r| r.outputs.clone()).unwrap_or_default(),
        nodes_by_ep: rows.iter().find(|r| r.runtime == Runtime::Ort).map(|r| r.nodes_by_ep.clone()).unwrap_or_default(),
        runtimes: rows,
        candle_onnx_blockers: super::candle_onnx::blockers(&g),
        passed,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// A float for JSON: finite numbers as they are, infinities and NaN as null.
fn num(x: f64) -> serde_json::Value {
    serde_json::Number::from_f64(x).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
}

/// One output's comparison as JSON; `runtime` names the peer check's field (`ort_vs_f64`, `tract_vs_f64`, ...).
fn output_json(o: &OutputReport, runtime: Runtime) -> serde_json::Value {
    let c = &o.comparison;
    serde_json::json!({
        "name": o.name,
        "max_abs": num(c.max_abs),
        "mean_abs": num(c.mean_abs),
        "psnr_db": num(c.psnr_db),
        "max_rel": num(c.max_rel),
        "worst_index": c.worst_index,
        "ours_at_worst": num(c.ours_at_worst),
        "reference_at_worst": num(c.reference_at_worst),
        "shape": c.shape,
        "bound": num(c.tolerance.absolute_bound(c.reference_max_abs)),
        "within_bound": c.passed,
        "peer_check": o.peer.as_ref().map(|p| serde_json::json!({
            format!("{runtime}_vs_f64"): num(p.runtime_vs_f64),
            "runtime_vs_f64": num(p.runtime_vs_f64),
            "candle_f32_vs_f64": num(p.candle_f32_vs_f64),
            "factor": adaptir_ops::tolerance::F32_PEER_FACTOR,
            "ceiling": num(p.ceiling),
            "passed": p.passed,
        })),
        "passed": o.passed(),
    })
}

impl RuntimeRow {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "runtime": self.runtime.as_str(),
            "loaded": self.loaded,
            "error": self.error,
            "nodes": self.nodes,
            "placement": self.placement,
            "nodes_by_ep": self.nodes_by_ep,
            "max_abs": self.max_abs().map(num),
            "passed": self.passed,
            "latency_ms": self.latency_ms.map(num),
            "latency_runs": self.latency_runs,
            "outputs": self.outputs.iter().map(|o| output_json(o, self.runtime)).collect::<Vec<_>>(),
        })
    }
}

impl ValidateReport {
    /// The JSON report: today's top-level fields describe the first row (ONNX Runtime by default and with
    /// `all`); `runtimes` holds every row.
    pub fn to_json(&self) -> serde_json::Value {
        let first = self.runtimes.first().map(|r| r.runtime).unwrap_or(Runtime::Ort);
        let outputs: Vec<serde_json::Value> = self.outputs.iter().map(|o| output_json(o, first)).collect();
        serde_json::json!({
            "passed": self.passed,
            "ep": self.ep.as_str(),
            "outputs": outputs,
            "nodes_by_ep": self.nodes_by_ep,
            "runtimes": self.runtimes.iter().map(RuntimeRow::to_json).collect::<Vec<_>>(),
            "strict_ep": self.strict_ep,
            "model": self.model.display().to_string(),
            "reference": self.reference,
            "precision": self.precision,
            "tolerance": {
                "name": self.tolerance.name,
                "bound": self.tolerance.bound,
                "relative": self.tolerance.relative,
            },
            "candle_onnx": {"runs": self.candle_onnx_blockers.is_empty(), "blocking_ops": self.candle_onnx_blockers},
            "seconds": num(self.seconds),
        })
    }

    /// The text report (or the JSON with `json`): per runtime its outputs, then the matrix.
    pub fn render(&self, json: bool) -> String {
        if json {
            return serde_json::to_string_pretty(&self.to_json()).unwrap_or_default();
        }
        let mut s = String::new();
        use std::fmt::Write as _;
        let _ = writeln!(
            s,
            "model {} ({}), ep {}{}",
            self.model.display(),
            self.precision,
            self.ep,
            if self.strict_ep { " (strict)" } else { "" }
        );
        let _ = writeln!(s, "reference: {}", self.reference);
        for (n, d) in &self.input_shapes {
            let _ = writeln!(s, "input `{n}` {d:?}");
        }
        let placed: Vec<String> = self.nodes_by_ep.iter().map(|(k, v)| format!("{k} {v}")).collect();
        if self.runtimes.iter().any(|r| r.runtime == Runtime::Ort) {
            let _ = writeln!(
                s,
                "nodes by execution provider: {}",
                if placed.is_empty() { "(not reported)".into() } else { placed.join(", ") }
            );
        }
        let tag = self.runtimes.len() > 1;
        for row in &self.runtimes {
            let prefix = if tag { format!("[{}] ", row.runtime) } else { String::new() };
            for o in &row.outputs {
                let c = &o.comparison;
                let _ = writeln!(
                    s,
                    "{prefix}output `{}` {:?}: max_abs {:.3e} mean_abs {:.3e} max_rel {:.3e} psnr {:.2} dB; worst at \
                     {:?} ({} vs reference {}); bound {:.3e} = {}: {}",
                    o.name,
                    c.shape,
                    c.max_abs,
                    c.mean_abs,
                    c.max_rel,
                    c.psnr_db,
                    c.worst_index,
                    c.ours_at_worst,
                    c.reference_at_worst,
                    c.tolerance.absolute_bound(c.reference_max_abs),
                    c.tolerance,
                    if c.passed { "PASS" } else { "FAIL" }
                );
                if let Some(p) = &o.peer {
                    let _ = writeln!(
                        s,
                        "  peer check against candle in f64: {} {:.3e}, candle f32 {:.3e}; {} within \
                         F32_PEER_FACTOR ({}) x candle's own f32 error and the ceiling {:.3e} \
                         (F32_PEER_CEILING_REL): {}",
                        row.runtime,
                        p.runtime_vs_f64,
                        p.candle_f32_vs_f64,
                        row.runtime,
                        adaptir_ops::tolerance::F32_PEER_FACTOR,
                        p.ceiling,
                        if p.passed { "PASS" } else { "FAIL" }
                    );
                }
            }
            if let Some(e) = &row.error {
                let _ = writeln!(s, "{prefix}error: {e}");
            }
        }
        if self.candle_onnx_blockers.is_empty() {
            let _ = writeln!(s, "candle-onnx: every op of the flattened graph is one it evaluates");
        } else {
            let _ = writeln!(
                s,
                "candle-onnx (second evaluator): not run; the flattened graph uses ops it does not evaluate: {}",
                self.candle_onnx_blockers.join(", ")
            );
        }
        s.push_str(&self.matrix());
        let why: Vec<String> = self
            .runtimes
            .iter()
            .filter(|r| !r.passed)
            .map(|r| match (&r.error, r.loaded) {
                (Some(_), false) => format!("{} refused the file", r.runtime),
                (Some(_), true) => format!("{} failed to run it", r.runtime),
                (None, _) => format!("{}: outputs differ beyond the tolerance", r.runtime),
            })
            .collect();
        let verdict = if self.passed { "PASS".to_string() } else { format!("FAIL ({})", why.join("; ")) };
        let _ = writeln!(s, "{verdict} in {:.2} s", self.seconds);
        s
    }

    /// The matrix: runtime x (loaded, nodes, placement, max abs error, PASS / FAIL, latency).
    pub fn matrix(&self) -> String {
        let mut rows = vec![[
            "runtime".to_string(),
            "loaded".into(),
            "nodes".into(),
            "max_abs".into(),
            "result".into(),
            "latency_ms".into(),
            "placement".into(),
        ]];
        for r in &self.runtimes {
            let latency = match r.latency_ms {
                Some(ms) => format!("{ms:.2} ({} runs)", r.latency_runs),
                None => "-".into(),
            };
            rows.push([
                r.runtime.to_string(),
                if r.loaded { "yes" } else { "no" }.into(),
                r.nodes.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                r.max_abs().map(|m| format!("{m:.3e}")).unwrap_or_else(|| "-".into()),
                if r.passed { "PASS" } else { "FAIL" }.into(),
                latency,
                if r.placement.is_empty() { "-".into() } else { r.placement.clone() },
            ]);
        }
        let widths: Vec<usize> = (0..7).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
        let mut s = String::new();
        for r in &rows {
            let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            s.push_str(cells.join("  ").trim_end());
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::PeerCheck;
    use adaptir_ops::tolerance::{F32_PEER_CEILING_REL, F32_PEER_FACTOR};

    #[test]
    fn the_peer_check_has_a_factor_and_a_ceiling() {
        // Within the factor and under the ceiling: passes.
        assert!(PeerCheck::judge(1.5e-4, 1e-4, 1.0).passed);
        // Beyond the factor: fails.
        assert!(!PeerCheck::judge(F32_PEER_FACTOR * 1e-4 * 1.01, 1e-4, 1.0).passed);
        // Within the factor of a huge own error, but above the ceiling: fails.
        let above = F32_PEER_CEILING_REL * 1.01;
        assert!(!PeerCheck::judge(above, 10.0 * above, 1.0).passed);
        // NaN never passes.
        assert!(!PeerCheck::judge(f64::NAN, 1.0, 1.0).passed);
    }
}
