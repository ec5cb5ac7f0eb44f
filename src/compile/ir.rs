//! The graph IR between lowering and the ONNX writer: named nodes in topological order, typed values with
//! (possibly symbolic) shapes, constant initialisers, model-local functions and metadata. It mirrors ONNX
//! closely on purpose, so the writer is a plain translation and passes can be checked by running the graph
//! in ONNX Runtime before and after them.
use std::collections::BTreeMap;

/// Element types the exporter emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ElemType {
    F32,
    F16,
    F64,
    I64,
    /// Quantized weights (`export --int8`).
    I8,
    /// Quantized activations' zero points.
    U8,
}

impl ElemType {
    /// The ONNX `TensorProto.DataType` code.
    pub fn onnx_code(self) -> i32 {
        match self {
            ElemType::F32 => 1,
            ElemType::F16 => 10,
            ElemType::F64 => 11,
            ElemType::I64 => 7,
            ElemType::I8 => 3,
            ElemType::U8 => 2,
        }
    }

    /// Bytes per element.
    pub fn width(self) -> usize {
        match self {
            ElemType::I8 | ElemType::U8 => 1,
            ElemType::F16 => 2,
            ElemType::F32 => 4,
            ElemType::F64 | ElemType::I64 => 8,
        }
    }
}

/// A dimension: fixed, or a named symbol (`N` for the batch).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    Fixed(usize),
    Sym(String),
}

/// A graph input or output.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub elem: ElemType,
    pub shape: Vec<Dim>,
}

/// Constant data, row-major. f16 is stored as its bit patterns.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    F16(Vec<u16>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I8(Vec<i8>),
    U8(Vec<u8>),
}

impl Data {
    pub fn elem(&self) -> ElemType {
        match self {
            Data::F32(_) => ElemType::F32,
            Data::F16(_) => ElemType::F16,
            Data::F64(_) => ElemType::F64,
            Data::I64(_) => ElemType::I64,
            Data::I8(_) => ElemType::I8,
            Data::U8(_) => ElemType::U8,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::F16(v) => v.len(),
            Data::F64(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::I8(v) => v.len(),
            Data::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Little-endian bytes, as ONNX `raw_data` holds them.
    pub fn raw_bytes(&self) -> Vec<u8> {
        match self {
            Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::I8(v) => v.iter().map(|x| *x as u8).collect(),
            Data::U8(v) => v.clone(),
        }
    }
}

/// A constant tensor (an initialiser, or a `Constant` node's value).
#[derive(Clone, Debug, PartialEq)]
pub struct Constant {
    pub dims: Vec<usize>,
    pub data: Data,
}

impl Constant {
    pub fn f32(dims: Vec<usize>, v: Vec<f32>) -> Self {
        Self { dims, data: Data::F32(v) }
    }

    pub fn i64(dims: Vec<usize>, v: Vec<i64>) -> Self {
        Self { dims, data: Data::I64(v) }
    }
}

/// A node attribute.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Floats(Vec<f32>),
    Str(String),
    Tensor(Constant),
}

/// One operator application. `domain` is "" for the standard ONNX domain or a custom one (`ai.adaptir`).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: String,
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: BTreeMap<String, Attr>,
}

/// A model-local function (ONNX `FunctionProto`): a custom op whose body is standard ops.
#[derive(Clone, Debug, PartialEq)]
pub struct Function {
    pub name: String,
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub nodes: Vec<Node>,
}

/// The standard domain's opset and the custom domain used for the model-local functions.
pub const OPSET: i64 = 20;
pub const IR_VERSION: i64 = 9;
pub const CUSTOM_DOMAIN: &str = "ai.adaptir";

/// A whole model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub name: String,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    /// In topological order.
    pub nodes: Vec<Node>,
    pub initializers: BTreeMap<String, Constant>,
    pub functions: Vec<Function>,
    /// ONNX `metadata_props`.
    pub metadata: BTreeMap<String, String>,
}

impl Graph {
    /// Node count by (domain, op), for reports.
    pub fn op_counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for n in &self.nodes {
            let key = if n.domain.is_empty() { n.op.clone() } else { format!("{}.{}", n.domain, n.op) };
            *m.entry(key).or_insert(0) += 1;
        }
        m
    }

    /// Structural checks: every node input is a graph input, an initialiser or an earlier node's output;
    /// every output name is produced once; graph outputs are produced; custom-domain ops have a function.
    pub fn check(&self) -> Result<(), String> {
        let mut known: std::collections::BTreeSet<&str> = self.inputs.iter().map(|v| v.name.as_str()).collect();
        known.extend(self.initializers.keys().map(String::as_str));
        for n in &self.nodes {
            for i in &n.inputs {
                if !i.is_empty() && !known.contains(i.as_str()) {
                    return Err(format!("node {} ({}) reads `{i}`, which nothing produced before it", n.name, n.op));
                }
            }
            for o in &n.outputs {
                if !known.insert(o.as_str()) {
                    return Err(format!("`{o}` is produced twice (second time by node {})", n.name));
                }
            }
            if !n.domain.is_empty() && !self.functions.iter().any(|f| f.domain == n.domain && f.name == n.op) {
                return Err(format!("node {} uses {}.{} but the model has no such function", n.name, n.domain, n.op));
            }
        }
        for o in &self.outputs {
            if !known.contains(o.name.as_str()) {
                return Err(format!("graph output `{}` is never produced", o.name));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for n in &self.nodes {
            if !names.insert(n.name.as_str()) {
                return Err(format!("two nodes are named {}", n.name));
            }
        }
        Ok(())
    }
}
