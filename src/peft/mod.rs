//! Parameter-efficient fine-tuning methods. Each method is one file; issue 3 adds the common trait and the
//! registry list. For now: AdaptIR.
pub mod adaptir;

pub use adaptir::{AdaptIr, AdaptIrConfig, Layout};
