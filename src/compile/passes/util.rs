//! Helpers shared by the passes: constants as candle tensors and back, producers and consumers of values.
use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor};

use crate::compile::ir::{Attr, Constant, Data, Graph, Node};

pub fn to_tensor(c: &Constant) -> Result<Tensor> {
    let dev = &Device::Cpu;
    match &c.data {
        Data::F32(v) => Tensor::from_slice(v, c.dims.as_slice(), dev),
        Data::F64(v) => Tensor::from_slice(v, c.dims.as_slice(), dev),
        Data::I64(v) => Tensor::from_slice(v, c.dims.as_slice(), dev),
        Data::U8(v) => Tensor::from_slice(v, c.dims.as_slice(), dev),
        // candle has no i8: quantized weights are never folded.
        Data::I8(_) => candle_core::bail!("an int8 constant cannot be folded"),
        Data::F16(v) => {
            let h: Vec<half::f16> = v.iter().map(|b| half::f16::from_bits(*b)).collect();
            Tensor::from_slice(&h, c.dims.as_slice(), dev)
        }
    }
}

pub fn from_tensor(t: &Tensor) -> Result<Constant> {
    let dims = t.dims().to_vec();
    let flat = t.flatten_all()?;
    let data = match t.dtype() {
        DType::F32 => Data::F32(flat.to_vec1()?),
        DType::F64 => Data::F64(flat.to_vec1()?),
        DType::I64 => Data::I64(flat.to_vec1()?),
        DType::F16 => Data::F16(flat.to_vec1::<half::f16>()?.iter().map(|v| v.to_bits()).collect()),
        other => candle_core::bail!("constant of dtype {other:?}"),
    };
    Ok(Constant { dims, data })
}

/// A constant input's value, from an initialiser.
pub fn constant<'a>(g: &'a Graph, name: &str) -> Option<&'a Constant> {
    g.initializers.get(name)
}

/// A scalar f32 constant (any shape with one element).
pub fn scalar(g: &Graph, name: &str) -> Option<f32> {
    match &constant(g, name)?.data {
        Data::F32(v) if v.len() == 1 => Some(v[0]),
        _ => None,
    }
}

/// value name -> index of the node producing it.
pub fn producers(g: &Graph) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for o in &n.outputs {
            m.insert(o.clone(), i);
        }
    }
    m
}

/// value name -> how many node inputs (and graph outputs) read it.
pub fn use_counts(g: &Graph) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for n in &g.nodes {
        for i in &n.inputs {
            *m.entry(i.clone()).or_insert(0) += 1;
        }
    }
    for o in &g.outputs {
        *m.entry(o.name.clone()).or_insert(0) += 1;
    }
    m
}

/// The node producing `value`, if it is produced by a node read only once (safe to rewrite in place).
pub fn sole_producer(g: &Graph, value: &str) -> Option<usize> {
    let p = producers(g);
    let uses = use_counts(g);
    let i = *p.get(value)?;
    (uses.get(value).copied().unwrap_or(0) == 1).then_some(i)
}

/// Add an initialiser with a fresh name derived from `hint`.
pub fn add_constant(g: &mut Graph, hint: &str, c: Constant) -> String {
    let mut name = hint.to_string();
    let mut k = 1;
    while g.initializers.contains_key(&name) {
        name = format!("{hint}_{k}");
        k += 1;
    }
    g.initializers.insert(name.clone(), c);
    name
}

pub fn attr_int(n: &Node, key: &str, default: i64) -> i64 {
    match n.attrs.get(key) {
        Some(Attr::Int(v)) => *v,
        _ => default,
    }
}

pub fn attr_ints(n: &Node, key: &str) -> Option<Vec<i64>> {
    match n.attrs.get(key) {
        Some(Attr::Ints(v)) => Some(v.clone()),
        _ => None,
    }
}

/// Replace every read of `old` by `new` (node inputs; graph outputs are renamed at their producer instead).
pub fn replace_uses(g: &mut Graph, old: &str, new: &str) {
    for n in g.nodes.iter_mut() {
        for i in n.inputs.iter_mut() {
            if i == old {
                *i = new.to_string();
            }
        }
    }
}

/// Make the node at `keep` produce `value` (taking over the name), dropping the node at `drop`. Used when a
/// pass folds node `drop` (which produced `value`) into node `keep` (whose output fed it).
pub fn fold_into(g: &mut Graph, keep: usize, drop: usize) {
    let value = g.nodes[drop].outputs[0].clone();
    let old = g.nodes[keep].outputs[0].clone();
    g.nodes[keep].outputs[0] = value;
    replace_uses(g, &old, &g.nodes[keep].outputs[0].clone());
    g.nodes.remove(drop);
}
