//! The data and metrics thresholds live in the project's one tolerance table, `adaptir_ops::tolerance`;
//! re-exported here under their old path.
pub use adaptir_ops::tolerance::{
    BICUBIC_MAX_LEVEL_DIFF, BICUBIC_MIN_EQUAL_FRACTION, JPEG_MAX_SIZE_REL_DIFF, JPEG_MIN_PSNR_VS_REFERENCE_DB,
    NOISE_STAT_REL, PSNR_VS_REFERENCE_DB, SSIM_VS_REFERENCE,
};
