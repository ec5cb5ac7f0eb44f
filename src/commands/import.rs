//! `adaptir import`: an official checkpoint (Lightning `.ckpt`, PyTorch state dict `.pt`, or official-key
//! `.safetensors`) -> our adapter file, plus the backbone file when the checkpoint carries the backbone.
use std::path::PathBuf;

use super::Report;
use crate::backbone::IptConfig;
use crate::error::Result;
use crate::import::{import, ImportArgs, Imported};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The checkpoint: a Lightning .ckpt (weights under `state_dict`, keys under `net.`), a PyTorch state dict
    /// .pt (`module.` prefixes of DataParallel are removed), or a .safetensors state dict with the official keys.
    pub input: PathBuf,
    /// The task the adapter is for (its head and tail): sr2, sr3, sr4, derain, denoise30, denoise50, lr4-noise30,
    /// lr4-jpeg30, lr2-noise30, lowlight, realnoise.
    #[arg(long)]
    pub task: String,
    /// The adapter file to write (.safetensors).
    #[arg(short, long)]
    pub output: PathBuf,
    /// A backbone file of this tool to import against: the checkpoint's backbone weights must equal its weights
    /// (AdaptIR), or, without AdaptIR keys, differing weights make a full fine-tuning adapter.
    #[arg(long)]
    pub backbone: Option<PathBuf>,
    /// Where to write the checkpoint's backbone (without --backbone); default: backbone.safetensors beside -o.
    /// An existing file with the same tensors is kept; one with other tensors is an error.
    #[arg(long, conflicts_with = "backbone")]
    pub backbone_out: Option<PathBuf>,
    /// Model config JSON (num_heads is not in the weights; the other sizes are read from them and must agree).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub struct ImportReport {
    pub imported: Imported,
    pub json: bool,
}

pub fn run(a: &Args) -> Result<ImportReport> {
    let config = a.config.as_deref().map(|p| IptConfig::from_json_file(p).map(|c| (p, c))).transpose()?;
    super::remove_stale_temps(&a.output);
    let backbone_out = a
        .backbone_out
        .clone()
        .unwrap_or_else(|| a.output.parent().unwrap_or(std::path::Path::new("")).join(crate::model::BACKBONE_FILE));
    if a.backbone.is_none() {
        super::remove_stale_temps(&backbone_out);
    }
    let imported = import(&ImportArgs {
        input: &a.input,
        task: &a.task,
        output: &a.output,
        backbone: a.backbone.as_deref(),
        backbone_out: a.backbone_out.as_deref(),
        config,
    })?;
    Ok(ImportReport { imported, json: a.json })
}

impl Report for ImportReport {
    fn render(&self) -> String {
        let i = &self.imported;
        if self.json {
            let v = serde_json::json!({
                "source": i.source, "prefixes_removed": i.prefixes, "config": i.config, "config_from": i.config_from,
                "method": i.method, "task": i.task, "head": i.head, "adapter": i.adapter,
                "adapter_tensors": i.adapter_tensors, "backbone": i.backbone, "backbone_state": i.backbone_state,
                "lightning": i.info, "notes": i.notes,
            });
            return format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        let mut s = String::new();
        let prefixes = if i.prefixes.is_empty() {
            "no key prefix".to_string()
        } else {
            format!(
                "key prefix {} removed",
                i.prefixes.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(" + ")
            )
        };
        let mut read = format!("read: {} ({}, {prefixes}", i.source, i.input_name());
        for (k, v) in &i.info {
            read += &format!(", {k} {v}");
        }
        super::line(&mut s, read + ")");
        let c = &i.config;
        super::line(
            &mut s,
            format!(
                "backbone: IPT n_feats {}, {} heads, {}+{} layers, {} tasks (config from {})",
                c.n_feats, c.num_heads, c.num_layers, c.num_layers, c.num_tasks, i.config_from
            ),
        );
        let sizes = if i.method_sizes.is_empty() { String::new() } else { format!(" ({})", i.method_sizes) };
        super::line(
            &mut s,
            format!("method: {}{sizes}, {} tensors; task {} (head {})", i.method, i.adapter_tensors, i.task, i.head),
        );
        super::line(&mut s, format!("wrote: {} (adapter)", i.adapter.display()));
        let b = match i.backbone_state {
            "written" => "wrote",
            "unchanged" => "kept (same tensors)",
            _ => "uses",
        };
        super::line(&mut s, format!("{b}: {} (backbone)", i.backbone.display()));
        for n in &i.notes {
            super::line(&mut s, format!("note: {n}"));
        }
        super::line(&mut s, format!("next: adaptir export --adapter {}", i.adapter.display()));
        s
    }
}
