//! ONNX Runtime's per-node profile (`RunOptions::profile`, `adaptir ort-latency --profile PREFIX`), summed per
//! part of an exported model: the backbone, the adapter's own nodes (named `.../adaptir/...` by the compiler)
//! and each `ai.adaptir` function (ONNX Runtime inlines them as `_inlfunc_NAME_...`; the portable export has them
//! inlined already, under the scope `.../adaptir/NAME/...`). The first run is left
//! out (warm-up: allocations, kernel selection).
use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};

/// Kernel time of one part of the model, per timed run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Part {
    pub part: String,
    pub ms_per_run: f64,
    /// Share of all kernel time, in percent.
    pub percent: f64,
    pub kernels_per_run: f64,
}

/// The parts of the profile at `file`, largest first, and how many runs were summed.
pub fn summarize(file: &Path) -> Result<(Vec<Part>, usize)> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::file(file, format!("cannot read: {e}")))?;
    let events: Vec<serde_json::Value> = serde_json::from_str(&text)
        .map_err(|e| Error::file(file, format!("not an ONNX Runtime profile (a JSON array of events): {e}")))?;
    let field = |e: &serde_json::Value, k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let num = |e: &serde_json::Value, k: &str| e.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0);
    let mut runs: Vec<(f64, f64)> = events
        .iter()
        .filter(|e| field(e, "cat") == "Session" && field(e, "name") == "model_run")
        .map(|e| (num(e, "ts"), num(e, "dur")))
        .collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    if runs.len() < 2 {
        return Err(Error::file(
            file,
            format!("{} model runs in the profile: need two (one is the warm-up)", runs.len()),
        ));
    }
    let first_end = runs[0].0 + runs[0].1;
    let timed = (runs.len() - 1) as f64;
    let mut parts: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for e in events.iter().filter(|e| field(e, "cat") == "Node" && num(e, "ts") > first_end) {
        let name = field(e, "name");
        let Some(node) = name.strip_suffix("_kernel_time") else { continue };
        // Inlined by the compiler (portable target): `<layer>/adaptir/Rfft2/MatMul`.
        let inlined = adaptir_ops::OPS.iter().find(|f| node.contains(&format!("/adaptir/{f}/")));
        let part = if let Some(rest) = node.strip_prefix("_inlfunc_") {
            format!("function {}", rest.split('_').next().unwrap_or(""))
        } else if let Some(f) = inlined {
            format!("function {f}")
        } else if node.contains("/adaptir/") {
            "adapter nodes".into()
        } else {
            "backbone (and nodes ONNX Runtime renamed)".into()
        };
        let p = parts.entry(part).or_default();
        p.0 += num(e, "dur");
        p.1 += 1;
    }
    let total: f64 = parts.values().map(|p| p.0).sum::<f64>().max(f64::MIN_POSITIVE);
    let mut out: Vec<Part> = parts
        .into_iter()
        .map(|(part, (us, n))| Part {
            part,
            ms_per_run: us / timed / 1e3,
            percent: 100.0 * us / total,
            kernels_per_run: n as f64 / timed,
        })
        .collect();
    out.sort_by(|a, b| b.ms_per_run.total_cmp(&a.ms_per_run));
    Ok((out, runs.len() - 1))
}

/// One line per part.
pub fn render(parts: &[Part]) -> String {
    parts
        .iter()
        .map(|p| {
            format!(
                "  {:<42} {:>10.3} ms/run {:>7.2} % {:>7.0} kernels/run",
                p.part, p.ms_per_run, p.percent, p.kernels_per_run
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
