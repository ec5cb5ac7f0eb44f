//! Fold AdaptIR's factorised local-expert kernel: `Conv(x, Reshape(MatMul(A, B)))` with constant A and B
//! becomes a `Conv` with one constant depthwise kernel.
use super::{util, Pass};
use crate::compile::ir::Graph;
use candle_core::Result;

pub struct LimKernel;

impl Pass for LimKernel {
    fn name(&self) -> &'static str {
        "lim-kernel"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let producers = util::producers(g);
        for ci in 0..g.nodes.len() {
            let conv = &g.nodes[ci];
            if conv.op != "Conv" || conv.inputs.len() < 2 || util::attr_int(conv, "group", 1) == 1 {
                continue;
            }
            let Some(&ri) = producers.get(&conv.inputs[1]) else { continue };
            let reshape = &g.nodes[ri];
            if reshape.op != "Reshape" {
                continue;
            }
            let Some(&mi) = producers.get(&reshape.inputs[0]) else { continue };
            let matmul = &g.nodes[mi];
            if matmul.op != "MatMul" {
                continue;
            }
            let (Some(a), Some(b), Some(shape)) = (
                util::constant(g, &matmul.inputs[0]),
                util::constant(g, &matmul.inputs[1]),
                util::constant(g, &reshape.inputs[1]),
            ) else {
                continue;
            };
            let k = util::to_tensor(a)?.matmul(&util::to_tensor(b)?)?;
            let dims: Vec<usize> = util::to_tensor(shape)?.to_vec1::<i64>()?.iter().map(|&d| d as usize).collect();
            let kernel = util::from_tensor(&k.reshape(dims)?)?;
            let name = util::add_constant(g, &format!("{}.kernel", conv.name.replace('/', ".")), kernel);
            g.nodes[ci].inputs[1] = name;
            return Ok(true); // the MatMul and Reshape are now dead
        }
        Ok(false)
    }
}
