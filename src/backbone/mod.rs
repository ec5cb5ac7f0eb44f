//! Pre-trained restoration backbones with the official state-dict key names: IPT and EDT.
pub mod config;
pub mod edt;
pub mod ipt;
pub mod layers;

pub use config::IptConfig;
pub use edt::{Edt, EdtConfig};
pub use ipt::Ipt;

/// A backbone's config as an adapter file records it: EDT's (`"arch": "edt"`) or IPT's. Serialised as the inner
/// config, so IPT adapter files are unchanged.
#[derive(Clone, Debug, PartialEq)]
pub enum BackboneConfig {
    Ipt(IptConfig),
    Edt(EdtConfig),
}

impl BackboneConfig {
    /// Read a recorded config: an EDT one when its `arch` is `edt`, else an IPT one (each with its own reader's
    /// messages).
    pub fn from_value(v: serde_json::Value) -> std::result::Result<Self, String> {
        if v.get("arch").and_then(|a| a.as_str()) == Some("edt") {
            serde_json::from_value(v).map(Self::Edt).map_err(|e| format!("not an EDT config: {e}"))
        } else {
            serde_json::from_value(v).map(Self::Ipt).map_err(|e| e.to_string())
        }
    }

    pub fn to_value(&self) -> serde_json::Value {
        match self {
            Self::Ipt(c) => serde_json::to_value(c),
            Self::Edt(c) => serde_json::to_value(c),
        }
        .unwrap_or_default()
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        match self {
            Self::Ipt(c) => c.validate(),
            Self::Edt(c) => c.validate(),
        }
    }

    /// What a PETL method needs to know of the backbone.
    pub fn host_dims(&self) -> crate::hooks::HostDims {
        match self {
            Self::Ipt(c) => c.host_dims(),
            Self::Edt(c) => c.host_dims(),
        }
    }

    pub fn ipt(&self) -> Option<&IptConfig> {
        match self {
            Self::Ipt(c) => Some(c),
            Self::Edt(_) => None,
        }
    }

    pub fn edt(&self) -> Option<&EdtConfig> {
        match self {
            Self::Edt(c) => Some(c),
            Self::Ipt(_) => None,
        }
    }
}

impl From<IptConfig> for BackboneConfig {
    fn from(c: IptConfig) -> Self {
        Self::Ipt(c)
    }
}

impl From<EdtConfig> for BackboneConfig {
    fn from(c: EdtConfig) -> Self {
        Self::Edt(c)
    }
}
