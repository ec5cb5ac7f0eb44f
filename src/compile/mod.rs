//! The compiler: lower (backbone, method, task) into a graph IR, run folding passes, write ONNX.
pub mod builder;
pub mod export;
pub mod export_edt;
pub mod ir;
pub mod lower;
pub mod onnx;
pub mod passes;
pub mod quantize;
pub mod shared;
pub mod target;
pub mod tensorrt;
pub mod text;
pub mod whole_image;
