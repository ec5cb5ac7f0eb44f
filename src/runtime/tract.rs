//! tract (the `tract-onnx` crate, pure Rust, in process): an ONNX file run with its input shapes fixed, fed and
//! read with candle tensors.
//!
//! tract optimises a model for concrete input shapes, so [`TractModel::load`] takes them. tract can panic on
//! graphs it does not expect (it asserts inside some of its passes), so load and run are wrapped in
//! `catch_unwind`: a refused file is an `Err` carrying tract's own message, never a crash.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use tract_onnx::prelude::{
    self as tp, DatumType, Framework, InferenceFact, InferenceModelExt, IntoTValue, TVec, TractResult,
    TypedRunnableModel,
};
use tract_onnx::tract_core::runtime::RunOptions as TractRunOptions;
use tract_onnx::tract_hir::infer::Factoid;

use crate::error::{Error, Result};

/// A model optimised by tract for fixed input shapes.
pub struct TractModel {
    plan: std::sync::Arc<TypedRunnableModel>,
    source: PathBuf,
    /// Graph input names with the shapes they were fixed to, in graph order.
    inputs: Vec<(String, Vec<usize>)>,
    outputs: Vec<String>,
    nodes: usize,
}

impl std::fmt::Debug for TractModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractModel")
            .field("source", &self.source)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("nodes", &self.nodes)
            .finish()
    }
}

/// The text of a panic payload.
pub(crate) fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Run `f`, turning a tract error or a panic into a message.
fn guarded<T>(f: impl FnOnce() -> TractResult<T>) -> std::result::Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        // `{:#}` prints anyhow's whole context chain: the first line alone is often only "Failed analyse".
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(p) => Err(format!("tract panicked: {}", panic_text(p.as_ref()))),
    }
}

impl TractModel {
    /// Load an ONNX file with every graph input fixed to its shape in `input_shapes` (by name; each must be given),
    /// tract's matrix products on a pool of `threads` threads (None: one thread, tract's default; tract splits only
    /// large products, so small models stay about single-threaded).
    /// External data (`export --out-dir`) is checked against its recorded size and sha256 first.
    pub fn load(path: &Path, input_shapes: &[(String, Vec<usize>)], threads: Option<usize>) -> Result<Self> {
        let bytes = crate::compile::onnx::read_bytes(path)?;
        let m = crate::compile::onnx::decode_model(&bytes, path)?;
        crate::compile::onnx::external::check(&m, path)?;
        Self::from_memory(&bytes, path, input_shapes, threads)
    }

    /// Load a model from its bytes; `name` names it in errors and is where the model lies: tract reads external
    /// data from its folder (callers check it first, as [`TractModel::load`] does).
    pub fn from_memory(
        bytes: &[u8],
        name: &Path,
        input_shapes: &[(String, Vec<usize>)],
        threads: Option<usize>,
    ) -> Result<Self> {
        if threads == Some(0) {
            return Err(Error::invalid("--threads: expected at least 1, found 0"));
        }
        let refused = |m: String| Error::file(name, format!("tract cannot load the model: {m}"));
        let (plan, inputs, outputs) = guarded(|| {
            let onnx = tract_onnx::onnx();
            let proto = onnx.proto_model_for_read(&mut std::io::Cursor::new(bytes))?;
            let dir = crate::compile::onnx::external::model_dir(name);
            let parsed = onnx.parse(&proto, dir.to_str())?;
            if !parsed.unresolved_inputs.is_empty() {
                return Err(tp::TractError::msg(format!(
                    "could not resolve inputs at top level: {:?}",
                    parsed.unresolved_inputs
                )));
            }
            let mut model = parsed.model;
            let mut inputs = Vec::new();
            for (ix, outlet) in model.input_outlets()?.to_vec().into_iter().enumerate() {
                let input = model.node(outlet.node).name.clone();
                let Some((_, shape)) = input_shapes.iter().find(|(n, _)| *n == input) else {
                    let msg = format!("no shape given for graph input `{input}` (given: {input_shapes:?})");
                    return Err(tp::TractError::msg(msg));
                };
                // Keep the element type the file declares (f32, or f16 for an --fp16 export).
                let dt = model.input_fact(ix)?.datum_type.concretize().unwrap_or(DatumType::F32);
                model.set_input_fact(ix, InferenceFact::dt_shape(dt, shape.as_slice()))?;
                inputs.push((input, shape.clone()));
            }
            let outputs = model
                .output_outlets()?
                .iter()
                .map(|o| model.outlet_label(*o).unwrap_or(&model.node(o.node).name).to_string())
                .collect::<Vec<_>>();
            let typed = model.into_optimized()?;
            let executor = threads.filter(|&n| n > 1).map(tp::multithread::Executor::multithread);
            let plan = typed.into_runnable_with_options(&TractRunOptions { executor, ..Default::default() })?;
            Ok((plan, inputs, outputs))
        })
        .map_err(refused)?;
        let nodes = plan.model().nodes().len();
        Ok(TractModel { plan, source: name.to_path_buf(), inputs, outputs, nodes })
    }

    /// Nodes of the optimised graph tract runs (after its fusions and constant folding; not the file's count).
    pub fn node_count(&self) -> usize {
        self.nodes
    }

    /// Graph input names with their fixed shapes.
    pub fn inputs(&self) -> &[(String, Vec<usize>)] {
        &self.inputs
    }

    /// Run with named inputs (f32 or f16, each of the shape it was loaded with) and return every output, in the
    /// model's output order, by graph output name.
    pub fn run(&self, inputs: &[(&str, Tensor)]) -> Result<Vec<(String, Tensor)>> {
        let src = &self.source;
        let mut values: TVec<tp::TValue> = TVec::new();
        for (want, shape) in &self.inputs {
            let Some((_, t)) = inputs.iter().find(|(n, _)| n == want) else {
                let given: Vec<&str> = inputs.iter().map(|(n, _)| *n).collect();
                return Err(Error::file(src, format!("the model needs input `{want}`; given: {given:?}")));
            };
            if t.dims() != shape.as_slice() {
                return Err(Error::file(
                    src,
                    format!("input `{want}`: tract fixed it to shape {shape:?} at load, found {:?}", t.dims()),
                ));
            }
            values.push(to_tract(t).map_err(|e| Error::file(src, format!("input `{want}`: {e}")))?.into_tvalue());
        }
        let results =
            guarded(|| self.plan.run(values)).map_err(|m| Error::file(src, format!("tract failed to run: {m}")))?;
        let mut out = Vec::with_capacity(results.len());
        for (name, v) in self.outputs.iter().zip(results.iter()) {
            let t = from_tract(v).map_err(|e| Error::file(src, format!("output `{name}`: {e}")))?;
            out.push((name.clone(), t));
        }
        Ok(out)
    }
}

fn to_tract(t: &Tensor) -> std::result::Result<tp::Tensor, String> {
    let flat = t.flatten_all().map_err(|e| e.to_string())?;
    let r = match t.dtype() {
        DType::F32 => tp::Tensor::from_shape(t.dims(), &flat.to_vec1::<f32>().map_err(|e| e.to_string())?),
        DType::F16 => tp::Tensor::from_shape(t.dims(), &flat.to_vec1::<half::f16>().map_err(|e| e.to_string())?),
        other => return Err(format!("expected an f32 or f16 tensor, found {other:?}")),
    };
    r.map_err(|e| format!("{e:#}"))
}

fn from_tract(v: &tp::TValue) -> std::result::Result<Tensor, String> {
    let dims = v.shape().to_vec();
    let e = |e: tp::TractError| format!("{e:#}");
    let t = match v.datum_type() {
        DatumType::F32 => {
            let data: Vec<f32> = v.to_plain_array_view::<f32>().map_err(e)?.iter().copied().collect();
            Tensor::from_vec(data, dims, &Device::Cpu)
        }
        DatumType::F16 => {
            let data: Vec<half::f16> = v.to_plain_array_view::<half::f16>().map_err(e)?.iter().copied().collect();
            Tensor::from_vec(data, dims, &Device::Cpu)
        }
        other => return Err(format!("expected an f32 or f16 output, found {other:?}")),
    };
    t.map_err(|e| e.to_string())
}
