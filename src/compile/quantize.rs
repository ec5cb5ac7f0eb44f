//! Static INT8 quantization of an exported graph (`export --int8 --calibrate DIR`), in ONNX's QDQ form: the
//! graph keeps its float operators and gains `QuantizeLinear` / `DequantizeLinear` pairs that say where values
//! are 8-bit, which every runtime of the matrix reads (ONNX Runtime fuses them into integer kernels).
//!
//! What is quantized ([`plan`]): the backbone's MatMul and Conv nodes with a constant f32 weight whose input and
//! output channel counts are both at least [`MIN_CHANNELS`]. So the transformer's projections and FFNs, the
//! heads' residual convs and the upsamplers are; the first conv (3 input channels) and the last (3 outputs), the
//! attention products (no constant weight) and everything inside the adapter (`/adaptir/` nodes: tiny, and its
//! spectral branch keeps its exact-zero numerics) stay f32. The export may leave more sites f32 when the file would
//! be too far from the f32 model (`runtime::calibrate::choose_sites`, which measures it).
//!
//! How ([`apply`]): weights symmetric per output channel in 7 bits (zero point 0, values in `[-63, 63]`, scale
//! `max |w| / 63`: [`WEIGHT_MAX`] says why not 8); the input
//! activation of each node asymmetric uint8 per tensor from the calibrated range (widened to hold 0, so that
//! zero padding is exact). A Conv's output is quantized as well, because ONNX Runtime fuses `DQ -> Conv -> Q`
//! into `QLinearConv` and leaves a Conv without the trailing `Q` in f32; a MatMul's output stays f32
//! (`DQ -> MatMul` becomes `MatMulIntegerToFloat`). One `Q -> DQ` pair per quantized tensor, shared by all its
//! consumers. The calibration itself (running the f32 graph on real images) is `runtime::calibrate`.
use std::collections::{BTreeMap, BTreeSet};

use adaptir_ops::graph::KEEP_PRECISION_PREFIX;

use super::ir::{Attr, Constant, Data, Graph, Node};
use crate::error::{Error, Result};

/// Channel counts below this stay f32 (the image-facing first and last convs have 3).
pub const MIN_CHANNELS: usize = 16;

/// The largest int8 weight magnitude. Not 127: x86 CPUs without VNNI (AVX2, AVX-512 before VNNI) run ONNX Runtime's
/// and OpenVINO's u8 x s8 products with `vpmaddubsw`, which adds each pair of neighbouring byte products in a
/// saturating int16; with weights up to 127 a pair reaches 2 * 255 * 127 = 64770 and is clipped (measured: 0.05 % of
/// the pair sums of the shipped lr4-noise30 file, 23 of its 25 products, `scripts/int8_saturation.py`; the derain
/// file then lost 0.13 dB on such a CPU). With 63, a pair is at most 2 * 255 * 63 = 32130 and every CPU computes
/// the same exact int32 sums, for 0.5-1 dB less agreement with the f32 model on VNNI CPUs (lr4-noise30 54.3 -> 53.4
/// dB; lowlight, whose brightening amplifies every error, 45.8 -> 41.8 dB: docs/compiler.md "INT8").
/// ONNX Runtime's own quantizer calls this `reduce_range`.
pub const WEIGHT_MAX: i8 = 63;

/// Calibrated (min, max) of each activation tensor, by name.
pub type Ranges = BTreeMap<String, (f32, f32)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiteOp {
    MatMul,
    Conv,
}

/// One node to quantize.
#[derive(Clone, Debug)]
pub struct Site {
    pub node: String,
    pub op: SiteOp,
    pub weight: String,
    /// The activation input (calibrated).
    pub input: String,
    /// A Conv's output (calibrated); `None` for a MatMul.
    pub output: Option<String>,
}

/// The nodes [`apply`] quantizes, and the tensors whose ranges it needs.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub sites: Vec<Site>,
}

impl Plan {
    /// Every tensor to calibrate, once each, sorted.
    pub fn activations(&self) -> Vec<String> {
        let mut s = BTreeSet::new();
        for site in &self.sites {
            s.insert(site.input.clone());
            if let Some(o) = &site.output {
                s.insert(o.clone());
            }
        }
        s.into_iter().collect()
    }
}

/// What [`apply`] did, for the export report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuantReport {
    pub matmuls: usize,
    pub convs: usize,
    /// Activation tensors given a Q/DQ pair.
    pub activations: usize,
    /// Weight values now int8.
    pub int8_weights: usize,
    /// Weight values left f32 (the nodes the plan skips, and every other constant).
    pub f32_weights: usize,
    /// Sites of the plan left f32 by the accuracy check (`runtime::calibrate::choose_sites`), and the PSNR of the
    /// output from the f32 model's on the calibration patches, with them and with every site quantized (filled in
    /// by the export, which runs the graphs).
    pub kept_f32: Vec<String>,
    pub psnr_db: f64,
    pub psnr_all_db: f64,
}

/// The sites of `g` (the rule of the module docs).
pub fn plan(g: &Graph) -> Plan {
    let mut sites = vec![];
    for n in &g.nodes {
        let op = match n.op.as_str() {
            "MatMul" => SiteOp::MatMul,
            "Conv" => SiteOp::Conv,
            _ => continue,
        };
        if !n.domain.is_empty() || n.name.contains("/adaptir/") || n.inputs.len() < 2 {
            continue;
        }
        let Some(w) = g.initializers.get(&n.inputs[1]) else { continue };
        if !matches!(w.data, Data::F32(_)) || n.inputs[1].starts_with(KEEP_PRECISION_PREFIX) {
            continue;
        }
        let (cin, cout) = match (op, w.dims.as_slice()) {
            (SiteOp::MatMul, [k, m]) => (*k, *m),
            (SiteOp::Conv, [o, i, ..]) if w.dims.len() == 4 => (*i, *o),
            _ => continue,
        };
        if cin < MIN_CHANNELS || cout < MIN_CHANNELS {
            continue;
        }
        // A grouped conv's weight has I / group input channels; the per-channel scheme holds, but keep it simple.
        if op == SiteOp::Conv && n.attrs.get("group").is_some_and(|g| *g != Attr::Int(1)) {
            continue;
        }
        sites.push(Site {
            node: n.name.clone(),
            op,
            weight: n.inputs[1].clone(),
            input: n.inputs[0].clone(),
            output: (op == SiteOp::Conv).then(|| n.outputs[0].clone()),
        });
    }
    Plan { sites }
}

/// Symmetric int8 per output channel in `[-WEIGHT_MAX, WEIGHT_MAX]`: (values, scales). `axis` is the output
/// channel's axis (1 for a MatMul's (K, N) weight, 0 for a Conv's (O, I, kh, kw)).
pub fn quantize_weight(w: &[f32], dims: &[usize], axis: usize) -> (Vec<i8>, Vec<f32>) {
    let channels = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let channel_of = |i: usize| (i / inner) % channels;
    let mut max = vec![0.0f32; channels];
    for (i, &v) in w.iter().enumerate() {
        let c = channel_of(i);
        max[c] = max[c].max(v.abs());
    }
    // An all-zero channel gets scale 1 (its values are 0 whatever the scale; ONNX needs a positive scale).
    let top = f32::from(WEIGHT_MAX);
    let scales: Vec<f32> = max.iter().map(|&m| if m > 0.0 { m / top } else { 1.0 }).collect();
    let q = w.iter().enumerate().map(|(i, &v)| (v / scales[channel_of(i)]).round().clamp(-top, top) as i8).collect();
    (q, scales)
}

/// Asymmetric uint8 parameters (scale, zero point) for values in `(lo, hi)`, the range widened to hold 0.
pub fn activation_params(lo: f32, hi: f32) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    let zp = (-lo / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zp)
}

fn node(name: String, op: &str, inputs: Vec<String>, outputs: Vec<String>, axis: Option<i64>) -> Node {
    Node {
        name,
        op: op.into(),
        domain: String::new(),
        inputs,
        outputs,
        attrs: axis.map(|a| ("axis".to_string(), Attr::Int(a))).into_iter().collect(),
    }
}

/// Rewrite `g` by `plan` with the calibrated `ranges` (every tensor of [`Plan::activations`] must have one).
pub fn apply(g: &mut Graph, plan: &Plan, ranges: &Ranges) -> Result<QuantReport> {
    let mut report = QuantReport::default();
    // Activation tensor -> its dequantized name, with the Q/DQ nodes to insert right after its producer.
    let mut dq_of: BTreeMap<String, String> = BTreeMap::new();
    let mut after: BTreeMap<String, Vec<Node>> = BTreeMap::new();
    for name in plan.activations() {
        let &(lo, hi) = ranges
            .get(&name)
            .ok_or_else(|| Error::invalid(format!("int8: tensor `{name}` has no calibrated range")))?;
        if !lo.is_finite() || !hi.is_finite() {
            return Err(Error::invalid(format!(
                "int8: tensor `{name}` took non-finite values on the calibration images ({lo}, {hi})"
            )));
        }
        let (scale, zp) = activation_params(lo, hi);
        let (s, z, q, dq) = (
            format!("{name}.q_scale"),
            format!("{name}.q_zero"),
            format!("{name}.quantized"),
            format!("{name}.dequantized"),
        );
        g.initializers.insert(s.clone(), Constant::f32(vec![], vec![scale]));
        g.initializers.insert(z.clone(), Constant { dims: vec![], data: Data::U8(vec![zp]) });
        let nodes = vec![
            node(
                format!("{name}/QuantizeLinear"),
                "QuantizeLinear",
                vec![name.clone(), s.clone(), z.clone()],
                vec![q.clone()],
                None,
            ),
            node(format!("{name}/DequantizeLinear"), "DequantizeLinear", vec![q, s, z], vec![dq.clone()], None),
        ];
        after.insert(name.clone(), nodes);
        dq_of.insert(name, dq);
        report.activations += 1;
    }
    // Weights: int8 initialiser + a DequantizeLinear in front of the node.
    let mut before: BTreeMap<String, Node> = BTreeMap::new();
    let site_nodes: BTreeSet<&str> = plan.sites.iter().map(|s| s.node.as_str()).collect();
    for site in &plan.sites {
        let c = g
            .initializers
            .get(&site.weight)
            .ok_or_else(|| Error::invalid(format!("int8: weight `{}` is gone", site.weight)))?;
        let Data::F32(w) = &c.data else {
            return Err(Error::invalid(format!("int8: weight `{}` is not f32", site.weight)));
        };
        let axis = if site.op == SiteOp::MatMul { 1 } else { 0 };
        let (q, scales) = quantize_weight(w, &c.dims, axis);
        let dims = c.dims.clone();
        let channels = scales.len();
        let (wq, ws, wz, wd) = (
            format!("{}.int8", site.weight),
            format!("{}.int8_scale", site.weight),
            format!("{}.int8_zero", site.weight),
            format!("{}.dequantized/{}", site.weight, site.node),
        );
        report.int8_weights += q.len();
        g.initializers.insert(wq.clone(), Constant { dims, data: Data::I8(q) });
        g.initializers.insert(ws.clone(), Constant::f32(vec![channels], scales));
        g.initializers.insert(wz.clone(), Constant { dims: vec![channels], data: Data::I8(vec![0; channels]) });
        before.insert(
            site.node.clone(),
            node(
                format!("{}/DequantizeLinear_w", site.node),
                "DequantizeLinear",
                vec![wq, ws, wz],
                vec![wd.clone()],
                Some(axis as i64),
            ),
        );
        match site.op {
            SiteOp::MatMul => report.matmuls += 1,
            SiteOp::Conv => report.convs += 1,
        }
        let n = g
            .nodes
            .iter_mut()
            .find(|n| n.name == site.node)
            .ok_or_else(|| Error::invalid(format!("int8: node `{}` is gone", site.node)))?;
        n.inputs[1] = wd;
    }
    // Consumers read the dequantized activations: the sites' inputs, and every reader of a quantized Conv output
    // (so that the Conv is followed by its Q, as QLinearConv fusion needs).
    let conv_outputs: BTreeSet<&str> = plan.sites.iter().filter_map(|s| s.output.as_deref()).collect();
    for n in g.nodes.iter_mut() {
        for (k, i) in n.inputs.iter_mut().enumerate() {
            let Some(dq) = dq_of.get(i.as_str()) else { continue };
            let reads_as_site_input = site_nodes.contains(n.name.as_str()) && k == 0;
            if reads_as_site_input || conv_outputs.contains(i.as_str()) {
                *i = dq.clone();
            }
        }
    }
    // Graph outputs keep their f32 producers (a quantized tensor that is also an output stays readable).
    let mut nodes = Vec::with_capacity(g.nodes.len() + 3 * plan.sites.len());
    let inputs: Vec<String> = g.inputs.iter().map(|v| v.name.clone()).collect();
    for name in &inputs {
        nodes.extend(after.remove(name).unwrap_or_default());
    }
    for n in std::mem::take(&mut g.nodes) {
        if let Some(dqw) = before.remove(&n.name) {
            nodes.push(dqw);
        }
        let outs = n.outputs.clone();
        nodes.push(n);
        for o in outs {
            nodes.extend(after.remove(&o).unwrap_or_default());
        }
    }
    if let Some(name) = after.keys().next() {
        return Err(Error::invalid(format!("int8: tensor `{name}` is produced by no node and is no graph input")));
    }
    g.nodes = nodes;
    // Weights no node reads any more (the f32 originals) go.
    let read: BTreeSet<String> = g.nodes.iter().flat_map(|n| n.inputs.iter().cloned()).collect();
    g.initializers.retain(|k, _| read.contains(k));
    report.f32_weights = g.initializers.values().filter(|c| matches!(c.data, Data::F32(_))).map(|c| c.data.len()).sum();
    g.check().map_err(|e| Error::invalid(format!("int8: the quantized graph is malformed: {e}")))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_round_per_output_channel_and_activations_hold_zero() {
        // (K=2, N=3) MatMul weight: channel = column.
        // (Values away from rounding ties: 1.5 / (2 / 63) = 47.25, 0.1 / (0.5 / 63) = 12.6.)
        let w = [1.5, -0.5, 0.0, -2.0, 0.1, 0.0];
        let (q, s) = quantize_weight(&w, &[2, 3], 1);
        assert_eq!(s, vec![2.0 / 63.0, 0.5 / 63.0, 1.0]);
        assert_eq!(q, vec![47, -63, 0, -63, 13, 0]);
        // (O=2, I=1, 1, 2) Conv weight: channel = first axis.
        let (q, s) = quantize_weight(&[0.25, -1.0, 3.0, 1.0], &[2, 1, 1, 2], 0);
        assert_eq!(s, vec![1.0 / 63.0, 3.0 / 63.0]);
        assert_eq!(q, vec![16, -63, 63, 21]);
        // A range that excludes 0 is widened to hold it, and 0 maps to an exact level.
        let (scale, zp) = activation_params(0.5, 2.0);
        assert_eq!((scale, zp), (2.0 / 255.0, 0));
        let (scale, zp) = activation_params(-1.0, 3.0);
        assert_eq!(zp, 64);
        assert!((scale - 4.0 / 255.0).abs() < f32::EPSILON);
    }
}
