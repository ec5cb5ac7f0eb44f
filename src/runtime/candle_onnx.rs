//! The second, pure-Rust evaluator: can `candle-onnx` (candle's ONNX interpreter, `simple_eval`) run a model?
//!
//! We do not depend on `candle-onnx` (its build needs `protoc`); instead this is the table of the ops its
//! evaluator implements, transcribed from `candle-onnx/src/eval.rs` (huggingface/candle, commit c87f0fa5, the
//! `match node.op_type` arms), and a check of a model's flattened graph (the graph's nodes plus the bodies of its
//! model-local functions, which is what `--inline-functions` writes) against it. `validate` reports the ops that
//! block it; where none does, adding the dependency and running it is the next step (docs/validation.md).
use std::collections::BTreeSet;

use crate::compile::ir::Graph;

/// The ops `candle_onnx::simple_eval` evaluates (candle-onnx eval.rs at huggingface/candle c87f0fa5).
pub const CANDLE_ONNX_OPS: &[&str] = &[
    "Abs",
    "Add",
    "ArgMax",
    "ArgMin",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Ceil",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Cos",
    "CumSum",
    "Div",
    "Dropout",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Floor",
    "Gather",
    "GatherElements",
    "Gelu",
    "Gemm",
    "Greater",
    "Identity",
    "If",
    "LSTM",
    "LeakyRelu",
    "Less",
    "Log",
    "LogSoftmax",
    "MatMul",
    "MaxPool",
    "Min",
    "Mul",
    "Neg",
    "Not",
    "Pad",
    "Pow",
    "RandomNormal",
    "RandomUniform",
    "Range",
    "ReduceL2",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Sign",
    "Sin",
    "Size",
    "Slice",
    "Softmax",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Where",
    "Xor",
];

/// What stops `candle-onnx` from evaluating a graph: ops it lacks, and ops it has but would compute wrongly here
/// (`ReduceMean` with its axes as an input, the opset-18 form we emit: candle-onnx reads only the opset-13
/// `axes` attribute and would reduce over every axis). Sorted, each listed once.
pub fn blockers(g: &Graph) -> Vec<String> {
    let mut out = BTreeSet::new();
    let nodes = g.nodes.iter().chain(g.functions.iter().flat_map(|f| f.nodes.iter()));
    let is_function = |domain: &str, op: &str| g.functions.iter().any(|f| f.domain == domain && f.name == op);
    for n in nodes {
        if !n.domain.is_empty() {
            // A call of a model-local function is flattened away; its body is checked as part of the functions.
            if !is_function(&n.domain, &n.op) {
                out.insert(format!("{}.{}", n.domain, n.op));
            }
            continue;
        }
        if !CANDLE_ONNX_OPS.contains(&n.op.as_str()) {
            out.insert(n.op.clone());
        } else if n.op == "ReduceMean" && n.inputs.len() > 1 {
            out.insert("ReduceMean (axes as an input, opset 18)".to_string());
        }
    }
    out.into_iter().collect()
}
