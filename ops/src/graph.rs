//! The graph-builder interface through which ops (and models) lower themselves to ONNX. It is defined here
//! and implemented by the root crate's compiler, so dependencies keep pointing from the root crate to this one.
use candle_core::{Result, Tensor};

/// A node attribute.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Floats(Vec<f32>),
    Str(String),
}

/// How `Rfft2` / `Irfft2` are expressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FftLowering {
    /// Products with constant real DFT bases: runs on every execution provider (default).
    #[default]
    MatMul,
    /// The ONNX `DFT` op (ONNX Runtime has no CUDA kernel for it).
    Dft,
}

/// The precision `Rfft2` / `Irfft2` compute in, whatever the model's own precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SpectralPrecision {
    /// f64 products (exact zeros as torch's f32 FFT leaves them, with 1e-15 of headroom): ONNX Runtime's
    /// CPU and CUDA providers run it; TensorRT and fp16 pipelines have no f64.
    #[default]
    F64,
    /// f32 products with the exact-zero threshold re-derived for f32 rounding (`dft::SNAP_ULPS` f32 ulps of
    /// the plane's mass): no f64 anywhere in the file.
    F32,
}

/// Initialisers whose names start with this keep their element type when a file is converted to another
/// precision (`--fp16`), and are never merged with other constants: the f32 spectral path's DFT bases and
/// thresholds.
pub const KEEP_PRECISION_PREFIX: &str = "spectral_f32.";

/// The body of a model-local function: given the names of its inputs, emit its nodes and return its outputs.
pub type FunctionBody<'a> = &'a dyn Fn(&mut dyn GraphBuilder, &[String]) -> Result<Vec<String>>;

pub trait GraphBuilder {
    /// Emit a standard-domain node with `n_out` outputs; returns their names.
    fn op_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<(&'static str, Attr)>,
        n_out: usize,
    ) -> Result<Vec<String>>;

    /// A constant tensor (f32, f64 or i64); deduplicated by the compiler.
    fn constant(&mut self, hint: &str, t: &Tensor) -> Result<String>;

    /// Call the model-local function `name` of the custom domain (defining it from `body` on first use), or
    /// inline `body` here when the compiler flattens functions.
    fn function(&mut self, name: &str, inputs: &[&str], n_out: usize, body: FunctionBody) -> Result<Vec<String>>;

    /// Name nodes after the module being lowered (`body.encoder.layers.0.adaptir`).
    fn push_scope(&mut self, scope: &str);
    fn pop_scope(&mut self);

    fn fft_lowering(&self) -> FftLowering;

    /// The precision of the spectral products (the f64 path unless the compiler asks for f32).
    fn spectral_precision(&self) -> SpectralPrecision {
        SpectralPrecision::F64
    }

    /// One-output node.
    fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&'static str, Attr)>) -> Result<String> {
        let mut out = self.op_n(op, inputs, attrs, 1)?;
        out.pop().ok_or_else(|| candle_core::Error::Msg(format!("{op}: no output")))
    }

    /// A scalar or vector constant of f32 values.
    fn constant_f32(&mut self, hint: &str, dims: &[usize], v: &[f32]) -> Result<String> {
        let t = Tensor::from_slice(v, dims, &candle_core::Device::Cpu)?;
        self.constant(hint, &t)
    }

    /// An i64 vector constant (shapes, axes, perms given as inputs).
    fn constant_i64(&mut self, hint: &str, v: &[i64]) -> Result<String> {
        let t = Tensor::from_slice(v, v.len(), &candle_core::Device::Cpu)?;
        self.constant(hint, &t)
    }
}
