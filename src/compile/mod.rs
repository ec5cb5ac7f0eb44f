//! The compiler: lower (backbone, method, task) into a graph IR, run folding passes, write ONNX.
pub mod ir;
pub mod onnx;
