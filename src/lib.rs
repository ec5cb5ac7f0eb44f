//! adaptir: adapt pre-trained image-restoration transformers with tiny adapters (AdaptIR and the usual PETL
//! baselines), compile backbone + adapter to ONNX, and prove the export with ONNX Runtime.
//!
//! Dependencies point one way: CLI -> (forward, inspect, ...) -> (peft, backbone) -> `adaptir-ops`.
pub mod backbone;
pub mod compile;
pub mod device;
pub mod error;
pub mod forward;
pub mod fsutil;
pub mod hooks;
pub mod inspect;
pub mod linear;
pub mod memory;
pub mod methods;
pub mod params;
pub mod parity;
pub mod peft;
pub mod runtime;

pub use adaptir_ops::tolerance;
pub use error::{Error, Result};
pub mod data;
pub mod metrics;
pub mod restore;
pub mod restore_cli;
pub mod train;
