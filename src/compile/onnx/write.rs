//! IR -> ONNX `ModelProto`, and the atomic, deterministic file writer.
//!
//! Determinism: the IR keeps initialisers, attributes and metadata in `BTreeMap`s (sorted), node order is the
//! IR's topological order, tensors are written as little-endian `raw_data`, and nothing time- or host-dependent
//! is recorded; prost encodes fields in tag order. So the same `Graph` always gives the same bytes.
use std::path::Path;

use super::proto;
use crate::compile::ir::{self, Attr, Constant, Dim, Graph, ValueInfo};
use crate::{Error, Result};

/// `producer_name` of every model we write.
pub const PRODUCER: &str = "adaptir";

/// The version of the custom domain `ai.adaptir` (its model-local functions).
pub const CUSTOM_DOMAIN_VERSION: i64 = 1;

/// Translate a graph into an ONNX model: IR version `ir::IR_VERSION`, the standard opset `ir::OPSET`, and
/// version `CUSTOM_DOMAIN_VERSION` of every other domain a node or function uses (`ai.adaptir`).
/// `tool_version` becomes `producer_version`.
pub fn to_model(g: &Graph, tool_version: &str) -> proto::ModelProto {
    let mut domains = std::collections::BTreeSet::new();
    for n in g.nodes.iter().chain(g.functions.iter().flat_map(|f| f.nodes.iter())) {
        if !n.domain.is_empty() {
            domains.insert(n.domain.clone());
        }
    }
    for f in &g.functions {
        domains.insert(f.domain.clone());
    }
    let mut opset_import = vec![opset("", ir::OPSET)];
    opset_import.extend(domains.iter().map(|d| opset(d, CUSTOM_DOMAIN_VERSION)));

    let graph = proto::GraphProto {
        node: g.nodes.iter().map(node).collect(),
        name: Some(if g.name.is_empty() { "adaptir".to_string() } else { g.name.clone() }),
        initializer: g.initializers.iter().map(|(name, c)| tensor(name, c)).collect(),
        input: g.inputs.iter().map(value_info).collect(),
        output: g.outputs.iter().map(value_info).collect(),
        ..Default::default()
    };
    let functions = g
        .functions
        .iter()
        .map(|f| {
            // A function imports the standard opset and every custom domain its body uses.
            let mut fdomains: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
            for n in &f.nodes {
                if !n.domain.is_empty() {
                    fdomains.insert(n.domain.as_str());
                }
            }
            let mut imports = vec![opset("", ir::OPSET)];
            imports.extend(fdomains.iter().map(|d| opset(d, CUSTOM_DOMAIN_VERSION)));
            proto::FunctionProto {
                name: Some(f.name.clone()),
                input: f.inputs.clone(),
                output: f.outputs.clone(),
                node: f.nodes.iter().map(node).collect(),
                opset_import: imports,
                domain: Some(f.domain.clone()),
                ..Default::default()
            }
        })
        .collect();
    proto::ModelProto {
        ir_version: Some(ir::IR_VERSION),
        opset_import,
        producer_name: Some(PRODUCER.to_string()),
        producer_version: Some(tool_version.to_string()),
        graph: Some(graph),
        metadata_props: g
            .metadata
            .iter()
            .map(|(k, v)| proto::StringStringEntryProto { key: Some(k.clone()), value: Some(v.clone()) })
            .collect(),
        functions,
        ..Default::default()
    }
}

/// The encoded model, after checking the graph (`Graph::check`). `tool_version` becomes `producer_version`.
pub fn to_bytes(g: &Graph, tool_version: &str) -> Result<Vec<u8>> {
    g.check().map_err(|e| Error::invalid(format!("graph `{}` is not well formed: {e}", g.name)))?;
    use prost::Message;
    Ok(to_model(g, tool_version).encode_to_vec())
}

/// Write `g` as ONNX to `path`, atomically (temp file in the same folder, fsync, rename), with this crate's
/// version as `producer_version`. Two writes of the same graph give identical bytes.
pub fn write(g: &Graph, path: &Path) -> Result<()> {
    write_with_version(g, env!("CARGO_PKG_VERSION"), path)
}

/// [`write`] with an explicit `producer_version`.
pub fn write_with_version(g: &Graph, tool_version: &str, path: &Path) -> Result<()> {
    let bytes = to_bytes(g, tool_version)?;
    Ok(crate::fsutil::write_atomic(path, &bytes)?)
}

fn opset(domain: &str, version: i64) -> proto::OperatorSetIdProto {
    proto::OperatorSetIdProto { domain: Some(domain.to_string()), version: Some(version) }
}

fn value_info(v: &ValueInfo) -> proto::ValueInfoProto {
    use proto::tensor_shape_proto::{dimension::Value as D, Dimension};
    let dim = v
        .shape
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => D::DimValue(*n as i64),
                Dim::Sym(s) => D::DimParam(s.clone()),
            }),
            ..Default::default()
        })
        .collect();
    proto::ValueInfoProto {
        name: Some(v.name.clone()),
        r#type: Some(proto::TypeProto {
            value: Some(proto::type_proto::Value::TensorType(proto::type_proto::Tensor {
                elem_type: Some(v.elem.onnx_code()),
                shape: Some(proto::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A constant as a `TensorProto` with `raw_data` (little-endian), named `name` ("" for attribute values).
pub fn tensor(name: &str, c: &Constant) -> proto::TensorProto {
    proto::TensorProto {
        dims: c.dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(c.data.elem().onnx_code()),
        name: if name.is_empty() { None } else { Some(name.to_string()) },
        raw_data: Some(c.data.raw_bytes()),
        ..Default::default()
    }
}

fn node(n: &ir::Node) -> proto::NodeProto {
    proto::NodeProto {
        input: n.inputs.clone(),
        output: n.outputs.clone(),
        name: Some(n.name.clone()),
        op_type: Some(n.op.clone()),
        domain: if n.domain.is_empty() { None } else { Some(n.domain.clone()) },
        attribute: n.attrs.iter().map(|(k, a)| attribute(k, a)).collect(),
        ..Default::default()
    }
}

fn attribute(name: &str, a: &Attr) -> proto::AttributeProto {
    use proto::attribute_proto::AttributeType as T;
    let mut p = proto::AttributeProto { name: Some(name.to_string()), ..Default::default() };
    match a {
        Attr::Int(i) => {
            p.i = Some(*i);
            p.set_type(T::Int);
        }
        Attr::Ints(v) => {
            p.ints = v.clone();
            p.set_type(T::Ints);
        }
        Attr::Float(f) => {
            p.f = Some(*f);
            p.set_type(T::Float);
        }
        Attr::Floats(v) => {
            p.floats = v.clone();
            p.set_type(T::Floats);
        }
        Attr::Str(s) => {
            p.s = Some(s.as_bytes().to_vec());
            p.set_type(T::String);
        }
        Attr::Tensor(c) => {
            p.t = Some(tensor("", c));
            p.set_type(T::Tensor);
        }
    }
    p
}
