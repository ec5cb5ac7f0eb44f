//! Image loading and saving, with the policy of `docs/data.md` ("Image policy").
//!
//! * Formats: PNG, JPEG, BMP, TIFF, recognised from the file's bytes (not its extension).
//! * Bit depth: 8-bit samples become `v / 255`, 16-bit samples `v / 65535` (full precision kept);
//!   float TIFF samples are clamped to `[0, 1]`.
//! * Grayscale is replicated to three channels (as `cv2.imread(..., IMREAD_COLOR)` and BasicSR do).
//! * Alpha is dropped, not composited (as `cv2.imread(..., IMREAD_COLOR)` does).
//! * Pixels are taken as stored: EXIF orientation and ICC profiles are ignored (as PIL's
//!   `Image.open` does), so a pair stored consistently stays aligned.
//! * Decompression bombs: the header's width x height is checked against a pixel limit
//!   ([`DEFAULT_MAX_PIXELS`] unless [`LoadOptions`] says otherwise) before any pixel is decoded,
//!   and the decoder runs under an allocation limit derived from it.
//! * Saving writes PNG atomically: a temporary file in the destination folder, then a rename.

use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use image::{DynamicImage, ImageFormat, ImageReader, Limits};

use super::error::{DataError, Result};
use super::image::Image;

/// Images above this many pixels are refused before decoding: 2^26 = 67,108,864 pixels
/// (8192 x 8192), i.e. 768 MiB as `f32` RGB. The largest training photo here is 20 MP.
pub const DEFAULT_MAX_PIXELS: u64 = 1 << 26;

/// How images are loaded.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Refuse images whose header announces more pixels than this.
    pub max_pixels: u64,
}

/// The environment variable that raises (or lowers) the default pixel limit.
pub const MAX_PIXELS_ENV: &str = "ADAPTIR_MAX_PIXELS";

impl Default for LoadOptions {
    /// [`DEFAULT_MAX_PIXELS`], or `ADAPTIR_MAX_PIXELS` when it is set to a whole number.
    fn default() -> Self {
        let max_pixels = std::env::var(MAX_PIXELS_ENV)
            .ok()
            .and_then(|v| v.trim().replace('_', "").parse().ok())
            .unwrap_or(DEFAULT_MAX_PIXELS);
        LoadOptions { max_pixels }
    }
}

/// File extensions (lower case) that folder listings treat as images.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

/// Whether `path` has one of [`IMAGE_EXTENSIONS`].
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// Loads an image with the default options.
pub fn load_image(path: impl AsRef<Path>) -> Result<Image> {
    load_image_with(path, &LoadOptions::default())
}

/// Reads the header only: `(width, height)`, with the format and pixel-limit checks.
pub fn probe_image(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<(usize, usize)> {
    let path = path.as_ref();
    let (_, w, h) = check_file_header(path, opts)?;
    Ok((w as usize, h as usize))
}

/// Loads an image following the module's policy.
pub fn load_image_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Image> {
    let path = path.as_ref();
    let (format, w, h) = check_file_header(path, opts)?;
    let file = std::fs::File::open(path).map_err(|source| DataError::Read { path: path.to_path_buf(), source })?;
    let mut reader = ImageReader::with_format(BufReader::new(file), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    // Enough for the decoded image at 16 bits x 4 channels plus one copy; far below a bomb.
    limits.max_alloc = Some((w as u64 * h as u64).saturating_mul(16).max(1 << 20));
    reader.limits(limits);
    let decoded = reader.decode().map_err(|e| decode_error(path, format, e))?;
    Ok(to_rgb_image(decoded))
}

/// Format and dimensions from the file's first bytes and header only (streamed: a huge file is
/// not read in full to be refused).
fn check_file_header(path: &Path, opts: &LoadOptions) -> Result<(ImageFormat, u32, u32)> {
    let read_err = |source| DataError::Read { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if meta.is_dir() {
        return Err(DataError::NotAnImage { path: path.to_path_buf(), found: "a folder".into() });
    }
    if meta.len() == 0 {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    let mut reader = BufReader::new(file);
    let mut head = Vec::with_capacity(64);
    (&mut reader).take(64).read_to_end(&mut head).map_err(read_err)?;
    reader.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let format = check_format(path, &head, meta.len())?;
    if format == ImageFormat::Tiff {
        check_tiff_counts(&mut reader, meta.len()).map_err(|reason| decode_error_msg(path, format, reason))?;
        reader.seek(SeekFrom::Start(0)).map_err(read_err)?;
    }
    let dims = ImageReader::with_format(reader, format).into_dimensions();
    check_dimensions(path, format, dims, opts)
}

/// Loads an image from bytes already in memory (`name` is used in error messages).
pub fn decode_image_bytes(name: &Path, bytes: &[u8], opts: &LoadOptions) -> Result<Image> {
    let (format, _, _) = check_header(name, bytes, opts)?;
    let decoded = image::load_from_memory_with_format(bytes, format).map_err(|e| decode_error(name, format, e))?;
    Ok(to_rgb_image(decoded))
}

fn check_header(path: &Path, bytes: &[u8], opts: &LoadOptions) -> Result<(ImageFormat, u32, u32)> {
    if bytes.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    let format = check_format(path, bytes, bytes.len() as u64)?;
    if format == ImageFormat::Tiff {
        check_tiff_counts(&mut Cursor::new(bytes), bytes.len() as u64)
            .map_err(|reason| decode_error_msg(path, format, reason))?;
    }
    let dims = ImageReader::with_format(Cursor::new(bytes), format).into_dimensions();
    check_dimensions(path, format, dims, opts)
}

fn check_format(path: &Path, head: &[u8], len: u64) -> Result<ImageFormat> {
    match image::guess_format(head) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Bmp | ImageFormat::Tiff)) => Ok(f),
        Ok(other) => Err(DataError::NotAnImage { path: path.to_path_buf(), found: format!("{other:?} data") }),
        Err(_) => Err(DataError::NotAnImage { path: path.to_path_buf(), found: describe_magic(head, len) }),
    }
}

fn check_dimensions(
    path: &Path,
    format: ImageFormat,
    dims: image::ImageResult<(u32, u32)>,
    opts: &LoadOptions,
) -> Result<(ImageFormat, u32, u32)> {
    let (w, h) = dims.map_err(|e| decode_error(path, format, e))?;
    let pixels = w as u64 * h as u64;
    if pixels > opts.max_pixels {
        return Err(DataError::TooLarge {
            path: path.to_path_buf(),
            width: w as u64,
            height: h as u64,
            pixels,
            limit: opts.max_pixels,
        });
    }
    if pixels == 0 {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            format: format_name(format),
            reason: format!("expected at least one pixel, found {w}x{h}"),
        });
    }
    Ok((format, w, h))
}

/// The TIFF decoder sizes a tag's value list by the count the tag claims (up to 256 MiB) before reading
/// it, even in its header read: refuse a first directory whose counts need more bytes than the file has.
fn check_tiff_counts<R: Read + Seek>(r: &mut R, len: u64) -> std::result::Result<(), String> {
    let io = |e: std::io::Error| format!("cannot read the TIFF header: {e}");
    let mut h = [0u8; 8];
    r.read_exact(&mut h).map_err(io)?;
    let le = &h[..2] == b"II";
    let u16_ = |b: &[u8]| if le { u16::from_le_bytes([b[0], b[1]]) } else { u16::from_be_bytes([b[0], b[1]]) };
    let u32_ = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let u64_ = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
        if le {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        }
    };
    let big = u16_(&h[2..4]) == 43;
    let ifd = if big {
        let mut o = [0u8; 8];
        r.read_exact(&mut o).map_err(io)?;
        u64_(&o)
    } else {
        u32_(&h[4..8]) as u64
    };
    if ifd >= len {
        return Err(format!("expected the first directory inside the file ({len} bytes), found offset {ifd}"));
    }
    r.seek(SeekFrom::Start(ifd)).map_err(io)?;
    let entries = if big {
        let mut n = [0u8; 8];
        r.read_exact(&mut n).map_err(io)?;
        u64_(&n)
    } else {
        let mut n = [0u8; 2];
        r.read_exact(&mut n).map_err(io)?;
        u16_(&n) as u64
    };
    let entry_len: u64 = if big { 20 } else { 12 };
    if entries.saturating_mul(entry_len) > len {
        return Err(format!("the first directory claims {entries} entries, more than a {len}-byte file holds"));
    }
    let mut e = vec![0u8; entry_len as usize];
    for _ in 0..entries {
        r.read_exact(&mut e).map_err(io)?;
        let (tag, ty) = (u16_(&e[0..2]), u16_(&e[2..4]));
        let count = if big { u64_(&e[4..12]) } else { u32_(&e[4..8]) as u64 };
        let width: u64 = match ty {
            3 | 8 => 2,
            4 | 9 | 11 | 13 => 4,
            5 | 10 | 12 | 16 | 17 | 18 => 8,
            _ => 1,
        };
        if count.saturating_mul(width) > len {
            return Err(format!(
                "tag {tag} claims {count} values of {width} bytes, more than the file's {len} bytes hold"
            ));
        }
    }
    Ok(())
}

fn decode_error_msg(path: &Path, format: ImageFormat, reason: String) -> DataError {
    DataError::Decode { path: path.to_path_buf(), format: format_name(format), reason }
}

fn describe_magic(head: &[u8], len: u64) -> String {
    let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{len} bytes starting with {}", hex.join(" "))
}

fn format_name(format: ImageFormat) -> String {
    format!("{format:?}").to_uppercase()
}

fn decode_error(path: &Path, format: ImageFormat, e: image::ImageError) -> DataError {
    DataError::Decode { path: path.to_path_buf(), format: format_name(format), reason: e.to_string() }
}

fn to_rgb_image(decoded: DynamicImage) -> Image {
    let (w, h) = (decoded.width() as usize, decoded.height() as usize);
    use image::ColorType as C;
    let data: Vec<f32> = match decoded.color() {
        C::L8 | C::La8 | C::Rgb8 | C::Rgba8 => {
            decoded.to_rgb8().into_raw().into_iter().map(|v| v as f32 / 255.0).collect()
        }
        C::Rgb32F | C::Rgba32F => decoded
            .to_rgb32f()
            .into_raw()
            .into_iter()
            .map(|v| if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) })
            .collect(),
        _ => decoded.to_rgb16().into_raw().into_iter().map(|v| v as f32 / 65535.0).collect(),
    };
    Image { width: w, height: h, channels: 3, data }
}

/// Bit depth of a saved PNG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitDepth {
    Eight,
    Sixteen,
}

/// Saves `img` (1 or 3 channels) as PNG, atomically (temporary file in the same folder + rename).
pub fn save_png(path: impl AsRef<Path>, img: &Image, depth: BitDepth) -> Result<()> {
    let path = path.as_ref();
    let color = match (img.channels, depth) {
        (1, BitDepth::Eight) => image::ExtendedColorType::L8,
        (3, BitDepth::Eight) => image::ExtendedColorType::Rgb8,
        (1, BitDepth::Sixteen) => image::ExtendedColorType::L16,
        (3, BitDepth::Sixteen) => image::ExtendedColorType::Rgb16,
        (c, _) => {
            return Err(DataError::invalid(
                format!("{}: image to save", path.display()),
                "1 or 3 channels",
                format!("{c} channels"),
            ))
        }
    };
    let bytes: Vec<u8> = match depth {
        BitDepth::Eight => img.to_u8(),
        BitDepth::Sixteen => img.to_u16().into_iter().flat_map(|v| v.to_ne_bytes()).collect(),
    };
    Ok(crate::fsutil::write_atomic_with(path, |w| {
        use image::ImageEncoder;
        image::codecs::png::PngEncoder::new(w)
            .write_image(&bytes, img.width as u32, img.height as u32, color)
            .map_err(|e| std::io::Error::other(e.to_string()))
    })?)
}
