//! `adaptir export --backbone EDT --config edt.json`: an official EDT checkpoint (with or without AdaptIR in
//! its blocks) for its one task -> an ONNX patch model, input `input` (N, 3, S, S) at the task's training size,
//! output `output`. The same lowering options, passes, targets and golden files as the IPT export; what EDT
//! does not have yet (adapter files, whole-image graphs, int8) is refused before any work.
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use super::export::{ExportArgs, ExportReport};
use super::lower::lower_edt;
use super::passes::optimize;
use super::target::Target;
use crate::backbone::EdtConfig;
use crate::error::{Error, Result};
use crate::peft::file::sha256_file;

/// The `arch` metadata entry of an EDT file (IPT files have none: the entry is absent there).
pub const ARCH_EDT: &str = "edt";

/// Seeded golden inputs of an EDT file: N = 2, uniform in [0, 1), at the task's training size.
pub fn edt_golden_input(side: usize) -> Result<Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261205);
    let v: Vec<f32> = (0..2 * 3 * side * side).map(|_| rng.random::<f32>()).collect();
    Ok(Tensor::from_vec(v, (2, 3, side, side), &Device::Cpu)?)
}

/// What an EDT export cannot honour, said before the checkpoint is read.
fn refuse_unsupported(args: &ExportArgs) -> Result<()> {
    let refuse = |what: &str, why: &str| Err(Error::invalid(format!("{what} with an EDT config: {why}")));
    if args.adapter.is_some() {
        return refuse(
            "--adapter",
            "adapter files are for IPT so far; an EDT checkpoint holds its AdaptIR modules itself (give it as \
             --backbone)",
        );
    }
    if args.task.is_some() {
        return refuse("--task", "the config's task selects the head, and an EDT checkpoint holds that one head");
    }
    if args.whole_image.is_some() {
        return refuse("--whole-image", "whole-image graphs are IPT-only so far; export the patch model");
    }
    if args.int8.is_some() {
        return refuse("--int8", "quantization is IPT-only so far");
    }
    Ok(())
}

/// Export the EDT checkpoint `args.backbone` with the EDT config at `config_path`.
pub fn export_edt(args: &ExportArgs, config_path: &Path) -> Result<ExportReport> {
    let start = Instant::now();
    refuse_unsupported(args)?;
    let config = EdtConfig::from_json_file(config_path)?;
    let task = config.edt_task().map_err(|m| Error::file(config_path, m))?;
    let checkpoint = args.backbone.ok_or_else(|| {
        Error::invalid("an EDT config needs --backbone CHECKPOINT (the official EDT state dict to export)")
    })?;
    let output: PathBuf = args
        .output
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::invalid("-o OUT.onnx is required when exporting an EDT checkpoint"))?;
    if output.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() != Some("onnx") {
        return Err(Error::file(&output, "-o: expected a path ending in .onnx (export writes an ONNX model)"));
    }
    let (model, sizes) = crate::model::edt::load_edt(checkpoint, &config, DType::F32, &Device::Cpu)?;

    let mut opts = args.target.lower_options(args.fft);
    opts.inline_functions |= args.inline_functions;
    if let Some(sp) = args.spectral {
        opts.spectral = sp;
    }
    let mut graph = lower_edt(&model, opts)?;
    let passes = if args.no_passes { vec![] } else { optimize(&mut graph)? };
    if args.fp16 {
        super::export::to_fp16(&mut graph);
    }
    let tensorrt = match args.target {
        Target::TensorRt => Some(super::export::check_tensorrt(&graph, &output)?),
        _ => None,
    };
    let method = if sizes.is_some() { crate::peft::adaptir::ENTRY.name } else { crate::peft::PRETRAIN.name };
    let md = &mut graph.metadata;
    md.insert("tool".into(), "adaptir".into());
    md.insert("tool_version".into(), env!("CARGO_PKG_VERSION").into());
    md.insert("arch".into(), ARCH_EDT.into());
    md.insert("method".into(), method.into());
    md.insert("task".into(), config.task.clone());
    md.insert("backbone".into(), checkpoint.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    md.insert("backbone_sha256".into(), sha256_file(checkpoint)?);
    md.insert("backbone_config".into(), serde_json::to_string(&config).unwrap_or_default());
    md.insert("fft".into(), format!("{:?}", args.fft).to_lowercase());
    md.insert("target".into(), args.target.as_str().into());
    md.insert("spectral_precision".into(), format!("{:?}", opts.spectral).to_lowercase());
    md.insert("precision".into(), if args.fp16 { "fp16" } else { "fp32" }.into());
    super::onnx::write(&graph, &output)?;

    let golden = match args.golden {
        Some(path) => {
            let x = edt_golden_input(task.input_size())?;
            let y = model.forward(&x, false)?;
            crate::params::write_safetensors(path, &[("input", x), ("output", y)])?;
            Some(path.to_path_buf())
        }
        None => None,
    };
    let bytes = std::fs::metadata(&output).map(|m| m.len() as usize).unwrap_or(0);
    Ok(ExportReport {
        target: args.target,
        tensorrt,
        sha256: sha256_file(&output)?,
        output,
        op_counts: graph.op_counts(),
        bytes,
        seconds: start.elapsed().as_secs_f64(),
        passes,
        golden,
        int8: None,
    })
}
