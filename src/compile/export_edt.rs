//! `adaptir export --backbone EDT --config edt.json` (an official EDT checkpoint, with or without AdaptIR in its
//! blocks) or `adaptir export --adapter A` (an adapter trained on an EDT checkpoint, `train --config`): one task
//! -> an ONNX patch model, input `input` (N, 3, S, S) at the task's training size, output `output`. The same
//! lowering options, passes, targets and golden files as the IPT export; what EDT does not have yet (whole-image
//! graphs, int8) is refused before any work.
use std::path::{Path, PathBuf};
use std::time::Instant;

use adaptir_ops::graph::{FftLowering, SpectralPrecision};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use super::export::{ExportArgs, ExportReport};
use super::lower::lower_edt;
use super::passes::optimize_with;
use super::target::Target;
use crate::backbone::EdtConfig;
use crate::error::{Error, Result};
use crate::peft::file::{sha256_file, AdapterFile};

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
    if args.task.is_some() {
        return refuse("--task", "the config's task selects the head, and an EDT checkpoint holds that one head");
    }
    // Measured 2026-12-07: the shipped edt-tiny adapter's `--fft dft` file (f32 products) was 1.3e-4 from the model
    // in ONNX Runtime and tract alike, and failed `validate`; with f64 products, 2.4e-7.
    if args.fft == FftLowering::Dft && args.lower_options().spectral == SpectralPrecision::F32 {
        return refuse(
            "--fft dft with f32 spectral products",
            "EDT's blocks work at the full input resolution (48 or 192), sizes that are not powers of two, where the \
             DFT op's f32 rounding forces an exact-zero threshold wide enough to erase real spectral components; use \
             --fft matmul (the default) or --spectral f64",
        );
    }
    Ok(())
}

/// Export an EDT model: the adapter `args.adapter` (its recorded EDT config; `--config`, if given, must be the
/// same) on its checkpoint (`--backbone`, else found beside it), or the checkpoint `args.backbone` with the EDT
/// config at `config_path`.
pub fn export_edt(args: &ExportArgs, config_path: Option<&Path>) -> Result<ExportReport> {
    let start = Instant::now();
    refuse_unsupported(args)?;
    let adapter = args.adapter.map(AdapterFile::load).transpose()?;
    let given = config_path.map(EdtConfig::from_json_file).transpose()?;
    let config = match (&adapter, given) {
        (Some(a), given) => {
            let recorded =
                a.meta.backbone_config.edt().cloned().ok_or_else(|| {
                    Error::file(&a.path, "an adapter for an IPT backbone, but --config is an EDT config")
                })?;
            if let Some(g) = given.filter(|g| *g != recorded) {
                return Err(Error::file(
                    &a.path,
                    format!("was trained on the EDT config {recorded:?}, but --config gives {g:?}"),
                ));
            }
            recorded
        }
        (None, Some(c)) => c,
        (None, None) => return Err(Error::invalid("an EDT export needs --adapter A or --config EDT.json")),
    };
    let task = config.edt_task().map_err(Error::invalid)?;
    let checkpoint: PathBuf = match &adapter {
        Some(a) => {
            let beside: Vec<&Path> = a.path.parent().into_iter().collect();
            crate::model::find_backbone(args.backbone, &a.meta.backbone, &beside, "")?
        }
        None => args.backbone.map(Path::to_path_buf).ok_or_else(|| {
            Error::invalid("an EDT config needs --backbone CHECKPOINT (the official EDT state dict to export)")
        })?,
    };
    let output: PathBuf = match (args.output, &adapter) {
        (Some(o), _) => o.to_path_buf(),
        (None, Some(a)) => PathBuf::from(
            a.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into()),
        )
        .with_extension("onnx"),
        (None, None) => return Err(Error::invalid("-o OUT.onnx is required when exporting an EDT checkpoint")),
    };
    if output.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() != Some("onnx") {
        return Err(Error::file(&output, "-o: expected a path ending in .onnx (export writes an ONNX model)"));
    }
    let (model, method) = match &adapter {
        Some(a) => {
            let model = crate::model::edt::load_edt_with_adapter(&checkpoint, a, DType::F32, &Device::Cpu)?;
            (model, a.meta.method.clone())
        }
        None => {
            let (model, sizes) = crate::model::edt::load_edt(&checkpoint, &config, DType::F32, &Device::Cpu)?;
            let method = if sizes.is_some() { crate::peft::adaptir::ENTRY.name } else { crate::peft::PRETRAIN.name };
            (model, method.to_string())
        }
    };

    let mut opts = args.lower_options();
    if let Some(tiling) = args.whole_image {
        let wi = super::whole_image::WholeImage { p: task.input_size(), scale: task.scale(), tiling };
        wi.check().map_err(Error::invalid)?;
        opts.whole_image = Some(tiling);
    }
    let mut graph = lower_edt(&model, opts)?;
    let passes = if args.no_passes { vec![] } else { optimize_with(&mut graph, args.extra_passes)? };
    if args.fp16 {
        super::export::to_fp16(&mut graph);
    }
    // Calibrated on patches of the task's input size, as the checkpoint's one head takes them.
    let int8 = args.int8.map(|quantize| quantize(&mut graph, task.input_size())).transpose()?;
    let tensorrt = match args.target {
        Target::TensorRt => Some(super::export::check_tensorrt(&graph, &output)?),
        _ => None,
    };
    let md = &mut graph.metadata;
    md.insert("tool".into(), "adaptir".into());
    md.insert("tool_version".into(), env!("CARGO_PKG_VERSION").into());
    md.insert("arch".into(), ARCH_EDT.into());
    md.insert("method".into(), method);
    md.insert("task".into(), adapter.as_ref().map_or_else(|| config.task.clone(), |a| a.meta.task.clone()));
    let backbone_name = match &adapter {
        Some(a) => a.meta.backbone.clone(),
        None => checkpoint.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    md.insert("backbone".into(), backbone_name);
    md.insert("backbone_sha256".into(), sha256_file(&checkpoint)?);
    if let Some(a) = &adapter {
        md.insert("adapter".into(), a.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        md.insert("adapter_sha256".into(), sha256_file(&a.path)?);
    }
    md.insert("backbone_config".into(), serde_json::to_string(&config).unwrap_or_default());
    md.insert("fft".into(), format!("{:?}", args.fft).to_lowercase());
    md.insert("target".into(), args.target.as_str().into());
    md.insert("spectral_precision".into(), format!("{:?}", opts.spectral).to_lowercase());
    if let Some(t) = args.whole_image {
        md.insert("whole_image".into(), "1".into());
        md.insert("tile_overlap".into(), t.overlap.to_string());
        md.insert("whole_image_max_tiles".into(), t.batch.to_string());
    }
    let precision = match (&int8, args.fp16) {
        (Some(_), _) => "int8",
        (None, true) => "fp16",
        (None, false) => "fp32",
    };
    md.insert("precision".into(), precision.into());
    super::onnx::write(&graph, &output)?;

    let golden = match args.golden {
        Some(path) => {
            let (x, y) = match args.whole_image {
                None => {
                    let x = edt_golden_input(task.input_size())?;
                    let y = model.forward(&x, false)?;
                    (x, y)
                }
                Some(tiling) => {
                    super::export::whole_image_golden_with(task.input_size(), task.scale(), tiling, &mut |x| {
                        Ok(model.forward(x, false)?)
                    })?
                }
            };
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
        int8,
    })
}
