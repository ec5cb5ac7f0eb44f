//! Training checkpoints: one `.safetensors` file holding every model variable (`var.NAME`), the live buffers
//! (BatchNorm running statistics, in place of their stale copies), the AdamW moments (`adam_m.NAME`,
//! `adam_v.NAME`) and, in the metadata, the step, each parameter's update count, the loss / PSNR history and a
//! fingerprint of the run's configuration. The data order is a pure function of (seed, step), so (seed, step)
//! is the whole RNG state. Written to a temporary sibling, synced, then renamed: a kill at any moment leaves
//! either the previous checkpoint or the new one, never a torn file.
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

pub const FORMAT: &str = "adaptir-checkpoint";
pub const VERSION: u32 = 1;

/// Loss per step and held-out PSNR per evaluation, stored as f64 bit patterns so a resume reproduces them
/// exactly (JSON decimal round trips are not guaranteed bit-exact).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub loss_bits: Vec<u64>,
    /// (step, PSNR bits)
    pub psnr_bits: Vec<(usize, u64)>,
}

impl History {
    pub fn push_loss(&mut self, l: f64) {
        self.loss_bits.push(l.to_bits());
    }
    pub fn push_psnr(&mut self, step: usize, p: f64) {
        self.psnr_bits.push((step, p.to_bits()));
    }
    pub fn losses(&self) -> Vec<f64> {
        self.loss_bits.iter().map(|b| f64::from_bits(*b)).collect()
    }
    pub fn psnrs(&self) -> Vec<(usize, f64)> {
        self.psnr_bits.iter().map(|(s, b)| (*s, f64::from_bits(*b))).collect()
    }
}

/// Everything a resume needs.
pub struct Checkpoint {
    /// Steps completed.
    pub step: usize,
    pub fingerprint: Value,
    pub history: History,
    /// Model variables and buffers by model path.
    pub vars: BTreeMap<String, Tensor>,
    /// AdamW (m, v, update count) by parameter name.
    pub moments: BTreeMap<String, (Tensor, Tensor, u64)>,
}

impl Checkpoint {
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> = vec![];
        let mut counts = BTreeMap::new();
        for (k, t) in &self.vars {
            tensors.push((format!("var.{k}"), t.clone()));
        }
        for (k, (m, v, t)) in &self.moments {
            tensors.push((format!("adam_m.{k}"), m.clone()));
            tensors.push((format!("adam_v.{k}"), v.clone()));
            counts.insert(k.clone(), *t);
        }
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("format_version".to_string(), VERSION.to_string());
        meta.insert("step".to_string(), self.step.to_string());
        meta.insert("fingerprint".to_string(), self.fingerprint.to_string());
        meta.insert("adam_counts".to_string(), serde_json::to_string(&counts).unwrap_or_default());
        meta.insert("history".to_string(), serde_json::to_string(&self.history).unwrap_or_default());
        let bytes = safetensors::tensor::serialize(tensors, Some(meta))
            .map_err(|e| Error::file(path, format!("cannot serialise checkpoint: {e}")))?;
        Ok(crate::fsutil::write_atomic(path, &bytes)?)
    }

    /// Read a checkpoint; `fingerprint` is what this run would write: any difference is an error saying which
    /// settings differ.
    pub fn load(path: &Path, fingerprint: &Value) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read checkpoint: {e}")))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::file(path, format!("not a checkpoint (safetensors expected): {e}")))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::file(path, format!("not a checkpoint: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(Error::file(path, format!("not a training checkpoint (metadata format `{FORMAT}` expected)")));
        }
        let get = |k: &str| meta.get(k).ok_or_else(|| Error::file(path, format!("checkpoint metadata lacks `{k}`")));
        let stored: Value = serde_json::from_str(get("fingerprint")?)
            .map_err(|e| Error::file(path, format!("checkpoint fingerprint is not JSON: {e}")))?;
        let diffs = differences(&stored, fingerprint);
        if !diffs.is_empty() {
            return Err(Error::file(
                path,
                format!(
                    "checkpoint is from another configuration ({}); resume with the same settings, or drop \
                     --resume (or delete the checkpoint) to start afresh",
                    diffs.join("; ")
                ),
            ));
        }
        let step: usize = get("step")?.parse().map_err(|_| Error::file(path, "checkpoint `step` is not a number"))?;
        let counts: BTreeMap<String, u64> = serde_json::from_str(get("adam_counts")?)
            .map_err(|e| Error::file(path, format!("checkpoint `adam_counts`: {e}")))?;
        let history: History = serde_json::from_str(get("history")?)
            .map_err(|e| Error::file(path, format!("checkpoint `history`: {e}")))?;
        let mut vars = BTreeMap::new();
        let mut ms = BTreeMap::new();
        let mut vs = BTreeMap::new();
        for (name, view) in st.tensors() {
            let t = candle_core::safetensors::Load::load(&view, &candle_core::Device::Cpu)
                .map_err(|e| Error::file(path, format!("tensor `{name}`: {e}")))?;
            if let Some(k) = name.strip_prefix("var.") {
                vars.insert(k.to_string(), t);
            } else if let Some(k) = name.strip_prefix("adam_m.") {
                ms.insert(k.to_string(), t);
            } else if let Some(k) = name.strip_prefix("adam_v.") {
                vs.insert(k.to_string(), t);
            } else {
                return Err(Error::file(path, format!("unexpected tensor `{name}` in checkpoint")));
            }
        }
        let mut moments = BTreeMap::new();
        for (k, m) in ms {
            let v = vs.remove(&k).ok_or_else(|| Error::file(path, format!("checkpoint lacks `adam_v.{k}`")))?;
            let t = counts.get(&k).copied().unwrap_or(0);
            moments.insert(k, (m, v, t));
        }
        Ok(Self { step, fingerprint: stored, history, vars, moments })
    }
}

/// `key: stored X, this run Y` for every top-level field that differs.
fn differences(stored: &Value, now: &Value) -> Vec<String> {
    let (Some(a), Some(b)) = (stored.as_object(), now.as_object()) else {
        return if stored == now { vec![] } else { vec![format!("stored {stored}, this run {now}")] };
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map(|v| v.to_string()).unwrap_or_else(|| "(none)".into());
            format!("{k}: checkpoint {}, this run {}", show(a.get(k)), show(b.get(k)))
        })
        .collect()
}
