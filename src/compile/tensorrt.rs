//! The TensorRT check of an exported graph, against TensorRT's own published ONNX operator support: the
//! support matrix of ONNX-TensorRT 10.1 GA (`docs/operators.md` of github.com/onnx/onnx-tensorrt at commit
//! 96e781103cfc4adf4a6bb557e94bac8e693f6f4c, Apache-2.0, vendored unchanged as `tensorrt-operators-10.1.md`).
//!
//! TensorRT itself cannot be installed in this workplace (its PyPI package downloads the libraries from
//! NVIDIA's index at install time), so this reads the file as TensorRT's parser would judge it on paper:
//! - no model-local functions and no custom domain (TensorRT needs a plugin for those);
//! - every op is one the matrix marks `Y`, at a type its "Supported Types" column lists (types are inferred
//!   through the graph: Cast / CastLike set them, comparisons give BOOL, Shape gives INT64);
//! - no DOUBLE anywhere (the matrix allows it only by casting it down to FLOAT, which is not the model the user
//!   exported), nor as a Cast target;
//! - the restrictions that can be read off a graph: `axes` of Slice / Squeeze / Pad / Reduce* an initializer,
//!   Unsqueeze's axes constant, LayerNormalization with only its first output.
use std::collections::{BTreeMap, HashMap};

use super::ir::{Attr, Data, ElemType, Graph, Node};

/// The vendored support matrix.
pub const OPERATORS_MD: &str = include_str!("tensorrt-operators-10.1.md");
/// Which release of the matrix, for reports.
pub const MATRIX: &str =
    "ONNX-TensorRT 10.1 GA operator support matrix (onnx/onnx-tensorrt@96e7811, docs/operators.md)";

/// One row of the matrix.
#[derive(Clone, Debug)]
pub struct Support {
    pub supported: bool,
    pub types: Vec<String>,
    pub restrictions: String,
}

/// The matrix, by op name.
pub fn matrix() -> BTreeMap<String, Support> {
    let mut m = BTreeMap::new();
    for line in OPERATORS_MD.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let (Some(op), Some(sup)) = (cells.first(), cells.get(1)) else { continue };
        if *op == "Operator" || op.starts_with('-') {
            continue;
        }
        let types =
            cells.get(2).map(|t| t.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect());
        m.insert(
            op.to_string(),
            Support {
                supported: sup.starts_with('Y'),
                types: types.unwrap_or_default(),
                restrictions: cells.get(3).map(|s| s.to_string()).unwrap_or_default(),
            },
        );
    }
    m
}

/// The matrix's spelling of an ONNX element type.
fn type_name(code: i64) -> &'static str {
    match code {
        1 => "FP32",
        10 => "FP16",
        16 => "BF16",
        11 => "DOUBLE",
        7 => "INT64",
        6 => "INT32",
        9 => "BOOL",
        3 => "INT8",
        2 => "UINT8",
        _ => "OTHER",
    }
}

fn elem_name(e: ElemType) -> &'static str {
    type_name(e.onnx_code() as i64)
}

/// What the check found: one line per violation (empty: the file is within the matrix), and the ops used
/// with the type each runs at.
#[derive(Clone, Debug, Default)]
pub struct TensorRtReport {
    pub violations: Vec<String>,
    pub ops: BTreeMap<String, (usize, Vec<&'static str>)>,
}

impl TensorRtReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Infer the element type of every value (graph inputs, initialisers, node outputs).
fn infer_types(g: &Graph) -> HashMap<String, &'static str> {
    let mut t: HashMap<String, &'static str> = HashMap::new();
    for i in &g.inputs {
        t.insert(i.name.clone(), elem_name(i.elem));
    }
    for (name, c) in &g.initializers {
        t.insert(name.clone(), elem_name(c.data.elem()));
    }
    for n in &g.nodes {
        let input = |k: usize| n.inputs.get(k).and_then(|i| t.get(i)).copied().unwrap_or("OTHER");
        let out = match n.op.as_str() {
            "Shape" | "Size" => "INT64",
            "Cast" => match n.attrs.get("to") {
                Some(Attr::Int(code)) => type_name(*code),
                _ => "OTHER",
            },
            "CastLike" => input(1),
            "Less" | "LessOrEqual" | "Greater" | "GreaterOrEqual" | "Equal" | "Not" | "And" | "Or" | "Xor"
            | "IsInf" | "IsNaN" => "BOOL",
            "Where" => input(1),
            "Constant" => match n.attrs.get("value") {
                Some(Attr::Tensor(c)) => elem_name(c.data.elem()),
                _ => "OTHER",
            },
            _ => input(0),
        };
        for o in &n.outputs {
            t.insert(o.clone(), out);
        }
    }
    t
}

/// The type an op runs at, in the matrix's sense: its data input (Where: the values; Cast: its input).
fn operating_type(n: &Node, types: &HashMap<String, &'static str>) -> &'static str {
    let k = if n.op == "Where" { 1 } else { 0 };
    n.inputs.get(k).and_then(|i| types.get(i)).copied().unwrap_or("OTHER")
}

/// Check `g` against the matrix.
pub fn check(g: &Graph) -> TensorRtReport {
    let matrix = matrix();
    let types = infer_types(g);
    let mut r = TensorRtReport::default();
    for f in &g.functions {
        r.violations.push(format!("model-local function {}.{} (TensorRT expands no functions)", f.domain, f.name));
    }
    for (name, c) in &g.initializers {
        if matches!(c.data, Data::F64(_)) {
            r.violations.push(format!("initializer `{name}` is DOUBLE"));
        }
    }
    for v in g.inputs.iter().chain(&g.outputs) {
        if v.elem == ElemType::F64 {
            r.violations.push(format!("graph input/output `{}` is DOUBLE", v.name));
        }
    }
    let is_initializer = |name: Option<&String>| name.is_some_and(|n| g.initializers.contains_key(n));
    for n in &g.nodes {
        if !n.domain.is_empty() {
            r.violations.push(format!("node {} uses the custom domain {}.{}", n.name, n.domain, n.op));
            continue;
        }
        let ty = operating_type(n, &types);
        let entry = r.ops.entry(n.op.clone()).or_insert((0, vec![]));
        entry.0 += 1;
        if !entry.1.contains(&ty) {
            entry.1.push(ty);
        }
        let Some(s) = matrix.get(&n.op) else {
            r.violations.push(format!("node {}: op {} is not in the matrix", n.name, n.op));
            continue;
        };
        if !s.supported {
            r.violations.push(format!("node {}: op {} is marked unsupported", n.name, n.op));
        }
        if !s.types.iter().any(|t| t == ty) {
            r.violations.push(format!("node {}: {} at {ty}; the matrix lists {}", n.name, n.op, s.types.join(", ")));
        }
        if n.op == "Cast" && matches!(n.attrs.get("to"), Some(Attr::Int(11))) {
            r.violations.push(format!("node {}: Cast to DOUBLE", n.name));
        }
        let axes_input = match n.op.as_str() {
            "Slice" | "Pad" => Some(3),
            "Squeeze" | "Unsqueeze" | "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" => Some(1),
            _ => None,
        };
        if let Some(k) = axes_input {
            let given = n.inputs.get(k).is_some_and(|a| !a.is_empty());
            if given && !is_initializer(n.inputs.get(k)) {
                r.violations
                    .push(format!("node {}: {} `axes` must be an initializer ({})", n.name, n.op, s.restrictions));
            }
        }
        if n.op == "LayerNormalization" && n.outputs.len() > 1 {
            r.violations.push(format!("node {}: LayerNormalization with more than the output Y", n.name));
        }
    }
    r
}
