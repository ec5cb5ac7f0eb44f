//! Low light (see `docs/data.md`, "Low-light model").
//!
//! The clean 8-bit image `x` in `[0, 1]` is darkened by a gamma curve and an exposure scale,
//! `y = exposure * x^gamma` (gamma > 1 crushes shadows more than highlights, as an under-exposed
//! camera response does), then sensor noise is added in the Poisson-Gaussian model: photon shot
//! noise `Poisson(peak * y) / peak` (`peak` = photons collected at full scale) plus Gaussian read
//! noise of standard deviation `read_sigma` (0-255 scale), independently per sample; the result is
//! clipped and rounded to 8 bits.

use rand_distr::{Distribution, Poisson, StandardNormal};

use crate::data::error::{DataError, Result};
use crate::data::image::Image;
use crate::data::seed::rng_for;

/// Parameters of the low-light model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LowLightParams {
    pub gamma: f64,
    pub exposure: f64,
    /// Photons at full scale (smaller: noisier).
    pub peak: f64,
    /// Read-noise standard deviation on the 0-255 scale.
    pub read_sigma: f64,
}

impl LowLightParams {
    /// The `lowlight` task: a photo of mean brightness 0.45 falls to about 0.06; shot noise
    /// dominates in the bright parts, read noise in the dark (see `docs/data.md`).
    pub const DEFAULT: LowLightParams = LowLightParams { gamma: 1.6, exposure: 0.2, peak: 300.0, read_sigma: 2.0 };

    fn check(&self) -> Result<()> {
        let ok = self.gamma > 0.0
            && self.gamma.is_finite()
            && self.exposure > 0.0
            && self.exposure <= 1.0
            && self.peak > 0.0
            && self.peak.is_finite()
            && self.read_sigma >= 0.0
            && self.read_sigma.is_finite();
        if ok {
            Ok(())
        } else {
            Err(DataError::invalid(
                "low-light parameters",
                "gamma > 0, 0 < exposure <= 1, peak > 0, read_sigma >= 0",
                format!("{self:?}"),
            ))
        }
    }
}

/// Darkens `img` and adds Poisson-Gaussian noise, seeded.
pub fn low_light(img: &Image, p: &LowLightParams, seed: u64) -> Result<Image> {
    p.check()?;
    let mut rng = rng_for(seed);
    let read = p.read_sigma / 255.0;
    // The rate depends only on the 8-bit input level: one distribution per level.
    let mut dists: Vec<Option<Poisson<f64>>> = Vec::with_capacity(256);
    for level in 0..=255u32 {
        let lambda = p.peak * p.exposure * (level as f64 / 255.0).powf(p.gamma);
        dists.push(if lambda > 0.0 {
            Some(
                Poisson::new(lambda)
                    .map_err(|e| DataError::invalid("Poisson rate", "a finite rate > 0", e.to_string()))?,
            )
        } else {
            None
        });
    }
    let mut data = Vec::with_capacity(img.data.len());
    for x in img.to_u8() {
        let photons = match &dists[x as usize] {
            Some(d) => d.sample(&mut rng),
            None => 0.0,
        };
        let n: f64 = StandardNormal.sample(&mut rng);
        let v = (photons / p.peak + read * n).clamp(0.0, 1.0);
        data.push(((v * 255.0).round() / 255.0) as f32);
    }
    Ok(img.with_data(data))
}
