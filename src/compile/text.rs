//! A stable text dump of the IR, for snapshot tests and for reading what the compiler produced.
use std::fmt::Write;

use super::ir::{Attr, Dim, ElemType, Graph, Node, ValueInfo};

fn elem(e: ElemType) -> &'static str {
    match e {
        ElemType::F32 => "f32",
        ElemType::F16 => "f16",
        ElemType::F64 => "f64",
        ElemType::I64 => "i64",
        ElemType::I8 => "i8",
        ElemType::U8 => "u8",
    }
}

fn dims(d: &[Dim]) -> String {
    d.iter()
        .map(|d| match d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Sym(s) => s.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn value(v: &ValueInfo) -> String {
    format!("{}: {}[{}]", v.name, elem(v.elem), dims(&v.shape))
}

/// FNV-1a of the bytes: identifies a constant's contents without printing them.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
}

fn attr(a: &Attr) -> String {
    match a {
        Attr::Int(v) => v.to_string(),
        Attr::Ints(v) => format!("{v:?}"),
        Attr::Float(v) => format!("{v:e}"),
        Attr::Floats(v) => format!("{v:?}"),
        Attr::Str(s) => format!("{s:?}"),
        Attr::Tensor(c) => format!("tensor {}[{:?}] #{:016x}", elem(c.data.elem()), c.dims, fnv(&c.data.raw_bytes())),
    }
}

fn node(n: &Node, indent: &str, out: &mut String) {
    let op = if n.domain.is_empty() { n.op.clone() } else { format!("{}.{}", n.domain, n.op) };
    let attrs: Vec<String> = n.attrs.iter().map(|(k, v)| format!("{k}={}", attr(v))).collect();
    let attrs = if attrs.is_empty() { String::new() } else { format!(" {{{}}}", attrs.join(", ")) };
    let _ = writeln!(out, "{indent}{} = {op}({}){attrs}  # {}", n.outputs.join(", "), n.inputs.join(", "), n.name);
}

/// The dump with a content hash of every constant.
pub fn dump(g: &Graph) -> String {
    dump_with(g, true)
}

/// The dump without constant contents: structure, names, types and shapes only (stable when folded constants
/// differ in their last bits between CPUs).
pub fn dump_structure(g: &Graph) -> String {
    dump_with(g, false)
}

fn dump_with(g: &Graph, hashes: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "graph {}", g.name);
    for v in &g.inputs {
        let _ = writeln!(s, "input {}", value(v));
    }
    for v in &g.outputs {
        let _ = writeln!(s, "output {}", value(v));
    }
    for (k, v) in &g.metadata {
        let _ = writeln!(s, "metadata {k} = {v}");
    }
    for (name, c) in &g.initializers {
        let hash = if hashes { format!(" #{:016x}", fnv(&c.data.raw_bytes())) } else { String::new() };
        let _ = writeln!(s, "initializer {name}: {}{:?}{hash}", elem(c.data.elem()), c.dims);
    }
    for f in &g.functions {
        let _ = writeln!(s, "function {}.{}({}) -> ({})", f.domain, f.name, f.inputs.join(", "), f.outputs.join(", "));
        for n in &f.nodes {
            node(n, "  ", &mut s);
        }
    }
    for n in &g.nodes {
        node(n, "", &mut s);
    }
    s
}
