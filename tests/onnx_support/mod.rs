//! Small hand-built IR graphs shared by the ONNX writer/reader tests and the ONNX Runtime tests.
#![allow(dead_code)]
use std::collections::BTreeMap;

use adaptir::compile::ir::{Attr, Constant, Dim, ElemType, Function, Graph, Node, ValueInfo, CUSTOM_DOMAIN};

pub fn node(name: &str, op: &str, inputs: &[&str], outputs: &[&str]) -> Node {
    Node {
        name: name.into(),
        op: op.into(),
        domain: String::new(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
        attrs: BTreeMap::new(),
    }
}

pub fn value(name: &str, shape: Vec<Dim>) -> ValueInfo {
    ValueInfo { name: name.into(), elem: ElemType::F32, shape }
}

/// Deterministic pseudo-random values in [-1, 1) (a fixed LCG: no RNG crate needed for shapes this small).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `output = Relu(input @ w + b)`, input (N, 4), w (4, 3), b (3); metadata set.
pub fn mlp() -> Graph {
    let mut g = Graph { name: "mlp".into(), ..Default::default() };
    g.inputs.push(value("input", vec![Dim::Sym("N".into()), Dim::Fixed(4)]));
    g.outputs.push(value("output", vec![Dim::Sym("N".into()), Dim::Fixed(3)]));
    g.initializers.insert("w".into(), Constant::f32(vec![4, 3], values(12, 1)));
    g.initializers.insert("b".into(), Constant::f32(vec![3], values(3, 2)));
    g.nodes.push(node("mm", "MatMul", &["input", "w"], &["t0"]));
    g.nodes.push(node("add", "Add", &["t0", "b"], &["t1"]));
    g.nodes.push(node("relu", "Relu", &["t1"], &["output"]));
    g.metadata.insert("task".into(), "derain".into());
    g.metadata.insert("adapter".into(), "derain.safetensors".into());
    g.metadata.insert("tool_version".into(), "adaptir test".into());
    g
}

/// `output = Gelu(LayerNormalization(input, gamma, beta; axis=-1, epsilon=1e-5))`, input (N, 5, 8).
pub fn layer_norm_gelu() -> Graph {
    let mut g = Graph { name: "ln_gelu".into(), ..Default::default() };
    let shape = vec![Dim::Sym("N".into()), Dim::Fixed(5), Dim::Fixed(8)];
    g.inputs.push(value("input", shape.clone()));
    g.outputs.push(value("output", shape));
    g.initializers.insert("gamma".into(), Constant::f32(vec![8], values(8, 3).iter().map(|v| 1.0 + 0.5 * v).collect()));
    g.initializers.insert("beta".into(), Constant::f32(vec![8], values(8, 4)));
    let mut ln = node("ln", "LayerNormalization", &["input", "gamma", "beta"], &["h"]);
    ln.attrs.insert("axis".into(), Attr::Int(-1));
    ln.attrs.insert("epsilon".into(), Attr::Float(1e-5));
    g.nodes.push(ln);
    let mut gelu = node("gelu", "Gelu", &["h"], &["output"]);
    gelu.attrs.insert("approximate".into(), Attr::Str("none".into()));
    g.nodes.push(gelu);
    g
}

/// A model-local function `ai.adaptir.ScaledSwish(x, s) = x * Sigmoid(x * s)`, called on input (N, 2, 3) with
/// an initialiser `s` (3,), then `Transpose(perm=[0, 2, 1])` -> output (N, 3, 2).
pub fn function_graph() -> Graph {
    let mut g = Graph { name: "function".into(), ..Default::default() };
    g.inputs.push(value("input", vec![Dim::Sym("N".into()), Dim::Fixed(2), Dim::Fixed(3)]));
    g.outputs.push(value("output", vec![Dim::Sym("N".into()), Dim::Fixed(3), Dim::Fixed(2)]));
    g.initializers.insert("s".into(), Constant::f32(vec![3], vec![0.5, -1.5, 2.0]));
    g.functions.push(Function {
        name: "ScaledSwish".into(),
        domain: CUSTOM_DOMAIN.into(),
        inputs: vec!["x".into(), "s".into()],
        outputs: vec!["y".into()],
        nodes: vec![
            node("xs", "Mul", &["x", "s"], &["xs_out"]),
            node("sig", "Sigmoid", &["xs_out"], &["sig_out"]),
            node("y", "Mul", &["x", "sig_out"], &["y"]),
        ],
    });
    let mut call = node("swish", "ScaledSwish", &["input", "s"], &["h"]);
    call.domain = CUSTOM_DOMAIN.into();
    g.nodes.push(call);
    let mut tr = node("transpose", "Transpose", &["h"], &["output"]);
    tr.attrs.insert("perm".into(), Attr::Ints(vec![0, 2, 1]));
    g.nodes.push(tr);
    g.metadata.insert("backbone".into(), "none".into());
    g
}

/// A fresh empty temp folder for one test (under the target dir, removed first if left over).
pub fn temp_dir(test: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("adaptir-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}
