//! OpenVINO (the `openvino` crate with `runtime-linking`: its C library is opened at run time, nothing is linked
//! at build time), on the CPU device, fed and read with candle tensors.
//!
//! The library is `openvino/libs/libopenvino_c.so.2641` of the pinned `openvino==2026.4.1` PyPI wheel (versioned
//! only; its RPATH `$ORIGIN` finds `libopenvino.so.2641` and the CPU plugin beside it). Discovery order, first hit
//! wins, as for ONNX Runtime (`library.rs`):
//!
//! 1. `OPENVINO_LIB`, if set and not empty: that file, or that folder's `libopenvino_c.so.2641` (an error if it
//!    is not there; no fall-through, so an explicit choice is never silently replaced).
//! 2. `.venv/lib/python3*/site-packages/openvino/libs/` of `scripts/setup-ort.sh`, under the current folder or
//!    any folder above it, then under this crate's source folder.
//! 3. `python3`'s `openvino` package.
//!
//! The bindings (openvino-sys 0.11.1) were generated from C headers identical to the 2026.4.1 wheel's
//! (`openvino/include/openvino/c/`), so every call and enum matches the library.
//!
//! Precision: OpenVINO's CPU plugin infers in bf16 by default where the CPU has it, which is not the model the
//! user exported (1e-2 errors on the derain export); the device is compiled with `INFERENCE_PRECISION_HINT=f32`
//! unless bf16 is asked for (`--precision bf16`: the same file, its products in bf16, judged by PSNR like an int8
//! file), and the compiled model's own value of that property is reported as placement and checked against the
//! request: a CPU that cannot run bf16 is an error, never an f32 run reported as bf16.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use candle_core::{DType, Device, Tensor};
use openvino::{Core, DeviceType, ElementType, PropertyKey, RwPropertyKey};

use super::library::Search;
use super::session::Precision;
use super::tract::panic_text;
use crate::error::{Error, Result};

/// The pinned OpenVINO release.
pub const OPENVINO_VERSION: &str = "2026.4.1";
/// The C library's file name inside the wheel's `openvino/libs/` (the wheel has no unversioned `.so`).
pub const LIB_FILE: &str = "libopenvino_c.so.2641";
/// The environment variable that names the library (or its folder).
pub const ENV_VAR: &str = "OPENVINO_LIB";
/// How to install it.
pub const INSTALL_HINT: &str =
    "install it with `bash scripts/setup-ort.sh` (from the adaptir repository root; it installs the wheel into .venv/) \
     or `pip install openvino==2026.4.1`, or set OPENVINO_LIB to the path of libopenvino_c.so.2641";

/// Find the library (see the module docs). The error names every place looked at and how to install it.
pub fn locate(search: &Search) -> Result<PathBuf> {
    if let Some(p) = search.env_path.as_ref().filter(|p| !p.is_empty()) {
        let given = PathBuf::from(p);
        let path = if given.is_dir() { given.join(LIB_FILE) } else { given.clone() };
        if path.is_file() {
            return Ok(path);
        }
        return Err(Error::file(
            &given,
            format!(
                "{ENV_VAR} names this path, but OpenVINO {OPENVINO_VERSION}'s {LIB_FILE} is not there; unset \
                 {ENV_VAR} to use .venv/, or {INSTALL_HINT}"
            ),
        ));
    }
    for root in &search.venv_roots {
        if let Some(path) = venv_library(&root.join(".venv")) {
            return Ok(path);
        }
    }
    let mut looked = vec![format!("{ENV_VAR}: not set")];
    if let Some(first) = search.venv_roots.first() {
        looked.push(format!("{}/.venv (and the folders above it, and this crate's source folder)", first.display()));
    }
    if let Some(py) = &search.python {
        match python_libs_dir(py) {
            Some(dir) if dir.join(LIB_FILE).is_file() => return Ok(dir.join(LIB_FILE)),
            Some(dir) => looked.push(format!("{}'s openvino at {}: another version", py.display(), dir.display())),
            None => looked.push(format!("{}: no openvino package", py.display())),
        }
    }
    Err(Error::invalid(format!(
        "OpenVINO {OPENVINO_VERSION} ({LIB_FILE}) was not found. Looked at:\n  - {}\n{INSTALL_HINT}",
        looked.join("\n  - ")
    )))
}

fn venv_library(venv: &Path) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(venv.join("lib")).ok()?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    entries
        .into_iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("python3")))
        .map(|p| p.join("site-packages/openvino/libs").join(LIB_FILE))
        .find(|p| p.is_file())
}

fn python_libs_dir(python: &Path) -> Option<PathBuf> {
    let out = std::process::Command::new(python)
        .args(["-c", "import os, openvino; print(os.path.dirname(openvino.__file__))"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !s.is_empty()).then(|| PathBuf::from(s).join("libs"))
}

static LOADED: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();

/// Locate and open the library once per process; a failure is remembered. Returns the library's path.
pub fn load_library() -> Result<&'static Path> {
    LOADED
        .get_or_init(|| {
            let search = Search { env_path: std::env::var_os(ENV_VAR), ..Search::from_env() };
            let path = locate(&search).map_err(|e| e.to_string())?;
            let opened = catch_unwind(|| openvino_sys::library::load_from(path.clone()))
                .unwrap_or_else(|p| Err(panic_text(p.as_ref())));
            opened.map_err(|e| format!("{}: cannot load OpenVINO: {e}; {INSTALL_HINT}", path.display()))?;
            // The CPU plugin is a separate library beside it: a broken install is found here, not as a refused model.
            let cpu = || Core::new().map_err(|e| e.to_string())?.versions("CPU").map(|_| ()).map_err(ov);
            guarded(cpu).map_err(|e| {
                format!(
                    "{}: OpenVINO's CPU plugin cannot start ({e}); expected libopenvino_intel_cpu_plugin.so in the same \
                     folder; {INSTALL_HINT}",
                    path.display()
                )
            })?;
            Ok(path)
        })
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(|e| Error::invalid(e.clone()))
}

/// What a model is read from.
enum Source<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

/// A model compiled by OpenVINO for the CPU, with fixed input shapes.
pub struct OpenVinoModel {
    request: Mutex<openvino::InferRequest>,
    source: PathBuf,
    inputs: Vec<(String, Vec<usize>)>,
    outputs: Vec<String>,
    placement: String,
    // Dropped last: the request and compiled model come from it.
    _compiled: openvino::CompiledModel,
    _core: Core,
}

/// Run `f`, turning an OpenVINO error or a panic inside the bindings into a message.
fn guarded<T>(f: impl FnOnce() -> std::result::Result<T, String>) -> std::result::Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(format!("panicked: {}", panic_text(p.as_ref()))))
}

fn ov(e: openvino::InferenceError) -> String {
    match e.message {
        Some(m) => format!("{:?}: {}", e.kind, m.trim()),
        None => format!("{:?}", e.kind),
    }
}

impl OpenVinoModel {
    /// Load an ONNX file with every graph input fixed to its shape in `input_shapes` (by name), with
    /// `INFERENCE_NUM_THREADS` = `threads` (None: OpenVINO's default, every core), inferring in `precision`.
    /// External data (`export --out-dir`) is checked against its recorded size and sha256 first, and such a model
    /// is read from its path (OpenVINO resolves external data relative to the model's folder, not from bytes).
    pub fn load(
        path: &Path,
        input_shapes: &[(String, Vec<usize>)],
        threads: Option<usize>,
        precision: Precision,
    ) -> Result<Self> {
        let bytes = crate::compile::onnx::read_bytes(path)?;
        let m = crate::compile::onnx::decode_model(&bytes, path)?;
        if crate::compile::onnx::external::check(&m, path)?.is_some() {
            return Self::open(Source::File(path), path, input_shapes, threads, precision);
        }
        Self::open(Source::Bytes(&bytes), path, input_shapes, threads, precision)
    }

    /// Load a model from its ONNX bytes; `name` names it in errors. A model with external data needs
    /// [`OpenVinoModel::load`].
    pub fn from_memory(
        bytes: &[u8],
        name: &Path,
        input_shapes: &[(String, Vec<usize>)],
        threads: Option<usize>,
        precision: Precision,
    ) -> Result<Self> {
        Self::open(Source::Bytes(bytes), name, input_shapes, threads, precision)
    }

    fn open(
        source: Source,
        name: &Path,
        input_shapes: &[(String, Vec<usize>)],
        threads: Option<usize>,
        precision: Precision,
    ) -> Result<Self> {
        if threads == Some(0) {
            return Err(Error::invalid("--threads: expected at least 1, found 0"));
        }
        load_library()?;
        let refused = |m: String| Error::file(name, format!("OpenVINO cannot load the model: {m}"));
        let loaded = guarded(|| {
            let mut core = Core::new().map_err(|e| e.to_string())?;
            let cpu = DeviceType::CPU;
            core.set_property(&cpu, &RwPropertyKey::HintInferencePrecision, precision.as_str()).map_err(ov)?;
            if let Some(n) = threads {
                core.set_property(&cpu, &RwPropertyKey::InferenceNumThreads, &n.to_string()).map_err(ov)?;
            }
            let mut model = match source {
                Source::Bytes(bytes) => core.read_model_from_buffer(bytes, None).map_err(ov)?,
                Source::File(path) => {
                    let p = path.to_str().ok_or_else(|| format!("the path {} is not UTF-8", path.display()))?;
                    core.read_model_from_file(p, "").map_err(ov)?
                }
            };
            let mut inputs = Vec::new();
            for i in 0..model.get_inputs_len().map_err(ov)? {
                let input = model.get_input_by_index(i).map_err(ov)?.get_name().map_err(ov)?;
                let Some((_, shape)) = input_shapes.iter().find(|(n, _)| *n == input) else {
                    return Err(format!("no shape given for graph input `{input}` (given: {input_shapes:?})"));
                };
                let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
                let ps = openvino::PartialShape::new_static(dims.len() as i64, &dims).map_err(ov)?;
                model.reshape_input_by_name(&input, &ps).map_err(ov)?;
                inputs.push((input, shape.clone()));
            }
            let mut outputs = Vec::new();
            for i in 0..model.get_outputs_len().map_err(ov)? {
                outputs.push(model.get_output_by_index(i).map_err(ov)?.get_name().map_err(ov)?);
            }
            let mut compiled = core.compile_model(&model, cpu).map_err(ov)?;
            let prop =
                |k: PropertyKey| compiled.get_property(&k).map(|v| v.into_owned()).unwrap_or_else(|_| "?".into());
            let compiled_precision = prop(PropertyKey::Rw(RwPropertyKey::HintInferencePrecision));
            if !compiled_precision.eq_ignore_ascii_case(precision.as_str()) {
                return Err(format!(
                    "asked to infer in {precision}, OpenVINO compiled the model for `{compiled_precision}` (a CPU \
                     without bf16 support runs f32; run with --precision f32)"
                ));
            }
            let placement = format!(
                "{} (inference precision {compiled_precision}, threads {})",
                prop(PropertyKey::Other("EXECUTION_DEVICES".into())),
                prop(PropertyKey::Rw(RwPropertyKey::InferenceNumThreads)),
            );
            let request = compiled.create_infer_request().map_err(ov)?;
            Ok((core, compiled, request, inputs, outputs, placement))
        })
        .map_err(refused)?;
        let (core, compiled, request, inputs, outputs, placement) = loaded;
        Ok(OpenVinoModel {
            request: Mutex::new(request),
            source: name.to_path_buf(),
            inputs,
            outputs,
            placement,
            _compiled: compiled,
            _core: core,
        })
    }

    /// Where OpenVINO runs the model and how: execution devices, the inference precision it compiled for, threads.
    pub fn placement(&self) -> &str {
        &self.placement
    }

    /// Run with named inputs (f32 or f16, each of the shape it was loaded with) and return every output, in the
    /// model's output order, by graph output name.
    pub fn run(&self, inputs: &[(&str, Tensor)]) -> Result<Vec<(String, Tensor)>> {
        let src = &self.source;
        let mut request = self.request.lock().map_err(|_| Error::file(src, "OpenVINO: a previous run panicked"))?;
        for (want, shape) in &self.inputs {
            let Some((_, t)) = inputs.iter().find(|(n, _)| n == want) else {
                let given: Vec<&str> = inputs.iter().map(|(n, _)| *n).collect();
                return Err(Error::file(src, format!("the model needs input `{want}`; given: {given:?}")));
            };
            if t.dims() != shape.as_slice() {
                return Err(Error::file(
                    src,
                    format!("input `{want}`: OpenVINO compiled it for shape {shape:?}, found {:?}", t.dims()),
                ));
            }
            let tensor = to_ov(t).map_err(|e| Error::file(src, format!("input `{want}`: {e}")))?;
            guarded(|| request.set_tensor(want, &tensor).map_err(ov))
                .map_err(|e| Error::file(src, format!("OpenVINO: input `{want}`: {e}")))?;
        }
        guarded(|| request.infer().map_err(ov))
            .map_err(|e| Error::file(src, format!("OpenVINO failed to run: {e}")))?;
        let mut out = Vec::with_capacity(self.outputs.len());
        for name in &self.outputs {
            let t = guarded(|| from_ov(&request.get_tensor(name).map_err(ov)?))
                .map_err(|e| Error::file(src, format!("OpenVINO: output `{name}`: {e}")))?;
            out.push((name.clone(), t));
        }
        Ok(out)
    }
}

fn to_ov(t: &Tensor) -> std::result::Result<openvino::Tensor, String> {
    let dims: Vec<i64> = t.dims().iter().map(|&d| d as i64).collect();
    let shape = openvino::Shape::new(&dims).map_err(ov)?;
    let flat = t.flatten_all().map_err(|e| e.to_string())?;
    let bytes: Vec<u8> = match t.dtype() {
        DType::F32 => flat.to_vec1::<f32>().map_err(|e| e.to_string())?.iter().flat_map(|v| v.to_ne_bytes()).collect(),
        DType::F16 => {
            flat.to_vec1::<half::f16>().map_err(|e| e.to_string())?.iter().flat_map(|v| v.to_ne_bytes()).collect()
        }
        other => return Err(format!("expected an f32 or f16 tensor, found {other:?}")),
    };
    let ty = if t.dtype() == DType::F32 { ElementType::F32 } else { ElementType::F16 };
    let mut tensor = openvino::Tensor::new(ty, &shape).map_err(ov)?;
    let dst = tensor.get_raw_data_mut().map_err(ov)?;
    if dst.len() != bytes.len() {
        return Err(format!("OpenVINO allocated {} bytes for {} expected", dst.len(), bytes.len()));
    }
    dst.copy_from_slice(&bytes);
    Ok(tensor)
}

fn from_ov(t: &openvino::Tensor) -> std::result::Result<Tensor, String> {
    let dims: Vec<usize> = t.get_shape().map_err(ov)?.get_dimensions().iter().map(|&d| d.max(0) as usize).collect();
    let raw = t.get_raw_data().map_err(ov)?;
    let r = match t.get_element_type().map_err(ov)? {
        ElementType::F32 => {
            let v: Vec<f32> = raw.chunks_exact(4).map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]])).collect();
            Tensor::from_vec(v, dims, &Device::Cpu)
        }
        ElementType::F16 => {
            let v: Vec<half::f16> = raw.chunks_exact(2).map(|b| half::f16::from_ne_bytes([b[0], b[1]])).collect();
            Tensor::from_vec(v, dims, &Device::Cpu)
        }
        other => return Err(format!("expected an f32 or f16 output, found {other:?}")),
    };
    r.map_err(|e| e.to_string())
}
