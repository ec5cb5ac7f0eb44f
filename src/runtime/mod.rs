//! ONNX Runtime: finding and loading the library ([`library`]), sessions on an execution provider fed with
//! candle tensors ([`session`]), and comparing outputs against a reference under a named tolerance ([`compare`]).
pub mod compare;
pub mod library;
pub mod session;

pub use compare::{compare, Comparison, Tolerance};
pub use library::{locate, runtime, Located, Search, Source, INSTALL_COMMAND, ORT_VERSION};
pub use session::{parse_placements, Ep, RunOptions, Session};
