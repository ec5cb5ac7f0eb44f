//! ONNX Runtime: finding and loading the library ([`library`]), sessions on an execution provider fed with
//! candle tensors ([`session`]), comparing outputs against a reference under a named tolerance ([`compare`]), and
//! python's `onnx.checker` ([`checker`]), and per-part summaries of ONNX Runtime's profiles ([`profile`]). The other
//! runtimes of `validate`'s matrix: tract ([`tract`], pure Rust) and OpenVINO ([`openvino`], loaded at run time),
//! behind one interface with ONNX Runtime ([`engine`]). A backbone + adapter restoring images on candle, ONNX
//! Runtime or tract: [`restorer`].
pub mod calibrate;
pub mod candle_onnx;
pub mod checker;
pub mod compare;
pub mod engine;
pub mod latency;
pub mod library;
pub mod openvino;
pub mod profile;
pub mod restorer;
pub mod session;
pub mod tract;
pub mod validate;

pub use checker::check_model;
pub use compare::{compare, Comparison, Tolerance};
pub use library::{locate, runtime, Located, Search, Source, INSTALL_COMMAND, ORT_VERSION};
pub use session::{parse_placements, Ep, Precision, RunOptions, Session};
