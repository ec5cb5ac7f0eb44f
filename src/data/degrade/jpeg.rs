//! JPEG compression at quality `q`: baseline JPEG with the standard (ITU-T T.81 Annex K /
//! libjpeg) quantisation tables scaled by quality exactly as libjpeg's `jpeg_quality_scaling`
//! (clamped to 1..=255), 4:2:0 chroma subsampling by 2x2 box averaging (libjpeg's
//! `h2v2_downsample`), standard Huffman tables — the settings of PIL / OpenCV `imwrite` at the
//! same quality. Encoded with the `jpeg-encoder` crate and decoded with the `image` crate.

use std::path::Path;

use jpeg_encoder::{ChromaSubsamplingMethod, ColorType, Encoder, SamplingFactor};

use crate::data::error::{DataError, Result};
use crate::data::image::Image;
use crate::data::io::{decode_image_bytes, LoadOptions};

/// Encodes an 8-bit-rounded image (1 or 3 channels) as JPEG bytes.
pub fn encode_jpeg(img: &Image, quality: u8) -> Result<Vec<u8>> {
    if !(1..=100).contains(&quality) {
        return Err(DataError::invalid("JPEG quality", "1..=100", quality.to_string()));
    }
    let color = match img.channels {
        1 => ColorType::Luma,
        3 => ColorType::Rgb,
        c => return Err(DataError::invalid("image to JPEG-encode", "1 or 3 channels", format!("{c} channels"))),
    };
    let (w, h) = (img.width, img.height);
    if w == 0 || h == 0 || w > u16::MAX as usize || h > u16::MAX as usize {
        return Err(DataError::invalid(
            "image to JPEG-encode",
            "between 1x1 and 65535x65535 pixels",
            format!("{w}x{h}"),
        ));
    }
    let mut out = Vec::new();
    let mut enc = Encoder::new(&mut out, quality);
    enc.set_sampling_factor(SamplingFactor::F_2_2);
    enc.set_chroma_subsampling_method(ChromaSubsamplingMethod::Average);
    enc.set_optimized_huffman_tables(false);
    enc.encode(&img.to_u8(), w as u16, h as u16, color).map_err(|e| DataError::Encode {
        path: "<memory>".into(),
        format: "JPEG".into(),
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// The JPEG degradation: encode at `quality`, decode (to three channels).
pub fn jpeg_compress(img: &Image, quality: u8) -> Result<Image> {
    let bytes = encode_jpeg(img, quality)?;
    let decoded = decode_image_bytes(Path::new("<in-memory JPEG>"), &bytes, &LoadOptions { max_pixels: u64::MAX })?;
    if img.channels == 1 {
        // Luma JPEGs decode to replicated RGB; keep one channel.
        let data = decoded.data.chunks_exact(3).map(|p| p[0]).collect();
        return Image::new(img.width, img.height, 1, data);
    }
    Ok(decoded)
}
