//! EDT's convolutional heads and tails (official `net/edt.py`: `ResBlockDown`, `ResBlockUp`, `UpResBlock`,
//! `ResBlockSkip`, `Upsample`), with their official key names, and the bilinear resize of the SR skip.
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

use super::config::{EdtTask, HEAD_DEPTH, NUM_FEAT};
use crate::backbone::layers::{conv, default_init, Conv, Upsampler};

/// `LeakyReLU(0.2)`: `max(x, 0.2 x)` is the same value as torch's `x > 0 ? x : 0.2 x` for a slope below 1.
fn leaky_relu(x: &Tensor) -> Result<Tensor> {
    x.maximum(&(x * 0.2)?)
}

/// `ResBlockDown(in, out, down)`: `lrelu(conv_2(lrelu(conv_1(x)))) + shortcut(x)`, then, with `down`, a
/// bias-free 4x4 stride-2 conv (`conv_down`) that halves the image.
struct ResBlockDown {
    conv_1: Conv,
    conv_2: Conv,
    shortcut: Conv,
    conv_down: Option<Tensor>,
}

impl ResBlockDown {
    fn new(vb: VarBuilder, cin: usize, cout: usize, down: bool) -> Result<Self> {
        let conv_down = if down {
            Some(vb.get_with_hints((cout, cout, 4, 4), "conv_down.weight", default_init(cout * 16))?)
        } else {
            None
        };
        Ok(Self {
            conv_1: conv(vb.pp("conv_1"), cin, cin, 3)?,
            conv_2: conv(vb.pp("conv_2"), cin, cout, 3)?,
            shortcut: conv(vb.pp("shortcut"), cin, cout, 1)?,
            conv_down,
        })
    }

    /// (output, skip): the halved image and the full-size one with `down`; the output twice without.
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let identity = self.shortcut.forward(x)?;
        let y = leaky_relu(&self.conv_2.forward(&leaky_relu(&self.conv_1.forward(x)?)?)?)?;
        let y = (y + identity)?;
        match &self.conv_down {
            // candle's strided conv2d (kernel 4, padding 1, stride 2) and its autograd.
            Some(w) => Ok((y.conv2d(w, 1, 2, 1, 1)?, y)),
            None => Ok((y.clone(), y)),
        }
    }
}

/// `ResBlockUp(in, out)`: `lrelu(conv_2(lrelu(conv_1(x)))) + shortcut(x)`, all convs in -> out first.
struct ResBlockUp {
    conv_1: Conv,
    conv_2: Conv,
    shortcut: Conv,
}

impl ResBlockUp {
    fn new(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        Ok(Self {
            conv_1: conv(vb.pp("conv_1"), cin, cout, 3)?,
            conv_2: conv(vb.pp("conv_2"), cout, cout, 3)?,
            shortcut: conv(vb.pp("shortcut"), cin, cout, 1)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let identity = self.shortcut.forward(x)?;
        let y = leaky_relu(&self.conv_2.forward(&leaky_relu(&self.conv_1.forward(x)?)?)?)?;
        y + identity
    }
}

/// `ConvTranspose2d(in, out, kernel 2, stride 2)`: every input pixel paints its own 2x2 block, so it is one
/// matrix product over channels followed by a depth-to-space: `y[o, 2i+a, 2j+b] = sum_c x[c, i, j] w[c, o, a, b]
/// + bias[o]`. Exact, and differentiable with the frozen-linear backward.
struct ConvTranspose2x2 {
    /// The official (in, out, 2, 2) weight, as loaded (a trained variable when the backbone is trained).
    raw: Tensor,
    /// (out * 4, in): `raw` as a linear map from channels to (o, a, b), copied once: only a frozen weight may
    /// use it (an optimizer updates `raw` in place, not this copy).
    weight: Tensor,
    bias: Tensor,
    cout: usize,
}

impl ConvTranspose2x2 {
    fn new(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        // torch's init for ConvTranspose2d uses fan_in = weight.size(1) * k * k = out * 4.
        let init = default_init(cout * 4);
        let w = vb.get_with_hints((cin, cout, 2, 2), "weight", init)?;
        let bias = vb.get_with_hints(cout, "bias", init)?;
        let weight = w.detach().reshape((cin, cout * 4))?.t()?.contiguous()?;
        Ok(Self { raw: w, weight, bias, cout })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, _, h, w) = x.dims4()?;
        let o = self.cout;
        let x = x.permute((0, 2, 3, 1))?;
        let y = if self.raw.track_op() {
            // Trained weight: candle's product, which also gives its gradient.
            let cin = self.raw.dim(0)?;
            x.contiguous()?.broadcast_matmul(&self.raw.reshape((cin, o * 4))?)?
        } else {
            adaptir_ops::frozen::linear_t(&x, &self.weight)? // (n, h, w, o*4)
        };
        let y = y.reshape((n, h, w, o, 2, 2))?.permute((0, 3, 1, 4, 2, 5))?.reshape((n, o, 2 * h, 2 * w))?;
        adaptir_ops::channel::add(&y, &self.bias, 1)
    }
}

/// `UpResBlock(in, out)` (denoise / derain tails): transposed conv x2 up, concat the head's skip, `ResBlockUp`.
struct UpResBlock {
    up: ConvTranspose2x2,
    block: ResBlockUp,
}

/// `ResBlockSkip(in, out)` (SR tails): conv3x3, concat the head's skip, `ResBlockUp`.
struct ResBlockSkip {
    conv: Conv,
    block: ResBlockUp,
}

/// One tail stage: it takes the body's (or the previous stage's) features and one skip of the head.
enum TailStage {
    Up(UpResBlock),
    Skip(ResBlockSkip),
}

impl TailStage {
    fn forward(&self, x: &Tensor, skip: &Tensor) -> Result<Tensor> {
        let (y, block) = match self {
            Self::Up(s) => (s.up.forward(x)?, &s.block),
            Self::Skip(s) => (s.conv.forward(x)?, &s.block),
        };
        block.forward(&Tensor::cat(&[&y, skip], 1)?)
    }
}

/// The task's head: conv 3 -> num_feat, [`HEAD_DEPTH`] `ResBlockDown`s doubling the channels (halving the image
/// for denoise / derain), conv -> embed_dim. Keys `head_<task>.{0..=HEAD_DEPTH+1}`.
pub struct Head {
    first: Conv,
    blocks: Vec<ResBlockDown>,
    last: Conv,
}

impl Head {
    pub fn new(vb: VarBuilder, task: EdtTask, embed_dim: usize) -> Result<Self> {
        let blocks = (0..HEAD_DEPTH)
            .map(|i| ResBlockDown::new(vb.pp(i + 1), NUM_FEAT << i, NUM_FEAT << (i + 1), task.downsamples()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            first: conv(vb.pp(0), 3, NUM_FEAT, 3)?,
            blocks,
            last: conv(vb.pp(HEAD_DEPTH + 1), NUM_FEAT << HEAD_DEPTH, embed_dim, 3)?,
        })
    }

    /// (features for the body, skips in head order). SR keeps each block's output as its skip; denoise and
    /// derain keep each block's output before its down-sampling conv.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let mut x = self.first.forward(x)?;
        let mut skips = vec![];
        for b in &self.blocks {
            let (y, skip) = b.forward(&x)?;
            skips.push(skip);
            x = y;
        }
        Ok((self.last.forward(&x)?, skips))
    }
}

/// The task's tail: [`HEAD_DEPTH`] stages, each consuming the head's skips from the last one back, then for SR
/// the pixel-shuffle `Upsample` and the output conv (keys `tail_<task>.{0..}`).
pub struct Tail {
    stages: Vec<TailStage>,
    upsample: Option<Upsampler>,
    out: Conv,
}

impl Tail {
    pub fn new(vb: VarBuilder, task: EdtTask, embed_dim: usize) -> Result<Self> {
        let mut stages = vec![];
        for (k, i) in (0..HEAD_DEPTH).rev().enumerate() {
            let cin = if i == HEAD_DEPTH - 1 { embed_dim } else { NUM_FEAT << (i + 2) };
            let cout = NUM_FEAT << (i + 1);
            let vb = vb.pp(k);
            stages.push(match task {
                EdtTask::Sr(_) => TailStage::Skip(ResBlockSkip {
                    conv: conv(vb.pp("conv"), cin, cout, 3)?,
                    block: ResBlockUp::new(vb.pp("block"), 2 * cout, cout)?,
                }),
                _ => TailStage::Up(UpResBlock {
                    up: ConvTranspose2x2::new(vb.pp("up"), cin, cout)?,
                    block: ResBlockUp::new(vb.pp("block"), 2 * cout, cout)?,
                }),
            });
        }
        let feat = NUM_FEAT << 1;
        let (upsample, out_index) = match task {
            EdtTask::Sr(s) => (Some(Upsampler::new(vb.pp(HEAD_DEPTH), s, feat)?), HEAD_DEPTH + 1),
            _ => (None, HEAD_DEPTH),
        };
        Ok(Self { stages, upsample, out: conv(vb.pp(out_index), feat, 3, 3)? })
    }

    /// The tail's output before the image skip is added (`block(x)` of the official last stage).
    pub fn forward(&self, x: &Tensor, skips: &[Tensor]) -> Result<Tensor> {
        let mut x = x.clone();
        for (stage, skip) in self.stages.iter().zip(skips.iter().rev()) {
            x = stage.forward(&x, skip)?;
        }
        if let Some(up) = &self.upsample {
            x = up.forward(&x)?;
        }
        self.out.forward(&x)
    }
}

/// `F.interpolate(x, scale_factor=s, mode='bilinear', align_corners=False)` as two constant matrix products,
/// `A_h x A_w^T`, so that it has a gradient (candle's `upsample_bilinear2d` has none) and lowers to MatMul. The
/// weights follow torch's CPU kernel: source `(dst + 0.5) / s - 0.5` clamped at 0, the lower neighbour and the one
/// above it (the last row repeats), computed in the tensor's precision (f32 for f32, as torch's `opmath`).
pub fn bilinear_upsample(x: &Tensor, scale: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let ah = bilinear_matrix(h, scale, x.dtype(), x.device())?;
    let aw = bilinear_matrix(w, scale, x.dtype(), x.device())?;
    ah.broadcast_matmul(&x.broadcast_matmul(&aw.t()?)?)
}

/// The (n * scale, n) interpolation matrix of one axis.
pub fn bilinear_matrix(n: usize, scale: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let out = n * scale;
    let mut m = vec![0f64; out * n];
    for dst in 0..out {
        let (i0, i1, l0, l1) = if dtype == DType::F64 {
            let s = 1.0 / scale as f64;
            let src = (s * (dst as f64 + 0.5) - 0.5).max(0.0);
            let i0 = src as usize;
            let l1 = src - i0 as f64;
            (i0, i0 + usize::from(i0 < n - 1), 1.0 - l1, l1)
        } else {
            // torch: `static_cast<float>(1.0 / scale)`, then the source index in float.
            let s = (1.0 / scale as f64) as f32;
            let src = (s * (dst as f32 + 0.5) - 0.5).max(0.0);
            let i0 = src as usize;
            let l1 = src - i0 as f32;
            (i0, i0 + usize::from(i0 < n - 1), (1.0 - l1) as f64, l1 as f64)
        };
        m[dst * n + i0] += l0;
        m[dst * n + i1] += l1;
    }
    Tensor::from_vec(m, (out, n), device)?.to_dtype(dtype)
}

// ---- ONNX lowering (each mirrors the forward above; standard ops only) ----------------------------------

use adaptir_ops::graph::{Attr, GraphBuilder};

fn lower_leaky_relu(b: &mut dyn GraphBuilder, x: &str) -> Result<String> {
    b.op("LeakyRelu", &[x], vec![("alpha", Attr::Float(0.2))])
}

impl ResBlockDown {
    fn lower(&self, b: &mut dyn GraphBuilder, x: &str, hint: &str) -> Result<(String, String)> {
        let identity = self.shortcut.lower(b, x, &format!("{hint}.shortcut"))?;
        let y = self.conv_1.lower(b, x, &format!("{hint}.conv_1"))?;
        let y = lower_leaky_relu(b, &y)?;
        let y = self.conv_2.lower(b, &y, &format!("{hint}.conv_2"))?;
        let y = lower_leaky_relu(b, &y)?;
        let y = b.op("Add", &[&y, &identity], vec![])?;
        match &self.conv_down {
            Some(w) => {
                let w = b.constant(&format!("{hint}.conv_down.weight"), w)?;
                let attrs = vec![("pads", Attr::Ints(vec![1, 1, 1, 1])), ("strides", Attr::Ints(vec![2, 2]))];
                Ok((b.op("Conv", &[&y, &w], attrs)?, y))
            }
            None => Ok((y.clone(), y)),
        }
    }
}

impl ResBlockUp {
    fn lower(&self, b: &mut dyn GraphBuilder, x: &str, hint: &str) -> Result<String> {
        let identity = self.shortcut.lower(b, x, &format!("{hint}.shortcut"))?;
        let y = self.conv_1.lower(b, x, &format!("{hint}.conv_1"))?;
        let y = lower_leaky_relu(b, &y)?;
        let y = self.conv_2.lower(b, &y, &format!("{hint}.conv_2"))?;
        let y = lower_leaky_relu(b, &y)?;
        b.op("Add", &[&y, &identity], vec![])
    }
}

impl ConvTranspose2x2 {
    /// As the forward: a 1x1 conv to (o, a, b) channels, then DepthToSpace (CRD: channel `o 4 + a 2 + b` goes
    /// to pixel (2i + a, 2j + b) of channel o), then the bias. Standard ops every runtime of the matrix has.
    fn lower(&self, b: &mut dyn GraphBuilder, x: &str, hint: &str) -> Result<String> {
        // The variable's current values (as the forward uses them), not the copy taken at construction.
        let cin = self.raw.dim(0)?;
        let o4 = self.cout * 4;
        let map = self.raw.detach().reshape((cin, o4))?.t()?.contiguous()?;
        let w = b.constant(&format!("{hint}.weight"), &map.reshape((o4, cin, 1, 1))?)?;
        let y = b.op("Conv", &[x, &w], vec![])?;
        let y = b.op("DepthToSpace", &[&y], vec![("blocksize", Attr::Int(2)), ("mode", Attr::Str("CRD".into()))])?;
        let bias = b.constant(&format!("{hint}.bias"), &self.bias.reshape((1, self.cout, 1, 1))?)?;
        b.op("Add", &[&y, &bias], vec![])
    }
}

impl TailStage {
    fn lower(&self, b: &mut dyn GraphBuilder, x: &str, skip: &str, hint: &str) -> Result<String> {
        let (y, block) = match self {
            Self::Up(s) => (s.up.lower(b, x, &format!("{hint}.up"))?, &s.block),
            Self::Skip(s) => (s.conv.lower(b, x, &format!("{hint}.conv"))?, &s.block),
        };
        let cat = b.op("Concat", &[&y, skip], vec![("axis", Attr::Int(1))])?;
        block.lower(b, &cat, &format!("{hint}.block"))
    }
}

impl Head {
    /// (features, skips), as [`Head::forward`]; `hint` is the head's module name (`head_sr_x2`).
    pub fn lower(&self, b: &mut dyn GraphBuilder, x: &str, hint: &str) -> Result<(String, Vec<String>)> {
        let mut x = self.first.lower(b, x, &format!("{hint}.0"))?;
        let mut skips = vec![];
        for (i, block) in self.blocks.iter().enumerate() {
            let (y, skip) = block.lower(b, &x, &format!("{hint}.{}", i + 1))?;
            skips.push(skip);
            x = y;
        }
        Ok((self.last.lower(b, &x, &format!("{hint}.{}", HEAD_DEPTH + 1))?, skips))
    }
}

impl Tail {
    /// As [`Tail::forward`]; `hint` is the tail's module name (`tail_sr_x2`).
    pub fn lower(&self, b: &mut dyn GraphBuilder, x: &str, skips: &[String], hint: &str) -> Result<String> {
        let mut x = x.to_string();
        for (k, (stage, skip)) in self.stages.iter().zip(skips.iter().rev()).enumerate() {
            x = stage.lower(b, &x, skip, &format!("{hint}.{k}"))?;
        }
        let mut out_index = HEAD_DEPTH;
        if let Some(up) = &self.upsample {
            x = up.lower(b, &x, &format!("{hint}.{HEAD_DEPTH}"))?;
            out_index += 1;
        }
        self.out.lower(b, &x, &format!("{hint}.{out_index}"))
    }
}

/// [`bilinear_upsample`] of an (N, C, h, w) graph value: the same two constant matrices (f32), as MatMuls.
pub fn lower_bilinear_upsample(
    b: &mut dyn GraphBuilder,
    x: &str,
    (h, w): (usize, usize),
    scale: usize,
) -> Result<String> {
    let ah = bilinear_matrix(h, scale, DType::F32, &Device::Cpu)?;
    let awt = bilinear_matrix(w, scale, DType::F32, &Device::Cpu)?.t()?.contiguous()?;
    let ah = b.constant(&format!("bilinear_x{scale}.rows"), &ah)?;
    let awt = b.constant(&format!("bilinear_x{scale}.cols"), &awt)?;
    let y = b.op("MatMul", &[x, &awt], vec![])?;
    b.op("MatMul", &[&ah, &y], vec![])
}

#[cfg(test)]
mod tests {
    use super::*;
    use adaptir_ops::tolerance::{F32_REL, F64_REL};

    fn max_abs(t: &Tensor) -> f64 {
        t.to_dtype(DType::F64).and_then(|t| t.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()).unwrap_or(f64::NAN)
    }

    /// The transposed conv as a product equals candle's `conv_transpose2d` (torch's weight layout, stride 2).
    #[test]
    fn conv_transpose_2x2_equals_candle_conv_transpose2d() -> Result<()> {
        let dev = Device::Cpu;
        let (cin, cout) = (5, 3);
        let w = Tensor::randn(0f64, 1.0, (cin, cout, 2, 2), &dev)?;
        let bias = Tensor::randn(0f64, 1.0, cout, &dev)?;
        let x = Tensor::randn(0f64, 1.0, (2, cin, 4, 6), &dev)?;
        let vb = VarBuilder::from_tensors(
            [("weight".to_string(), w.clone()), ("bias".to_string(), bias.clone())].into(),
            DType::F64,
            &dev,
        );
        let ours = ConvTranspose2x2::new(vb, cin, cout)?.forward(&x)?;
        let want = x.conv_transpose2d(&w, 0, 0, 2, 1)?.broadcast_add(&bias.reshape((1, cout, 1, 1))?)?;
        assert_eq!(ours.dims(), &[2, cout, 8, 12]);
        assert!(max_abs(&(ours - &want)?) <= F64_REL * max_abs(&want));
        Ok(())
    }

    /// The bilinear matrices equal candle's `upsample_bilinear2d_with_scale` (torch's `scale_factor` semantics,
    /// align_corners false), f32, for every SR scale.
    #[test]
    fn bilinear_products_equal_candle_upsample() -> Result<()> {
        let x = Tensor::randn(0f32, 1.0, (1, 3, 7, 5), &Device::Cpu)?;
        for s in [2usize, 3, 4] {
            let ours = bilinear_upsample(&x, s)?;
            let want = x.upsample_bilinear2d_with_scale(s as f64, s as f64, false)?;
            assert_eq!(ours.dims(), want.dims());
            let err = max_abs(&(ours - &want)?);
            assert!(err <= F32_REL * max_abs(&want), "x{s}: {err:e}");
        }
        Ok(())
    }
}
