//! The acceptance thresholds of the data and metrics checks, in one place. Tests use these names,
//! never literals.

/// Our PSNR vs the reference implementation's (dB).
pub const PSNR_VS_REFERENCE_DB: f64 = 1e-3;
/// Our SSIM vs the reference implementation's.
pub const SSIM_VS_REFERENCE: f64 = 1e-4;
/// Bicubic downscaling vs MATLAB: minimum fraction of samples exactly equal.
pub const BICUBIC_MIN_EQUAL_FRACTION: f64 = 0.999;
/// Bicubic downscaling vs MATLAB: largest allowed difference in 8-bit levels.
pub const BICUBIC_MAX_LEVEL_DIFF: u8 = 1;
/// Our JPEG decode vs the reference encoder's JPEG decode: minimum PSNR (dB).
pub const JPEG_MIN_PSNR_VS_REFERENCE_DB: f64 = 40.0;
/// Our JPEG file size vs the reference encoder's: maximum relative difference.
pub const JPEG_MAX_SIZE_REL_DIFF: f64 = 0.05;
/// Sample statistics of a seeded random generator vs their expectation: relative tolerance
/// (a few standard errors for the sample sizes the tests use).
pub const NOISE_STAT_REL: f64 = 0.02;
