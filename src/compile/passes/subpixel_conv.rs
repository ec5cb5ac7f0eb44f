//! Move an image-facing 3x3 conv from after a pixel shuffle to before it: `Conv(DepthToSpace_r(X))` becomes
//! `DepthToSpace_r(Conv'(X))`, with `Conv'` a 3x3 conv at the low resolution from `C * r^2` to `O * r^2` channels.
//! Why: the SR tails end with a pixel shuffle of C = 24 channels to the full output size, then a conv to the 3 output
//! channels. Shuffling 24 channels at 192 x 192 and running a 3-output conv there are memory-bound; after the
//! rewrite the shuffle moves 3 channels and the conv is one dense product at 96 x 96 (r^2 = 4x the multiply-adds of
//! a narrow conv, in a shape GEMMs run well). Measured on lr4-noise30 (BENCHMARKS.md "The subpixel-conv pass"): its
//! f32 file at 0.79-0.87x and its int8 file at 0.83-0.86x the latency in ONNX Runtime, 0.94-0.96x in OpenVINO, but
//! 1.7x in tract, whose conv does not take the wider product well: hence opt-in (`export --pass subpixel-conv`).
//! Applied only where the conv narrows the channels at least r^2-fold (O * r^2 <= C), so the upsampler's widening
//! convs are left alone.
//!
//! Exactness: a high-resolution pixel (r p + i, r q + j) with a 3x3 neighbourhood reads low-resolution pixels
//! (p + a, q + b) with a, b in {-1, 0, 1} (`a = floor((i + dy) / r)` for dy in {-1, 0, 1}), and zero padding at
//! high resolution is zero padding at low resolution, so every output is the same sum of the same products (in
//! another order, with zero terms). `DepthToSpace` in CRD order (PyTorch's `PixelShuffle`): input channel
//! `c r^2 + si r + sj` goes to channel c at sub-pixel (si, sj).
use super::{util, Pass};
use crate::compile::ir::{Attr, Constant, Data, Graph};
use candle_core::Result;

pub struct SubpixelConv;

impl Pass for SubpixelConv {
    fn name(&self) -> &'static str {
        "subpixel-conv"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        for ci in 0..g.nodes.len() {
            let conv = &g.nodes[ci];
            if conv.op != "Conv" || !conv.domain.is_empty() || conv.inputs.len() < 2 || !plain_3x3(conv) {
                continue;
            }
            let Some(di) = util::sole_producer(g, &conv.inputs[0]) else { continue };
            let d2s = &g.nodes[di];
            let crd = matches!(d2s.attrs.get("mode"), Some(Attr::Str(m)) if m == "CRD");
            let r = util::attr_int(d2s, "blocksize", 0);
            if d2s.op != "DepthToSpace" || !d2s.domain.is_empty() || !crd || r < 2 {
                continue;
            }
            let r = r as usize;
            let Some(Constant { dims, data: Data::F32(w) }) = util::constant(g, &conv.inputs[1]) else { continue };
            let [o, c, 3, 3] = dims.as_slice() else { continue };
            let (o, c) = (*o, *c);
            if o * r * r > c {
                continue;
            }
            let bias = match conv.inputs.get(2) {
                Some(b) => match util::constant(g, b) {
                    Some(Constant { data: Data::F32(b), .. }) if b.len() == o => b.clone(),
                    _ => continue,
                },
                None => vec![0.0; o],
            };
            let (w2, b2) = lowres_weights(w, &bias, o, c, r);
            let hint = conv.name.replace('/', ".");
            let wn = util::add_constant(
                g,
                &format!("{hint}.weight_subpixel"),
                Constant::f32(vec![o * r * r, c * r * r, 3, 3], w2),
            );
            let bn = util::add_constant(g, &format!("{hint}.bias_subpixel"), Constant::f32(vec![o * r * r], b2));
            // The conv takes the shuffle's place (its input is ready there) and the shuffle the conv's (it produces
            // the conv's output name for its readers).
            let lowres = g.nodes[di].inputs[0].clone();
            let out = g.nodes[ci].outputs[0].clone();
            let mid = format!("{}.subpixel", out);
            let mut new_conv = g.nodes[ci].clone();
            new_conv.inputs = vec![lowres, wn, bn];
            new_conv.outputs = vec![mid.clone()];
            let mut new_d2s = g.nodes[di].clone();
            new_d2s.inputs = vec![mid];
            new_d2s.outputs = vec![out];
            g.nodes[di] = new_conv;
            g.nodes[ci] = new_d2s;
            return Ok(true);
        }
        Ok(false)
    }
}

/// A 3x3 conv with stride 1, dilation 1, one group and padding 1 on every side.
fn plain_3x3(n: &crate::compile::ir::Node) -> bool {
    let ones = |k: &str| util::attr_ints(n, k).is_none_or(|v| v.iter().all(|&x| x == 1));
    let pads = util::attr_ints(n, "pads").is_some_and(|v| v == [1, 1, 1, 1]);
    let kernel = util::attr_ints(n, "kernel_shape").is_none_or(|v| v == [3, 3]);
    let auto_pad = match n.attrs.get("auto_pad") {
        None => true,
        Some(Attr::Str(s)) => s == "NOTSET",
        Some(_) => false,
    };
    pads && kernel && auto_pad && ones("strides") && ones("dilations") && util::attr_int(n, "group", 1) == 1
}

/// The low-resolution conv's weights (O r^2, C r^2, 3, 3) and bias (O r^2) from the high-resolution conv's W (O, C,
/// 3, 3) and b (O). Each new weight is one old weight or zero (a low-resolution offset and sub-pixel give back one
/// high-resolution offset), so the weights are copied, not summed.
fn lowres_weights(w: &[f32], b: &[f32], o: usize, c: usize, r: usize) -> (Vec<f32>, Vec<f32>) {
    let (cin, rr) = (c * r * r, r * r);
    let mut w2 = vec![0f32; o * rr * cin * 9];
    for oo in 0..o {
        for i in 0..r {
            for j in 0..r {
                let out_ch = oo * rr + i * r + j;
                for dy in 0..3 {
                    for dx in 0..3 {
                        // High-resolution row offset dy - 1 from sub-row i: low-resolution offset a, sub-row si.
                        let (y, x) = (i as i64 + dy as i64 - 1, j as i64 + dx as i64 - 1);
                        let (a, si) = (y.div_euclid(r as i64), y.rem_euclid(r as i64) as usize);
                        let (bb, sj) = (x.div_euclid(r as i64), x.rem_euclid(r as i64) as usize);
                        let (ky, kx) = ((a + 1) as usize, (bb + 1) as usize);
                        for cc in 0..c {
                            let in_ch = cc * rr + si * r + sj;
                            w2[((out_ch * cin + in_ch) * 3 + ky) * 3 + kx] = w[((oo * c + cc) * 3 + dy) * 3 + dx];
                        }
                    }
                }
            }
        }
    }
    let b2 = (0..o * rr).map(|k| b[k / rr]).collect();
    (w2, b2)
}
