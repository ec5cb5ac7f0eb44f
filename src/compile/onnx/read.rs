//! ONNX file -> IR: enough to validate a file and to change a weight (metadata, inputs/outputs with shapes,
//! initialisers, nodes with their attributes, model-local functions). Anything the IR cannot hold is refused
//! with a message that names the file, the element and what was expected.
use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;

use super::proto;
use crate::compile::ir::{Attr, Constant, Data, Dim, ElemType, Function, Graph, Node, ValueInfo};
use crate::{Error, Result};

/// Read and decode an ONNX file into a `ModelProto`, with clear errors for a file that is not ONNX or that is
/// truncated.
pub fn read_model(path: &Path) -> Result<proto::ModelProto> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read the ONNX model: {e}")))?;
    decode_model(&bytes, path)
}

/// The bytes of an ONNX file, for runtimes that parse it themselves (tract, OpenVINO): a missing path or an
/// unreadable file is an error naming it.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    if !path.is_file() {
        return Err(Error::file(path, "expected an ONNX model file, found no such file"));
    }
    std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))
}

/// Decode the bytes of an ONNX file (`path` only names it in errors).
pub fn decode_model(bytes: &[u8], path: &Path) -> Result<proto::ModelProto> {
    if bytes.is_empty() {
        return Err(Error::file(path, "expected an ONNX model (a protobuf ModelProto), found an empty file"));
    }
    // Text (a JSON, a log, a Python file passed by mistake) decodes as garbage protobuf and would read as
    // "truncated": say what it is.
    if let Ok(text) = std::str::from_utf8(&bytes[..bytes.len().min(4096)]) {
        let printable = text.chars().filter(|c| !c.is_control() || c.is_whitespace()).count();
        if !text.contains('\0') && printable * 100 >= text.chars().count() * 98 {
            let head: String = text.chars().take(40).collect();
            return Err(Error::file(
                path,
                format!(
                    "not an ONNX model: expected a binary protobuf ModelProto, found a text file (starting {head:?})"
                ),
            ));
        }
    }
    let m = proto::ModelProto::decode(bytes).map_err(|e| {
        let what = e.to_string();
        if what.contains("buffer underflow") || what.contains("unexpected end") {
            Error::file(
                path,
                format!(
                    "the ONNX model is truncated: the file ends inside a protobuf field after {} bytes ({what})",
                    bytes.len()
                ),
            )
        } else {
            Error::file(
                path,
                format!(
                    "not an ONNX model: expected a protobuf ModelProto, found bytes that do not decode as one ({what})"
                ),
            )
        }
    })?;
    let not_onnx = |what: &str| {
        Error::file(
            path,
            format!("not a complete ONNX model: expected {what}, found none (the file is truncated or is not ONNX)"),
        )
    };
    match m.ir_version {
        Some(v) if v > 0 => {}
        _ => return Err(not_onnx("an ir_version")),
    }
    if m.graph.is_none() {
        return Err(not_onnx("a graph"));
    }
    if m.opset_import.is_empty() {
        return Err(not_onnx("an opset_import"));
    }
    Ok(m)
}

/// Read an ONNX file back into the IR. External data (`export --out-dir`) is checked against the sha256 its
/// metadata records and read from the model's folder (`external::resolve`).
pub fn read(path: &Path) -> Result<Graph> {
    let mut m = read_model(path)?;
    super::external::resolve(&mut m, path)?;
    from_model(&m, path)
}

/// Decode ONNX bytes into the IR; `path` names the source in errors and, for a model with external data, is where
/// the model lies (its folder holds the weight file).
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Graph> {
    let mut m = decode_model(bytes, path)?;
    super::external::resolve(&mut m, path)?;
    from_model(&m, path)
}

/// Translate a decoded model into the IR.
pub fn from_model(m: &proto::ModelProto, path: &Path) -> Result<Graph> {
    let err = |msg: String| Error::file(path, msg);
    let g = m.graph.as_ref().ok_or_else(|| err("expected a graph in the ONNX model, found none".into()))?;
    let mut initializers = BTreeMap::new();
    for (i, t) in g.initializer.iter().enumerate() {
        let name = t.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(err(format!("initializer #{i} has no name")));
        }
        let c = constant(t).map_err(|e| err(format!("initializer `{name}`: {e}")))?;
        if initializers.insert(name.clone(), c).is_some() {
            return Err(err(format!("initializer `{name}` appears twice")));
        }
    }
    let mut inputs = Vec::new();
    for v in &g.input {
        let vi = value_info(v).map_err(&err)?;
        // Files from older exporters list initialisers among the inputs too; the IR does not.
        if !initializers.contains_key(&vi.name) {
            inputs.push(vi);
        }
    }
    let outputs = g.output.iter().map(value_info).collect::<std::result::Result<Vec<_>, _>>().map_err(&err)?;
    let nodes = g.node.iter().map(node).collect::<std::result::Result<Vec<_>, _>>().map_err(&err)?;
    let mut functions = Vec::new();
    for f in &m.functions {
        let fname = f.name.clone().unwrap_or_default();
        let nodes = f
            .node
            .iter()
            .map(node)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| err(format!("function `{fname}`: {e}")))?;
        functions.push(Function {
            name: fname,
            domain: f.domain.clone().unwrap_or_default(),
            inputs: f.input.clone(),
            outputs: f.output.clone(),
            nodes,
        });
    }
    let metadata = m
        .metadata_props
        .iter()
        .map(|p| (p.key.clone().unwrap_or_default(), p.value.clone().unwrap_or_default()))
        .collect();
    Ok(Graph { name: g.name.clone().unwrap_or_default(), inputs, outputs, nodes, initializers, functions, metadata })
}

fn elem_type(code: i32) -> std::result::Result<ElemType, String> {
    match code {
        1 => Ok(ElemType::F32),
        10 => Ok(ElemType::F16),
        11 => Ok(ElemType::F64),
        7 => Ok(ElemType::I64),
        3 => Ok(ElemType::I8),
        2 => Ok(ElemType::U8),
        c => Err(format!(
            "expected element type float (1), float16 (10), double (11), int64 (7), int8 (3) or uint8 (2), found \
             data type {c}"
        )),
    }
}

fn value_info(v: &proto::ValueInfoProto) -> std::result::Result<ValueInfo, String> {
    use proto::tensor_shape_proto::dimension::Value as D;
    let name = v.name.clone().unwrap_or_default();
    let Some(proto::type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(format!("value `{name}`: expected a tensor type, found another or none"));
    };
    let elem = elem_type(t.elem_type.unwrap_or(0)).map_err(|e| format!("value `{name}`: {e}"))?;
    let mut shape = Vec::new();
    for (i, d) in t.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or(&[]).iter().enumerate() {
        shape.push(match &d.value {
            Some(D::DimValue(n)) if *n >= 0 => Dim::Fixed(*n as usize),
            Some(D::DimParam(s)) => Dim::Sym(s.clone()),
            other => return Err(format!("value `{name}`, dimension {i}: expected a size or a name, found {other:?}")),
        });
    }
    Ok(ValueInfo { name, elem, shape })
}

/// A `TensorProto` as an IR constant: `raw_data` (little-endian) or the typed fields.
pub fn constant(t: &proto::TensorProto) -> std::result::Result<Constant, String> {
    if t.data_location == Some(proto::tensor_proto::DataLocation::External as i32) || !t.external_data.is_empty() {
        return Err("expected the data inside the file, found external data".into());
    }
    let mut dims = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(format!("expected non-negative dimensions, found {:?}", t.dims));
        }
        dims.push(d as usize);
    }
    let n: usize = dims.iter().product();
    let elem = elem_type(t.data_type.unwrap_or(0))?;
    let width = elem.width();
    let data = match &t.raw_data {
        Some(raw) => {
            if raw.len() != n * width {
                return Err(format!(
                    "shape {dims:?} needs {} bytes of raw_data, found {} (truncated or corrupt)",
                    n * width,
                    raw.len()
                ));
            }
            let w8 = |b: &[u8]| [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
            match elem {
                ElemType::F32 => {
                    Data::F32(raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
                }
                ElemType::F16 => Data::F16(raw.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect()),
                ElemType::F64 => Data::F64(raw.chunks_exact(8).map(|b| f64::from_le_bytes(w8(b))).collect()),
                ElemType::I64 => Data::I64(raw.chunks_exact(8).map(|b| i64::from_le_bytes(w8(b))).collect()),
                ElemType::I8 => Data::I8(raw.iter().map(|&b| b as i8).collect()),
                ElemType::U8 => Data::U8(raw.clone()),
            }
        }
        None => match elem {
            ElemType::F32 => Data::F32(t.float_data.clone()),
            ElemType::F16 => Data::F16(t.int32_data.iter().map(|&v| v as u16).collect()),
            ElemType::F64 => Data::F64(t.double_data.clone()),
            ElemType::I64 => Data::I64(t.int64_data.clone()),
            // ONNX keeps 8-bit values widened in int32_data.
            ElemType::I8 => Data::I8(t.int32_data.iter().map(|&v| v as i8).collect()),
            ElemType::U8 => Data::U8(t.int32_data.iter().map(|&v| v as u8).collect()),
        },
    };
    if data.len() != n {
        return Err(format!("shape {dims:?} needs {n} values, found {}", data.len()));
    }
    Ok(Constant { dims, data })
}

fn node(n: &proto::NodeProto) -> std::result::Result<Node, String> {
    use proto::attribute_proto::AttributeType as T;
    let name = n.name.clone().unwrap_or_default();
    let op = n.op_type.clone().unwrap_or_default();
    let mut attrs = BTreeMap::new();
    for a in &n.attribute {
        let an = a.name.clone().unwrap_or_default();
        let bad = |what: &str| format!("node `{name}` ({op}), attribute `{an}`: {what}");
        let v = match a.r#type() {
            T::Int => Attr::Int(a.i.unwrap_or(0)),
            T::Ints => Attr::Ints(a.ints.clone()),
            T::Float => Attr::Float(a.f.unwrap_or(0.0)),
            T::Floats => Attr::Floats(a.floats.clone()),
            T::String => {
                Attr::Str(String::from_utf8(a.s.clone().unwrap_or_default()).map_err(|_| bad("expected UTF-8 text"))?)
            }
            T::Tensor => {
                let t = a.t.as_ref().ok_or_else(|| bad("expected a tensor value, found none"))?;
                Attr::Tensor(constant(t).map_err(|e| bad(&e))?)
            }
            other => return Err(bad(&format!("expected int(s), float(s), string or tensor, found {other:?}"))),
        };
        attrs.insert(an, v);
    }
    Ok(Node {
        name,
        op,
        domain: n.domain.clone().unwrap_or_default(),
        inputs: n.input.clone(),
        outputs: n.output.clone(),
        attrs,
    })
}
