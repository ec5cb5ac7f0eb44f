//! The old path of [`crate::model::load_ipt`], kept only while tests/parity_ipt.rs and tests/export_equivalence.rs
//! import it from here; delete this file (and its line in lib.rs) once they import `adaptir::model::load_ipt`.
pub use crate::model::load_ipt;
