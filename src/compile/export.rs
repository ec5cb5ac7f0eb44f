//! `adaptir export`: backbone + adapter (or the backbone alone) for one task -> an ONNX file that every
//! execution provider runs, with metadata saying what it is, and optionally golden input/output tensors.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use adaptir_ops::graph::{FftLowering, SpectralPrecision, KEEP_PRECISION_PREFIX};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use super::ir::{Data, ElemType, Graph, Node};
use super::lower::{lower, LowerOptions};
use super::passes::optimize_with;
use super::target::Target;
use crate::backbone::config::task_index;
use crate::backbone::{Ipt, IptConfig};
use crate::error::{Error, Result};
use crate::peft::file::{sha256_file, AdapterFile};

#[derive(Clone, Copy)]
pub struct ExportArgs<'a> {
    pub adapter: Option<&'a Path>,
    /// Default: found by `crate::model`'s rule (beside the adapter, then under models/).
    pub backbone: Option<&'a Path>,
    /// Backbone config JSON; otherwise the adapter's record, the backbone file's metadata, or `config.json`
    /// beside it.
    pub config: Option<&'a Path>,
    /// Task name (`derain`, `sr4`, ...) or index; required without an adapter.
    pub task: Option<&'a str>,
    pub output: Option<&'a Path>,
    pub fft: FftLowering,
    /// Who the file is for (`--target`): sets the defaults of the two options below.
    pub target: Target,
    /// Flatten the `ai.adaptir` functions (the portable targets always do).
    pub inline_functions: bool,
    /// Override the target's spectral precision.
    pub spectral: Option<SpectralPrecision>,
    /// Take one image of any size (tiling and blending in the graph) instead of a patch batch.
    pub whole_image: Option<crate::restore::Tiling>,
    pub fp16: bool,
    /// Skip the folding passes (for debugging; the result computes the same).
    pub no_passes: bool,
    /// Opt-in passes to run as well (`--pass`, `passes::OPT_IN_PASSES`).
    pub extra_passes: &'a [&'static dyn super::passes::Pass],
    pub golden: Option<&'a Path>,
    /// `--int8`: quantizes the lowered graph, given the side of its square inputs (calibration runs the graph,
    /// which is the runtime layer's business, so the command passes it in), and says what it did. IPT and EDT.
    pub int8: Option<&'a dyn Fn(&mut Graph, usize) -> Result<super::quantize::QuantReport>>,
}

impl ExportArgs<'_> {
    /// The lowering options these arguments ask for: the target's, with `--inline-functions` and `--spectral`
    /// applied (the whole-image tiling is set by the caller, which knows the tile size).
    pub fn lower_options(&self) -> LowerOptions {
        let mut opts = self.target.lower_options(self.fft);
        opts.inline_functions |= self.inline_functions;
        if let Some(sp) = self.spectral {
            opts.spectral = sp;
        }
        opts
    }
}

pub struct ExportReport {
    pub output: PathBuf,
    pub target: Target,
    /// `--target tensorrt`: the file against TensorRT's operator support matrix (passed, or the export failed).
    pub tensorrt: Option<super::tensorrt::TensorRtReport>,
    pub op_counts: BTreeMap<String, usize>,
    pub bytes: usize,
    pub sha256: String,
    pub seconds: f64,
    pub passes: Vec<(&'static str, usize)>,
    pub golden: Option<PathBuf>,
    pub int8: Option<super::quantize::QuantReport>,
}

/// Seeded golden inputs (N = 2, uniform in [0, 1)).
fn golden_input(config: &IptConfig) -> Result<Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261128);
    let p = config.patch_size;
    let v: Vec<f32> = (0..2 * 3 * p * p).map(|_| rng.random::<f32>()).collect();
    Ok(Tensor::from_vec(v, (2, 3, p, p), &Device::Cpu)?)
}

/// Convert the graph to half precision: f32 initialisers become f16, the input is cast after it and the output
/// before it (the model keeps an f32 interface); the spectral products compute in their own precision (f64, or
/// f32 with constants named `KEEP_PRECISION_PREFIX`...) whatever their inputs.
pub(super) fn to_fp16(g: &mut Graph) {
    let (input, output) = (g.inputs[0].name.clone(), g.outputs[0].name.clone());
    for (name, c) in g.initializers.iter_mut() {
        if name.starts_with(KEEP_PRECISION_PREFIX) {
            continue;
        }
        if let Data::F32(v) = &c.data {
            c.data = Data::F16(v.iter().map(|x| half::f16::from_f32(*x).to_bits()).collect());
        }
    }
    let cast = |name: &str, input: &str, output: &str, to: ElemType| Node {
        name: name.into(),
        op: "Cast".into(),
        domain: String::new(),
        inputs: vec![input.into()],
        outputs: vec![output.into()],
        attrs: [("to".to_string(), super::ir::Attr::Int(to.onnx_code() as i64))].into_iter().collect(),
    };
    let (input_f16, output_f16) = (format!("{input}.f16"), format!("{output}.f16"));
    for n in g.nodes.iter_mut() {
        for i in n.inputs.iter_mut().filter(|i| **i == input) {
            *i = input_f16.clone();
        }
        for o in n.outputs.iter_mut().filter(|o| **o == output) {
            *o = output_f16.clone();
        }
    }
    g.nodes.insert(0, cast(&format!("{input}/Cast_f16"), &input, &input_f16, ElemType::F16));
    g.nodes.push(cast(&format!("{output}/Cast_f32"), &output_f16, &output, ElemType::F32));
}

/// The seeded image of a whole-image golden file and its restoration by the candle model (`restore`'s
/// tiling): (1, 3, H, W) and (1, 3, s H, s W).
pub fn whole_image_golden(model: &Ipt, task: usize, tiling: crate::restore::Tiling) -> Result<(Tensor, Tensor)> {
    let (p, s) = (model.config.patch_size, model.config.scales.get(task).copied().unwrap_or(1));
    whole_image_golden_with(p, s, tiling, &mut |x| Ok(model.forward(x, task, false)?))
}

/// [`whole_image_golden`] for any tile function `f` ((N, 3, p, p) -> (N, 3, s p, s p)); the image is
/// [`whole_image_golden_size`] of `p`.
pub fn whole_image_golden_with(
    p: usize,
    s: usize,
    tiling: crate::restore::Tiling,
    f: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
) -> Result<(Tensor, Tensor)> {
    let (h, w) = whole_image_golden_size(p);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261204);
    let img = crate::data::Image::new(w, h, 3, (0..w * h * 3).map(|_| rng.random::<f32>()).collect())?;
    let out = crate::restore::restore_with(p, s, &img, tiling, &Device::Cpu, f)?;
    Ok((image_to_nchw(&img)?, image_to_nchw(&out)?))
}

/// Size (H, W) of the image in a whole-image golden file for tiles of 48: odd, not a multiple of the tile
/// stride, more than one tile each way.
pub const WHOLE_IMAGE_GOLDEN_SIZE: (usize, usize) = (45, 71);

/// [`WHOLE_IMAGE_GOLDEN_SIZE`] scaled to tiles of `p` (EDT's denoise and derain take 192), kept odd: (45, 71) at 48.
pub fn whole_image_golden_size(p: usize) -> (usize, usize) {
    let (h, w) = WHOLE_IMAGE_GOLDEN_SIZE;
    ((h * p / 48) | 1, (w * p / 48) | 1)
}

/// An interleaved RGB image as a (1, 3, H, W) tensor.
pub fn image_to_nchw(img: &crate::data::Image) -> Result<Tensor> {
    let t = Tensor::from_vec(img.data.clone(), (img.height, img.width, img.channels), &Device::Cpu)?;
    Ok(t.permute((2, 0, 1))?.unsqueeze(0)?.contiguous()?)
}

/// How many times each pass applied, in `PASSES` order.
pub type PassCounts = Vec<(&'static str, usize)>;

/// A lowered, optimised graph with its metadata, ready to write to `output`, and the model it came from.
pub struct Built {
    pub graph: Graph,
    pub model: Ipt,
    pub task: usize,
    pub config: IptConfig,
    /// The backbone file the model was loaded from.
    pub backbone: PathBuf,
    pub output: PathBuf,
    pub passes: PassCounts,
    pub tensorrt: Option<super::tensorrt::TensorRtReport>,
}

/// Lower `model` for `task` with the lowering options of `args` (target, FFT, spectral precision, whole image),
/// run the passes (unless `no_passes`) and convert to f16 (`fp16`). The graph has no metadata yet.
pub fn lower_for(model: &Ipt, task: usize, args: &ExportArgs) -> Result<(Graph, LowerOptions, PassCounts)> {
    let config = &model.config;
    let mut opts = args.lower_options();
    if let Some(tiling) = args.whole_image {
        let p = config.patch_size;
        let wi = super::whole_image::WholeImage { p, scale: config.scales[task], tiling };
        wi.check().map_err(Error::invalid)?;
        opts.whole_image = Some(tiling);
    }
    let mut graph = lower(model, task, opts)?;
    let passes = if args.no_passes { vec![] } else { optimize_with(&mut graph, args.extra_passes)? };
    if args.fp16 {
        to_fp16(&mut graph);
    }
    Ok((graph, opts, passes))
}

pub fn export(args: &ExportArgs) -> Result<ExportReport> {
    let start = Instant::now();
    let mut built = build(args)?;
    let int8 = args.int8.map(|quantize| quantize(&mut built.graph, built.config.patch_size)).transpose()?;
    if int8.is_some() && args.target == Target::TensorRt {
        built.tensorrt = Some(check_tensorrt(&built.graph, &built.output)?);
    }
    let Built { graph, model, task, config, output, passes, tensorrt, .. } = built;
    super::onnx::write(&graph, &output)?;

    let golden = match args.golden {
        Some(path) => {
            let (x, y) = match args.whole_image {
                None => {
                    let x = golden_input(&config)?;
                    let y = model.forward(&x, task, false)?;
                    (x, y)
                }
                Some(tiling) => whole_image_golden(&model, task, tiling)?,
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

/// `--target tensorrt`: the graph against TensorRT's operator support matrix; outside it, nothing is written.
pub(super) fn check_tensorrt(graph: &Graph, output: &Path) -> Result<super::tensorrt::TensorRtReport> {
    let r = super::tensorrt::check(graph);
    if !r.passed() {
        return Err(Error::file(
            output,
            format!(
                "--target tensorrt: the graph is outside {}; not written:\n  {}",
                super::tensorrt::MATRIX,
                r.violations.join("\n  ")
            ),
        ));
    }
    Ok(r)
}

/// Everything `export` does before writing: load and check the model, lower, optimise, check the target, record
/// the metadata. Writes nothing.
pub fn build(args: &ExportArgs) -> Result<Built> {
    let adapter = args.adapter.map(AdapterFile::load).transpose()?;
    // What the file is for, checked before the model is loaded.
    let task_name = match (args.task, &adapter) {
        (Some(t), _) => t.to_string(),
        (None, Some(a)) => a.meta.task.clone(),
        (None, None) if args.backbone.is_none() => {
            return Err(Error::invalid(
                "nothing to export: give --adapter A.safetensors (the canonical call: `adaptir export --adapter \
                 derain.safetensors`), or --backbone B --task T -o OUT.onnx for a backbone alone",
            ))
        }
        (None, None) => {
            return Err(Error::invalid("--task is required when exporting the backbone alone (without --adapter)"))
        }
    };
    let task = match task_name.parse::<usize>() {
        Ok(i) => i,
        Err(_) => task_index(&task_name).ok_or_else(|| {
            Error::invalid(format!(
                "unknown task `{task_name}`: expected a task index or one of {}",
                crate::backbone::config::MODEL_TASK_NAMES
            ))
        })?,
    };
    let output = match (args.output, args.adapter) {
        (Some(o), _) => o.to_path_buf(),
        (None, Some(a)) => {
            PathBuf::from(a.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into()))
                .with_extension("onnx")
        }
        (None, None) => return Err(Error::invalid("-o OUT.onnx is required when exporting the backbone alone")),
    };
    if output.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() != Some("onnx") {
        return Err(Error::file(&output, "-o: expected a path ending in .onnx (export writes an ONNX model)"));
    }
    if output.is_dir() {
        return Err(Error::file(&output, "-o: expected a file path, found a folder"));
    }

    // The model (`crate::model`: the backbone found by its rule, checked against the adapter).
    let config = args.config.map(IptConfig::from_json_file).transpose()?;
    let loaded = crate::model::load_model_with(args.backbone, adapter, config, DType::F32, &Device::Cpu)?;
    let method = loaded.method().to_string();
    let crate::model::Model { ipt: model, backbone, adapter } = loaded;
    let config = model.config.clone();
    if task >= config.num_tasks {
        return Err(Error::invalid(format!(
            "task {task_name} (index {task}) has no head: the backbone has {} tasks",
            config.num_tasks
        )));
    }

    let (mut graph, opts, passes) = lower_for(&model, task, args)?;
    let tensorrt = match args.target {
        Target::TensorRt => Some(check_tensorrt(&graph, &output)?),
        _ => None,
    };
    let backbone_name = adapter.as_ref().map(|a| a.meta.backbone.clone()).unwrap_or_else(|| {
        backbone.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    });
    let md = &mut graph.metadata;
    md.insert("tool".into(), "adaptir".into());
    md.insert("tool_version".into(), env!("CARGO_PKG_VERSION").into());
    md.insert("method".into(), method);
    md.insert("task".into(), task_name.clone());
    md.insert("task_index".into(), task.to_string());
    md.insert("backbone".into(), backbone_name);
    md.insert("backbone_sha256".into(), sha256_file(&backbone)?);
    md.insert("backbone_config".into(), serde_json::to_string(&config).unwrap_or_default());
    md.insert("fft".into(), format!("{:?}", args.fft).to_lowercase());
    md.insert("target".into(), args.target.as_str().into());
    md.insert("spectral_precision".into(), format!("{:?}", opts.spectral).to_lowercase());
    if let Some(t) = args.whole_image {
        md.insert("whole_image".into(), "1".into());
        md.insert("tile_overlap".into(), t.overlap.to_string());
        md.insert("whole_image_max_tiles".into(), t.batch.to_string());
    }
    md.insert("precision".into(), if args.fp16 { "fp16" } else { "fp32" }.into());
    if let (Some(a), Some(path)) = (&adapter, args.adapter) {
        md.insert("adapter".into(), path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        md.insert("adapter_sha256".into(), sha256_file(&a.path)?);
    }
    Ok(Built { graph, model, task, config, backbone, output, passes, tensorrt })
}
