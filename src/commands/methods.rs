//! `adaptir methods`: every registered PETL method (`peft::METHODS`) with its trainable parameters on a backbone
//! preset.
use serde::Serialize;

use super::{thousands, Report};
use crate::backbone::{Ipt, IptConfig};
use crate::error::{Error, Result};
use crate::params::{count_parameters, ShapeOnly};
use crate::peft::{self, MethodModules, METHODS};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Backbone preset (ipt-base is the released IPT).
    #[arg(long, default_value = "ipt-base")]
    pub backbone: String,
    /// Print a JSON list of {"method", "trainable_params"}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
pub struct MethodRow {
    pub method: &'static str,
    pub trainable_params: usize,
    #[serde(skip)]
    pub percent_of_backbone: f64,
    #[serde(skip)]
    pub summary: &'static str,
}

pub struct MethodsReport {
    pub backbone: String,
    pub backbone_params: usize,
    pub rows: Vec<MethodRow>,
    pub json: bool,
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
            let method =
                entry.build(&serde_json::Value::Null, &host).map_err(|m| Error::invalid(format!("method {m}")))?;
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

pub fn run(a: &Args) -> Result<MethodsReport> {
    let config = IptConfig::preset(&a.backbone)?;
    let rows = table(&config)?;
    let backbone_params = if a.json { 0 } else { backbone_params(&config)? };
    Ok(MethodsReport { backbone: a.backbone.clone(), backbone_params, rows, json: a.json })
}

impl Report for MethodsReport {
    fn render(&self) -> String {
        if self.json {
            return serde_json::to_string_pretty(&self.rows).unwrap_or_default() + "\n";
        }
        let mut s = format!("{}: {} backbone parameters\n", self.backbone, thousands(self.backbone_params));
        s += &format!("{:<12} {:>14} {:>9}  {}\n", "method", "trainable", "% of bb", "what");
        for r in &self.rows {
            s += &format!(
                "{:<12} {:>14} {:>8.3}%  {}\n",
                r.method,
                thousands(r.trainable_params),
                r.percent_of_backbone,
                r.summary
            );
        }
        s
    }
}
