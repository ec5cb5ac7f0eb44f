//! Whole-image graphs: the tiling and blending of `adaptir restore` (src/restore.rs) written in standard ONNX
//! ops around the patch model, so a deployment takes one image of any size, (1, 3, H, W) in [0, 1], and gets
//! (1, 3, s H, s W) back, with no tiling code of its own.
//!
//! The same scheme as `restore_with`, step for step:
//! - tile origins every `stride = P - overlap` along the mirror-padded axis (a margin of overlap / 2, then up to
//!   the tile grid), so there are `nt = 1 + ceil(max(n + overlap - P, 0) / stride)` tiles per axis;
//! - each tile's pixels are gathered straight from the image with the mirror index `reflect(i - margin, n)`
//!   (periodic reflection without repeating the edge: any amount of padding, n = 1 included), computed with
//!   integer ops from the runtime shape, so one `Gather` per axis cuts every tile;
//! - all tiles run as one batch; outputs are clipped to [0, 1] and weighted by the separable linear ramps;
//! - overlap-add per axis: with `overlap <= stride` every output pixel is covered by at most two tiles along an
//!   axis, so the sum is the first `stride` samples of each tile plus the last `overlap` samples of the previous
//!   one (two `Slice`s, three `Pad`s, one `Add`, one `Reshape`); the weight sums are the same overlap-add of the
//!   1-D ramps, and the crop removes the margin.
//!
//! Only Shape, Gather, Slice, Pad, Reshape, Transpose, Concat, Expand, Range, Where, Less, Clip and arithmetic:
//! every runtime of the matrix (ONNX Runtime, OpenVINO, tract, TensorRT) has them.
use adaptir_ops::graph::{Attr, GraphBuilder};
use candle_core::Result;

use crate::restore::{ramp, Tiling};

/// The most tiles a whole-image graph takes by default (`--max-tiles`): all tiles run as one batch, so this
/// bounds the memory a runtime needs (1024 tiles of 48 px at the default overlap of 8: a 32 x 32 grid, an image
/// of up to 1,280 x 1,280).
pub const DEFAULT_MAX_TILES: usize = 1024;

/// The tiling of a whole-image graph: tile size `p` (the model's patch), output scale `s`.
#[derive(Clone, Copy, Debug)]
pub struct WholeImage {
    pub p: usize,
    pub scale: usize,
    pub tiling: Tiling,
}

impl WholeImage {
    /// `overlap` must be even, and at most half a tile, so that two tiles at most cover a pixel per axis.
    pub fn check(&self) -> std::result::Result<(), String> {
        let o = self.tiling.overlap;
        if o % 2 != 0 || 2 * o > self.p {
            return Err(format!("whole-image export: overlap {o} must be even and at most half the tile ({})", self.p));
        }
        Ok(())
    }

    /// Tiles per axis for an axis of `n` pixels (the same count `restore` makes).
    pub fn tiles_along(&self, n: usize) -> usize {
        let (o, p) = (self.tiling.overlap, self.p);
        let stride = p - o;
        1 + (n + o).saturating_sub(p).div_ceil(stride)
    }
}

/// A one-element i64 vector: the length of axis `axis`, read from a `Shape` output.
fn dim(b: &mut dyn GraphBuilder, shape: &str, axis: i64) -> Result<String> {
    let (s, e) = (
        b.constant_i64(&format!("wi.axis{axis}"), &[axis])?,
        b.constant_i64(&format!("wi.axis{axis}_end"), &[axis + 1])?,
    );
    b.op("Slice", &[shape, &s, &e], vec![])
}

fn int(b: &mut dyn GraphBuilder, v: i64) -> Result<String> {
    b.constant_i64(&format!("wi.i{v}"), &[v])
}

/// (tiles along the axis, `[nt]`; mirror indices of every tile's pixels, `(nt, p)`) for an axis of length `n`.
fn tile_indices(b: &mut dyn GraphBuilder, n: &str, wi: &WholeImage, axis: &str) -> Result<(String, String)> {
    b.push_scope(&format!("tiles_{axis}"));
    let (p, o) = (wi.p as i64, wi.tiling.overlap as i64);
    let (stride, margin) = (p - o, o / 2);
    // nt = 1 + ceil(max(n + o - p, 0) / stride)
    let o_minus_p = int(b, o - p)?;
    let inner = b.op("Add", &[n, &o_minus_p], vec![])?;
    let zero = int(b, 0)?;
    let inner = b.op("Max", &[&inner, &zero], vec![])?;
    let round_up = int(b, stride - 1)?;
    let inner = b.op("Add", &[&inner, &round_up], vec![])?;
    let stride_c = int(b, stride)?;
    let steps = b.op("Div", &[&inner, &stride_c], vec![])?;
    let one = int(b, 1)?;
    let nt = b.op("Add", &[&steps, &one], vec![])?;
    // Pixel positions on the padded axis, minus the margin: origin_k + u - margin, (nt, p).
    let (start, limit, delta) = (scalar(b, &zero)?, scalar(b, &nt)?, scalar(b, &one)?);
    let k = b.op("Range", &[&start, &limit, &delta], vec![])?;
    let origins = b.op("Mul", &[&k, &stride_c], vec![])?;
    let col = int(b, 1)?;
    let origins = b.op("Unsqueeze", &[&origins, &col], vec![])?;
    let offsets: Vec<i64> = (0..p).map(|u| u - margin).collect();
    let offsets = b.constant_i64("wi.offsets", &offsets)?;
    let pos = b.op("Add", &[&origins, &offsets], vec![])?;
    // reflect(pos, n): period max(2 (n - 1), 1); shifted by margin periods to be non-negative, so the integer
    // Div floors; then positions past n fold back.
    let two = int(b, 2)?;
    let n1 = b.op("Sub", &[n, &one], vec![])?;
    let period = b.op("Mul", &[&n1, &two], vec![])?;
    let period = b.op("Max", &[&period, &one], vec![])?;
    let m = int(b, margin)?;
    let shift = b.op("Mul", &[&period, &m], vec![])?;
    let pos = b.op("Add", &[&pos, &shift], vec![])?;
    let q = b.op("Div", &[&pos, &period], vec![])?;
    let q = b.op("Mul", &[&q, &period], vec![])?;
    let r = b.op("Sub", &[&pos, &q], vec![])?;
    let inside = b.op("Less", &[&r, n], vec![])?;
    let mirrored = b.op("Sub", &[&period, &r], vec![])?;
    let idx = b.op("Where", &[&inside, &r, &mirrored], vec![])?;
    b.pop_scope();
    Ok((nt, idx))
}

/// A scalar from a one-element vector (Range takes scalars).
fn scalar(b: &mut dyn GraphBuilder, v: &str) -> Result<String> {
    let ax = int(b, 0)?;
    b.op("Squeeze", &[v, &ax], vec![])
}

/// Overlap-add along the last two axes (tiles `nt`, samples `q`) of a tensor of rank `rank`, tiles `stride`
/// apart, then the crop `[start, start + len)` of the merged axis; returns rank - 1 axes.
fn overlap_add(
    b: &mut dyn GraphBuilder,
    x: &str,
    rank: usize,
    (q, stride): (usize, usize),
    start: usize,
    len: &str,
) -> Result<String> {
    let o = q - stride;
    let last = int(b, rank as i64 - 1)?;
    let (zero, s, qc) = (int(b, 0)?, int(b, stride as i64)?, int(b, q as i64)?);
    let head = b.op("Slice", &[x, &zero, &s, &last], vec![])?;
    let tail = b.op("Slice", &[x, &s, &qc, &last], vec![])?;
    let pads = |before_tiles: i64, after_tiles: i64, after_samples: i64| {
        let mut v = vec![0i64; 2 * rank];
        v[rank - 2] = before_tiles;
        v[2 * rank - 2] = after_tiles;
        v[2 * rank - 1] = after_samples;
        v
    };
    // The tail of tile k lands at the start of block k + 1: pad it to a full block, one block later.
    let tail = if o < stride {
        let p = b.constant_i64("wi.pad_tail", &pads(0, 0, (stride - o) as i64))?;
        b.op("Pad", &[&tail, &p], vec![])?
    } else {
        tail
    };
    let p_after = b.constant_i64(&format!("wi.pad_after_r{rank}"), &pads(0, 1, 0))?;
    let p_before = b.constant_i64(&format!("wi.pad_before_r{rank}"), &pads(1, 0, 0))?;
    let head = b.op("Pad", &[&head, &p_after], vec![])?;
    let tail = b.op("Pad", &[&tail, &p_before], vec![])?;
    let sum = b.op("Add", &[&head, &tail], vec![])?;
    let mut shape = vec![0i64; rank - 2];
    shape.push(-1);
    let shape = b.constant_i64(&format!("wi.merge_r{rank}"), &shape)?;
    let merged = b.op("Reshape", &[&sum, &shape], vec![])?;
    let (st, ax) = (int(b, start as i64)?, int(b, rank as i64 - 2)?);
    let end = b.op("Add", &[&st, len], vec![])?;
    b.op("Slice", &[&merged, &st, &end, &ax], vec![])
}

/// Emit the whole-image graph around `model` (a function from the tile batch (N, 3, P, P) to (N, 3, sP, sP)):
/// returns the output (1, 3, s H, s W) for the image `input` (1, 3, H, W).
pub fn lower(
    b: &mut dyn GraphBuilder,
    input: &str,
    wi: &WholeImage,
    model: &mut dyn FnMut(&mut dyn GraphBuilder, &str) -> Result<String>,
) -> Result<String> {
    wi.check().map_err(candle_core::Error::Msg)?;
    let (p, s, o) = (wi.p, wi.scale, wi.tiling.overlap);
    let (q, stride_out, margin_out) = (p * s, (p - o) * s, o / 2 * s);
    b.push_scope("whole_image");
    let shape = b.op("Shape", &[input], vec![])?;
    let (h, w) = (dim(b, &shape, 2)?, dim(b, &shape, 3)?);
    let (nh, idx_h) = tile_indices(b, &h, wi, "h")?;
    let (nw, idx_w) = tile_indices(b, &w, wi, "w")?;
    // Cut every tile: (1, 3, H, W) -> (1, 3, nh, p, W) -> (1, 3, nh, p, nw, p) -> (nh nw, 3, p, p).
    let rows = b.op("Gather", &[input, &idx_h], vec![("axis", Attr::Int(2))])?;
    let tiles = b.op("Gather", &[&rows, &idx_w], vec![("axis", Attr::Int(4))])?;
    let tiles = b.op("Transpose", &[&tiles], vec![("perm", Attr::Ints(vec![0, 2, 4, 1, 3, 5]))])?;
    let tile_shape = b.constant_i64("wi.tile_shape", &[-1, 3, p as i64, p as i64])?;
    let tiles = b.op("Reshape", &[&tiles, &tile_shape], vec![])?;
    b.pop_scope();

    let y = model(b, &tiles)?;

    b.push_scope("whole_image");
    // Clip as `restore` does, weight by the separable ramps.
    let (lo, hi) = (b.constant_f32("wi.zero", &[], &[0.0])?, b.constant_f32("wi.one", &[], &[1.0])?);
    let y = b.op("Clip", &[&y, &lo, &hi], vec![])?;
    let w1: Vec<f32> = (0..q).map(|u| ramp(u, q, o * s)).collect();
    let w2: Vec<f32> = (0..q * q).map(|k| w1[k / q] * w1[k % q]).collect();
    let w2 = b.constant_f32("wi.weights", &[q, q], &w2)?;
    let y = b.op("Mul", &[&y, &w2], vec![])?;
    // (nh nw, 3, q, q) -> (nh, nw, 3, q, q) -> (3, nw, q, nh, q): overlap-add the rows.
    let three_q = b.constant_i64("wi.out_tile", &[3, q as i64, q as i64])?;
    let grid = b.op("Concat", &[&nh, &nw, &three_q], vec![("axis", Attr::Int(0))])?;
    let y = b.op("Reshape", &[&y, &grid], vec![])?;
    let y = b.op("Transpose", &[&y], vec![("perm", Attr::Ints(vec![2, 1, 4, 0, 3]))])?;
    let sc = int(b, s as i64)?;
    let (h_out, w_out) = (b.op("Mul", &[&h, &sc], vec![])?, b.op("Mul", &[&w, &sc], vec![])?);
    let y = overlap_add(b, &y, 5, (q, stride_out), margin_out, &h_out)?; // (3, nw, q, sH)
    let y = b.op("Transpose", &[&y], vec![("perm", Attr::Ints(vec![0, 3, 1, 2]))])?;
    let y = overlap_add(b, &y, 4, (q, stride_out), margin_out, &w_out)?; // (3, sH, sW)
                                                                         // The weight sums: the same overlap-add of the 1-D ramps, then their outer product.
    let w1 = b.constant_f32("wi.ramp", &[1, q], &w1)?;
    let q_c = int(b, q as i64)?;
    let sums = |b: &mut dyn GraphBuilder, nt: &str, len: &str| -> Result<String> {
        let shape = b.op("Concat", &[nt, &q_c], vec![("axis", Attr::Int(0))])?;
        let ramps = b.op("Expand", &[&w1, &shape], vec![])?;
        overlap_add(b, &ramps, 2, (q, stride_out), margin_out, len)
    };
    let (sum_h, sum_w) = (sums(b, &nh, &h_out)?, sums(b, &nw, &w_out)?);
    let col = int(b, 1)?;
    let sum_h = b.op("Unsqueeze", &[&sum_h, &col], vec![])?;
    let den = b.op("Mul", &[&sum_h, &sum_w], vec![])?;
    let y = b.op("Div", &[&y, &den], vec![])?;
    let batch = int(b, 0)?;
    let y = b.op("Unsqueeze", &[&y, &batch], vec![])?;
    b.pop_scope();
    Ok(y)
}
