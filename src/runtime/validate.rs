//! `adaptir validate`: run an exported ONNX file in ONNX Runtime on one execution provider and compare every
//! output with a reference: stored golden outputs (`--golden`), or the candle model the file was exported from
//! (found through the file's `metadata_props`, its backbone and adapter verified by sha256) on seeded inputs.
//! The tolerance is the named one for the file's precision (`F32_REASSOCIATION_REL`, or `F16_REL` for an
//! `--fp16` export). An f32 output beyond `F32_REASSOCIATION_REL` of the candle model is then judged against
//! the same candle model run in f64 (the peer check): it passes if ONNX Runtime is at most `F32_PEER_FACTOR`
//! times further from the f64 result than candle's own f32 forward is. Deep models (ipt-base with random or
//! barely trained weights) amplify f32 rounding to 1e-4 whatever the engine; a wrong export is far outside
//! both bounds. See docs/validation.md.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use super::compare::{compare, Comparison, Tolerance};
use super::session::{Ep, RunOptions, Session};
use crate::backbone::{Ipt, IptConfig};
use crate::compile::ir::{Dim, ElemType, Graph};
use crate::error::{Error, Result};
use crate::params::{StateDict, Strict};
use crate::peft::file::{sha256_file, AdapterFile};
use crate::peft::MethodModules;

/// Seed of the inputs `validate` makes when it has no golden file.
pub const INPUT_SEED: u64 = 0x5eed_0006;
/// Batch size of those inputs where the model's batch dimension is symbolic.
pub const INPUT_BATCH: usize = 2;

pub struct ValidateArgs<'a> {
    pub model: &'a Path,
    pub golden: Option<&'a Path>,
    pub backbone: Option<&'a Path>,
    pub adapter: Option<&'a Path>,
    pub run: RunOptions,
}

/// One output's comparison.
#[derive(Clone, Debug)]
pub struct OutputReport {
    pub name: String,
    pub comparison: Comparison,
    /// Only where `comparison` failed and an f64 candle model could be run (fp32 file, candle reference).
    pub peer: Option<PeerCheck>,
}

impl OutputReport {
    pub fn passed(&self) -> bool {
        self.comparison.passed || self.peer.as_ref().is_some_and(|p| p.passed)
    }
}

/// ONNX Runtime and candle's f32 forward, both against candle's f64 forward of the same model and inputs.
#[derive(Clone, Debug)]
pub struct PeerCheck {
    /// `max |ORT - f64|`.
    pub ort_vs_f64: f64,
    /// `max |candle f32 - f64|`.
    pub candle_f32_vs_f64: f64,
    /// `ort_vs_f64 <= F32_PEER_FACTOR * candle_f32_vs_f64` (false for NaN).
    pub passed: bool,
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
    pub outputs: Vec<OutputReport>,
    pub nodes_by_ep: BTreeMap<String, usize>,
    /// Ops of the flattened graph that `candle-onnx` cannot evaluate (empty: it could).
    pub candle_onnx_blockers: Vec<String>,
    pub passed: bool,
    pub seconds: f64,
}

/// Build the candle model of `backbone` (+ `adapter`) with `config`, checked as `export` and `forward` check it.
pub fn build_model(backbone: &Path, config: &IptConfig, adapter: Option<&AdapterFile>, device: &Device) -> Result<Ipt> {
    build_model_in(backbone, config, adapter, DType::F32, device)
}

/// [`build_model`] computing in `dtype` (f64 for the peer check).
pub fn build_model_in(
    backbone: &Path,
    config: &IptConfig,
    adapter: Option<&AdapterFile>,
    dtype: DType,
    device: &Device,
) -> Result<Ipt> {
    let strict = Strict::new(StateDict::load(backbone)?);
    let modules = match adapter {
        Some(a) => {
            a.check_backbone(backbone, config)?;
            a.modules(dtype, device)?
        }
        None => MethodModules::none(&config.host_dims()),
    };
    let model = Ipt::new(strict.var_builder(dtype, device), config, modules);
    strict.finish()?;
    model.map_err(|e| Error::file(backbone, e.to_string()))
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
                "sha256 {found}, but {} was exported from a {what} with sha256 {expected}: pass the {what} it was \
                 exported from (--{what} PATH)",
                model.display()
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
struct F64Model {
    backbone: PathBuf,
    config: IptConfig,
    adapter: Option<AdapterFile>,
    task: usize,
}

impl F64Model {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let model = build_model_in(&self.backbone, &self.config, self.adapter.as_ref(), DType::F64, &Device::Cpu)?;
        Ok(model.forward(&x.to_dtype(DType::F64)?, self.task, false)?)
    }
}

/// The candle reference: inputs (seeded) and outputs, plus a description.
fn candle_reference(g: &Graph, args: &ValidateArgs) -> Result<Reference> {
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

    let default_backbone = crate::peft::file::backbone_path(name);
    let backbone = match args.backbone {
        Some(b) => b.to_path_buf(),
        None => {
            first_existing(&[default_backbone.clone(), model_dir.join("backbone.safetensors")]).ok_or_else(|| {
                Error::file(
                    &default_backbone,
                    format!(
                        "backbone `{name}` (sha256 {backbone_sha}) not found there nor beside the model: pass \
                         --backbone PATH, or --golden G.safetensors to validate against stored outputs"
                    ),
                )
            })?
        }
    };
    if !backbone.is_file() {
        return Err(Error::file(&backbone, "expected the backbone weights (.safetensors), found no such file"));
    }
    check_sha(&backbone, backbone_sha, "backbone", model_path)?;

    let adapter = if method == "pretrain" {
        None
    } else {
        let file = meta(g, model_path, "adapter")?;
        let sha = meta(g, model_path, "adapter_sha256")?;
        let path = match args.adapter {
            Some(a) => a.to_path_buf(),
            None => {
                let candidates = [
                    model_dir.join(file),
                    PathBuf::from(format!("models/{name}/{file}")),
                    backbone.parent().map(|p| p.join(file)).unwrap_or_default(),
                    PathBuf::from(file),
                ];
                first_existing(&candidates).ok_or_else(|| {
                    Error::file(
                        model_path,
                        format!(
                            "adapter `{file}` (sha256 {sha}) not found beside the model, in models/{name}/, beside \
                             the backbone or here: pass --adapter PATH, or --golden G.safetensors"
                        ),
                    )
                })?
            }
        };
        if !path.is_file() {
            return Err(Error::file(&path, "expected an adapter file (.safetensors), found no such file"));
        }
        check_sha(&path, sha, "adapter", model_path)?;
        Some(AdapterFile::load(&path)?)
    };
    let device = Device::Cpu;
    let model = build_model(&backbone, &config, adapter.as_ref(), &device)?;

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
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(INPUT_SEED);
    let n: usize = dims.iter().product();
    let x = Tensor::from_vec((0..n).map(|_| rng.random::<f32>()).collect::<Vec<f32>>(), dims.as_slice(), &device)?;
    let y = model.forward(&x, task, false)?;
    let out_name = g.outputs.first().map(|o| o.name.clone()).unwrap_or_else(|| "output".into());
    let what = format!(
        "candle (backbone {}, {}), seeded inputs (seed {INPUT_SEED:#x})",
        backbone.display(),
        adapter.as_ref().map(|a| format!("adapter {}", a.path.display())).unwrap_or_else(|| "no adapter".into())
    );
    let f64_model = F64Model { backbone, config, adapter, task };
    Ok((vec![(vi.name.clone(), x)], vec![(out_name, y)], what, Some(f64_model)))
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

/// Validate `args.model` (see the module docs). `Ok` with `passed: false` is a numerical mismatch (exit 1);
/// `Err` is bad input or an unusable runtime (exit 2).
pub fn validate(args: &ValidateArgs) -> Result<ValidateReport> {
    let start = std::time::Instant::now();
    if !args.model.is_file() {
        return Err(Error::file(args.model, "expected an ONNX model file, found no such file"));
    }
    let g = crate::compile::onnx::read(args.model)?;
    let precision = g.metadata.get("precision").cloned().unwrap_or_else(|| "fp32".into());
    let tolerance = match precision.as_str() {
        "fp16" => Tolerance::F16,
        _ => Tolerance::F32,
    };
    let (inputs, references, reference, f64_model) = match args.golden {
        Some(golden) => golden_reference(&g, golden)?,
        None => candle_reference(&g, args)?,
    };
    let mut session = Session::new(args.model, &args.run)?;
    let feed: Vec<(&str, Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let results = session.run(&feed)?;
    let mut outputs = Vec::new();
    for (name, reference_tensor) in &references {
        let ours = results.iter().find(|(n, _)| n == name).map(|(_, t)| t).ok_or_else(|| {
            Error::file(args.model, format!("ONNX Runtime returned no output `{name}` (the reference has it)"))
        })?;
        let c = compare(&format!("output `{name}`"), ours, reference_tensor, tolerance)
            .map_err(|e| Error::file(args.model, e.to_string()))?;
        outputs.push(OutputReport { name: name.clone(), comparison: c, peer: None });
    }
    // The peer check, for f32 files whose fixed-bound comparison failed (the model has one input and output).
    if let (Some(m), "fp32", [(_, x)]) = (&f64_model, precision.as_str(), inputs.as_slice()) {
        let exact = if outputs.iter().any(|o| !o.comparison.passed) { Some(m.forward(x)?) } else { None };
        for o in outputs.iter_mut().filter(|o| !o.comparison.passed) {
            let Some(exact) = &exact else { break };
            let ort = results.iter().find(|(n, _)| *n == o.name).map(|(_, t)| t);
            let f32_ref = references.iter().find(|(n, _)| *n == o.name).map(|(_, t)| t);
            if let (Some(ort), Some(f32_ref)) = (ort, f32_ref) {
                let d = |a: &Tensor| -> Result<f64> {
                    let diff = (a.to_dtype(DType::F64)? - exact)?.abs()?.flatten_all()?.max(0)?;
                    Ok(diff.to_scalar::<f64>()?)
                };
                let (ort_vs_f64, candle_f32_vs_f64) = (d(ort)?, d(f32_ref)?);
                let passed = ort_vs_f64 <= adaptir_ops::tolerance::F32_PEER_FACTOR * candle_f32_vs_f64;
                o.peer = Some(PeerCheck { ort_vs_f64, candle_f32_vs_f64, passed });
            }
        }
    }
    let passed = outputs.iter().all(OutputReport::passed);
    Ok(ValidateReport {
        model: args.model.to_path_buf(),
        ep: args.run.ep,
        strict_ep: args.run.strict_ep,
        reference,
        precision,
        tolerance,
        input_shapes: inputs.iter().map(|(n, t)| (n.clone(), t.dims().to_vec())).collect(),
        outputs,
        nodes_by_ep: session.nodes_by_ep().clone(),
        candle_onnx_blockers: super::candle_onnx::blockers(&g),
        passed,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// A float for JSON: finite numbers as they are, infinities and NaN as null.
fn num(x: f64) -> serde_json::Value {
    serde_json::Number::from_f64(x).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
}

impl ValidateReport {
    pub fn to_json(&self) -> serde_json::Value {
        let outputs: Vec<serde_json::Value> = self
            .outputs
            .iter()
            .map(|o| {
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
                        "ort_vs_f64": num(p.ort_vs_f64),
                        "candle_f32_vs_f64": num(p.candle_f32_vs_f64),
                        "factor": adaptir_ops::tolerance::F32_PEER_FACTOR,
                        "passed": p.passed,
                    })),
                    "passed": o.passed(),
                })
            })
            .collect();
        serde_json::json!({
            "passed": self.passed,
            "ep": self.ep.as_str(),
            "outputs": outputs,
            "nodes_by_ep": self.nodes_by_ep,
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

    /// The text report (or the JSON with `json`).
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
        let _ = writeln!(
            s,
            "nodes by execution provider: {}",
            if placed.is_empty() { "(not reported)".into() } else { placed.join(", ") }
        );
        for o in &self.outputs {
            let c = &o.comparison;
            let _ = writeln!(
                s,
                "output `{}` {:?}: max_abs {:.3e} mean_abs {:.3e} max_rel {:.3e} psnr {:.2} dB; worst at {:?} \
                 ({} vs reference {}); bound {:.3e} = {}: {}",
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
                    "  peer check against candle in f64: ORT {:.3e}, candle f32 {:.3e}; ORT within F32_PEER_FACTOR \
                     ({}) x candle's own f32 error: {}",
                    p.ort_vs_f64,
                    p.candle_f32_vs_f64,
                    adaptir_ops::tolerance::F32_PEER_FACTOR,
                    if p.passed { "PASS" } else { "FAIL" }
                );
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
        let _ = writeln!(
            s,
            "{} in {:.2} s",
            if self.passed { "PASS" } else { "FAIL: outputs differ beyond the tolerance" },
            self.seconds
        );
        s
    }
}
