//! adaptir: adapt pre-trained image-restoration transformers with tiny adapters (AdaptIR and the usual PETL
//! baselines), compile backbone + adapter to ONNX, and prove the export with ONNX Runtime.
//!
//! Dependencies point one way: a module imports only modules of a lower layer or of its own layer, never one
//! above, and no two modules import each other (`farm-studio look` draws no circle). From the bottom:
//!
//! 1. `adaptir-ops` (the custom ops and the graph-builder trait); [`error`], [`memory`], [`linear`] (the
//!    (weight, bias) maps backbone and methods share).
//! 2. [`fsutil`] (atomic writes), [`device`], [`params`] (state dicts in and out), [`hooks`] (the interface the
//!    backbone calls and the methods implement).
//! 3. [`data`], [`backbone`] (knows the hooks, no method).
//! 4. [`peft`] (the methods; its adapter file records the backbone's [`backbone::IptConfig`], its one import of
//!    the backbone), [`metrics`], [`restore`] (tiled inference).
//! 5. [`train`], [`compile`]: neither imports the other.
//! 6. [`runtime`] (runs and checks what [`compile`] makes).
//! 7. The commands: [`forward`], [`inspect`], [`methods`], [`parity`] (loads models through [`forward`]),
//!    [`restore_cli`]; then `main.rs`, the CLI.
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
