//! Synthetic rain streaks (see `docs/data.md`, "Rain model").
//!
//! A streak layer `S` in `[0, 1]` is rendered, then composited as additive light that saturates
//! softly (screen blend): `O = 1 - (1 - B) (1 - S)` per channel, optionally followed by a veil
//! (rain accumulation / haze) `O = (1 - h) O + h A` with `A = 0.85`. Each streak is a motion-blurred
//! drop: a segment of length `L` whose intensity across it is a Gaussian of standard deviation
//! `width / 2` and along it is flat with raised-cosine ends over the last quarter, peak
//! brightness `b`. Per image one mean tilt `theta` (degrees from vertical, positive leaning right
//! at the top) is drawn from `[-angle_range, angle_range]`; each streak adds `N(0, jitter^2)`.
//! Streak count = `density * W * H / 10_000`; centres uniform (with a margin of half a length so
//! streaks enter from outside the frame); `L` uniform in `length`, `b` uniform in `brightness`.
//! Overlapping streaks combine by screen blend too, so `S` stays in `[0, 1]`.

use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::data::error::{DataError, Result};
use crate::data::image::Image;
use crate::data::seed::rng_for;

/// Parameters of the rain model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RainParams {
    /// Streaks per 10,000 pixels.
    pub density: f64,
    /// Streak length range in pixels (uniform).
    pub length: (f64, f64),
    /// Per-image mean tilt drawn from `[-angle_range, angle_range]` degrees from vertical.
    pub angle_range: f64,
    /// Per-streak tilt standard deviation in degrees.
    pub angle_jitter: f64,
    /// Streak width in pixels (2 standard deviations of the Gaussian cross-section).
    pub width: f64,
    /// Peak streak intensity range in `[0, 1]` (uniform).
    pub brightness: (f64, f64),
    /// Veil strength in `[0, 1]` (0: none).
    pub haze: f64,
}

impl RainParams {
    /// Light rain, calibrated on the Rain100L sample (thin, sparse, one direction).
    pub const LIGHT: RainParams = RainParams {
        density: 90.0,
        length: (12.0, 30.0),
        angle_range: 20.0,
        angle_jitter: 5.0,
        width: 1.4,
        brightness: (0.18, 0.42),
        haze: 0.0,
    };
    /// Heavy rain (Rain100H-like: denser, longer, brighter, wider, with a veil).
    pub const HEAVY: RainParams = RainParams {
        density: 110.0,
        length: (25.0, 60.0),
        angle_range: 25.0,
        angle_jitter: 4.0,
        width: 2.2,
        brightness: (0.35, 0.75),
        haze: 0.12,
    };

    fn check(&self) -> Result<()> {
        let ok = self.density >= 0.0
            && self.length.0 > 0.0
            && self.length.1 >= self.length.0
            && self.width > 0.0
            && (0.0..=1.0).contains(&self.brightness.0)
            && (self.brightness.0..=1.0).contains(&self.brightness.1)
            && (0.0..=1.0).contains(&self.haze)
            && self.angle_jitter >= 0.0
            && self.angle_range >= 0.0;
        if ok {
            Ok(())
        } else {
            Err(DataError::invalid(
                "rain parameters",
                "density >= 0, 0 < length.0 <= length.1, width > 0, brightness and haze in [0, 1]",
                format!("{self:?}"),
            ))
        }
    }
}

/// The streak layer alone (`width x height`, one channel, values in `[0, 1]`).
pub fn rain_layer(width: usize, height: usize, p: &RainParams, seed: u64) -> Result<Vec<f32>> {
    p.check()?;
    let mut rng = rng_for(seed);
    let mut layer = vec![0.0f32; width * height];
    let count = (p.density * (width * height) as f64 / 10_000.0).round() as usize;
    let base = if p.angle_range > 0.0 { rng.random_range(-p.angle_range..=p.angle_range) } else { 0.0 };
    let jitter = Normal::new(0.0, p.angle_jitter.max(1e-9))
        .map_err(|e| DataError::invalid("rain angle jitter", "a finite value >= 0", e.to_string()))?;
    let sigma = p.width / 2.0;
    let margin = p.length.1 / 2.0;
    for _ in 0..count {
        let len = if p.length.1 > p.length.0 { rng.random_range(p.length.0..p.length.1) } else { p.length.0 };
        let theta = (base + jitter.sample(&mut rng)).to_radians();
        let bright = if p.brightness.1 > p.brightness.0 {
            rng.random_range(p.brightness.0..p.brightness.1)
        } else {
            p.brightness.0
        };
        let cx = rng.random_range(-margin..width as f64 + margin);
        let cy = rng.random_range(-margin..height as f64 + margin);
        draw_streak(&mut layer, width, height, (cx, cy), theta, len, sigma, bright);
    }
    Ok(layer)
}

#[allow(clippy::too_many_arguments)]
fn draw_streak(
    layer: &mut [f32],
    width: usize,
    height: usize,
    (cx, cy): (f64, f64),
    theta: f64,
    len: f64,
    sigma: f64,
    bright: f64,
) {
    // Direction along the streak (top leaning right for theta > 0) and its normal.
    let (dx, dy) = (theta.sin(), -theta.cos());
    let (nx, ny) = (-dy, dx);
    let half = len / 2.0;
    let fade = len / 4.0;
    let reach = 3.0 * sigma + 1.0;
    let ex = half * dx.abs() + reach;
    let ey = half * dy.abs() + reach;
    let x0 = (cx - ex).floor().max(0.0) as usize;
    let y0 = (cy - ey).floor().max(0.0) as usize;
    let x1 = ((cx + ex).ceil().max(0.0) as usize).min(width);
    let y1 = ((cy + ey).ceil().max(0.0) as usize).min(height);
    let inv2s2 = 1.0 / (2.0 * sigma * sigma);
    for py in y0..y1 {
        for px in x0..x1 {
            let (rx, ry) = (px as f64 + 0.5 - cx, py as f64 + 0.5 - cy);
            let along = (rx * dx + ry * dy).abs();
            if along > half {
                continue;
            }
            let perp = rx * nx + ry * ny;
            if perp.abs() > reach {
                continue;
            }
            let end = half - along;
            let taper = if end < fade { 0.5 - 0.5 * (std::f64::consts::PI * end / fade).cos() } else { 1.0 };
            let v = (bright * taper * (-perp * perp * inv2s2).exp()) as f32;
            let s = &mut layer[py * width + px];
            *s = 1.0 - (1.0 - *s) * (1.0 - v);
        }
    }
}

/// Adds rain to an image (8-bit-rounded output).
pub fn add_rain(img: &Image, p: &RainParams, seed: u64) -> Result<Image> {
    let layer = rain_layer(img.width, img.height, p, seed)?;
    let c = img.channels;
    let h = p.haze as f32;
    let base = img.quantized_u8();
    let data = base
        .data
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let s = layer[i / c];
            let o = 1.0 - (1.0 - b) * (1.0 - s);
            let o = (1.0 - h) * o + h * 0.85;
            (o.clamp(0.0, 1.0) * 255.0).round() / 255.0
        })
        .collect();
    Ok(img.with_data(data))
}

/// Simple statistics of a rain layer estimated from a (rainy, clean) pair, used to compare the
/// synthetic presets with real data. All on the mean of the channels, 0-255 scale, after
/// removing the local mean of the difference (15x15 box), which cancels global colour or
/// exposure differences between the two images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RainStats {
    /// Standard deviation of the high-passed difference.
    pub hp_std: f64,
    /// Fraction of pixels whose high-passed difference exceeds 8 levels.
    pub coverage: f64,
    /// Dominant streak tilt in degrees from vertical (from the structure tensor).
    pub angle_deg: f64,
    /// Coherence of the structure tensor in `[0, 1]` (1: all gradients in one direction).
    pub coherence: f64,
}

/// Estimates [`RainStats`] from a rainy image and its clean version.
pub fn rain_stats(rainy: &Image, clean: &Image) -> Result<RainStats> {
    if (rainy.width, rainy.height, rainy.channels) != (clean.width, clean.height, clean.channels) {
        return Err(DataError::invalid(
            "rain statistics pair",
            format!("equal sizes ({}x{})", rainy.width, rainy.height),
            format!("{}x{}", clean.width, clean.height),
        ));
    }
    let (w, h, c) = (rainy.width, rainy.height, rainy.channels);
    if w < 16 || h < 16 {
        return Err(DataError::invalid("rain statistics pair", "at least 16x16", format!("{w}x{h}")));
    }
    let d: Vec<f64> = (0..w * h)
        .map(|p| (0..c).map(|k| (rainy.data[p * c + k] - clean.data[p * c + k]) as f64 * 255.0).sum::<f64>() / c as f64)
        .collect();
    let hp = high_pass(&d, w, h, 7);
    let n = hp.len() as f64;
    let mean = hp.iter().sum::<f64>() / n;
    let hp_std = (hp.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    let coverage = hp.iter().filter(|&&v| v > 8.0).count() as f64 / n;
    let (mut jxx, mut jyy, mut jxy) = (0.0, 0.0, 0.0);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let gx = (hp[y * w + x + 1] - hp[y * w + x - 1]) / 2.0;
            let gy = (hp[(y + 1) * w + x] - hp[(y - 1) * w + x]) / 2.0;
            jxx += gx * gx;
            jyy += gy * gy;
            jxy += gx * gy;
        }
    }
    // Gradients are across the streaks: their dominant orientation from the x axis (image y
    // pointing down) equals the streak tilt from vertical, positive when leaning right at the top.
    let grad_angle = 0.5 * (2.0 * jxy).atan2(jxx - jyy);
    let coherence = ((jxx - jyy).powi(2) + 4.0 * jxy * jxy).sqrt() / (jxx + jyy).max(1e-12);
    Ok(RainStats { hp_std, coverage, angle_deg: grad_angle.to_degrees(), coherence })
}

/// `d` minus its (2r+1)x(2r+1) box mean (edge-clamped).
fn high_pass(d: &[f64], w: usize, h: usize, r: usize) -> Vec<f64> {
    let box1d = |src: &[f64], len: usize, stride: usize, count: usize, step: usize| {
        let mut out = vec![0.0; src.len()];
        for line in 0..count {
            let at = |i: isize| src[line * step + (i.clamp(0, len as isize - 1) as usize) * stride];
            for i in 0..len as isize {
                let s: f64 = (-(r as isize)..=r as isize).map(|k| at(i + k)).sum();
                out[line * step + i as usize * stride] = s / (2 * r + 1) as f64;
            }
        }
        out
    };
    let t = box1d(d, w, 1, h, w);
    let m = box1d(&t, h, w, w, 1);
    d.iter().zip(&m).map(|(a, b)| a - b).collect()
}
