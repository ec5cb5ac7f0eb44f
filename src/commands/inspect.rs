//! `adaptir inspect FILE`: what a checkpoint holds, grouped by module, with parameter counts.
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::{thousands, Report};
use crate::error::Result;
use crate::params::{is_buffer, StateDict};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A checkpoint: .safetensors (an adapter file, a backbone, any state dict) or PyTorch .pt.
    pub file: PathBuf,
    /// Also list every tensor with its dtype and shape.
    #[arg(long)]
    pub tensors: bool,
}

pub struct InspectOutput {
    pub report: Inspection,
    pub tensors: bool,
}

pub fn run(a: &Args) -> Result<InspectOutput> {
    Ok(InspectOutput { report: inspect(&a.file)?, tensors: a.tensors })
}

/// One module pattern: `body.encoder.layers.*.adaptir` stands for the 12 adapters of the encoder.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ModuleGroup {
    pub pattern: String,
    /// How many distinct modules match the pattern.
    pub instances: usize,
    pub params: usize,
    pub buffers: usize,
}

pub struct Inspection {
    /// Set when the file is an adapter file.
    pub adapter: Option<crate::peft::file::AdapterMeta>,
    pub tensors: Vec<(String, Vec<usize>, String)>,
    pub groups: Vec<ModuleGroup>,
    pub total_params: usize,
    pub adapter_params: usize,
}

/// Sub-module names that mark an adapter inside a backbone layer; they get groups of their own.
const ADAPTER_MODULES: &[&str] = &["adaptir", "adaptformer", "adapter_attn", "adapter_ffn", "moe", "vpt"];

/// The group a key belongs to: its path up to the first numeric index (`body.encoder.layers.*`), extended to
/// an adapter sub-module when there is one (`body.encoder.layers.*.adaptir`); keys without an index group by
/// their module. Returns (pattern, concrete module path) so that instances can be counted.
fn module_pattern(key: &str) -> (String, String) {
    let parts: Vec<&str> = key.split('.').collect();
    let module = &parts[..parts.len().saturating_sub(1)];
    let mut end = module.len();
    if let Some(i) = module.iter().position(|p| p.parse::<usize>().is_ok()) {
        end = i + 1;
        if let Some(j) = module[end..].iter().position(|p| ADAPTER_MODULES.contains(p)) {
            end += j + 1;
        }
    }
    let kept = &module[..end];
    let pattern = kept.iter().map(|p| if p.parse::<usize>().is_ok() { "*" } else { p }).collect::<Vec<_>>().join(".");
    (pattern, kept.join("."))
}

pub fn inspect(path: &Path) -> Result<Inspection> {
    // An adapter file is checked in full (format version, method, configuration) before it is shown.
    let adapter = if crate::peft::file::is_adapter_file(path)? {
        let file = crate::peft::file::AdapterFile::load(path)?;
        file.method()?;
        Some(file.meta)
    } else {
        None
    };
    let sd = StateDict::load(path)?;
    let mut groups: BTreeMap<String, (ModuleGroup, std::collections::BTreeSet<String>)> = BTreeMap::new();
    let (mut total, mut adapter_params) = (0, 0);
    let mut tensors = vec![];
    for (name, t) in &sd.tensors {
        let n = t.elem_count();
        let (pattern, module) = module_pattern(name);
        let entry = groups.entry(pattern.clone()).or_default();
        entry.0.pattern = pattern;
        entry.1.insert(module);
        if is_buffer(name) {
            entry.0.buffers += n;
        } else {
            entry.0.params += n;
            total += n;
            if name.contains("adaptir.") {
                adapter_params += n;
            }
        }
        tensors.push((name.clone(), t.dims().to_vec(), format!("{:?}", t.dtype()).to_lowercase()));
    }
    let groups = groups
        .into_values()
        .map(|(mut g, modules)| {
            g.instances = modules.len();
            g
        })
        .collect();
    Ok(Inspection { adapter, tensors, groups, total_params: total, adapter_params })
}

impl Report for InspectOutput {
    fn render(&self) -> String {
        let (r, list_tensors) = (&self.report, self.tensors);
        let mut s = String::new();
        if let Some(a) = &r.adapter {
            let _ = writeln!(s, "adapter file (format {} v{})", crate::peft::file::FORMAT, crate::peft::file::VERSION);
            let _ = writeln!(s, "  method:     {} {}", a.method, a.method_config);
            let _ = writeln!(s, "  task:       {}", a.task);
            let _ = writeln!(s, "  backbone:   {} (sha256 {})", a.backbone, a.backbone_sha256);
            let _ = writeln!(s, "  parameters: {}", thousands(r.total_params));
            let _ = writeln!(s, "  training:   {}\n", a.training);
        }
        if list_tensors {
            for (name, shape, dtype) in &r.tensors {
                let _ = writeln!(s, "{name:<64} {dtype:<5} {shape:?}");
            }
            s.push('\n');
        }
        let _ = writeln!(s, "{:<52} {:>5} {:>14} {:>8}", "module", "count", "parameters", "buffers");
        for g in &r.groups {
            let _ = writeln!(
                s,
                "{:<52} {:>5} {:>14} {:>8}",
                if g.pattern.is_empty() { "(top level)" } else { &g.pattern },
                g.instances,
                thousands(g.params),
                thousands(g.buffers)
            );
        }
        let _ = writeln!(s, "\n{} tensors", r.tensors.len());
        let _ = writeln!(s, "parameters: {}", thousands(r.total_params));
        if r.adapter_params > 0 {
            let _ = writeln!(
                s,
                "  AdaptIR: {} ({:.2}%), backbone: {}",
                thousands(r.adapter_params),
                100.0 * r.adapter_params as f64 / r.total_params as f64,
                thousands(r.total_params - r.adapter_params)
            );
        }
        s
    }
}
