//! An ONNX Runtime session on one execution provider, fed and read with candle tensors.
//!
//! Node placement: the session is created with ONNX Runtime's log level `verbose` and a session-local logger
//! (`SetUserLoggingFunction`). While it initialises, ONNX Runtime logs "Node placements" (session_state.cc,
//! `VerifyEachNodeIsAssignedToAnEp`): "All nodes placed on [CPUExecutionProvider]. Number of nodes: N", or one
//! " Node(s) placed on [EP]. Number of nodes: N" line per provider. The logger keeps those messages and drops the
//! rest; [`Session::nodes_by_ep`] is their parse. The counts are of the graph ONNX Runtime executes, after its
//! optimisations (fusions, model-local functions inlined, constants folded), so they differ from the file's node
//! count; what matters for `--strict-ep` is that only the requested provider appears.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use ort::session::builder::SessionBuilder;

use super::library;
use crate::{Error, Result};

/// An execution provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Ep {
    #[default]
    Cpu,
    Cuda,
}

impl Ep {
    /// ONNX Runtime's name for it, as `nodes_by_ep` reports it.
    pub fn ort_name(self) -> &'static str {
        match self {
            Ep::Cpu => "CPUExecutionProvider",
            Ep::Cuda => "CUDAExecutionProvider",
        }
    }

    /// The command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Ep::Cpu => "cpu",
            Ep::Cuda => "cuda",
        }
    }
}

impl std::fmt::Display for Ep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Ep {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Ep::Cpu),
            "cuda" => Ok(Ep::Cuda),
            other => Err(Error::invalid(format!("--ep: expected `cpu` or `cuda`, found `{other}`"))),
        }
    }
}

/// The precision a runtime computes in. `Bf16` is OpenVINO's CPU plugin running an f32 file with bf16 inference
/// (`INFERENCE_PRECISION_HINT=bf16`: its matrix products and convolutions in bf16 on CPUs with AVX-512 BF16 or
/// AMX); ONNX Runtime and tract run the file's own precision only and refuse it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    /// The command-line spelling, which is also OpenVINO's hint value.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// bf16 is OpenVINO's alone: a runtime that computes in the file's own precision refuses it rather than run
    /// f32 and report it as bf16.
    pub fn refuse_unless_f32(self, runtime: &str) -> Result<()> {
        if self == Precision::F32 {
            return Ok(());
        }
        Err(Error::invalid(format!(
            "--precision {self}: {runtime} computes in the file's own precision; bf16 inference on an f32 file is \
             OpenVINO's (validate --runtime openvino, restore / eval --engine openvino)"
        )))
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(Error::invalid(format!("--precision: expected `f32` or `bf16`, found `{other}`"))),
        }
    }
}

/// How to build a session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// The provider to run on; nodes it does not support fall back to the CPU unless `strict_ep`.
    pub ep: Ep,
    /// Set ONNX Runtime's `session.disable_cpu_ep_fallback` = "1" (for a provider other than the CPU): session
    /// creation fails if any node would have to run on the CPU provider; and check that the placement log names
    /// no provider but `ep`. A provider that cannot start is always an error, strict or not (no silent fallback).
    pub strict_ep: bool,
    /// Intra-op threads (None: ONNX Runtime's default, one per physical core).
    pub threads: Option<usize>,
    /// Write ONNX Runtime's per-node profile (chrome-tracing JSON) to a file starting with this path;
    /// [`Session::end_profiling`] closes it and says which file it is.
    pub profile: Option<PathBuf>,
    /// The precision to compute in: `Bf16` only in OpenVINO (the other runtimes refuse it).
    pub precision: Precision,
    /// ONNX Runtime's `session.set_denormal_as_zero`: its threads flush f32 values below 1.2e-38 to zero. Attention
    /// probabilities that underflow to denormals cost its CPU kernels 20-30 % of some files' time (BENCHMARKS.md
    /// "INT8 and bf16"); the change to any value is below 1.2e-38. ONNX Runtime only (the others refuse it).
    pub denormal_as_zero: bool,
}

impl RunOptions {
    /// An error naming the option when `runtime` (not ONNX Runtime) is asked for `denormal_as_zero`.
    pub fn refuse_denormal_as_zero(&self, runtime: &str) -> Result<()> {
        if self.denormal_as_zero {
            return Err(Error::invalid(format!(
                "--denormal-as-zero: an ONNX Runtime session option; {runtime} has none (use --runtime ort / --engine onnx)"
            )));
        }
        Ok(())
    }
}

/// A loaded model.
pub struct Session {
    inner: ort::session::Session,
    source: PathBuf,
    ep: Ep,
    nodes_by_ep: BTreeMap<String, usize>,
    inputs: Vec<String>,
    outputs: Vec<String>,
    /// Runs log at `warning`: the session's `verbose` level is only for the placement messages at load.
    run_options: ort::session::RunOptions,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("source", &self.source)
            .field("ep", &self.ep)
            .field("nodes_by_ep", &self.nodes_by_ep)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish()
    }
}

type Placements = Arc<Mutex<Vec<String>>>;

/// What a session is made from.
enum Model<'a> {
    Bytes(&'a [u8]),
    /// A path: ONNX Runtime reads the file and resolves external data relative to its folder.
    File(&'a Path),
}

fn builder(opts: &RunOptions, placements: &Placements, source: &Path) -> Result<SessionBuilder> {
    let rt = library::runtime()?;
    let fail = |what: &str, e: &dyn std::fmt::Display| Error::file(source, format!("ONNX Runtime: {what}: {e}"));
    let mut b = ort::session::Session::builder(&rt.env).map_err(|e| fail("cannot create a session builder", &e))?;
    let sink = Arc::clone(placements);
    b = b
        .with_logger(Arc::new(move |_level, _category, _id, _location, message: &str| {
            if message.contains("placed on [") {
                if let Ok(mut v) = sink.lock() {
                    v.push(message.to_string());
                }
            }
        }))
        .map_err(|e| fail("cannot set the session logger", &e))?
        .with_log_level(ort::logging::LogLevel::Verbose)
        .map_err(|e| fail("cannot set the log level", &e))?;
    if let Some(n) = opts.threads {
        if n == 0 {
            return Err(Error::invalid("--threads: expected at least 1, found 0"));
        }
        b = b.with_intra_threads(n).map_err(|e| fail("cannot set the thread count", &e))?;
    }
    if opts.denormal_as_zero {
        b = b.with_config_entry("session.set_denormal_as_zero", "1").map_err(|e| fail("denormal as zero", &e))?;
    }
    if let Some(prefix) = &opts.profile {
        b = b.with_profiling(prefix).map_err(|e| fail("cannot enable profiling", &e))?;
    }
    // On the CPU provider there is nothing to fall back from (ONNX Runtime refuses the option there, since every
    // node is then "assigned to the default CPU EP"); strictness is checked on the placements instead.
    if opts.strict_ep && opts.ep != Ep::Cpu {
        b = b.with_config_entry("session.disable_cpu_ep_fallback", "1").map_err(|e| fail("strict EP", &e))?;
    }
    match opts.ep {
        Ep::Cpu => {
            let ep = ort::ep::CPU::default().build().error_on_failure();
            b = b.with_execution_providers([ep]).map_err(|e| fail("cannot register the CPU provider", &e))?;
        }
        Ep::Cuda => {
            #[cfg(feature = "cuda")]
            {
                // No TensorFloat-32: ONNX Runtime's CUDA provider may otherwise run f32 MatMul and Conv with
                // 10-bit mantissas (a 1e-3 error, seen on an H200), and an f32 export must compute in f32.
                let ep = ort::ep::CUDA::default().with_tf32(false).build().error_on_failure();
                b = b.with_execution_providers([ep]).map_err(|e| {
                    Error::invalid(format!(
                        "--ep cuda: ONNX Runtime cannot start its CUDA provider ({e}); it needs an NVIDIA GPU, \
                         its driver, CUDA 13 and cuDNN 9 libraries, and the onnxruntime-gpu=={} wheel \
                         (ADAPTIR_ORT_GPU=1 {})",
                        library::ORT_VERSION,
                        library::INSTALL_COMMAND
                    ))
                })?;
            }
            #[cfg(not(feature = "cuda"))]
            {
                return Err(Error::invalid(
                    "--ep cuda: this adaptir was built without CUDA support; build the CUDA binary with \
                     `scripts/build-cuda.sh` (target-cuda/release/adaptir; docs/gpu.md) and install the GPU runtime \
                     with `ADAPTIR_ORT_GPU=1 scripts/setup-ort.sh`",
                ));
            }
        }
    }
    Ok(b)
}

impl Session {
    /// Load an ONNX file. Errors name the file: missing library (with the install command), unreadable or
    /// invalid model, provider that cannot start, nodes that cannot run on the provider under `strict_ep`.
    pub fn new(path: &Path, opts: &RunOptions) -> Result<Session> {
        if !path.is_file() {
            return Err(Error::file(path, "expected an ONNX model file, found no such file"));
        }
        // Decode once ourselves: a file that is not ONNX or is truncated gets our clear message, not ORT's.
        let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        let m = crate::compile::onnx::decode_model(&bytes, path)?;
        // External data (`export --out-dir`): the weight file checked against its recorded size and sha256 before
        // ONNX Runtime sees it, then the model loaded from its path (ONNX Runtime resolves external data relative
        // to the model's folder, which bytes alone do not tell it).
        if crate::compile::onnx::external::check(&m, path)?.is_some() {
            return Self::load(Model::File(path), path, opts);
        }
        Self::load(Model::Bytes(&bytes), path, opts)
    }

    /// Write `g` to ONNX in memory (`compile::onnx::to_bytes`) and load it: for running a graph before and after
    /// a pass. `g.name` (with `.onnx`) names it in errors.
    pub fn from_graph(g: &crate::compile::ir::Graph, opts: &RunOptions) -> Result<Session> {
        let bytes = crate::compile::onnx::to_bytes(g, env!("CARGO_PKG_VERSION"))?;
        Self::from_memory(&bytes, Path::new(&format!("{}.onnx", g.name)), opts)
    }

    /// Load a model from its bytes; `name` names it in errors. A model with external data needs [`Session::new`].
    pub fn from_memory(bytes: &[u8], name: &Path, opts: &RunOptions) -> Result<Session> {
        Self::load(Model::Bytes(bytes), name, opts)
    }

    fn load(model: Model, name: &Path, opts: &RunOptions) -> Result<Session> {
        opts.precision.refuse_unless_f32("ONNX Runtime")?;
        let placements: Placements = Arc::default();
        let mut b = builder(opts, &placements, name)?;
        let committed = match model {
            Model::Bytes(bytes) => b.commit_from_memory(bytes),
            Model::File(path) => b.commit_from_file(path),
        };
        let inner = committed.map_err(|e| {
            let msg = e.to_string();
            if opts.strict_ep && msg.contains("fallback") {
                Error::file(
                    name,
                    format!("--strict-ep: not every node can run on {}; ONNX Runtime says: {msg}", opts.ep.ort_name()),
                )
            } else {
                Error::file(name, format!("ONNX Runtime cannot load the model: {msg}"))
            }
        })?;
        let nodes_by_ep = placements.lock().map(|v| parse_placements(&v)).unwrap_or_default();
        if opts.strict_ep {
            if let Some(other) = nodes_by_ep.keys().find(|k| k.as_str() != opts.ep.ort_name()) {
                return Err(Error::file(
                    name,
                    format!(
                        "--strict-ep: expected every node on {}, found {} on {other} (placements: {nodes_by_ep:?})",
                        opts.ep.ort_name(),
                        nodes_by_ep[other]
                    ),
                ));
            }
        }
        let inputs = inner.inputs().iter().map(|o| o.name().to_string()).collect();
        let outputs = inner.outputs().iter().map(|o| o.name().to_string()).collect();
        let mut run_options = ort::session::RunOptions::new()
            .map_err(|e| Error::file(name, format!("ONNX Runtime: cannot create run options: {e}")))?;
        run_options
            .set_log_level(ort::logging::LogLevel::Warning)
            .map_err(|e| Error::file(name, format!("ONNX Runtime: cannot set the run log level: {e}")))?;
        Ok(Session { inner, source: name.to_path_buf(), ep: opts.ep, nodes_by_ep, inputs, outputs, run_options })
    }

    /// Stop profiling (sessions made with `RunOptions::profile`) and return the profile file ONNX Runtime wrote.
    pub fn end_profiling(&mut self) -> Result<PathBuf> {
        let name = self
            .inner
            .end_profiling()
            .map_err(|e| Error::file(&self.source, format!("ONNX Runtime: cannot end profiling: {e}")))?;
        Ok(PathBuf::from(name))
    }

    /// How many nodes (of the optimised graph ONNX Runtime runs) each provider was given, by ONNX Runtime's
    /// provider name (`CPUExecutionProvider`, `CUDAExecutionProvider`).
    pub fn nodes_by_ep(&self) -> &BTreeMap<String, usize> {
        &self.nodes_by_ep
    }

    /// The provider that was asked for.
    pub fn ep(&self) -> Ep {
        self.ep
    }

    /// Graph input names, in order.
    pub fn input_names(&self) -> &[String] {
        &self.inputs
    }

    /// Graph output names, in order.
    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// Run with named inputs (f32, f16, f64 or i64 tensors on any device; copied to the host) and return every
    /// output, in the model's output order, as host tensors.
    pub fn run(&mut self, inputs: &[(&str, Tensor)]) -> Result<Vec<(String, Tensor)>> {
        let src = self.source.clone();
        for want in &self.inputs {
            if !inputs.iter().any(|(n, _)| n == want) {
                return Err(Error::file(
                    &src,
                    format!(
                        "the model needs input `{want}`; given: {:?}",
                        inputs.iter().map(|(n, _)| *n).collect::<Vec<_>>()
                    ),
                ));
            }
        }
        let mut values: Vec<(String, ort::value::DynValue)> = Vec::with_capacity(inputs.len());
        for (name, t) in inputs {
            if !self.inputs.iter().any(|n| n == name) {
                return Err(Error::file(&src, format!("the model has no input `{name}`; it has {:?}", self.inputs)));
            }
            values.push((name.to_string(), to_ort(t).map_err(|e| Error::file(&src, format!("input `{name}`: {e}")))?));
        }
        let outputs = self
            .inner
            .run_with_options(values, &self.run_options)
            .map_err(|e| Error::file(&src, format!("ONNX Runtime failed to run: {e}")))?;
        let mut result = Vec::with_capacity(outputs.len());
        for (name, v) in outputs.iter() {
            let t = from_ort(&v).map_err(|e| Error::file(&src, format!("output `{name}`: {e}")))?;
            result.push((name.to_string(), t));
        }
        Ok(result)
    }
}

/// Sum the "placed on [EP]. Number of nodes: N" messages by provider.
pub fn parse_placements(messages: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for msg in messages {
        let mut rest = msg.as_str();
        while let Some(i) = rest.find("placed on [") {
            rest = &rest[i + "placed on [".len()..];
            let Some(j) = rest.find(']') else { break };
            let ep = rest[..j].to_string();
            rest = &rest[j..];
            let key = "Number of nodes: ";
            if let Some(k) = rest.find(key) {
                let digits: String = rest[k + key.len()..].chars().take_while(|c| c.is_ascii_digit()).collect();
                if let Ok(n) = digits.parse::<usize>() {
                    *m.entry(ep).or_insert(0) += n;
                }
            }
        }
    }
    m
}

fn to_ort(t: &Tensor) -> std::result::Result<ort::value::DynValue, String> {
    let shape: Vec<i64> = t.dims().iter().map(|&d| d as i64).collect();
    let flat = t.flatten_all().map_err(|e| e.to_string())?;
    let e = |e: candle_core::Error| e.to_string();
    let o = |e: ort::Error| e.to_string();
    Ok(match t.dtype() {
        DType::F32 => ort::value::Tensor::from_array((shape, flat.to_vec1::<f32>().map_err(e)?)).map_err(o)?.into_dyn(),
        DType::F16 => {
            ort::value::Tensor::from_array((shape, flat.to_vec1::<half::f16>().map_err(e)?)).map_err(o)?.into_dyn()
        }
        DType::F64 => ort::value::Tensor::from_array((shape, flat.to_vec1::<f64>().map_err(e)?)).map_err(o)?.into_dyn(),
        DType::I64 => ort::value::Tensor::from_array((shape, flat.to_vec1::<i64>().map_err(e)?)).map_err(o)?.into_dyn(),
        other => return Err(format!("expected an f32, f16, f64 or i64 tensor, found {other:?}")),
    })
}

fn from_ort(v: &ort::value::DynValue) -> std::result::Result<Tensor, String> {
    use ort::value::TensorElementType as T;
    let ty = match v.dtype() {
        ort::value::ValueType::Tensor { ty, .. } => *ty,
        other => return Err(format!("expected a tensor, found {other:?}")),
    };
    fn host<E: ort::value::PrimitiveTensorElementType + candle_core::WithDType + std::fmt::Debug>(
        v: &ort::value::DynValue,
    ) -> std::result::Result<Tensor, String> {
        let (shape, data) = v.try_extract_tensor::<E>().map_err(|e| e.to_string())?;
        let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
        Tensor::from_slice(data, dims.as_slice(), &Device::Cpu).map_err(|e| e.to_string())
    }
    match ty {
        T::Float32 => host::<f32>(v),
        T::Float16 => host::<half::f16>(v),
        T::Float64 => host::<f64>(v),
        T::Int64 => host::<i64>(v),
        other => Err(format!("expected an f32, f16, f64 or i64 output, found {other:?}")),
    }
}
