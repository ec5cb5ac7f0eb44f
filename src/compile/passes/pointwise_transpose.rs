//! Move a 1x1 convolution across the layout change next to it, so that the full-width tensor is never
//! transposed: `Conv1x1(Transpose(x))` becomes `Transpose(MatMul(x, W^T) + b)`, and `Transpose(Conv1x1(y))`
//! becomes `MatMul(Transpose(y), W^T) + b`, when the transpose moves the channel axis between position 1 (NCHW)
//! and the last position (the host's channels-last layout).
//!
//! Why: AdaptIR reads the transformer's (H, W, N, E) tokens as an (N, E, H, W) image, squeezes E = 576 to
//! h = 24 channels with a 1x1 convolution and expands them back at the end. As lowered, each adapter transposed
//! two full-width (N, 576, 16, 16) tensors; after this pass only the h-channel tensors are transposed (24x smaller)
//! and the channel maps are MatMuls on the host layout, as the backbone's own linear maps are. (Measured: the
//! adapter overhead in ONNX Runtime did not change within the run-to-run spread, see BENCHMARKS.md; the pass
//! still saves that memory traffic.) A 1x1 convolution is the same linear map of the channel vector at every
//! position, so the rewrite is exact up to the summation order of the product.
use super::{util, Pass};
use crate::compile::ir::{Attr, Graph, Node};
use candle_core::Result;

pub struct PointwiseThroughTranspose;

/// (out, in) channels of a 1x1 convolution with default stride, padding, dilation
/// and one group, whose weight (and bias) are constants.
fn pointwise(g: &Graph, n: &Node) -> Option<(usize, usize)> {
    if n.op != "Conv" || !n.domain.is_empty() || n.inputs.len() < 2 || n.outputs.len() != 1 {
        return None;
    }
    let w = util::constant(g, &n.inputs[1])?;
    if w.dims.len() != 4 || w.dims[2] != 1 || w.dims[3] != 1 {
        return None;
    }
    if n.inputs.get(2).is_some_and(|b| util::constant(g, b).is_none()) {
        return None;
    }
    let default = |key: &str, v: i64| util::attr_ints(n, key).is_none_or(|a| a.iter().all(|&x| x == v));
    let plain = util::attr_int(n, "group", 1) == 1
        && default("pads", 0)
        && default("strides", 1)
        && default("dilations", 1)
        && n.attrs.keys().all(|k| ["group", "pads", "strides", "dilations", "kernel_shape"].contains(&k.as_str()));
    plain.then_some((w.dims[0], w.dims[1]))
}

fn perm(n: &Node) -> Option<Vec<i64>> {
    (n.op == "Transpose" && n.domain.is_empty() && n.inputs.len() == 1).then(|| util::attr_ints(n, "perm")).flatten()
}

impl PointwiseThroughTranspose {
    /// `x @ W^T (+ b)` nodes reading `x` and writing `out`; the weight becomes an (in, out) constant.
    fn channel_map(g: &mut Graph, conv: &Node, x: &str, out: &str) -> Result<Vec<Node>> {
        let Some(w) = util::constant(g, &conv.inputs[1]) else {
            candle_core::bail!("pointwise-through-transpose: the weight of {} is not a constant", conv.name);
        };
        let w = util::to_tensor(w)?;
        let (o, i) = (w.dim(0)?, w.dim(1)?);
        let wt = util::from_tensor(&w.reshape((o, i))?.t()?.contiguous()?)?;
        let wt = util::add_constant(g, &format!("{}_t", conv.inputs[1]), wt);
        let node = |name: String, op: &str, inputs: Vec<String>, output: String| Node {
            name,
            op: op.into(),
            domain: String::new(),
            inputs,
            outputs: vec![output],
            attrs: Default::default(),
        };
        Ok(match conv.inputs.get(2) {
            None => vec![node(format!("{}/MatMul", conv.name), "MatMul", vec![x.into(), wt], out.into())],
            Some(b) => {
                let mid = format!("{}/MatMul", conv.name);
                vec![
                    node(mid.clone(), "MatMul", vec![x.into(), wt], mid.clone()),
                    node(format!("{}/Add", conv.name), "Add", vec![mid, b.clone()], out.into()),
                ]
            }
        })
    }

    fn transpose(name: String, x: &str, out: &str, p: Vec<i64>) -> Node {
        Node {
            name,
            op: "Transpose".into(),
            domain: String::new(),
            inputs: vec![x.into()],
            outputs: vec![out.into()],
            attrs: [("perm".to_string(), Attr::Ints(p))].into_iter().collect(),
        }
    }
}

impl Pass for PointwiseThroughTranspose {
    fn name(&self) -> &'static str {
        "pointwise-through-transpose"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let producers = util::producers(g);
        let uses = util::use_counts(g);
        let sole = |v: &str| uses.get(v).copied() == Some(1);
        for ci in 0..g.nodes.len() {
            let conv = g.nodes[ci].clone();
            if pointwise(g, &conv).is_none() {
                continue;
            }
            // Entry: Conv1x1(Transpose(x)) where the transpose brings the last axis to position 1.
            if let Some(&ti) = producers.get(&conv.inputs[0]) {
                let t = g.nodes[ti].clone();
                if let Some(p) = perm(&t) {
                    let rank = p.len() as i64;
                    if p.get(1) == Some(&(rank - 1)) && sole(&t.outputs[0]) {
                        let mid = format!("{}/channels_last", conv.name);
                        let mut nodes = Self::channel_map(g, &conv, &t.inputs[0], &mid)?;
                        nodes.push(Self::transpose(format!("{}/Transpose", conv.name), &mid, &conv.outputs[0], p));
                        // The transpose comes before the conv in topological order: replace both at the conv.
                        g.nodes.splice(ci..ci + 1, nodes);
                        g.nodes.remove(ti);
                        return Ok(true);
                    }
                }
            }
            // Exit: Transpose(Conv1x1(y)) where the transpose brings axis 1 to the last position.
            if !sole(&conv.outputs[0]) {
                continue;
            }
            let Some(ti) = g.nodes.iter().position(|n| n.inputs.first() == Some(&conv.outputs[0])) else { continue };
            let t = g.nodes[ti].clone();
            let Some(p) = perm(&t) else { continue };
            if p.last() != Some(&1) {
                continue;
            }
            let mid = format!("{}/channels_last", conv.name);
            let mut nodes = vec![Self::transpose(format!("{}/Transpose", conv.name), &conv.inputs[0], &mid, p)];
            nodes.extend(Self::channel_map(g, &conv, &mid, &t.outputs[0])?);
            // The conv comes before the transpose: put the new nodes where the transpose was.
            g.nodes.splice(ti..ti + 1, nodes);
            g.nodes.remove(ci);
            return Ok(true);
        }
        Ok(false)
    }
}
