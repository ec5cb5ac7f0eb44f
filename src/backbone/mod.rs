//! Pre-trained restoration backbones with the official state-dict key names. IPT now; EDT later.
pub mod config;
pub mod ipt;
pub mod layers;

pub use config::IptConfig;
pub use ipt::Ipt;
