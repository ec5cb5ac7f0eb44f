//! A backbone + adapter ready to restore images of any size, tiled (`restore::restore_with`: mirror padding to
//! the tile grid, overlapping tiles blended), on one of three engines:
//!
//! * `candle`: the candle model (what training evaluates);
//! * `onnx`: the same model compiled to ONNX in memory (the lowering and passes of `adaptir export`, default
//!   options) or an exported file given with `--onnx` (checked against the adapter by sha256), run by ONNX
//!   Runtime on the chosen execution provider;
//! * `tract`: the same ONNX (in memory or `--onnx`) run by tract, in process: no C++ library at all;
//! * `openvino`: the same ONNX run by OpenVINO's CPU plugin, in f32 or (`--precision bf16`) with bf16 inference.
//!
//! A whole-image export (`export --whole-image`) takes the image whole: the tiling is in its graph. The command,
//! with its image policy, is `commands::restore`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adaptir_ops::graph::FftLowering;
use candle_core::{DType, Device, Tensor};

use super::openvino::OpenVinoModel;
use super::tract::TractModel;
use super::{Precision, RunOptions, Session};
use crate::backbone::config::task_index;
use crate::compile::export::image_to_nchw;
use crate::compile::lower::{lower, lower_edt};
use crate::compile::whole_image::WholeImage;
use crate::data::Image;
use crate::error::{Error, Result};
use crate::model::edt::load_edt_with_adapter;
use crate::model::{load_model_with, Net};
use crate::peft::file::{sha256_file, AdapterFile};
use crate::restore::{restore_with, Tiling};

/// Which engine runs the tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Candle,
    Onnx,
    Tract,
    OpenVino,
}

impl std::str::FromStr for Engine {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "candle" => Ok(Engine::Candle),
            "onnx" => Ok(Engine::Onnx),
            "tract" => Ok(Engine::Tract),
            "openvino" => Ok(Engine::OpenVino),
            other => Err(Error::invalid(format!(
                "--engine: expected `candle`, `onnx`, `tract` or `openvino`, found `{other}`"
            ))),
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Candle => "candle",
            Engine::Onnx => "onnx",
            Engine::Tract => "tract",
            Engine::OpenVino => "openvino",
        })
    }
}

/// A model ready to restore images on one engine.
pub struct Restorer {
    /// The candle model (IPT with the adapter's head, or an EDT checkpoint's one head): the `candle` engine
    /// runs it, and the other engines run its ONNX lowering.
    pub model: Net,
    pub task_name: String,
    pub scale: usize,
    pub engine: Engine,
    session: Option<Session>,
    /// tract or OpenVINO: engines that fix the input shape when they load.
    fixed: Option<FixedShapeBatches>,
    /// Set when the given `--onnx` file is a whole-image export: the tiling is in the graph.
    whole_image: Option<WholeImageFile>,
}

/// What `restore` needs to know of a whole-image export (`export --whole-image`): its tiling and tile bound, and
/// its name (tract and OpenVINO, which fix the image size when they load, build one model per image from the bytes
/// kept in `FixedShapeBatches`).
struct WholeImageFile {
    overlap: usize,
    max_tiles: usize,
    name: PathBuf,
}

/// `(overlap, max tiles)` of a whole-image export, from its metadata; `None` for a patch export.
fn whole_image_meta(metadata: &BTreeMap<String, String>, file: &Path) -> Result<Option<(usize, usize)>> {
    if metadata.get("whole_image").map(String::as_str) != Some("1") {
        return Ok(None);
    }
    let num = |key: &str| -> Result<usize> {
        metadata.get(key).and_then(|v| v.parse().ok()).ok_or_else(|| {
            Error::file(file, format!("a whole-image export without an integer `{key}` in its metadata"))
        })
    };
    Ok(Some((num("tile_overlap")?, num("whole_image_max_tiles")?)))
}

/// tract (when it optimises) and OpenVINO (when it compiles) fix input shapes: one model per batch size met (the
/// full batch and the last, smaller one), made from the same ONNX bytes.
struct FixedShapeBatches {
    engine: Engine,
    bytes: Vec<u8>,
    name: PathBuf,
    threads: Option<usize>,
    precision: Precision,
    models: Vec<(usize, FixedShapeModel)>,
}

enum FixedShapeModel {
    Tract(TractModel),
    OpenVino(OpenVinoModel),
}

impl FixedShapeBatches {
    /// Load the model for inputs of `shapes` (the file's one input).
    fn load(&self, shapes: &[(String, Vec<usize>)]) -> Result<FixedShapeModel> {
        Ok(match self.engine {
            Engine::OpenVino => FixedShapeModel::OpenVino(OpenVinoModel::from_memory(
                &self.bytes,
                &self.name,
                shapes,
                self.threads,
                self.precision,
            )?),
            _ => FixedShapeModel::Tract(TractModel::from_memory(&self.bytes, &self.name, shapes, self.threads)?),
        })
    }

    fn run(&mut self, x: &Tensor) -> Result<Tensor> {
        let n = x.dims().first().copied().unwrap_or(0);
        let i = match self.models.iter().position(|(b, _)| *b == n) {
            Some(i) => i,
            None => {
                let model = self.load(&[("input".to_string(), x.dims().to_vec())])?;
                self.models.push((n, model));
                self.models.len() - 1
            }
        };
        let mut out = self.models[i].1.run("input", x)?;
        if out.is_empty() {
            return Err(Error::file(&self.name, format!("{} returned no output", self.engine)));
        }
        Ok(out.swap_remove(0).1)
    }
}

impl FixedShapeModel {
    fn run(&self, input: &str, x: &Tensor) -> Result<Vec<(String, Tensor)>> {
        match self {
            FixedShapeModel::Tract(m) => m.run(&[(input, x.clone())]),
            FixedShapeModel::OpenVino(m) => m.run(&[(input, x.clone())]),
        }
    }
}

/// Read an exported file for `adapter`, refusing an export of another adapter (by sha256); with its whole-image
/// tiling, if it is one.
/// An exported file's bytes, its whole-image tiling (overlap, max tiles) if it is one, and whether it has
/// external data.
type Export = (Vec<u8>, Option<(usize, usize)>, bool);

/// A file with external data (`export --out-dir`) has its weight file checked here, before anything runs it.
fn read_export(file: &Path, adapter: &Path) -> Result<Export> {
    let bytes = crate::compile::onnx::read_bytes(file)?;
    let m = crate::compile::onnx::decode_model(&bytes, file)?;
    let external = crate::compile::onnx::external::check(&m, file)?.is_some();
    let metadata: BTreeMap<String, String> = m
        .metadata_props
        .iter()
        .map(|p| (p.key.clone().unwrap_or_default(), p.value.clone().unwrap_or_default()))
        .collect();
    let whole = whole_image_meta(&metadata, file)?;
    let sha = sha256_file(adapter)?;
    match metadata.get("adapter_sha256") {
        Some(s) if *s == sha => {}
        found => {
            return Err(Error::file(
                file,
                format!(
                    "expected an export of {} (adapter sha256 {sha}), found adapter sha256 {}",
                    adapter.display(),
                    found.map(String::as_str).unwrap_or("(none)")
                ),
            ))
        }
    }
    Ok((bytes, whole, external))
}

pub struct RestorerArgs<'a> {
    pub adapter: &'a Path,
    /// Default: found by `crate::model`'s rule (beside the adapter, then under models/).
    pub backbone: Option<&'a Path>,
    pub engine: Engine,
    /// With the onnx, tract or openvino engine: run this exported file instead of compiling in memory.
    pub onnx: Option<&'a Path>,
    pub run: RunOptions,
}

impl Restorer {
    pub fn new(args: &RestorerArgs) -> Result<Restorer> {
        if !args.adapter.is_file() {
            return Err(Error::file(args.adapter, "expected an adapter file (.safetensors), found no such file"));
        }
        let adapter = AdapterFile::load(args.adapter)?;
        let task_name = adapter.meta.task.clone();
        let model = if adapter.meta.backbone_config.edt().is_some() {
            // An EDT checkpoint holds the one head the adapter was trained through.
            let beside: Vec<&Path> = adapter.path.parent().into_iter().collect();
            let checkpoint = crate::model::find_backbone(args.backbone, &adapter.meta.backbone, &beside, "")?;
            Net::Edt(Box::new(load_edt_with_adapter(&checkpoint, &adapter, DType::F32, &Device::Cpu)?))
        } else {
            let config = adapter.ipt_config("restore")?.clone();
            let task = task_index(&task_name).ok_or_else(|| {
                Error::file(args.adapter, format!("unknown task `{task_name}` in the adapter's metadata"))
            })?;
            if config.scales.get(task).is_none() {
                return Err(Error::file(
                    args.adapter,
                    format!("task `{task_name}` (index {task}) has no head in its backbone config"),
                ));
            }
            let ipt = load_model_with(args.backbone, Some(adapter), None, DType::F32, &Device::Cpu)?.ipt;
            Net::Ipt(Box::new(ipt), task)
        };
        let scale = model.scale();
        if args.engine != Engine::Onnx && args.run.ep != crate::runtime::Ep::Cpu {
            return Err(Error::invalid(format!(
                "--ep {}: the {} engine runs on the CPU here; use --engine onnx --ep {}",
                args.run.ep, args.engine, args.run.ep
            )));
        }
        if args.engine == Engine::Candle && args.onnx.is_some() {
            return Err(Error::invalid("--onnx needs --engine onnx, tract or openvino"));
        }
        if args.engine != Engine::OpenVino {
            args.run.precision.refuse_unless_f32(&format!("the {} engine", args.engine))?;
        }
        if args.engine != Engine::Onnx {
            args.run.refuse_denormal_as_zero(&format!("the {} engine", args.engine))?;
        }
        // The ONNX bytes for the onnx and tract engines: the given export, or the model compiled in memory.
        let name = match args.onnx {
            Some(file) => file.to_path_buf(),
            None => PathBuf::from(format!("{}.onnx", args.adapter.file_stem().unwrap_or_default().to_string_lossy())),
        };
        let (mut whole, mut external) = (None, false);
        let bytes = match (args.engine, args.onnx) {
            (Engine::Candle, _) => None,
            (_, Some(file)) => {
                let (bytes, w, ext) = read_export(file, args.adapter)?;
                whole = w;
                external = ext;
                Some(bytes)
            }
            (_, None) => {
                let opts = crate::compile::target::Target::default().lower_options(FftLowering::MatMul);
                let mut g = match &model {
                    Net::Ipt(ipt, task) => lower(ipt, *task, opts)?,
                    Net::Edt(edt) => lower_edt(edt, opts)?,
                };
                crate::compile::passes::optimize(&mut g)?;
                g.name = args.adapter.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                Some(crate::compile::onnx::to_bytes(&g, env!("CARGO_PKG_VERSION"))?)
            }
        };
        let (mut session, mut fixed) = (None, None);
        let whole_image = match (whole, &bytes) {
            (Some((overlap, max_tiles)), Some(_)) => Some(WholeImageFile { overlap, max_tiles, name: name.clone() }),
            _ => None,
        };
        match (args.engine, bytes) {
            // ONNX Runtime reads external data from the model's folder only when given the path (checked above).
            (Engine::Onnx, Some(_)) if external => session = Some(Session::new(&name, &args.run)?),
            (Engine::Onnx, Some(bytes)) => session = Some(Session::from_memory(&bytes, &name, &args.run)?),
            (Engine::Tract | Engine::OpenVino, Some(bytes)) => {
                if args.run.threads == Some(0) {
                    return Err(Error::invalid("--threads: expected at least 1, found 0"));
                }
                if external && args.engine == Engine::OpenVino {
                    return Err(Error::file(
                        &name,
                        "an export with external data (`export --out-dir`) runs with --engine onnx or tract here",
                    ));
                }
                if args.engine == Engine::OpenVino {
                    super::openvino::load_library()?;
                }
                fixed = Some(FixedShapeBatches {
                    engine: args.engine,
                    bytes,
                    name,
                    threads: args.run.threads,
                    precision: args.run.precision,
                    models: Vec::new(),
                });
            }
            _ => {}
        }
        Ok(Restorer { model, task_name, scale, engine: args.engine, session, fixed, whole_image })
    }

    /// The model's tile side (IPT's patch size; the input size of an EDT checkpoint's task).
    pub fn tile(&self) -> usize {
        self.model.input_size()
    }

    /// Restore an RGB image: the f32 result before quantisation, `scale` times larger. `progress` is called with
    /// the number of tiles done after each batch.
    pub fn restore(&mut self, img: &Image, tiling: Tiling, progress: &mut dyn FnMut(usize)) -> Result<Image> {
        if self.whole_image.is_some() {
            return self.restore_whole(img, tiling, progress);
        }
        let (p, s) = (self.tile(), self.scale);
        let model = &self.model;
        let (session, fixed) = (&mut self.session, &mut self.fixed);
        let mut done = 0usize;
        let mut f = |x: &Tensor| -> Result<Tensor> {
            let y = match (session.as_mut(), fixed.as_mut()) {
                (Some(sess), _) => {
                    let mut out = sess.run(&[("input", x.clone())])?;
                    if out.is_empty() {
                        return Err(Error::invalid("ONNX Runtime returned no output"));
                    }
                    out.swap_remove(0).1
                }
                (None, Some(t)) => t.run(x)?,
                (None, None) => model.forward(x, false)?,
            };
            done += x.dims().first().copied().unwrap_or(0);
            progress(done);
            Ok(y)
        };
        restore_with(p, s, img, tiling, &Device::Cpu, &mut f)
    }
}

impl Restorer {
    /// A whole-image export: the image goes in whole, tiling and blending happen in the graph. Its tiles are
    /// counted first and refused beyond the file's bound (the graph runs them as one batch).
    fn restore_whole(&mut self, img: &Image, tiling: Tiling, progress: &mut dyn FnMut(usize)) -> Result<Image> {
        let (p, s) = (self.tile(), self.scale);
        let Some(w) = &self.whole_image else { return Err(Error::invalid("not a whole-image export")) };
        if img.channels != 3 || img.width == 0 || img.height == 0 {
            return Err(Error::invalid(format!(
                "restore: expected a non-empty RGB image, found {}x{}x{}",
                img.width, img.height, img.channels
            )));
        }
        if tiling.overlap != w.overlap {
            return Err(Error::file(
                &w.name,
                format!(
                    "--overlap {}: this whole-image export tiles with overlap {} inside its graph; pass --overlap {}",
                    tiling.overlap, w.overlap, w.overlap
                ),
            ));
        }
        let wi = WholeImage { p, scale: s, tiling: Tiling { overlap: w.overlap, batch: w.max_tiles } };
        let tiles = wi.tiles_along(img.width) * wi.tiles_along(img.height);
        if tiles > w.max_tiles {
            return Err(Error::file(
                &w.name,
                format!(
                    "the image is {}x{}: {tiles} tiles, but this whole-image export takes at most {} (it runs them \
                     as one batch); export with a larger `--max-tiles`, or restore with a patch export",
                    img.width, img.height, w.max_tiles
                ),
            ));
        }
        let x = image_to_nchw(img)?;
        let mut out = match (self.session.as_mut(), self.fixed.as_ref()) {
            (Some(sess), _) => sess.run(&[("image", x)])?,
            (None, Some(f)) => f.load(&[("image".to_string(), x.dims().to_vec())])?.run("image", &x)?,
            _ => return Err(Error::invalid("a whole-image export runs with --engine onnx, tract or openvino")),
        };
        if out.is_empty() {
            return Err(Error::file(&w.name, "the runtime returned no output"));
        }
        let y = out.swap_remove(0).1;
        let (oh, ow) = (img.height * s, img.width * s);
        if y.dims() != [1, 3, oh, ow] {
            return Err(Error::file(&w.name, format!("output {:?}, expected [1, 3, {oh}, {ow}]", y.dims())));
        }
        progress(tiles);
        let data: Vec<f32> = y.squeeze(0)?.permute((1, 2, 0))?.flatten_all()?.to_vec1()?;
        Ok(Image::new(ow, oh, 3, data)?)
    }
}
