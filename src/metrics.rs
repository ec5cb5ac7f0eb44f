//! PSNR and SSIM computed the way published restoration numbers are.
//!
//! * Both images are first rounded to 8 bits (`round(clamp(x, 0, 1) * 255)`), as the papers
//!   evaluate saved uint8 outputs.
//! * `y_channel`: luma of ITU-R BT.601 with MATLAB `rgb2ycbcr` coefficients on `[0, 1]` RGB,
//!   `Y = 16 + (65.481 R + 128.553 G + 24.966 B)`, kept in floating point on the 0-255 scale and
//!   *not* rounded again (BasicSR's `to_y_channel`). One-channel images are used as they are.
//! * `crop_border`: that many pixels are removed from each side before either metric.
//! * PSNR: `10 log10(255^2 / MSE)` over all remaining samples (all channels together);
//!   identical images give `+inf`.
//! * SSIM (Wang et al. 2004): 11x11 Gaussian window with sigma 1.5 (separable, normalised),
//!   K1 = 0.01, K2 = 0.03, L = 255, population covariances, averaged over the "valid" region
//!   (windows fully inside the image, i.e. 5 pixels trimmed per side), then over channels.
//!   This equals scikit-image's `structural_similarity(..., gaussian_weights=True, sigma=1.5,
//!   use_sample_covariance=False, data_range=255)` and BasicSR's `calculate_ssim`.

use std::path::Path;

use crate::data::error::{DataError, Result};
use crate::data::image::{to_u8_sample, Image};

/// How the metrics are computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricOptions {
    /// Evaluate on BT.601 luma instead of RGB.
    pub y_channel: bool,
    /// Pixels removed from each border before evaluation.
    pub crop_border: usize,
}

/// PSNR (dB) and SSIM of one pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub psnr: f64,
    pub ssim: f64,
}

/// SSIM window radius: the 11x11 window of Wang et al.
const SSIM_RADIUS: usize = 5;
const SSIM_SIGMA: f64 = 1.5;
const SSIM_K1: f64 = 0.01;
const SSIM_K2: f64 = 0.03;
const DATA_RANGE: f64 = 255.0;

/// The planes that are compared: one `Vec<f64>` per channel, on the 0-255 scale, cropped.
struct Planes {
    width: usize,
    height: usize,
    planes: Vec<Vec<f64>>,
}

/// BT.601 luma (MATLAB `rgb2ycbcr`) of 8-bit RGB samples, on the 0-255 scale.
#[inline]
pub fn y_from_rgb_u8(r: u8, g: u8, b: u8) -> f64 {
    16.0 + (65.481 * r as f64 + 128.553 * g as f64 + 24.966 * b as f64) / 255.0
}

fn prepare(img: &Image, opts: &MetricOptions, what: &str) -> Result<Planes> {
    let c = opts.crop_border;
    if img.width <= 2 * c || img.height <= 2 * c {
        return Err(DataError::invalid(
            format!("{what}: border crop of {c}"),
            format!("an image larger than {}x{}", 2 * c, 2 * c),
            format!("{}x{}", img.width, img.height),
        ));
    }
    if img.channels != 1 && img.channels != 3 {
        return Err(DataError::invalid(what, "1 or 3 channels", format!("{} channels", img.channels)));
    }
    let (w, h) = (img.width - 2 * c, img.height - 2 * c);
    let ch = img.channels;
    let u8s = img.to_u8();
    let at = |x: usize, y: usize, k: usize| u8s[((y + c) * img.width + x + c) * ch + k];
    let planes = if opts.y_channel && ch == 3 {
        let mut p = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                p.push(y_from_rgb_u8(at(x, y, 0), at(x, y, 1), at(x, y, 2)));
            }
        }
        vec![p]
    } else {
        (0..ch)
            .map(|k| {
                let mut p = Vec::with_capacity(w * h);
                for y in 0..h {
                    for x in 0..w {
                        p.push(at(x, y, k) as f64);
                    }
                }
                p
            })
            .collect()
    };
    Ok(Planes { width: w, height: h, planes })
}

fn prepare_pair(a: &Image, b: &Image, opts: &MetricOptions) -> Result<(Planes, Planes)> {
    if (a.width, a.height, a.channels) != (b.width, b.height, b.channels) {
        return Err(DataError::invalid(
            "images to compare",
            format!("the same size as the first ({}x{}x{})", a.width, a.height, a.channels),
            format!("{}x{}x{}", b.width, b.height, b.channels),
        ));
    }
    Ok((prepare(a, opts, "first image")?, prepare(b, opts, "second image")?))
}

/// PSNR in dB (`+inf` for identical images).
pub fn psnr(a: &Image, b: &Image, opts: &MetricOptions) -> Result<f64> {
    let (pa, pb) = prepare_pair(a, b, opts)?;
    Ok(psnr_planes(&pa, &pb))
}

fn psnr_planes(pa: &Planes, pb: &Planes) -> f64 {
    let mut sum = 0.0f64;
    let mut n = 0usize;
    for (x, y) in pa.planes.iter().zip(&pb.planes) {
        for (u, v) in x.iter().zip(y) {
            let d = u - v;
            sum += d * d;
        }
        n += x.len();
    }
    let mse = sum / n as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (DATA_RANGE * DATA_RANGE / mse).log10()
    }
}

/// SSIM (mean over the valid region and the channels).
pub fn ssim(a: &Image, b: &Image, opts: &MetricOptions) -> Result<f64> {
    let (pa, pb) = prepare_pair(a, b, opts)?;
    ssim_planes(&pa, &pb)
}

/// PSNR and SSIM together (one preparation).
pub fn evaluate(a: &Image, b: &Image, opts: &MetricOptions) -> Result<Scores> {
    let (pa, pb) = prepare_pair(a, b, opts)?;
    Ok(Scores { psnr: psnr_planes(&pa, &pb), ssim: ssim_planes(&pa, &pb)? })
}

fn gaussian_window() -> [f64; 2 * SSIM_RADIUS + 1] {
    let mut w = [0.0; 2 * SSIM_RADIUS + 1];
    for (i, v) in w.iter_mut().enumerate() {
        let x = i as f64 - SSIM_RADIUS as f64;
        *v = (-0.5 * x * x / (SSIM_SIGMA * SSIM_SIGMA)).exp();
    }
    let s: f64 = w.iter().sum();
    w.iter_mut().for_each(|v| *v /= s);
    w
}

fn ssim_planes(pa: &Planes, pb: &Planes) -> Result<f64> {
    let k = 2 * SSIM_RADIUS + 1;
    let (w, h) = (pa.width, pa.height);
    if w < k || h < k {
        return Err(DataError::invalid(
            "SSIM input (after the border crop)",
            format!("at least {k}x{k} pixels"),
            format!("{w}x{h}"),
        ));
    }
    let win = gaussian_window();
    let (ow, oh) = (w - k + 1, h - k + 1);
    let c1 = (SSIM_K1 * DATA_RANGE).powi(2);
    let c2 = (SSIM_K2 * DATA_RANGE).powi(2);
    let mut total = 0.0;
    for (x, y) in pa.planes.iter().zip(&pb.planes) {
        // Horizontal pass of the five moments, valid columns only.
        let mut hz = vec![[0.0f64; 5]; ow * h];
        for row in 0..h {
            let rx = &x[row * w..(row + 1) * w];
            let ry = &y[row * w..(row + 1) * w];
            for col in 0..ow {
                let mut m = [0.0f64; 5];
                for (t, &g) in win.iter().enumerate() {
                    let (u, v) = (rx[col + t], ry[col + t]);
                    m[0] += g * u;
                    m[1] += g * v;
                    m[2] += g * (u * u);
                    m[3] += g * (v * v);
                    m[4] += g * (u * v);
                }
                hz[row * ow + col] = m;
            }
        }
        let mut sum = 0.0;
        for row in 0..oh {
            for col in 0..ow {
                let mut m = [0.0f64; 5];
                for (t, &g) in win.iter().enumerate() {
                    let src = &hz[(row + t) * ow + col];
                    for j in 0..5 {
                        m[j] += g * src[j];
                    }
                }
                let (mx, my) = (m[0], m[1]);
                let vx = m[2] - mx * mx;
                let vy = m[3] - my * my;
                let cxy = m[4] - mx * my;
                sum += ((2.0 * mx * my + c1) * (2.0 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2));
            }
        }
        total += sum / (ow * oh) as f64;
    }
    Ok(total / pa.planes.len() as f64)
}

/// Rounds `[0, 1]` samples to 8 bits the way the metrics do (exposed for tests and tools).
pub fn quantize_u8(img: &Image) -> Vec<u8> {
    img.data.iter().map(|&v| to_u8_sample(v)).collect()
}

/// One row of `adaptir metrics` output.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedScores {
    pub name: String,
    pub scores: Scores,
}

/// Compares two images, or two folders matched by file stem; returns one row per pair
/// (sorted by name).
pub fn compare_paths(a: &Path, b: &Path, opts: &MetricOptions) -> Result<Vec<NamedScores>> {
    let pairs = crate::data::pairs::match_inputs(a, b)?;
    let mut rows = Vec::with_capacity(pairs.len());
    for (name, pa, pb) in pairs {
        let ia = crate::data::io::load_image(&pa)?;
        let ib = crate::data::io::load_image(&pb)?;
        let scores = evaluate(&ia, &ib, opts).map_err(|e| match e {
            DataError::Invalid { what, expected, found } => {
                DataError::Invalid { what: format!("{} vs {}: {what}", pa.display(), pb.display()), expected, found }
            }
            other => other,
        })?;
        rows.push(NamedScores { name, scores });
    }
    Ok(rows)
}

/// Mean PSNR and SSIM of rows (PSNR is averaged in dB, as the papers do).
pub fn mean_scores(rows: &[NamedScores]) -> Scores {
    let n = rows.len().max(1) as f64;
    Scores {
        psnr: rows.iter().map(|r| r.scores.psnr).sum::<f64>() / n,
        ssim: rows.iter().map(|r| r.scores.ssim).sum::<f64>() / n,
    }
}
