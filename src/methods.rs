//! `adaptir methods`: every registered PETL method with its trainable parameters on a backbone preset.
use serde::Serialize;

use crate::backbone::{Ipt, IptConfig};
use crate::error::{Error, Result};
use crate::params::{count_parameters, ShapeOnly};
use crate::peft::{self, MethodModules, METHODS};

#[derive(Serialize)]
pub struct MethodRow {
    pub method: &'static str,
    pub trainable_params: usize,
    #[serde(skip)]
    pub percent_of_backbone: f64,
    #[serde(skip)]
    pub summary: &'static str,
}

/// Parameters of the backbone alone (no method), counted without allocating.
pub fn backbone_params(config: &IptConfig) -> Result<usize> {
    let rec = ShapeOnly::default();
    Ipt::new(rec.var_builder(), config, MethodModules::none(&config.host_dims()))?;
    let entries = rec.entries();
    Ok(count_parameters(entries.iter().map(|(k, (s, _))| (k, s.as_slice()))))
}

/// One row per registered method, default configuration, on `config`.
pub fn table(config: &IptConfig) -> Result<Vec<MethodRow>> {
    let host = config.host_dims();
    let backbone = backbone_params(config)?;
    METHODS
        .iter()
        .map(|entry| {
            let method = (entry.from_config)(&serde_json::Value::Null, &host)
                .map_err(|m| Error::invalid(format!("method {}: {m}", entry.name)))?;
            let n = peft::trainable_params(method.as_ref(), &host, backbone)?;
            Ok(MethodRow {
                method: entry.name,
                trainable_params: n,
                percent_of_backbone: 100.0 * n as f64 / backbone as f64,
                summary: entry.summary,
            })
        })
        .collect()
}
