//! Additive white Gaussian noise with sigma on the 0-255 scale.
//!
//! The clean image is taken at 8-bit levels `x` in 0..=255; `n ~ N(0, sigma^2)` per sample (all
//! channels independent); then one of two conventions makes an 8-bit image again:
//! * [`NoiseConvention::ClipRound`]: `round(clip(x + n, 0, 255))` — what saving a noisy test image
//!   as PNG does (DnCNN / SwinIR test sets saved to disk).
//! * [`NoiseConvention::ClipTruncate`]: `floor(clip(x + n, 0, 255))` — NumPy's `astype(np.uint8)`
//!   after `np.clip`, as the official hybrid (LR4&Noise30) pipeline does. Its mean is about half a
//!   level darker.

use rand_distr::{Distribution, StandardNormal};

use crate::data::error::{DataError, Result};
use crate::data::image::Image;
use crate::data::seed::rng_for;

/// How noisy values become 8-bit again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseConvention {
    ClipRound,
    ClipTruncate,
}

/// Adds Gaussian noise of standard deviation `sigma` (0-255 scale), seeded.
pub fn gaussian_noise(img: &Image, sigma: f64, convention: NoiseConvention, seed: u64) -> Result<Image> {
    if !(sigma.is_finite() && sigma >= 0.0) {
        return Err(DataError::invalid("noise sigma", "a finite value >= 0 (0-255 scale)", sigma.to_string()));
    }
    let mut rng = rng_for(seed);
    let data = img
        .to_u8()
        .into_iter()
        .map(|x| {
            let n: f64 = StandardNormal.sample(&mut rng);
            let v = (x as f64 + sigma * n).clamp(0.0, 255.0);
            let q = match convention {
                NoiseConvention::ClipRound => v.round(),
                NoiseConvention::ClipTruncate => v.floor(),
            };
            (q / 255.0) as f32
        })
        .collect();
    Ok(img.with_data(data))
}
