//! A plain image buffer: `height x width x channels`, row-major, interleaved, `f32` in `[0, 1]`.

use super::error::{DataError, Result};

/// An image as the data pipeline sees it.
///
/// Samples are interleaved (`data[(y * width + x) * channels + c]`) and nominally in `[0, 1]`.
/// Loading always yields `channels == 3` (see `docs/data.md`, "Image policy"); one-channel images
/// exist for planes such as luma.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<f32>,
}

impl Image {
    /// Wraps `data`, checking that its length is `width * height * channels`.
    pub fn new(width: usize, height: usize, channels: usize, data: Vec<f32>) -> Result<Self> {
        let expected = width.checked_mul(height).and_then(|p| p.checked_mul(channels));
        if expected != Some(data.len()) || channels == 0 {
            return Err(DataError::invalid(
                "image buffer",
                format!("{width}x{height}x{channels} samples"),
                format!("{} samples", data.len()),
            ));
        }
        Ok(Image { width, height, channels, data })
    }

    /// An all-zero image.
    pub fn zeros(width: usize, height: usize, channels: usize) -> Self {
        Image { width, height, channels, data: vec![0.0; width * height * channels] }
    }

    /// From 8-bit samples (`v / 255`).
    pub fn from_u8(width: usize, height: usize, channels: usize, data: &[u8]) -> Result<Self> {
        Image::new(width, height, channels, data.iter().map(|&v| v as f32 / 255.0).collect())
    }

    /// To 8-bit samples: clamp to `[0, 1]`, scale by 255, round half away from zero.
    pub fn to_u8(&self) -> Vec<u8> {
        self.data.iter().map(|&v| to_u8_sample(v)).collect()
    }

    /// To 16-bit samples: clamp to `[0, 1]`, scale by 65535, round.
    pub fn to_u16(&self) -> Vec<u16> {
        self.data.iter().map(|&v| (v.clamp(0.0, 1.0) * 65535.0).round() as u16).collect()
    }

    /// The same image with every sample rounded to the nearest 8-bit level (`k / 255`).
    pub fn quantized_u8(&self) -> Image {
        Image {
            width: self.width,
            height: self.height,
            channels: self.channels,
            data: self.data.iter().map(|&v| to_u8_sample(v) as f32 / 255.0).collect(),
        }
    }

    /// An image of the same size and channel count holding `data` (same length).
    pub fn with_data(&self, data: Vec<f32>) -> Image {
        debug_assert_eq!(data.len(), self.data.len());
        Image { width: self.width, height: self.height, channels: self.channels, data }
    }

    /// The samples in planar `channels x height x width` order (the layout of a CHW tensor).
    pub fn to_chw(&self) -> Vec<f32> {
        let (n, c) = (self.pixels(), self.channels);
        let mut out = vec![0.0; self.data.len()];
        for (p, px) in self.data.chunks_exact(c).enumerate() {
            for (k, &v) in px.iter().enumerate() {
                out[k * n + p] = v;
            }
        }
        out
    }

    /// From planar `channels x height x width` samples (inverse of [`Image::to_chw`]).
    pub fn from_chw(width: usize, height: usize, channels: usize, chw: &[f32]) -> Result<Self> {
        let mut img = Image::new(width, height, channels, chw.to_vec())?;
        let n = width * height;
        for p in 0..n {
            for k in 0..channels {
                img.data[p * channels + k] = chw[k * n + p];
            }
        }
        Ok(img)
    }

    /// Number of pixels.
    pub fn pixels(&self) -> usize {
        self.width * self.height
    }

    /// Sample at `(x, y, c)`; the caller keeps the indices in range.
    #[inline]
    pub fn get(&self, x: usize, y: usize, c: usize) -> f32 {
        self.data[(y * self.width + x) * self.channels + c]
    }

    /// The `w x h` window whose top-left corner is `(x, y)`.
    pub fn crop(&self, x: usize, y: usize, w: usize, h: usize) -> Result<Image> {
        if x + w > self.width || y + h > self.height {
            return Err(DataError::invalid(
                "crop window",
                format!("a window inside the {}x{} image", self.width, self.height),
                format!("{w}x{h} at ({x}, {y})"),
            ));
        }
        let c = self.channels;
        let mut data = Vec::with_capacity(w * h * c);
        for row in y..y + h {
            let start = (row * self.width + x) * c;
            data.extend_from_slice(&self.data[start..start + w * c]);
        }
        Ok(Image { width: w, height: h, channels: c, data })
    }

    /// Crops the bottom and right so both sides are multiples of `scale` (as the SR papers do).
    pub fn mod_crop(&self, scale: usize) -> Result<Image> {
        if scale == 0 {
            return Err(DataError::invalid("mod-crop scale", "a scale >= 1", "0"));
        }
        let w = self.width - self.width % scale;
        let h = self.height - self.height % scale;
        if w == 0 || h == 0 {
            return Err(DataError::invalid(
                "mod-crop",
                format!("an image at least {scale}x{scale} pixels"),
                format!("{}x{}", self.width, self.height),
            ));
        }
        self.crop(0, 0, w, h)
    }
}

/// One `[0, 1]` sample to 8 bits: clamp, scale, round half away from zero (MATLAB's `uint8()`).
#[inline]
pub fn to_u8_sample(v: f32) -> u8 {
    if v.is_nan() {
        return 0;
    }
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}
