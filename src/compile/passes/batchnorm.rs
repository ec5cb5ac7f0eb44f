//! Fold an inference-mode `BatchNormalization` into the convolution before it:
//! `W' = W * s`, `b' = (b - mean) * s + beta` with `s = gamma / sqrt(var + eps)` per output channel.
use super::{util, Pass};
use crate::compile::ir::{Attr, Graph};
use candle_core::{Result, Tensor};

pub struct FoldBatchNorm;

impl Pass for FoldBatchNorm {
    fn name(&self) -> &'static str {
        "fold-batchnorm"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        for bi in 0..g.nodes.len() {
            let bn = &g.nodes[bi];
            if bn.op != "BatchNormalization" || bn.inputs.len() != 5 || bn.outputs.len() != 1 {
                continue;
            }
            let Some(ci) = util::sole_producer(g, &bn.inputs[0]) else { continue };
            let conv = &g.nodes[ci];
            if conv.op != "Conv" {
                continue;
            }
            let params: Option<Vec<_>> = bn.inputs[1..].iter().map(|n| util::constant(g, n)).collect();
            let (Some(params), Some(w)) = (params, util::constant(g, &conv.inputs[1])) else { continue };
            let bias = match conv.inputs.get(2) {
                Some(b) => match util::constant(g, b) {
                    Some(c) => Some(util::to_tensor(c)?),
                    None => continue,
                },
                None => None,
            };
            let eps = match bn.attrs.get("epsilon") {
                Some(Attr::Float(e)) => *e as f64,
                _ => 1e-5,
            };
            let p = params.iter().map(|c| util::to_tensor(c)).collect::<Result<Vec<_>>>()?;
            let (gamma, beta, mean, var) = (&p[0], &p[1], &p[2], &p[3]);
            let s = gamma.broadcast_div(&(var + eps)?.sqrt()?)?;
            let w = util::to_tensor(w)?;
            let cout = w.dim(0)?;
            let w2 = w.broadcast_mul(&s.reshape((cout, 1, 1, 1))?)?;
            let b = bias.unwrap_or(Tensor::zeros(cout, w.dtype(), w.device())?);
            let b2 = ((b - mean)? * &s)?.broadcast_add(beta)?;
            let hint = conv.name.replace('/', ".");
            let wn = util::add_constant(g, &format!("{hint}.weight_bn"), util::from_tensor(&w2)?);
            let bname = util::add_constant(g, &format!("{hint}.bias_bn"), util::from_tensor(&b2)?);
            let conv = &mut g.nodes[ci];
            conv.inputs.truncate(1);
            conv.inputs.push(wn);
            conv.inputs.push(bname);
            util::fold_into(g, ci, bi);
            return Ok(true);
        }
        Ok(false)
    }
}
