//! adaptir: adapt pre-trained image-restoration transformers with tiny adapters (AdaptIR and the usual PETL
//! baselines), compile backbone + adapter to ONNX, and prove the export with ONNX Runtime.
//!
//! Dependencies point one way: a module imports only modules of a lower layer or of its own layer, never one
//! above, and no two modules import each other (`farm-studio look` draws no circle). From the bottom (see
//! docs/architecture.md):
//!
//! 1. `adaptir-ops` (the custom ops and the graph-builder trait); [`error`], [`memory`], [`linear`] (the
//!    (weight, bias) maps backbone and methods share).
//! 2. [`fsutil`] (atomic writes), [`device`], [`params`] (state dicts in and out), [`hooks`] (the interface the
//!    backbone calls and the methods implement).
//! 3. [`data`], [`backbone`] (knows the hooks, no method).
//! 4. [`peft`] (the methods and their registry; its adapter file records the backbone's [`backbone::IptConfig`],
//!    its one import of the backbone), [`metrics`], [`restore`] (tiled inference).
//! 5. [`model`]: backbone file + adapter file -> a checked model, with the one rule for finding the backbone.
//! 6. [`train`], [`compile`]: neither imports the other; [`import`] (official checkpoints -> adapter and backbone
//!    files), which uses `train`'s backbone writer.
//! 7. [`runtime`] (runs and checks what [`compile`] makes; [`runtime::restorer`] restores images on any engine).
//! 8. [`commands`]: one file per subcommand (arguments, checks, report); then `main.rs`, which parses and
//!    dispatches.
pub mod backbone;
pub mod commands;
pub mod compile;
pub mod data;
pub mod device;
pub mod error;
pub mod fsutil;
pub mod hooks;
pub mod import;
pub mod linear;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod params;
pub mod peft;
pub mod restore;
pub mod runtime;
pub mod train;

pub use adaptir_ops::tolerance;
pub use error::{Error, Result};
