//! Fold the MeanShift convolutions and the rgb-range scalings into their neighbours:
//! - a scalar `Mul` / `Div` whose only reader is a `Conv` input scales that conv's weight
//!   (`conv(s x) = (s W) * x + b`; zero padding stays zero);
//! - a scalar `Mul` / `Div` of a `Conv`'s output scales its weight and bias;
//! - a 1x1 `Conv` (no padding, no groups) reading another `Conv`'s output composes with it:
//!   `W = W2 W1` over channels, `b = W2 b1 + b2`.
//!
//! The sub-mean conv takes in the x255 before it; the add-mean conv and the /255 after it merge into the tail's
//! last conv. (The sub-mean conv itself cannot move into the padded head conv: padding would no longer be zero.)
use super::{util, Pass};
use crate::compile::ir::Graph;
use candle_core::{Result, Tensor};

pub struct FoldMeanShift;

fn is_plain_1x1(g: &Graph, i: usize) -> bool {
    let n = &g.nodes[i];
    let w = n.inputs.get(1).and_then(|w| util::constant(g, w));
    n.op == "Conv"
        && util::attr_int(n, "group", 1) == 1
        && util::attr_ints(n, "pads").map_or(true, |p| p.iter().all(|&v| v == 0))
        && w.is_some_and(|w| w.dims.len() == 4 && w.dims[2] == 1 && w.dims[3] == 1)
}

fn conv_params(g: &Graph, i: usize) -> Result<Option<(Tensor, Option<Tensor>)>> {
    let n = &g.nodes[i];
    let Some(w) = n.inputs.get(1).and_then(|w| util::constant(g, w)) else { return Ok(None) };
    let b = match n.inputs.get(2) {
        Some(b) => match util::constant(g, b) {
            Some(c) => Some(util::to_tensor(c)?),
            None => return Ok(None),
        },
        None => None,
    };
    Ok(Some((util::to_tensor(w)?, b)))
}

fn set_conv(g: &mut Graph, i: usize, w: &Tensor, b: Option<&Tensor>) -> Result<()> {
    let hint = g.nodes[i].name.replace('/', ".");
    let wn = util::add_constant(g, &format!("{hint}.weight_folded"), util::from_tensor(w)?);
    let bn = match b {
        Some(b) => Some(util::add_constant(g, &format!("{hint}.bias_folded"), util::from_tensor(b)?)),
        None => None,
    };
    let n = &mut g.nodes[i];
    n.inputs.truncate(1);
    n.inputs.push(wn);
    n.inputs.extend(bn);
    Ok(())
}

/// The scalar factor of a `Mul` / `Div` by a constant (and which input is the variable one).
fn scale_of(g: &Graph, i: usize) -> Option<(f64, usize)> {
    let n = &g.nodes[i];
    match n.op.as_str() {
        "Mul" => match (util::scalar(g, &n.inputs[0]), util::scalar(g, &n.inputs[1])) {
            (_, Some(s)) => Some((s as f64, 0)),
            (Some(s), _) => Some((s as f64, 1)),
            _ => None,
        },
        "Div" => util::scalar(g, &n.inputs[1]).map(|s| (1.0 / s as f64, 0)),
        _ => None,
    }
}

impl Pass for FoldMeanShift {
    fn name(&self) -> &'static str {
        "fold-mean-shift"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let producers = util::producers(g);
        let uses = util::use_counts(g);
        for i in 0..g.nodes.len() {
            // Scalar before a conv.
            if let Some((s, var)) = scale_of(g, i) {
                let out = g.nodes[i].outputs[0].clone();
                if uses.get(&out) == Some(&1) {
                    if let Some(ci) = g.nodes.iter().position(|n| n.op == "Conv" && n.inputs[0] == out) {
                        if let Some((w, b)) = conv_params(g, ci)? {
                            set_conv(g, ci, &(w * s)?, b.as_ref())?;
                            let x = g.nodes[i].inputs[var].clone();
                            g.nodes[ci].inputs[0] = x;
                            g.nodes.remove(i);
                            return Ok(true);
                        }
                    }
                }
                // Scalar after a conv.
                let x = g.nodes[i].inputs[var].clone();
                if let (Some(ci), true) = (producers.get(&x).copied(), uses.get(&x) == Some(&1)) {
                    if g.nodes[ci].op == "Conv" {
                        if let Some((w, b)) = conv_params(g, ci)? {
                            let b = b.map(|b| b * s).transpose()?;
                            set_conv(g, ci, &(w * s)?, b.as_ref())?;
                            util::fold_into(g, ci, i);
                            return Ok(true);
                        }
                    }
                }
            }
            // 1x1 conv after a conv.
            if is_plain_1x1(g, i) {
                let x = g.nodes[i].inputs[0].clone();
                let Some(&pi) = producers.get(&x) else { continue };
                if g.nodes[pi].op != "Conv" || uses.get(&x) != Some(&1) {
                    continue;
                }
                let (Some((w2, b2)), Some((w1, b1))) = (conv_params(g, i)?, conv_params(g, pi)?) else { continue };
                let (c2, c1) = (w2.dim(0)?, w2.dim(1)?);
                let w2m = w2.reshape((c2, c1))?;
                let (o1, i1, kh, kw) = w1.dims4()?;
                let w = w2m.matmul(&w1.reshape((o1, i1 * kh * kw))?)?.reshape((c2, i1, kh, kw))?;
                let b1 = b1.unwrap_or(Tensor::zeros(c1, w1.dtype(), w1.device())?);
                let mut b = w2m.matmul(&b1.unsqueeze(1)?)?.squeeze(1)?;
                if let Some(b2) = b2 {
                    b = (b + b2)?;
                }
                set_conv(g, pi, &w, Some(&b))?;
                util::fold_into(g, pi, i);
                return Ok(true);
            }
        }
        Ok(false)
    }
}
