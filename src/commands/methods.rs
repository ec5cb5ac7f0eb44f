//! `adaptir methods`: every registered PETL method (`peft::METHODS`) with its trainable parameters on a backbone
//! preset: IPT's, or `edt-b`, the official EDT-B body with its x2 head.
use serde::Serialize;

use super::{thousands, Report};
use crate::backbone::{Edt, EdtConfig, Ipt, IptConfig};
use crate::error::{Error, Result};
use crate::hooks::HostDims;
use crate::params::{count_parameters, ShapeOnly};
use crate::peft::{self, MethodModules, METHODS};

/// The EDT preset of `methods`: the official EDT-B (six stages of 6 blocks, embed 180), counted with the head and
/// tail of one task (x2), as an official single-task checkpoint holds.
pub const EDT_B: &str = "edt-b";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Backbone preset: ipt-base (the released IPT), ipt-small, ipt-tiny, or edt-b (the official EDT-B, x2 head).
    #[arg(long, default_value = "ipt-base")]
    pub backbone: String,
    /// Print a JSON list of {"method", "trainable_params"}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
pub struct MethodRow {
    pub method: &'static str,
    /// `None` (JSON null): the method does not apply to this backbone (`not_applicable` says why).
    pub trainable_params: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_applicable: Option<String>,
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

/// Parameters of an EDT (one task's head and tail, the body), counted without allocating.
pub fn edt_backbone_params(config: &EdtConfig) -> Result<usize> {
    let rec = ShapeOnly::default();
    Edt::new(rec.var_builder(), config, Edt::no_hooks(config))?;
    let entries = rec.entries();
    Ok(count_parameters(entries.iter().map(|(k, (s, _))| (k, s.as_slice()))))
}

/// One row per registered method, default configuration, on IPT's `config`.
pub fn table(config: &IptConfig) -> Result<Vec<MethodRow>> {
    host_table(&config.host_dims(), backbone_params(config)?)
}

/// One row per registered method, default configuration, on a host of `backbone` parameters; a method whose
/// configuration the host refuses (VPT on EDT) is a row without a count, saying why.
pub fn host_table(host: &HostDims, backbone: usize) -> Result<Vec<MethodRow>> {
    METHODS
        .iter()
        .map(|entry| {
            let row = |n: Option<usize>, not_applicable: Option<String>| MethodRow {
                method: entry.name,
                trainable_params: n,
                not_applicable,
                percent_of_backbone: n.map_or(0.0, |n| 100.0 * n as f64 / backbone as f64),
                summary: entry.summary,
            };
            match entry.build(&serde_json::Value::Null, host) {
                Ok(method) => Ok(row(Some(peft::trainable_params(method.as_ref(), host, backbone)?), None)),
                Err(why) if host.is_swin() => Ok(row(None, Some(why))),
                Err(m) => Err(Error::invalid(format!("method {m}"))),
            }
        })
        .collect()
}

pub fn run(a: &Args) -> Result<MethodsReport> {
    let (rows, backbone_params) = if a.backbone == EDT_B {
        let config = EdtConfig::official("sr2");
        let n = edt_backbone_params(&config)?;
        (host_table(&config.host_dims(), n)?, n)
    } else {
        let config = IptConfig::preset(&a.backbone).map_err(|_| {
            Error::invalid(format!(
                "unknown backbone preset `{}`: expected one of {}, {EDT_B}",
                a.backbone,
                crate::backbone::config::PRESETS.join(", ")
            ))
        })?;
        let n = backbone_params(&config)?;
        (table(&config)?, n)
    };
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
            s += &match (r.trainable_params, &r.not_applicable) {
                (Some(n), _) => {
                    format!("{:<12} {:>14} {:>8.3}%  {}\n", r.method, thousands(n), r.percent_of_backbone, r.summary)
                }
                (None, why) => {
                    format!("{:<12} {:>14} {:>9}  {}\n", r.method, "-", "-", why.as_deref().unwrap_or("does not apply"))
                }
            };
        }
        s
    }
}
