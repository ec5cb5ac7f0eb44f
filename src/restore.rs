//! Tiled inference for images of any size: the model sees `P x P` inputs (IPT: 48), so the image is mirror-padded
//! (a margin of half the overlap on every side, and up to the tile grid on the right and bottom), cut into
//! overlapping tiles, run in batches, and the outputs are blended with weights that ramp linearly from the
//! tile's edges over the overlap: neighbouring tiles cross-fade, so there are no seams. Weights are products
//! of 1-D ramps and never zero, so every output pixel is a convex combination of the tiles covering it.
use candle_core::{Device, Tensor};

use crate::backbone::Ipt;
use crate::data::Image;
use crate::error::{Error, Result};

/// The overlap `adaptir restore` and `adaptir export --whole-image` use unless told otherwise.
pub const CLI_OVERLAP: usize = 8;

/// Tiling settings.
#[derive(Clone, Copy, Debug)]
pub struct Tiling {
    /// Input pixels shared by neighbouring tiles (must be < the tile size, even).
    pub overlap: usize,
    /// Tiles per model call.
    pub batch: usize,
}

impl Default for Tiling {
    fn default() -> Self {
        Self { overlap: 16, batch: 16 }
    }
}

/// Index into `0..n` of position `i` of the mirror-extended axis (reflection without repeating the edge,
/// periodic, so any amount of padding works; `n == 1` repeats the pixel).
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m < n as isize { m } else { period - m }) as usize
}

/// Tile origins along an axis of padded length `len` (>= tile): every `stride`, the last one flush with the end.
fn origins(len: usize, tile: usize, stride: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..).map(|k| k * stride).take_while(|&o| o + tile < len).collect();
    v.push(len - tile);
    v.dedup();
    v
}

/// Blending weight at offset `u` of `n` output pixels with a ramp of `r` pixels.
pub fn ramp(u: usize, n: usize, r: usize) -> f32 {
    let d = (u.min(n - 1 - u) as f32 + 0.5) / r.max(1) as f32;
    d.clamp(1e-3, 1.0)
}

/// Restore `img` with `model` on head `task`: the output is `scale` times larger.
pub fn restore(model: &Ipt, task: usize, img: &Image, tiling: Tiling, device: &Device) -> Result<Image> {
    let p = model.config.patch_size;
    let s = *model.config.scales.get(task).ok_or_else(|| Error::invalid(format!("task index {task} out of range")))?;
    restore_with(p, s, img, tiling, device, &mut |x| Ok(model.forward(x, task, false)?))
}

/// Tiled inference with any tile function `f`: (N, 3, p, p) -> (N, 3, p s, p s).
pub fn restore_with(
    p: usize,
    s: usize,
    img: &Image,
    tiling: Tiling,
    device: &Device,
    f: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
) -> Result<Image> {
    if tiling.overlap >= p || tiling.batch == 0 {
        return Err(Error::invalid(format!(
            "tiling: overlap {} must be below the tile size {p}, batch at least 1",
            tiling.overlap
        )));
    }
    if img.channels != 3 || img.width == 0 || img.height == 0 {
        return Err(Error::invalid(format!(
            "restore: expected a non-empty RGB image, found {}x{}x{}",
            img.width, img.height, img.channels
        )));
    }
    let margin = tiling.overlap / 2;
    let stride = p - tiling.overlap;
    let pad_len = |n: usize| {
        let inner = n + 2 * margin;
        if inner <= p {
            p
        } else {
            p + (inner - p).div_ceil(stride) * stride
        }
    };
    let (pw, ph) = (pad_len(img.width), pad_len(img.height));
    let at = |x: usize, y: usize, c: usize| {
        let sx = reflect(x as isize - margin as isize, img.width);
        let sy = reflect(y as isize - margin as isize, img.height);
        img.data[(sy * img.width + sx) * 3 + c]
    };
    let tiles: Vec<(usize, usize)> = origins(ph, p, stride)
        .into_iter()
        .flat_map(|y| origins(pw, p, stride).into_iter().map(move |x| (x, y)))
        .collect();
    let (ow, oh, q) = (pw * s, ph * s, p * s);
    let mut acc = vec![0f32; 3 * ow * oh];
    let mut wsum = vec![0f32; ow * oh];
    let w1: Vec<f32> = (0..q).map(|u| ramp(u, q, tiling.overlap * s)).collect();
    for chunk in tiles.chunks(tiling.batch) {
        let mut data = Vec::with_capacity(chunk.len() * 3 * p * p);
        for &(x0, y0) in chunk {
            for c in 0..3 {
                for y in 0..p {
                    for x in 0..p {
                        data.push(at(x0 + x, y0 + y, c));
                    }
                }
            }
        }
        let x = Tensor::from_vec(data, (chunk.len(), 3, p, p), device)?;
        let y = f(&x)?.clamp(0f32, 1f32)?;
        let y: Vec<f32> = y.flatten_all()?.to_vec1()?;
        for (k, &(x0, y0)) in chunk.iter().enumerate() {
            let base = k * 3 * q * q;
            for v in 0..q {
                for u in 0..q {
                    let wgt = w1[u] * w1[v];
                    let (ox, oy) = (x0 * s + u, y0 * s + v);
                    wsum[oy * ow + ox] += wgt;
                    for c in 0..3 {
                        acc[(c * oh + oy) * ow + ox] += wgt * y[base + (c * q + v) * q + u];
                    }
                }
            }
        }
    }
    let (w, h) = (img.width * s, img.height * s);
    let mut out = vec![0f32; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let (ox, oy) = (x + margin * s, y + margin * s);
            let ws = wsum[oy * ow + ox];
            for c in 0..3 {
                out[(y * w + x) * 3 + c] = acc[(c * oh + oy) * ow + ox] / ws;
            }
        }
    }
    Ok(Image::new(w, h, 3, out)?)
}

/// Number of tiles `restore_with` cuts a `w x h` image into (the same grid: margin overlap/2, stride
/// tile - overlap, last tile flush with the padded end); for the progress bar.
pub fn tile_count(w: usize, h: usize, tile: usize, overlap: usize) -> usize {
    let stride = tile.saturating_sub(overlap).max(1);
    let axis = |n: usize| {
        let inner = n + 2 * (overlap / 2);
        if inner <= tile {
            1
        } else {
            let padded = tile + (inner - tile).div_ceil(stride) * stride;
            (padded - tile).div_ceil(stride) + 1
        }
    };
    axis(w) * axis(h)
}
