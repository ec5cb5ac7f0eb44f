//! `adaptir restore`: one image of any size through backbone + adapter, tiled (`restore::restore_with`: mirror
//! padding to the tile grid, overlapping tiles blended), on either engine:
//!
//! * `candle`: the candle model (what training evaluates);
//! * `onnx`: the same model compiled to ONNX in memory (the lowering and passes of `adaptir export`, default
//!   options) or an exported file given with `--onnx` (checked against the adapter by sha256), run by ONNX
//!   Runtime on the chosen execution provider;
//! * `tract`: the same ONNX (in memory or `--onnx`) run by tract, in process: no C++ library at all.
//!
//! Image policy (docs/validation.md, "Restore"): PNG 8/16-bit, JPEG, BMP, TIFF in (the `data::io` checks: format
//! from the bytes, pixel limit); the output is a PNG of the input's bit depth (16-bit for 16-bit and float
//! inputs), grayscale for a grayscale input (BT.601 luma of the restored RGB), with the input's alpha channel
//! passed through unchanged (for SR tasks resized by the scale with Catmull-Rom). The file is written atomically
//! after everything else has succeeded.
use std::path::{Path, PathBuf};
use std::time::Instant;

use adaptir_ops::graph::FftLowering;
use candle_core::{Device, Tensor};
use image::{DynamicImage, ImageReader, Limits};

use crate::backbone::config::task_index;
use crate::backbone::Ipt;
use crate::compile::export::image_to_nchw;
use crate::compile::lower::lower;
use crate::compile::whole_image::WholeImage;
use crate::data::io::{probe_image, LoadOptions};
use crate::data::Image;
use crate::error::{Error, Result};
use crate::peft::file::{sha256_file, AdapterFile};
use crate::restore::{restore_with, Tiling};
use crate::runtime::tract::TractModel;
use crate::runtime::validate::build_model;
use crate::runtime::{RunOptions, Session};

/// Which engine runs the tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Candle,
    Onnx,
    Tract,
}

impl std::str::FromStr for Engine {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "candle" => Ok(Engine::Candle),
            "onnx" => Ok(Engine::Onnx),
            "tract" => Ok(Engine::Tract),
            other => Err(Error::invalid(format!("--engine: expected `candle`, `onnx` or `tract`, found `{other}`"))),
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Candle => "candle",
            Engine::Onnx => "onnx",
            Engine::Tract => "tract",
        })
    }
}

/// An input image with what the output must keep of it.
#[derive(Clone, Debug)]
pub struct LoadedImage {
    /// RGB in [0, 1] (grayscale replicated), as the model sees it.
    pub rgb: Image,
    /// The alpha plane in [0, 1], row-major, if the input has one.
    pub alpha: Option<Vec<f32>>,
    pub gray: bool,
    /// More than 8 bits per sample (16-bit PNG / TIFF, float TIFF): the output is 16-bit.
    pub sixteen: bool,
}

/// Load an image for restoring (the `data::io` header and pixel-limit checks, then one decode).
pub fn load(path: &Path) -> Result<LoadedImage> {
    let opts = LoadOptions::default();
    let (w, h) = probe_image(path, &opts)?;
    let decode_err = |e: image::ImageError| Error::file(path, format!("cannot decode the image: {e}"));
    let mut reader = ImageReader::open(path)
        .map_err(|e| Error::file(path, format!("cannot open: {e}")))?
        .with_guessed_format()
        .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(w as u32);
    limits.max_image_height = Some(h as u32);
    limits.max_alloc = Some((w as u64 * h as u64).saturating_mul(16).max(1 << 20));
    reader.limits(limits);
    let img = reader.decode().map_err(decode_err)?;
    Ok(from_dynamic(img))
}

fn from_dynamic(img: DynamicImage) -> LoadedImage {
    use image::ColorType as C;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let color = img.color();
    let gray = matches!(color, C::L8 | C::La8 | C::L16 | C::La16);
    let sixteen = !matches!(color, C::L8 | C::La8 | C::Rgb8 | C::Rgba8);
    let has_alpha = color.has_alpha();
    let (rgb, alpha): (Vec<f32>, Option<Vec<f32>>) = if sixteen {
        let rgba: Vec<f32> = if matches!(color, C::Rgb32F | C::Rgba32F) {
            img.to_rgba32f().into_raw().into_iter().map(|v| if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) }).collect()
        } else {
            img.to_rgba16().into_raw().into_iter().map(|v| v as f32 / 65535.0).collect()
        };
        split_rgba(&rgba, has_alpha)
    } else {
        let rgba: Vec<f32> = img.to_rgba8().into_raw().into_iter().map(|v| v as f32 / 255.0).collect();
        split_rgba(&rgba, has_alpha)
    };
    LoadedImage { rgb: Image { width: w, height: h, channels: 3, data: rgb }, alpha, gray, sixteen }
}

fn split_rgba(rgba: &[f32], has_alpha: bool) -> (Vec<f32>, Option<Vec<f32>>) {
    let rgb = rgba.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    let alpha = has_alpha.then(|| rgba.chunks_exact(4).map(|p| p[3]).collect());
    (rgb, alpha)
}

/// Number of tiles `restore_with` cuts a `w x h` image into (the same grid: margin overlap/2, stride
/// tile - overlap, last tile flush with the padded end); for the progress bar.
pub fn tile_count(w: usize, h: usize, tile: usize, overlap: usize) -> usize {
    let stride = tile.saturating_sub(overlap).max(1);
    let axis = |n: usize| {
        let inner = n + 2 * (overlap / 2);
        if inner <= tile {
            1
        } else {
            let padded = tile + (inner - tile).div_ceil(stride) * stride;
            (padded - tile).div_ceil(stride) + 1
        }
    };
    axis(w) * axis(h)
}

/// A model ready to restore images on one engine.
pub struct Restorer {
    pub model: Ipt,
    pub task: usize,
    pub task_name: String,
    pub scale: usize,
    pub engine: Engine,
    session: Option<Session>,
    tract: Option<TractBatches>,
    /// Set when the given `--onnx` file is a whole-image export: the tiling is in the graph.
    whole_image: Option<WholeImageFile>,
}

/// What `restore` needs to know of a whole-image export (`export --whole-image`): its tiling and tile bound, and
/// its bytes for tract (whose optimised model is fixed to one image size).
struct WholeImageFile {
    overlap: usize,
    max_tiles: usize,
    bytes: Vec<u8>,
    name: PathBuf,
}

/// `(overlap, max tiles)` of a whole-image export, from its metadata; `None` for a patch export.
fn whole_image_meta(g: &crate::compile::ir::Graph, file: &Path) -> Result<Option<(usize, usize)>> {
    if g.metadata.get("whole_image").map(String::as_str) != Some("1") {
        return Ok(None);
    }
    let num = |key: &str| -> Result<usize> {
        g.metadata.get(key).and_then(|v| v.parse().ok()).ok_or_else(|| {
            Error::file(file, format!("a whole-image export without an integer `{key}` in its metadata"))
        })
    };
    Ok(Some((num("tile_overlap")?, num("whole_image_max_tiles")?)))
}

/// tract fixes input shapes when it optimises a model: one optimised model per batch size met (the full batch
/// and the last, smaller one), made from the same ONNX bytes.
struct TractBatches {
    bytes: Vec<u8>,
    name: PathBuf,
    threads: Option<usize>,
    models: Vec<(usize, TractModel)>,
}

impl TractBatches {
    fn run(&mut self, x: &Tensor) -> Result<Tensor> {
        let n = x.dims().first().copied().unwrap_or(0);
        let i = match self.models.iter().position(|(b, _)| *b == n) {
            Some(i) => i,
            None => {
                let shapes = [("input".to_string(), x.dims().to_vec())];
                self.models.push((n, TractModel::from_memory(&self.bytes, &self.name, &shapes, self.threads)?));
                self.models.len() - 1
            }
        };
        let mut out = self.models[i].1.run(&[("input", x.clone())])?;
        if out.is_empty() {
            return Err(Error::file(&self.name, "tract returned no output"));
        }
        Ok(out.swap_remove(0).1)
    }
}

/// Read an exported file for `adapter`, refusing an export of another adapter (by sha256); with its whole-image
/// tiling, if it is one.
fn read_export(file: &Path, adapter: &Path) -> Result<(Vec<u8>, Option<(usize, usize)>)> {
    let g = crate::compile::onnx::read(file)?;
    let whole = whole_image_meta(&g, file)?;
    let sha = sha256_file(adapter)?;
    match g.metadata.get("adapter_sha256") {
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
    let bytes = std::fs::read(file).map_err(|e| Error::file(file, format!("cannot read: {e}")))?;
    Ok((bytes, whole))
}

pub struct RestorerArgs<'a> {
    pub adapter: &'a Path,
    /// Default: backbone.safetensors beside the adapter, else models/<adapter's backbone>/backbone.safetensors.
    pub backbone: Option<&'a Path>,
    pub engine: Engine,
    /// With the onnx or tract engine: run this exported file instead of compiling in memory.
    pub onnx: Option<&'a Path>,
    pub run: RunOptions,
}

impl Restorer {
    pub fn new(args: &RestorerArgs) -> Result<Restorer> {
        if !args.adapter.is_file() {
            return Err(Error::file(args.adapter, "expected an adapter file (.safetensors), found no such file"));
        }
        let adapter = AdapterFile::load(args.adapter)?;
        let config = adapter.meta.backbone_config.clone();
        let beside = args.adapter.with_file_name("backbone.safetensors");
        let default = crate::peft::file::backbone_path(&adapter.meta.backbone);
        let backbone = match args.backbone {
            Some(b) => b.to_path_buf(),
            None if beside.is_file() => beside,
            None => default,
        };
        if !backbone.is_file() {
            return Err(Error::file(
                &backbone,
                format!(
                    "backbone `{}` of the adapter not found (looked beside the adapter and here): pass --backbone PATH",
                    adapter.meta.backbone
                ),
            ));
        }
        let task_name = adapter.meta.task.clone();
        let task = task_index(&task_name).ok_or_else(|| {
            Error::file(args.adapter, format!("unknown task `{task_name}` in the adapter's metadata"))
        })?;
        let scale = *config.scales.get(task).ok_or_else(|| {
            Error::file(args.adapter, format!("task `{task_name}` (index {task}) has no head in its backbone config"))
        })?;
        let model = build_model(&backbone, &config, Some(&adapter), &Device::Cpu)?;
        if args.engine != Engine::Onnx && args.run.ep != crate::runtime::Ep::Cpu {
            return Err(Error::invalid(format!(
                "--ep {}: the {} engine runs on the CPU here; use --engine onnx --ep {}",
                args.run.ep, args.engine, args.run.ep
            )));
        }
        if args.engine == Engine::Candle && args.onnx.is_some() {
            return Err(Error::invalid("--onnx needs --engine onnx or --engine tract"));
        }
        // The ONNX bytes for the onnx and tract engines: the given export, or the model compiled in memory.
        let name = match args.onnx {
            Some(file) => file.to_path_buf(),
            None => PathBuf::from(format!("{}.onnx", args.adapter.file_stem().unwrap_or_default().to_string_lossy())),
        };
        let mut whole = None;
        let bytes = match (args.engine, args.onnx) {
            (Engine::Candle, _) => None,
            (_, Some(file)) => {
                let (bytes, w) = read_export(file, args.adapter)?;
                whole = w;
                Some(bytes)
            }
            (_, None) => {
                let mut g = lower(&model, task, crate::compile::target::Target::default().lower_options(FftLowering::MatMul))?;
                crate::compile::passes::optimize(&mut g)?;
                g.name = args.adapter.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                Some(crate::compile::onnx::to_bytes(&g, env!("CARGO_PKG_VERSION"))?)
            }
        };
        let (mut session, mut tract) = (None, None);
        let whole_image = match (whole, &bytes) {
            (Some((overlap, max_tiles)), Some(b)) => {
                Some(WholeImageFile { overlap, max_tiles, bytes: b.clone(), name: name.clone() })
            }
            _ => None,
        };
        match (args.engine, bytes) {
            (Engine::Onnx, Some(bytes)) => session = Some(Session::from_memory(&bytes, &name, &args.run)?),
            (Engine::Tract, Some(bytes)) => {
                if args.run.threads == Some(0) {
                    return Err(Error::invalid("--threads: expected at least 1, found 0"));
                }
                tract = Some(TractBatches { bytes, name, threads: args.run.threads, models: Vec::new() });
            }
            _ => {}
        }
        if whole_image.is_some() {
            tract = None; // tract gets one model per image size (below)
        }
        Ok(Restorer { model, task, task_name, scale, engine: args.engine, session, tract, whole_image })
    }

    /// The model's tile side (its patch size).
    pub fn tile(&self) -> usize {
        self.model.config.patch_size
    }

    /// Restore an RGB image: the f32 result before quantisation, `scale` times larger. `progress` is called with
    /// the number of tiles done after each batch.
    pub fn restore(&mut self, img: &Image, tiling: Tiling, progress: &mut dyn FnMut(usize)) -> Result<Image> {
        if self.whole_image.is_some() {
            return self.restore_whole(img, tiling, progress);
        }
        let (p, s, task) = (self.tile(), self.scale, self.task);
        let model = &self.model;
        let (session, tract) = (&mut self.session, &mut self.tract);
        let mut done = 0usize;
        let mut f = |x: &Tensor| -> Result<Tensor> {
            let y = match (session.as_mut(), tract.as_mut()) {
                (Some(sess), _) => {
                    let mut out = sess.run(&[("input", x.clone())])?;
                    if out.is_empty() {
                        return Err(Error::invalid("ONNX Runtime returned no output"));
                    }
                    out.swap_remove(0).1
                }
                (None, Some(t)) => t.run(x)?,
                (None, None) => model.forward(x, task, false)?,
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
        let mut out = match (self.session.as_mut(), self.engine) {
            (Some(sess), _) => sess.run(&[("image", x)])?,
            (None, Engine::Tract) => {
                let shapes = [("image".to_string(), x.dims().to_vec())];
                TractModel::from_memory(&w.bytes, &w.name, &shapes, None)?.run(&[("image", x)])?
            }
            _ => return Err(Error::invalid("a whole-image export runs with --engine onnx or --engine tract")),
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

pub struct RestoreArgs<'a> {
    pub restorer: RestorerArgs<'a>,
    pub input: &'a Path,
    pub output: Option<&'a Path>,
    pub tile: usize,
    pub overlap: usize,
    pub batch: usize,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

pub struct RestoreReport {
    pub output: PathBuf,
    pub engine: Engine,
    pub task: String,
    pub input_size: (usize, usize),
    pub output_size: (usize, usize),
    pub tiles: usize,
    pub gray: bool,
    pub alpha: bool,
    pub sixteen: bool,
    pub seconds: f64,
}

/// Default output: `<input folder>/<stem>_<task>.png`.
pub fn default_output(input: &Path, task: &str) -> PathBuf {
    let stem = input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
    input.with_file_name(format!("{stem}_{task}.png"))
}

/// Restore one file (see the module docs). Arguments, input image and model are all checked before any output
/// is written; the output is written atomically.
pub fn restore_file(args: &RestoreArgs) -> Result<RestoreReport> {
    let start = Instant::now();
    if !args.overlap.is_multiple_of(2) {
        return Err(Error::invalid(format!("--overlap: expected an even number of pixels, found {}", args.overlap)));
    }
    if args.batch == 0 {
        return Err(Error::invalid("--batch: expected at least 1, found 0"));
    }
    if let Some(o) = args.output {
        let ext = o.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
        if ext.as_deref() != Some("png") {
            return Err(Error::file(o, "-o: expected a .png output path (restore writes PNG, 8- or 16-bit)"));
        }
        if o.is_dir() {
            return Err(Error::file(o, "-o: expected a file path, found a folder"));
        }
    }
    let loaded = load(args.input)?;
    let mut restorer = Restorer::new(&args.restorer)?;
    if args.tile != restorer.tile() {
        return Err(Error::invalid(format!(
            "--tile {}: this model takes {p}x{p} tiles (its patch size); use --tile {p}",
            args.tile,
            p = restorer.tile()
        )));
    }
    if args.overlap >= args.tile {
        return Err(Error::invalid(format!(
            "--overlap {}: expected fewer pixels than the tile side {}",
            args.overlap, args.tile
        )));
    }
    let output = match args.output {
        Some(o) => o.to_path_buf(),
        None => default_output(args.input, &restorer.task_name),
    };
    if let (Ok(a), Ok(b)) = (std::fs::canonicalize(&output), std::fs::canonicalize(args.input)) {
        if a == b {
            return Err(Error::file(&output, "-o: the output would overwrite the input image; choose another path"));
        }
    }
    let (w, h) = (loaded.rgb.width, loaded.rgb.height);
    let tiles = tile_count(w, h, args.tile, args.overlap);
    let bar = if args.progress {
        let b = indicatif::ProgressBar::new(tiles as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} tiles, {elapsed_precise} elapsed, eta {eta}",
        ) {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_prefix(format!("restore {} ({})", args.input.display(), restorer.engine));
        Some(b)
    } else {
        None
    };
    let tiling = Tiling { overlap: args.overlap, batch: args.batch };
    let restored = restorer.restore(&loaded.rgb, tiling, &mut |done| {
        if let Some(b) = &bar {
            b.set_position(done as u64);
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let restored = restored?;
    let s = restorer.scale;
    let alpha = match &loaded.alpha {
        Some(a) if s == 1 => Some(a.clone()),
        Some(a) => Some(resize_plane(a, w, h, s)?),
        None => None,
    };
    save(&output, &restored, alpha.as_deref(), loaded.gray, loaded.sixteen)?;
    Ok(RestoreReport {
        output,
        engine: restorer.engine,
        task: restorer.task_name.clone(),
        input_size: (w, h),
        output_size: (restored.width, restored.height),
        tiles,
        gray: loaded.gray,
        alpha: loaded.alpha.is_some(),
        sixteen: loaded.sixteen,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// An alpha plane resized by `s` with Catmull-Rom, clamped to [0, 1].
fn resize_plane(a: &[f32], w: usize, h: usize, s: usize) -> Result<Vec<f32>> {
    let buf: image::ImageBuffer<image::Luma<f32>, Vec<f32>> =
        image::ImageBuffer::from_raw(w as u32, h as u32, a.to_vec())
            .ok_or_else(|| Error::invalid("alpha plane: size mismatch"))?;
    let out = image::imageops::resize(&buf, (w * s) as u32, (h * s) as u32, image::imageops::FilterType::CatmullRom);
    Ok(out.into_raw().into_iter().map(|v| v.clamp(0.0, 1.0)).collect())
}

/// Write the restored image: gray (BT.601 luma) or RGB, plus alpha, 8- or 16-bit PNG, atomically.
pub fn save(path: &Path, rgb: &Image, alpha: Option<&[f32]>, gray: bool, sixteen: bool) -> Result<()> {
    use image::ExtendedColorType as T;
    let n = rgb.width * rgb.height;
    let mut samples: Vec<f32> = Vec::with_capacity(n * 4);
    for (i, p) in rgb.data.chunks_exact(3).enumerate() {
        if gray {
            samples.push(0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]);
        } else {
            samples.extend_from_slice(p);
        }
        if let Some(a) = alpha {
            samples.push(a.get(i).copied().unwrap_or(1.0));
        }
    }
    let color = match (gray, alpha.is_some(), sixteen) {
        (true, false, false) => T::L8,
        (true, true, false) => T::La8,
        (false, false, false) => T::Rgb8,
        (false, true, false) => T::Rgba8,
        (true, false, true) => T::L16,
        (true, true, true) => T::La16,
        (false, false, true) => T::Rgb16,
        (false, true, true) => T::Rgba16,
    };
    let bytes: Vec<u8> = if sixteen {
        samples.iter().flat_map(|&v| ((v.clamp(0.0, 1.0) * 65535.0).round() as u16).to_ne_bytes()).collect()
    } else {
        samples.iter().map(|&v| crate::data::image::to_u8_sample(v)).collect()
    };
    crate::fsutil::write_atomic_with(path, |w| {
        use image::ImageEncoder;
        image::codecs::png::PngEncoder::new(w)
            .write_image(&bytes, rgb.width as u32, rgb.height as u32, color)
            .map_err(|e| std::io::Error::other(e.to_string()))
    })?;
    Ok(())
}
