//! Bicubic resizing compatible with MATLAB `imresize(I, 1/s, 'bicubic')` on uint8 images:
//! Keys cubic with a = -0.5, kernel widened by the scale when shrinking (antialiasing),
//! symmetric (mirror) boundary handling, the height pass first and then the width pass (MATLAB's
//! order for equal scale factors), each pass rounded and saturated to uint8 as MATLAB's
//! `imresizemex` does for uint8 input.

use crate::data::error::{DataError, Result};
use crate::data::image::Image;

/// Keys' cubic convolution kernel with a = -0.5 (MATLAB's `cubic`).
fn cubic(x: f64) -> f64 {
    let ax = x.abs();
    let ax2 = ax * ax;
    let ax3 = ax2 * ax;
    if ax <= 1.0 {
        1.5 * ax3 - 2.5 * ax2 + 1.0
    } else if ax <= 2.0 {
        -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    } else {
        0.0
    }
}

/// Per output sample: (input indices, weights), as MATLAB's `contributions`.
fn contributions(in_len: usize, out_len: usize, scale: f64) -> Vec<(Vec<usize>, Vec<f64>)> {
    let kernel_width = if scale < 1.0 { 4.0 / scale } else { 4.0 };
    let taps = kernel_width.ceil() as i64 + 2;
    let period = 2 * in_len as i64;
    (1..=out_len)
        .map(|i| {
            let u = i as f64 / scale + 0.5 * (1.0 - 1.0 / scale);
            let left = (u - kernel_width / 2.0).floor() as i64;
            let mut idx = Vec::with_capacity(taps as usize);
            let mut wts = Vec::with_capacity(taps as usize);
            for j in 0..taps {
                let ind = left + j; // 1-based
                let d = u - ind as f64;
                let w = if scale < 1.0 { scale * cubic(scale * d) } else { cubic(d) };
                // Mirror padding: aux = [1..n, n..1], indexed cyclically.
                let m = (ind - 1).rem_euclid(period);
                let src = if m < in_len as i64 { m } else { period - 1 - m };
                idx.push(src as usize);
                wts.push(w);
            }
            let sum: f64 = wts.iter().sum();
            wts.iter_mut().for_each(|w| *w /= sum);
            (idx, wts)
        })
        .collect()
}

/// Resizes 0-255 samples along one axis, rounding to uint8 after the pass.
fn resize_axis(src: &[f64], (w, h, c): (usize, usize, usize), out_len: usize, vertical: bool) -> Vec<f64> {
    let in_len = if vertical { h } else { w };
    let contrib = contributions(in_len, out_len, out_len as f64 / in_len as f64);
    let (ow, oh) = if vertical { (w, out_len) } else { (out_len, h) };
    let mut out = vec![0.0f64; ow * oh * c];
    for oy in 0..oh {
        for ox in 0..ow {
            let (idx, wts) = if vertical { &contrib[oy] } else { &contrib[ox] };
            for k in 0..c {
                let mut acc = 0.0;
                for (&s, &wt) in idx.iter().zip(wts) {
                    let (sx, sy) = if vertical { (ox, s) } else { (s, oy) };
                    acc += wt * src[(sy * w + sx) * c + k];
                }
                out[(oy * ow + ox) * c + k] = acc.round().clamp(0.0, 255.0);
            }
        }
    }
    out
}

/// MATLAB-compatible bicubic resize of an image (quantised to 8 bits first) to `out_w x out_h`.
pub fn imresize(img: &Image, out_w: usize, out_h: usize) -> Result<Image> {
    if out_w == 0 || out_h == 0 || img.width == 0 || img.height == 0 {
        return Err(DataError::invalid(
            "bicubic resize",
            "non-empty input and output sizes",
            format!("{}x{} -> {out_w}x{out_h}", img.width, img.height),
        ));
    }
    let c = img.channels;
    let src: Vec<f64> = img.to_u8().into_iter().map(f64::from).collect();
    // MATLAB resizes the dimension with the smaller scale factor first; height on ties.
    let sy = out_h as f64 / img.height as f64;
    let sx = out_w as f64 / img.width as f64;
    let out = if sy <= sx {
        let t = resize_axis(&src, (img.width, img.height, c), out_h, true);
        resize_axis(&t, (img.width, out_h, c), out_w, false)
    } else {
        let t = resize_axis(&src, (img.width, img.height, c), out_w, false);
        resize_axis(&t, (out_w, img.height, c), out_h, true)
    };
    Ok(Image { width: out_w, height: out_h, channels: c, data: out.into_iter().map(|v| (v / 255.0) as f32).collect() })
}

/// The SR degradation: mod-crop to a multiple of `scale`, then `imresize(I, 1/scale, 'bicubic')`.
pub fn bicubic_downscale(img: &Image, scale: usize) -> Result<Image> {
    let hr = img.mod_crop(scale)?;
    imresize(&hr, hr.width / scale, hr.height / scale)
}
