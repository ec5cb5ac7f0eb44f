//! Pre-trained restoration backbones with the official state-dict key names: IPT and EDT.
pub mod config;
pub mod edt;
pub mod ipt;
pub mod layers;

pub use config::IptConfig;
pub use edt::{Edt, EdtConfig};
pub use ipt::Ipt;
