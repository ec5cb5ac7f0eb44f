//! ONNX for the graph IR: the protobuf types (generated from the vendored schema by build.rs), the writer
//! (IR -> `ModelProto`, deterministic bytes, atomic file writes) and the reader (file -> IR, for validation and
//! tests).
//!
//! Versions: IR version `ir::IR_VERSION` (9) with the standard opset `ir::OPSET` (20), which has
//! `LayerNormalization` and `Gelu` as single ops; ONNX Runtime 1.31 and TensorRT 10 load both. Model-local
//! functions (`ir::Function`, domain `ai.adaptir`) become `FunctionProto`s, and the model imports their domain at
//! version [`CUSTOM_DOMAIN_VERSION`]. Symbolic dimensions are written as `dim_param`.
pub mod external;
pub mod proto;
mod read;
mod write;

pub use read::{constant, decode_model, from_bytes, from_model, read, read_bytes, read_model};
pub use write::{tensor, to_bytes, to_model, write, write_with_version, CUSTOM_DOMAIN_VERSION, PRODUCER};
