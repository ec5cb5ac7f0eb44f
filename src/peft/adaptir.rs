//! AdaptIR (Guo et al.): a heterogeneous mixture of experts added in parallel to the FFN, with a local
//! (low-rank depthwise conv), a frequency (amplitude / phase affine in the 2-D spectrum) and a channel
//! (attention pooling) branch. This is the official module, `net/ipt.py` and `net/edt.py` `AdaptIR`, with its
//! state-dict keys, its sizes and both layouts; DESIGN.md §2 has the exact maths.
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

use adaptir_ops::{amplitude, atan2, irfft2, polar, rfft2};

/// How the host model passes tokens to the adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// IPT: sequence-first tokens (L, N, C) on a square row-major grid, H = W = sqrt(L).
    Ipt,
    /// EDT: channels-last (N, H, W, C), any H and W.
    Edt,
}

/// Sizes of one adapter. The official formulas are in [`AdaptIrConfig::official`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AdaptIrConfig {
    /// Channels of the host model, C.
    pub dim: usize,
    /// Hidden width h of all three branches.
    pub hidden: usize,
    /// Rank r of the factorised depthwise 3x3 kernel (h x r times r x 9).
    pub rank: usize,
    /// Middle width of the attention-pooling MLP.
    pub pool_mid: usize,
    /// Middle width of the channel-gate MLP.
    pub gate_mid: usize,
    pub layout: Layout,
}

impl AdaptIrConfig {
    /// The official sizes: IPT h = C/24, gate h/8; EDT h = C/14, gate h/4; both r = h/2, pooling h/2.
    pub fn official(dim: usize, layout: Layout) -> Self {
        let (div, gate_div) = match layout {
            Layout::Ipt => (24, 8),
            Layout::Edt => (14, 4),
        };
        Self::with_hidden(dim, dim / div, gate_div, layout)
    }

    /// Official ratios around a chosen hidden width.
    pub fn with_hidden(dim: usize, hidden: usize, gate_div: usize, layout: Layout) -> Self {
        Self { dim, hidden, rank: hidden / 2, pool_mid: hidden / 2, gate_mid: hidden / gate_div, layout }
    }

    /// Every width must be at least 1 (the official code builds a 0-channel conv for h < 8 on IPT, then fails).
    pub fn validate(&self) -> std::result::Result<(), String> {
        let widths = [
            ("hidden", self.hidden, 2),
            ("rank", self.rank, 1),
            ("pool_mid", self.pool_mid, 1),
            ("gate_mid", self.gate_mid, 1),
            ("dim", self.dim, 1),
        ];
        for (name, v, min) in widths {
            if v < min {
                return Err(format!(
                    "AdaptIR {name} = {v} but must be at least {min} (dim {}, hidden {}, rank {}, pool_mid {}, gate_mid {})",
                    self.dim, self.hidden, self.rank, self.pool_mid, self.gate_mid
                ));
            }
        }
        Ok(())
    }

    /// Read the sizes back from an adapter's tensors (the official checkpoints carry no config).
    pub fn from_state_dict(sd: &crate::params::StateDict, prefix: &str, layout: Layout) -> Option<Self> {
        let dims = |k: &str| sd.get(&format!("{prefix}{k}")).map(|t| t.dims().to_vec());
        let head = dims("head.weight")?;
        let a = dims("conv_weight_A")?;
        let pool = dims("proj.0.weight")?;
        let gate = dims("channel_interaction.1.weight")?;
        Some(Self {
            dim: *head.get(1)?,
            hidden: *head.first()?,
            rank: *a.get(1)?,
            pool_mid: *pool.first()?,
            gate_mid: *gate.first()?,
            layout,
        })
    }

    /// Parameters of one adapter (BatchNorm running statistics are buffers, not parameters).
    pub fn num_params(&self) -> usize {
        let (c, h, r, p, g) = (self.dim, self.hidden, self.rank, self.pool_mid, self.gate_mid);
        (c * h + h)
            + 2 * h
            + (h * r + r * 9 + h)
            + 4 * h
            + (h + 1)
            + (h * p + p + p * h + h)
            + c * h
            + (h * g + g + g * h + h)
            + (h + 1)
    }
}

/// A 1x1 convolution applied as a matrix product over (N, Cin, P) pixels.
struct Pointwise {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Pointwise {
    fn new(vb: &VarBuilder, cin: usize, cout: usize, bias: bool, init: Init) -> Result<Self> {
        let weight = vb.get_with_hints((cout, cin, 1, 1), "weight", init)?.reshape((cout, cin))?;
        let bias = if bias {
            let bound = 1.0 / (cin as f64).sqrt();
            let b_init = match init {
                Init::Const(_) => init,
                _ => Init::Uniform { lo: -bound, up: bound },
            };
            Some(vb.get_with_hints(cout, "bias", b_init)?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// Channels last, any rank: (..., Cin) -> (..., Cout), as `x @ W^T + b` (the shared linear map).
    fn forward_last(&self, x: &Tensor) -> Result<Tensor> {
        adaptir_ops::frozen::linear(x, &self.weight, self.bias.as_ref())
    }

    /// (N, Cin, P) -> (N, Cout, P).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.weight.broadcast_matmul(x)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.unsqueeze(1)?),
            None => Ok(y),
        }
    }
}

/// BatchNorm2d with torch's train / eval behaviour: batch statistics (biased variance) in training, with the
/// running statistics updated by momentum 0.1 with the unbiased variance; running statistics in eval.
struct BatchNorm {
    /// Model path of this BatchNorm (`...adaptir.BN`), for naming its buffers.
    prefix: String,
    weight: Tensor,
    bias: Tensor,
    /// (running_mean, running_var): buffers, updated in training. Plain tensors behind a lock, not
    /// variables: a variable would make every activation downstream "tracked" in inference too.
    running: std::sync::Mutex<(Tensor, Tensor)>,
}

const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

impl BatchNorm {
    fn new(vb: &VarBuilder, c: usize) -> Result<Self> {
        let weight = vb.get_with_hints(c, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(c, "bias", Init::Const(0.0))?;
        // Buffers: copied out of the builder so that training never hands them to an optimiser.
        let running_mean = vb.get_with_hints(c, "running_mean", Init::Const(0.0))?.detach().copy()?;
        let running_var = vb.get_with_hints(c, "running_var", Init::Const(1.0))?.detach().copy()?;
        vb.get_with_hints_dtype((), "num_batches_tracked", Init::Const(0.0), DType::I64)?;
        let running = std::sync::Mutex::new((running_mean, running_var));
        Ok(Self { prefix: vb.prefix(), weight, bias, running })
    }

    fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        let r = self.running.lock().map_err(|_| candle_core::Error::Msg("BatchNorm lock poisoned".into()))?;
        Ok(vec![
            (format!("{}.running_mean", self.prefix), r.0.clone()),
            (format!("{}.running_var", self.prefix), r.1.clone()),
        ])
    }

    /// x: (N, C, P).
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (mean, var) = if train {
            let (n, _, p) = x.dims3()?;
            let mean = x.mean_keepdim(2)?.mean_keepdim(0)?; // (1, C, 1)
            let centred = x.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean_keepdim(2)?.mean_keepdim(0)?;
            let count = (n * p) as f64;
            let unbiased = if count > 1.0 { (var.detach() * (count / (count - 1.0)))? } else { var.detach() };
            let m = BN_MOMENTUM;
            let mut running =
                self.running.lock().map_err(|_| candle_core::Error::Msg("BatchNorm lock poisoned".into()))?;
            let rm = ((&running.0 * (1.0 - m))? + (mean.detach().flatten_all()? * m)?)?;
            let rv = ((&running.1 * (1.0 - m))? + (unbiased.flatten_all()? * m)?)?;
            *running = (rm, rv);
            (mean, var)
        } else {
            let running = self.running.lock().map_err(|_| candle_core::Error::Msg("BatchNorm lock poisoned".into()))?;
            let c = running.0.dim(0)?;
            (running.0.reshape((1, c, 1))?, running.1.reshape((1, c, 1))?)
        };
        let c = self.weight.dim(0)?;
        let scale = (var + BN_EPS)?.sqrt()?.recip()?.broadcast_mul(&self.weight.reshape((1, c, 1))?)?;
        x.broadcast_sub(&mean)?.broadcast_mul(&scale)?.broadcast_add(&self.bias.reshape((1, c, 1))?)
    }
}

/// A per-channel affine `w * x + b` (the official depthwise 1x1 convs `amp_fuse`, `pha_fuse`).
struct ChannelAffine {
    weight: Tensor,
    bias: Tensor,
}

impl ChannelAffine {
    fn new(vb: &VarBuilder, c: usize) -> Result<Self> {
        let weight = vb.get_with_hints((c, 1, 1, 1), "weight", Init::Const(1.0))?.reshape((1, c, 1, 1))?;
        let bias = vb.get_with_hints(c, "bias", Init::Const(0.0))?.reshape((1, c, 1, 1))?;
        Ok(Self { weight, bias })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

struct Mlp {
    fc1: candle_nn::Linear,
    fc2: candle_nn::Linear,
}

/// PyTorch's default Linear / Conv init: weight and bias uniform in +-1/sqrt(fan_in).
fn default_init(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform { lo: -bound, up: bound }
}

fn linear(vb: VarBuilder, cin: usize, cout: usize) -> Result<candle_nn::Linear> {
    let w = vb.get_with_hints((cout, cin), "weight", default_init(cin))?;
    let b = vb.get_with_hints(cout, "bias", default_init(cin))?;
    Ok(candle_nn::Linear::new(w, Some(b)))
}

/// Intermediate tensors of one forward, named as in the parity fixtures, for localising a mismatch.
#[derive(Default)]
pub struct Trace {
    pub x0: Option<Tensor>,
    pub spec_re: Option<Tensor>,
    pub spec_im: Option<Tensor>,
    pub pha: Option<Tensor>,
    pub global: Option<Tensor>,
    pub local: Option<Tensor>,
    pub channel_score: Option<Tensor>,
}

pub struct AdaptIr {
    pub config: AdaptIrConfig,
    /// Model path of this adapter (`body.encoder.layers.0.adaptir`), for naming exported constants.
    prefix: String,
    head: Pointwise,
    bn: BatchNorm,
    conv_a: Tensor,
    conv_b: Tensor,
    conv_bias: Tensor,
    amp_fuse: ChannelAffine,
    pha_fuse: ChannelAffine,
    compress: Pointwise,
    proj: Mlp,
    tail: Pointwise,
    gate_down: Pointwise,
    gate_up: Pointwise,
    spatial: Pointwise,
}

impl AdaptIr {
    /// Build from `vb` (official sub-keys). Fresh initialisation follows the official one: the output conv
    /// and both gate convs start at zero, so a new adapter adds exactly 0.
    pub fn new(vb: VarBuilder, config: AdaptIrConfig) -> Result<Self> {
        config.validate().map_err(candle_core::Error::Msg)?;
        let AdaptIrConfig { dim: c, hidden: h, rank: r, pool_mid, gate_mid, .. } = config;
        let kaiming = |fan_in: usize| default_init(fan_in);
        Ok(Self {
            config,
            prefix: vb.prefix(),
            head: Pointwise::new(&vb.pp("head"), c, h, true, kaiming(c))?,
            bn: BatchNorm::new(&vb.pp("BN"), h)?,
            conv_a: vb.get_with_hints((h, r), "conv_weight_A", kaiming(r))?,
            conv_b: vb.get_with_hints((r, 9), "conv_weight_B", kaiming(9))?,
            conv_bias: vb.get_with_hints(h, "conv_bias", Init::Const(0.0))?,
            amp_fuse: ChannelAffine::new(&vb.pp("amp_fuse"), h)?,
            pha_fuse: ChannelAffine::new(&vb.pp("pha_fuse"), h)?,
            compress: Pointwise::new(&vb.pp("compress"), h, 1, true, kaiming(h))?,
            proj: Mlp { fc1: linear(vb.pp("proj.0"), h, pool_mid)?, fc2: linear(vb.pp("proj.2"), pool_mid, h)? },
            tail: Pointwise::new(&vb.pp("tail"), h, c, false, Init::Const(0.0))?,
            gate_down: Pointwise::new(&vb.pp("channel_interaction.1"), h, gate_mid, true, kaiming(h))?,
            gate_up: Pointwise::new(&vb.pp("channel_interaction.3"), gate_mid, h, true, Init::Const(0.0))?,
            spatial: Pointwise::new(&vb.pp("spatial_interaction"), h, 1, true, Init::Const(0.0))?,
        })
    }

    /// The BatchNorm running statistics, named by their model path.
    pub fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        self.bn.buffers()
    }

    /// Forward in the host's layout; `train` selects BatchNorm's batch statistics.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_traced(x, train, None)
    }

    pub fn forward_traced(&self, x: &Tensor, train: bool, trace: Option<&mut Trace>) -> Result<Tensor> {
        // Both hosts hold channels last, and the head and tail are 1x1 convolutions, i.e. products over channels:
        // they run in the host's layout, so only the h-channel tensors (C / 24 of the host's on IPT) change layout.
        // Permuting the host's C channels instead cost a strided copy of the whole activation on the way in and a
        // strided add on the way out (ipt-base, batch 16: one adapter's forward 35 -> 17-22 ms, backward 82 -> 54 ms;
        // BENCHMARKS.md "the training step, kernels and layout").
        let (n, hgt, wid) = self.grid(x)?;
        let x0 = self.to_channels_first(&self.head.forward_last(x)?, n, hgt, wid)?;
        let y = self.forward_nchw(&x0, n, hgt, wid, train, trace)?;
        self.tail.forward_last(&self.from_channels_first(&y, n, hgt, wid)?)
    }

    /// The token grid (N, H, W) of a host tensor.
    fn grid(&self, x: &Tensor) -> Result<(usize, usize, usize)> {
        match self.config.layout {
            Layout::Ipt => {
                let (l, n, _) = x.dims3()?;
                let side = (l as f64).sqrt().round() as usize;
                if side * side != l {
                    candle_core::bail!("AdaptIR (IPT layout): {l} tokens do not form a square grid");
                }
                Ok((n, side, side))
            }
            Layout::Edt => {
                let (n, h, w, _) = x.dims4()?;
                Ok((n, h, w))
            }
        }
    }

    /// Host layout (channels last, any width) -> (N, channels, H*W), contiguous.
    fn to_channels_first(&self, x: &Tensor, n: usize, h: usize, w: usize) -> Result<Tensor> {
        let c = x.dim(x.rank() - 1)?;
        match self.config.layout {
            Layout::Ipt => x.permute((1, 2, 0))?.contiguous(),
            Layout::Edt => x.reshape((n, h * w, c))?.transpose(1, 2)?.contiguous(),
        }
    }

    /// (N, channels, H*W) -> host layout (channels last).
    fn from_channels_first(&self, y: &Tensor, n: usize, h: usize, w: usize) -> Result<Tensor> {
        let c = y.dim(1)?;
        match self.config.layout {
            Layout::Ipt => y.permute((2, 0, 1)),
            Layout::Edt => y.transpose(1, 2)?.reshape((n, h, w, c)),
        }
    }

    /// The frequency expert on x0 (N, h, H, W): affine on amplitude and phase of the ortho spectrum, back
    /// to space, abs. Public so that the FFT edge cases can be checked on crafted inputs.
    pub fn frequency_branch(&self, x0: &Tensor) -> Result<Tensor> {
        Ok(self.frequency_parts(x0)?.0)
    }

    /// (output, spectrum re, spectrum im, phase).
    fn frequency_parts(&self, x0: &Tensor) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let (_, _, hgt, wid) = x0.dims4()?;
        let (re, im) = rfft2(x0)?;
        let pha = atan2(&im, &re)?;
        let mag = self.amp_fuse.forward(&amplitude(&re, &im)?)?;
        let (zr, zi) = polar(&mag, &self.pha_fuse.forward(&pha)?)?;
        let global = irfft2(&zr, &zi, (hgt, wid))?.abs()?;
        Ok((global, re, im, pha))
    }

    /// The head's output x (N, h, H*W) -> the experts' mix scaled by the channel score, (N, h, H*W): everything
    /// between the head and the tail.
    fn forward_nchw(
        &self,
        x: &Tensor,
        n: usize,
        hgt: usize,
        wid: usize,
        train: bool,
        mut trace: Option<&mut Trace>,
    ) -> Result<Tensor> {
        let h = self.config.hidden;
        let x0 = self.bn.forward_t(x, train)?; // (N, h, P)
        let x0_img = x0.reshape((n, h, hgt, wid))?;

        // Local expert: depthwise 3x3 conv with the factorised kernel A @ B.
        let kernel = self.conv_a.matmul(&self.conv_b)?.reshape((h, 1, 3, 3))?;
        let local = x0_img.conv2d(&kernel, 1, 1, 1, h)?.broadcast_add(&self.conv_bias.reshape((1, h, 1, 1))?)?;

        let (global, re, im, pha) = self.frequency_parts(&x0_img)?;

        // Channel expert: attention pooling over positions, then an MLP; a raw scale (no sigmoid).
        let logits = self.compress.forward(&x0)?; // (N, 1, P)
        let weights = candle_nn::ops::softmax(&logits, D::Minus1)?;
        let pooled = x0.broadcast_mul(&weights)?.sum(2)?; // (N, h)
        let score = self.proj.fc2.forward(&self.proj.fc1.forward(&pooled)?.gelu_erf()?)?; // (N, h)

        // Ensemble: channel gate from the frequency output, spatial gate from the local output.
        let global_p = global.reshape((n, h, hgt * wid))?;
        let local_p = local.reshape((n, h, hgt * wid))?;
        let gap = global_p.mean_keepdim(2)?;
        let cg = candle_nn::ops::sigmoid(&self.gate_up.forward(&self.gate_down.forward(&gap)?.gelu_erf()?)?)?;
        let sg = candle_nn::ops::sigmoid(&self.spatial.forward(&local_p)?)?;
        let mixed = (local_p.broadcast_mul(&cg)? + global_p.broadcast_mul(&sg)?)?;
        let y = mixed.broadcast_mul(&score.unsqueeze(2)?)?;

        if let Some(t) = trace.as_deref_mut() {
            *t = Trace {
                x0: Some(x0_img),
                spec_re: Some(re),
                spec_im: Some(im),
                pha: Some(pha),
                global: Some(global),
                local: Some(local),
                channel_score: Some(score),
            };
        }
        Ok(y)
    }
}

/// The AdaptIR method: one adapter beside the FFN of every encoder and decoder layer, with the official
/// keys `body.{encoder,decoder}.layers.{i}.adaptir.*`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptIrMethodConfig {
    /// Hidden width h; `None`: the official C / 24. Rank, pooling and gate widths follow the official ratios.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<usize>,
}

pub struct AdaptIrMethod {
    pub config: AdaptIrMethodConfig,
    pub sizes: AdaptIrConfig,
}

impl AdaptIrMethod {
    pub fn new(config: AdaptIrMethodConfig, host: &crate::hooks::HostDims) -> std::result::Result<Self, String> {
        // The official layouts and ratios: IPT's (L, N, C) sequence with h = C/24 and gate h/8; EDT's
        // (N, H, W, C) grid with h = C/14 and gate h/4.
        let layout = if host.is_swin() { Layout::Edt } else { Layout::Ipt };
        let sizes = match config.hidden {
            None => AdaptIrConfig::official(host.embed, layout),
            Some(h) => AdaptIrConfig::with_hidden(host.embed, h, if host.is_swin() { 4 } else { 8 }, layout),
        };
        sizes.validate()?;
        Ok(Self { config, sizes })
    }

    /// Exactly these sizes (read from an official checkpoint's keys).
    pub fn with_sizes(sizes: AdaptIrConfig) -> Self {
        Self { config: AdaptIrMethodConfig { hidden: Some(sizes.hidden) }, sizes }
    }
}

/// The adapter of one layer and the side of the host's token grid (IPT's patch grid, EDT's body grid).
struct AdaptIrHooks(AdaptIr, usize);

impl crate::hooks::LayerHooks for AdaptIrHooks {
    fn acts_at(&self, _site: crate::hooks::Site) -> bool {
        false
    }

    fn beside_ffn(&self, x: &Tensor, train: bool) -> Result<Option<Tensor>> {
        self.0.forward_t(x, train).map(Some)
    }

    fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        self.0.buffers()
    }

    fn lower_beside_ffn(&self, b: &mut dyn GraphBuilder, x: &str) -> Result<Option<String>> {
        let side = self.1;
        self.0.lower(b, x, (side, side), "adaptir").map(Some)
    }
}

impl super::Method for AdaptIrMethod {
    fn entry(&self) -> &'static super::MethodEntry {
        &ENTRY
    }
    fn config(&self) -> serde_json::Value {
        serde_json::to_value(self.config).unwrap_or_default()
    }
    fn width_knob(&self) -> Option<&'static str> {
        Some("hidden")
    }
    fn build(&self, vb: VarBuilder, host: &crate::hooks::HostDims) -> Result<crate::hooks::MethodModules> {
        let layers = host
            .layers()
            .iter()
            .map(|l| {
                let m = AdaptIr::new(vb.pp(l.prefix()).pp("adaptir"), self.sizes)?;
                let side = (host.tokens as f64).sqrt().round() as usize;
                Ok(Box::new(AdaptIrHooks(m, side)) as Box<dyn crate::hooks::LayerHooks>)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(crate::hooks::MethodModules { layers })
    }
}

pub const ENTRY: super::MethodEntry = super::MethodEntry {
    name: "adaptir",
    summary:
        "AdaptIR: local, frequency and channel experts beside every FFN (official sizes: h = C/24 on IPT, C/14 on EDT)",
    from_config: |c, host| {
        let config = super::parse_config(c)?;
        Ok(Box::new(AdaptIrMethod::new(config, host).map_err(|m| format!("configuration: {m}"))?))
    },
};

// ---- ONNX lowering (mirrors `forward_nchw`, eval mode) ---------------------------------------------------

use adaptir_ops::graph::{Attr, GraphBuilder};

impl Pointwise {
    /// As a 1x1 `Conv` on (N, Cin, H, W).
    fn lower(&self, b: &mut dyn GraphBuilder, x: &str, hint: &str) -> Result<String> {
        let (cout, cin) = self.weight.dims2()?;
        let w = b.constant(&format!("{hint}.weight"), &self.weight.reshape((cout, cin, 1, 1))?)?;
        match &self.bias {
            Some(bias) => {
                let c = b.constant(&format!("{hint}.bias"), bias)?;
                b.op("Conv", &[x, &w, &c], vec![])
            }
            None => b.op("Conv", &[x, &w], vec![]),
        }
    }
}

impl ChannelAffine {
    fn lower(&self, b: &mut dyn GraphBuilder, x: &str, hint: &str) -> Result<String> {
        let w = b.constant(&format!("{hint}.weight"), &self.weight)?;
        let c = b.constant(&format!("{hint}.bias"), &self.bias)?;
        let y = b.op("Mul", &[x, &w], vec![])?;
        b.op("Add", &[&y, &c], vec![])
    }
}

impl AdaptIr {
    /// Lower the frequency expert on x0 (N, h, H, W) (public for the FFT edge-case checks).
    pub fn lower_frequency_branch(
        &self,
        b: &mut dyn GraphBuilder,
        x0: &str,
        (hgt, wid): (usize, usize),
        hint: &str,
    ) -> Result<String> {
        let (re, im) = adaptir_ops::dft::lower_rfft2(b, x0, (hgt, wid))?;
        let pha = adaptir_ops::atan2::lower(b, &im, &re)?;
        let mag = adaptir_ops::amplitude::lower(b, &re, &im)?;
        let mag = self.amp_fuse.lower(b, &mag, &format!("{hint}.amp_fuse"))?;
        let pha = self.pha_fuse.lower(b, &pha, &format!("{hint}.pha_fuse"))?;
        let (zr, zi) = adaptir_ops::polar::lower(b, &mag, &pha)?;
        let g = adaptir_ops::dft::lower_irfft2(b, &zr, &zi, (hgt, wid))?;
        b.op("Abs", &[&g], vec![])
    }

    /// Lower the adapter for a graph value in the host layout; `grid` is (H, W) and `hint` its model path.
    pub fn lower(&self, b: &mut dyn GraphBuilder, x: &str, (hgt, wid): (usize, usize), scope: &str) -> Result<String> {
        let AdaptIrConfig { dim: c, hidden: h, .. } = self.config;
        let (c, h, hw) = (c as i64, h as i64, (hgt * wid) as i64);
        b.push_scope(scope);
        // Constants are named by their official key.
        let hint = self.prefix.as_str();
        // Host layout -> (N, C, H, W). For IPT the tokens are first viewed as (H, W, N, C) (free), so that one
        // transpose moves the channel axis: the `pointwise-through-transpose` pass then turns the head's 1x1
        // convolution into a MatMul on the host layout and transposes only its h-channel output.
        let img = match self.config.layout {
            Layout::Ipt => {
                let s = b.constant_i64("hwnc", &[hgt as i64, wid as i64, -1, c])?;
                let grid = b.op("Reshape", &[x, &s], vec![])?;
                b.op("Transpose", &[&grid], vec![("perm", Attr::Ints(vec![2, 3, 0, 1]))])?
            }
            Layout::Edt => b.op("Transpose", &[x], vec![("perm", Attr::Ints(vec![0, 3, 1, 2]))])?,
        };
        let x0 = self.head.lower(b, &img, &format!("{hint}.head"))?;
        let (mean, var) = {
            let r = self.bn.running.lock().map_err(|_| candle_core::Error::Msg("BatchNorm lock poisoned".into()))?;
            (r.0.clone(), r.1.clone())
        };
        let bn: Vec<String> =
            [(&self.bn.weight, "weight"), (&self.bn.bias, "bias"), (&mean, "running_mean"), (&var, "running_var")]
                .iter()
                .map(|(t, n)| b.constant(&format!("{hint}.BN.{n}"), t))
                .collect::<Result<_>>()?;
        let x0 = b.op(
            "BatchNormalization",
            &[&x0, &bn[0], &bn[1], &bn[2], &bn[3]],
            vec![("epsilon", Attr::Float(BN_EPS as f32))],
        )?;

        // Local expert: the factorised kernel A @ B, reshaped to a depthwise 3x3 kernel (folded by a pass).
        let a = b.constant(&format!("{hint}.conv_weight_A"), &self.conv_a)?;
        let bb = b.constant(&format!("{hint}.conv_weight_B"), &self.conv_b)?;
        let k = b.op("MatMul", &[&a, &bb], vec![])?;
        let ks = b.constant_i64("dw_kernel_shape", &[h, 1, 3, 3])?;
        let k = b.op("Reshape", &[&k, &ks], vec![])?;
        let kb = b.constant(&format!("{hint}.conv_bias"), &self.conv_bias)?;
        let local =
            b.op("Conv", &[&x0, &k, &kb], vec![("group", Attr::Int(h)), ("pads", Attr::Ints(vec![1, 1, 1, 1]))])?;

        let global = self.lower_frequency_branch(b, &x0, (hgt, wid), hint)?;

        // Channel expert: attention pooling, then the MLP.
        let logits = self.compress.lower(b, &x0, &format!("{hint}.compress"))?;
        let s1 = b.constant_i64("pool_logits_shape", &[-1, 1, hw])?;
        let logits = b.op("Reshape", &[&logits, &s1], vec![])?;
        let weights = b.op("Softmax", &[&logits], vec![("axis", Attr::Int(-1))])?;
        let sh = b.constant_i64("flat_shape", &[-1, h, hw])?;
        let x0f = b.op("Reshape", &[&x0, &sh], vec![])?;
        let weighted = b.op("Mul", &[&x0f, &weights], vec![])?;
        let last = b.constant_i64("axis_last", &[-1])?;
        let pooled = b.op("ReduceSum", &[&weighted, &last], vec![("keepdims", Attr::Int(0))])?;
        let fc = |l: &candle_nn::Linear| (l.weight().clone(), l.bias().cloned());
        let p = crate::linear::lower_linear(b, &pooled, &fc(&self.proj.fc1), &format!("{hint}.proj.0"))?;
        let p = b.op("Gelu", &[&p], vec![])?;
        let score = crate::linear::lower_linear(b, &p, &fc(&self.proj.fc2), &format!("{hint}.proj.2"))?;

        // Ensemble.
        let axes = b.constant_i64("axes_hw", &[2, 3])?;
        let gap = b.op("ReduceMean", &[&global, &axes], vec![("keepdims", Attr::Int(1))])?;
        let cg = self.gate_down.lower(b, &gap, &format!("{hint}.channel_interaction.1"))?;
        let cg = b.op("Gelu", &[&cg], vec![])?;
        let cg = self.gate_up.lower(b, &cg, &format!("{hint}.channel_interaction.3"))?;
        let cg = b.op("Sigmoid", &[&cg], vec![])?;
        let sg = self.spatial.lower(b, &local, &format!("{hint}.spatial_interaction"))?;
        let sg = b.op("Sigmoid", &[&sg], vec![])?;
        let l_term = b.op("Mul", &[&local, &cg], vec![])?;
        let g_term = b.op("Mul", &[&global, &sg], vec![])?;
        let mixed = b.op("Add", &[&l_term, &g_term], vec![])?;
        let s4 = b.constant_i64("score_shape", &[-1, h, 1, 1])?;
        let score = b.op("Reshape", &[&score, &s4], vec![])?;
        let mixed = b.op("Mul", &[&mixed, &score], vec![])?;
        let y = self.tail.lower(b, &mixed, &format!("{hint}.tail"))?;
        // (N, C, H, W) -> host layout (for IPT through (H, W, N, C), mirroring the entry).
        let out = match self.config.layout {
            Layout::Ipt => {
                let y = b.op("Transpose", &[&y], vec![("perm", Attr::Ints(vec![2, 3, 0, 1]))])?;
                let s = b.constant_i64("lnc", &[hw, -1, c])?;
                b.op("Reshape", &[&y, &s], vec![])
            }
            Layout::Edt => b.op("Transpose", &[&y], vec![("perm", Attr::Ints(vec![0, 2, 3, 1]))]),
        };
        b.pop_scope();
        out
    }
}
