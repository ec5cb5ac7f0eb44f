//! Merge LoRA, SSF and FacT into the linear weights they adapt, by local algebra on constant weights
//! (`x @ C` is a `MatMul` with a constant right operand; `W^T` is stored that way):
//! - `(x @ C1) @ C2` -> `x @ (C1 C2)` (LoRA's two factors);
//! - `(x @ C) * s` -> `x @ (C s)` for a scalar s (LoRA's alpha / r) or a vector over the last dim (SSF's scale);
//! - `(x @ C + b) * g` -> `x @ (C g) + b g` (SSF after a biased linear);
//! - `x @ C1 + x @ C2` -> `x @ (C1 + C2)` and `(x @ C1 + b) + x @ C2` -> `x @ (C1 + C2) + b` (the adapted
//!   branch beside the frozen one);
//! - `(y + b1) + b2` -> `y + (b1 + b2)` for constant vectors;
//! - `LayerNormalization(x, w, b) * g` and `... + beta` -> `LayerNormalization(x, w g, b g + beta)` (SSF after
//!   a LayerNorm).
use super::{util, Pass};
use crate::compile::ir::Graph;
use candle_core::{Result, Tensor};

pub struct MergeLinear;

/// `MatMul(x, C)` with a constant 2-D C: (x, C).
fn matmul_const(g: &Graph, i: usize) -> Option<(String, Tensor)> {
    let n = &g.nodes[i];
    if n.op != "MatMul" {
        return None;
    }
    let c = util::constant(g, &n.inputs[1])?;
    if c.dims.len() != 2 {
        return None;
    }
    Some((n.inputs[0].clone(), util::to_tensor(c).ok()?))
}

/// A constant vector (or scalar) that broadcasts over the last dim only.
fn last_dim_vector(g: &Graph, name: &str, width: usize) -> Option<Tensor> {
    let c = util::constant(g, name)?;
    let n: usize = c.dims.iter().product();
    (n == 1 || (n == width && c.dims.last() == Some(&width)))
        .then(|| util::to_tensor(c).ok())?
        .map(|t| t.flatten_all().ok())?
}

fn set_matmul(g: &mut Graph, i: usize, x: &str, c: &Tensor) -> Result<()> {
    let name = util::add_constant(g, &format!("{}.merged", g.nodes[i].name.replace('/', ".")), util::from_tensor(c)?);
    g.nodes[i].inputs = vec![x.to_string(), name];
    Ok(())
}

/// `Add(x @ C, b)` at node `pi` with a constant `b` and `x @ C` read only here: (MatMul node, b's name, x, C).
fn biased_matmul(
    g: &Graph,
    pi: usize,
    sole: &dyn Fn(&str) -> Option<usize>,
) -> Option<(usize, String, String, Tensor)> {
    if g.nodes[pi].op != "Add" {
        return None;
    }
    let b_name = g.nodes[pi].inputs.iter().find(|v| util::constant(g, v).is_some()).cloned()?;
    let mi = sole(&other(g, pi, &b_name)?)?;
    let (x, c) = matmul_const(g, mi)?;
    Some((mi, b_name, x, c))
}

/// Node `keep` now computes what the outer node `i` did: it takes over `i`'s output, and `i` and the folded
/// branch `qi` are removed.
fn take_over(g: &mut Graph, keep: usize, i: usize, qi: usize) {
    let out = g.nodes[i].outputs[0].clone();
    g.nodes[keep].outputs[0] = out;
    let (hi, lo) = if i > qi { (i, qi) } else { (qi, i) };
    g.nodes.remove(hi);
    g.nodes.remove(lo);
}

/// The other input of a binary node, given one.
fn other(g: &Graph, i: usize, one: &str) -> Option<String> {
    let n = &g.nodes[i];
    match (n.inputs[0] == one, n.inputs[1] == one) {
        (true, false) => Some(n.inputs[1].clone()),
        (false, true) => Some(n.inputs[0].clone()),
        _ => None,
    }
}

impl Pass for MergeLinear {
    fn name(&self) -> &'static str {
        "merge-linear"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let producers = util::producers(g);
        let uses = util::use_counts(g);
        let sole = |v: &str| -> Option<usize> { (uses.get(v) == Some(&1)).then(|| producers.get(v).copied())? };
        for i in 0..g.nodes.len() {
            let n = g.nodes[i].clone();
            match n.op.as_str() {
                "MatMul" => {
                    // (x @ C1) @ C2
                    let Some((inner_x, c2)) = matmul_const(g, i) else { continue };
                    let Some(pi) = sole(&inner_x) else { continue };
                    let Some((x, c1)) = matmul_const(g, pi) else { continue };
                    set_matmul(g, pi, &x, &c1.matmul(&c2)?)?;
                    util::fold_into(g, pi, i);
                    return Ok(true);
                }
                "Mul" | "Add" => {
                    for (k, y) in n.inputs.iter().enumerate() {
                        let other_in = &n.inputs[1 - k];
                        let Some(pi) = sole(y) else { continue };
                        let p = g.nodes[pi].clone();
                        if n.op == "Mul" {
                            // (x @ C) * s
                            if let Some((x, c)) = matmul_const(g, pi) {
                                let Some(s) = last_dim_vector(g, other_in, c.dim(1)?) else { continue };
                                set_matmul(g, pi, &x, &c.broadcast_mul(&s)?)?;
                                util::fold_into(g, pi, i);
                                return Ok(true);
                            }
                            // (x @ C + b) * s
                            if let Some((mi, b_name, x, c)) = biased_matmul(g, pi, &sole) {
                                let Some(s) = last_dim_vector(g, other_in, c.dim(1)?) else { continue };
                                let Some(b) = util::constant(g, &b_name) else { continue };
                                let b = util::to_tensor(b)?;
                                set_matmul(g, mi, &x, &c.broadcast_mul(&s)?)?;
                                let nb = util::add_constant(
                                    g,
                                    &format!("{b_name}.scaled"),
                                    util::from_tensor(&b.broadcast_mul(&s)?)?,
                                );
                                g.nodes[pi].inputs = vec![g.nodes[mi].outputs[0].clone(), nb];
                                util::fold_into(g, pi, i);
                                return Ok(true);
                            }
                            // LayerNorm * s
                            if p.op == "LayerNormalization" && p.inputs.len() == 3 {
                                let (Some(w), Some(b)) =
                                    (util::constant(g, &p.inputs[1]), util::constant(g, &p.inputs[2]))
                                else {
                                    continue;
                                };
                                let (w, b) = (util::to_tensor(w)?, util::to_tensor(b)?);
                                let Some(s) = last_dim_vector(g, other_in, w.dim(0)?) else { continue };
                                let wn = util::add_constant(
                                    g,
                                    &format!("{}.w", p.name),
                                    util::from_tensor(&w.broadcast_mul(&s)?)?,
                                );
                                let bn = util::add_constant(
                                    g,
                                    &format!("{}.b", p.name),
                                    util::from_tensor(&b.broadcast_mul(&s)?)?,
                                );
                                g.nodes[pi].inputs = vec![p.inputs[0].clone(), wn, bn];
                                util::fold_into(g, pi, i);
                                return Ok(true);
                            }
                        } else {
                            // LayerNorm + beta, (y + b1) + b2
                            if let Some(beta) = util::constant(g, other_in) {
                                let beta = util::to_tensor(beta)?;
                                if p.op == "LayerNormalization" && p.inputs.len() == 3 {
                                    let Some(b) = util::constant(g, &p.inputs[2]) else { continue };
                                    let b = util::to_tensor(b)?;
                                    if beta.elem_count() != b.elem_count() && beta.elem_count() != 1 {
                                        continue;
                                    }
                                    let bn = util::add_constant(
                                        g,
                                        &format!("{}.b", p.name),
                                        util::from_tensor(&b.broadcast_add(&beta.flatten_all()?)?)?,
                                    );
                                    g.nodes[pi].inputs[2] = bn;
                                    util::fold_into(g, pi, i);
                                    return Ok(true);
                                }
                                if p.op == "Add" {
                                    let Some(b1_name) =
                                        p.inputs.iter().find(|v| util::constant(g, v).is_some()).cloned()
                                    else {
                                        continue;
                                    };
                                    let Some(b1) = util::constant(g, &b1_name) else { continue };
                                    let b1 = util::to_tensor(b1)?;
                                    if b1.dims().len() > 1 || beta.dims().len() > 1 {
                                        continue;
                                    }
                                    let sum = b1.broadcast_add(&beta)?;
                                    let nb = util::add_constant(g, &format!("{b1_name}.sum"), util::from_tensor(&sum)?);
                                    let pos = g.nodes[pi].inputs.iter().position(|v| *v == b1_name).unwrap_or(1);
                                    g.nodes[pi].inputs[pos] = nb;
                                    util::fold_into(g, pi, i);
                                    return Ok(true);
                                }
                            }
                            // x @ C1 + x @ C2, (x @ C1 + b) + x @ C2
                            let Some(qi) = sole(other_in) else { continue };
                            let Some((x2, c2)) = matmul_const(g, qi) else { continue };
                            if let Some((x1, c1)) = matmul_const(g, pi) {
                                if x1 == x2 && c1.dims() == c2.dims() {
                                    set_matmul(g, pi, &x1, &(c1 + c2)?)?;
                                    take_over(g, pi, i, qi);
                                    return Ok(true);
                                }
                            }
                            if let Some((mi, _, x1, c1)) = biased_matmul(g, pi, &sole) {
                                if x1 != x2 || c1.dims() != c2.dims() {
                                    continue;
                                }
                                set_matmul(g, mi, &x1, &(c1 + c2)?)?;
                                // The Add(b) now yields the sum.
                                take_over(g, pi, i, qi);
                                return Ok(true);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(false)
    }
}
