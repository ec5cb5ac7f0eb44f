//! Constant folding: a node whose inputs are all constants is evaluated once (with candle) and replaced by
//! an initialiser.
use super::{util, Pass};
use crate::compile::ir::{Attr, Graph, Node};
use candle_core::{Result, Tensor, D};

pub struct ConstantFolding;

/// Evaluate the ops the lowering emits on constants; `None` for anything else.
fn eval(n: &Node, ins: &[Tensor]) -> Result<Option<Tensor>> {
    let i64s = |t: &Tensor| t.to_vec1::<i64>();
    Ok(Some(match (n.op.as_str(), ins) {
        ("Identity", [a]) => a.clone(),
        ("MatMul", [a, b]) if a.rank() == 2 && b.rank() == 2 => a.matmul(b)?,
        ("Add", [a, b]) => a.broadcast_add(b)?,
        ("Sub", [a, b]) => a.broadcast_sub(b)?,
        ("Mul", [a, b]) => a.broadcast_mul(b)?,
        ("Div", [a, b]) => a.broadcast_div(b)?,
        ("Transpose", [a]) => match n.attrs.get("perm") {
            Some(Attr::Ints(p)) => a.permute(p.iter().map(|&v| v as usize).collect::<Vec<_>>())?.contiguous()?,
            _ => return Ok(None),
        },
        ("Reshape", [a, s]) => {
            let mut shape = i64s(s)?;
            if shape.contains(&0) {
                return Ok(None);
            }
            if let Some(k) = shape.iter().position(|&v| v == -1) {
                let known: i64 = shape.iter().filter(|&&v| v != -1).product();
                shape[k] = a.elem_count() as i64 / known.max(1);
            }
            a.reshape(shape.iter().map(|&v| v as usize).collect::<Vec<_>>())?
        }
        ("Concat", list) if !list.is_empty() => {
            let axis = util::attr_int(n, "axis", 0);
            let rank = list[0].rank() as i64;
            let axis = if axis < 0 { axis + rank } else { axis } as usize;
            Tensor::cat(list, axis)?
        }
        ("Neg", [a]) => a.neg()?,
        ("Sqrt", [a]) => a.sqrt()?,
        ("Unsqueeze", [a, axes]) if i64s(axes)?.len() == 1 => {
            let ax = i64s(axes)?[0];
            let ax = if ax < 0 { ax + a.rank() as i64 + 1 } else { ax } as usize;
            a.unsqueeze(ax)?
        }
        ("ReduceSum", [a]) => a.sum_keepdim(D::Minus1)?,
        _ => return Ok(None),
    }))
}

impl Pass for ConstantFolding {
    fn name(&self) -> &'static str {
        "constant-folding"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let outputs: Vec<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
        for i in 0..g.nodes.len() {
            let n = &g.nodes[i];
            if !n.domain.is_empty() || n.outputs.len() != 1 || outputs.contains(&n.outputs[0]) || n.op == "Constant" {
                continue;
            }
            if n.op == "ReduceSum" {
                continue; // its axes semantics are not evaluated here
            }
            let consts: Option<Vec<_>> = n.inputs.iter().map(|x| util::constant(g, x)).collect();
            let Some(consts) = consts else { continue };
            if consts.is_empty() {
                continue;
            }
            let ins = consts.iter().map(|c| util::to_tensor(c)).collect::<Result<Vec<_>>>()?;
            let Some(value) = eval(n, &ins)? else { continue };
            let c = util::from_tensor(&value)?;
            let out = n.outputs[0].clone();
            let name = util::add_constant(g, &format!("folded.{}", n.name.replace('/', ".")), c);
            util::replace_uses(g, &out, &name);
            g.nodes.remove(i);
            return Ok(true);
        }
        Ok(false)
    }
}
