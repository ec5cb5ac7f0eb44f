//! `adaptir restore`: one image of any size through backbone + adapter, tiled, on candle, ONNX Runtime or tract
//! (`runtime::restorer`), written as a PNG.
//!
//! Image policy (docs/validation.md, "Restore"): PNG 8/16-bit, JPEG, BMP, TIFF in (the `data::io` checks: format
//! from the bytes, pixel limit); the output is a PNG of the input's bit depth (16-bit for 16-bit and float
//! inputs), grayscale for a grayscale input (BT.601 luma of the restored RGB), with the input's alpha channel
//! passed through unchanged (for SR tasks resized by the scale with Catmull-Rom). The file is written atomically
//! after everything else has succeeded.
use std::path::{Path, PathBuf};
use std::time::Instant;

use image::{DynamicImage, ImageReader, Limits};

use super::{Report, RuntimeArgs};
use crate::data::io::{probe_image, LoadOptions};
use crate::data::Image;
use crate::error::{Error, Result};
use crate::restore::{tile_count, Tiling};
use crate::runtime::restorer::{Engine, Restorer, RestorerArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The adapter file (.safetensors) to restore with; its task and backbone come from its metadata.
    #[arg(long)]
    pub adapter: PathBuf,
    /// The image to restore: PNG (8- or 16-bit), JPEG, BMP or TIFF, any size.
    pub input: PathBuf,
    /// Output PNG (default: <input folder>/<stem>_<task>.png).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// candle, onnx (the model compiled to ONNX in memory, or --onnx FILE, run by ONNX Runtime), tract (the
    /// same ONNX run by tract, pure Rust: no C++ library), or openvino (OpenVINO's CPU plugin; --precision bf16).
    #[arg(long, default_value = "candle")]
    pub engine: String,
    /// Tile side: the model's input size, which is the default (IPT: its patch size, 48; EDT: its task's input
    /// size, 48 for SR and 192 for denoise / derain); any other value is refused.
    #[arg(long)]
    pub tile: Option<usize>,
    /// Pixels shared by neighbouring tiles (even).
    #[arg(long, default_value_t = crate::restore::CLI_OVERLAP)]
    pub overlap: usize,
    /// Tiles per model call.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Backbone (default: backbone.safetensors beside the adapter, else models/<its backbone>/ in the working
    /// folder or in the repository of this executable).
    #[arg(long)]
    pub backbone: Option<PathBuf>,
    /// With --engine onnx, tract or openvino: an exported file of this adapter to run instead of compiling in
    /// memory.
    #[arg(long)]
    pub onnx: Option<PathBuf>,
    /// With --engine onnx, tract or openvino (--ep, --strict-ep: onnx only; --precision bf16: openvino only).
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
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
    load_with(path, &LoadOptions::default())
}

/// [`load`] under another pixel limit.
pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<LoadedImage> {
    let (w, h) = probe_image(path, opts)?;
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

pub struct RestoreReport {
    pub input: PathBuf,
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

/// Restore one file (see the module docs). Arguments, output folder, input image and model are all checked before
/// any output is written; the output is written atomically.
pub fn run(args: &Args) -> Result<RestoreReport> {
    let start = Instant::now();
    let engine: Engine = args.engine.parse()?;
    let run = args.runtime.options(None)?;
    let restorer_args = RestorerArgs {
        adapter: &args.adapter,
        backbone: args.backbone.as_deref(),
        engine,
        onnx: args.onnx.as_deref(),
        run,
    };
    if !args.overlap.is_multiple_of(2) {
        return Err(Error::invalid(format!("--overlap: expected an even number of pixels, found {}", args.overlap)));
    }
    if args.batch == 0 {
        return Err(Error::invalid("--batch: expected at least 1, found 0"));
    }
    if let Some(o) = &args.output {
        let ext = o.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
        if ext.as_deref() != Some("png") {
            return Err(Error::file(o, "-o: expected a .png output path (restore writes PNG, 8- or 16-bit)"));
        }
        if o.is_dir() {
            return Err(Error::file(o, "-o: expected a file path, found a folder"));
        }
        if let Some(dir) = o.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
            return Err(Error::file(o, format!("-o: expected an existing folder, found no folder {}", dir.display())));
        }
    }
    let loaded = load(&args.input)?;
    let mut restorer = Restorer::new(&restorer_args)?;
    let tile = restorer.tile();
    if let Some(t) = args.tile.filter(|&t| t != tile) {
        return Err(Error::invalid(format!(
            "--tile {t}: this model takes {tile}x{tile} tiles (its input size); use --tile {tile} or leave it out"
        )));
    }
    if args.overlap >= tile {
        return Err(Error::invalid(format!(
            "--overlap {}: expected fewer pixels than the tile side {tile}",
            args.overlap
        )));
    }
    let output = match &args.output {
        Some(o) => o.clone(),
        None => default_output(&args.input, &restorer.task_name),
    };
    if let (Ok(a), Ok(b)) = (std::fs::canonicalize(&output), std::fs::canonicalize(&args.input)) {
        if a == b {
            return Err(Error::file(&output, "-o: the output would overwrite the input image; choose another path"));
        }
    }
    let (w, h) = (loaded.rgb.width, loaded.rgb.height);
    let tiles = tile_count(w, h, tile, args.overlap);
    let bar = if !args.quiet {
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
    // What killed writers of this path left behind.
    super::remove_stale_temps(&output);
    Ok(RestoreReport {
        input: args.input.clone(),
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

/// A writer that remembers the kind of the last error of the one it wraps.
struct KeepKind<'a> {
    w: &'a mut dyn std::io::Write,
    kind: Option<std::io::ErrorKind>,
}

impl std::io::Write for KeepKind<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.w.write(buf).inspect_err(|e| self.kind = Some(e.kind()))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush().inspect_err(|e| self.kind = Some(e.kind()))
    }
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
        // The encoder turns the system's error into text; keep its kind (a full disk stays `StorageFull`, so the
        // message says the disk is full).
        let mut w = KeepKind { w, kind: None };
        let written =
            image::codecs::png::PngEncoder::new(&mut w).write_image(&bytes, rgb.width as u32, rgb.height as u32, color);
        written.map_err(|e| match w.kind {
            Some(kind) => std::io::Error::new(kind, e.to_string()),
            None => std::io::Error::other(e.to_string()),
        })
    })?;
    Ok(())
}

impl Report for RestoreReport {
    fn render(&self) -> String {
        format!(
            "{} ({}x{}) -> {} ({}x{}{}{}{}), {}, {} tiles, {} engine, {:.2} s\n",
            self.input.display(),
            self.input_size.0,
            self.input_size.1,
            self.output.display(),
            self.output_size.0,
            self.output_size.1,
            if self.gray { ", gray" } else { "" },
            if self.alpha { ", alpha kept" } else { "" },
            if self.sixteen { ", 16-bit" } else { "" },
            self.task,
            self.tiles,
            self.engine,
            self.seconds
        )
    }
}
