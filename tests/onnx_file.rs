//! The ONNX writer and reader without ONNX Runtime: deterministic bytes, round trips, versions and domains,
//! clear errors for files that are not ONNX or are truncated, atomic writes, and python's `onnx.checker`.
mod onnx_support;

use std::path::Path;

use adaptir::compile::ir::{self, Attr, Constant, Data, Dim};
use adaptir::compile::onnx;
use onnx_support::*;
use sha2::{Digest, Sha256};

fn sha256(p: &Path) -> String {
    let bytes = std::fs::read(p).expect("read written model");
    format!("{:x}", Sha256::digest(bytes))
}

#[test]
fn two_writes_give_identical_bytes() {
    let d = temp_dir("onnx-determinism");
    for (i, g) in [mlp(), layer_norm_gelu(), function_graph()].iter().enumerate() {
        let (a, b) = (d.join(format!("a{i}.onnx")), d.join(format!("b{i}.onnx")));
        onnx::write(g, &a).expect("write a");
        // A clone built separately (maps re-filled in another order) must still give the same bytes.
        let mut g2 = g.clone();
        let inits: Vec<_> = g2.initializers.iter().rev().map(|(k, v)| (k.clone(), v.clone())).collect();
        g2.initializers.clear();
        g2.initializers.extend(inits);
        onnx::write(&g2, &b).expect("write b");
        assert_eq!(sha256(&a), sha256(&b), "graph {}", g.name);
    }
    // No temp files left next to the outputs.
    let left: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.iter().all(|n| n.to_string_lossy().ends_with(".onnx")), "{left:?}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn read_of_write_round_trips() {
    let d = temp_dir("onnx-roundtrip");
    for g in [mlp(), layer_norm_gelu(), function_graph()] {
        let p = d.join(format!("{}.onnx", g.name));
        onnx::write(&g, &p).expect("write");
        let back = onnx::read(&p).expect("read");
        assert_eq!(back, g, "graph {} must round-trip exactly", g.name);
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn round_trip_keeps_every_constant_type_and_attribute() {
    let mut g = mlp();
    g.initializers.insert("half".into(), Constant { dims: vec![2], data: Data::F16(vec![0x3c00, 0xc000]) });
    g.initializers.insert("double".into(), Constant { dims: vec![2, 1], data: Data::F64(vec![1.0 / 3.0, -2.5]) });
    g.initializers.insert("shape".into(), Constant::i64(vec![2], vec![-1, 3]));
    g.initializers.insert("scalar".into(), Constant::f32(vec![], vec![7.0]));
    let mut n = node("reshape", "Reshape", &["output", "shape"], &["reshaped"]);
    n.attrs.insert("allowzero".into(), Attr::Int(0));
    n.attrs.insert("floats".into(), Attr::Floats(vec![1.5, -0.25]));
    n.attrs.insert("tensor".into(), Attr::Tensor(Constant::f32(vec![1], vec![3.0])));
    n.attrs.insert("text".into(), Attr::Str("é".into()));
    n.attrs.insert("one".into(), Attr::Float(0.125));
    g.nodes.push(n);
    g.outputs[0].name = "reshaped".into();
    g.outputs[0].shape = vec![Dim::Sym("N".into()), Dim::Fixed(3)];
    let bytes = onnx::to_bytes(&g, "test").expect("encode");
    let back = onnx::from_bytes(&bytes, Path::new("in-memory.onnx")).expect("decode");
    assert_eq!(back, g);
}

#[test]
fn model_header_has_versions_domains_and_producer() {
    let m = onnx::to_model(&function_graph(), "9.9.9");
    assert_eq!(m.ir_version, Some(ir::IR_VERSION));
    assert_eq!(m.producer_name.as_deref(), Some("adaptir"));
    assert_eq!(m.producer_version.as_deref(), Some("9.9.9"));
    let imports: Vec<(String, i64)> =
        m.opset_import.iter().map(|o| (o.domain.clone().unwrap_or_default(), o.version.unwrap_or(0))).collect();
    assert_eq!(imports, vec![(String::new(), ir::OPSET), (ir::CUSTOM_DOMAIN.to_string(), onnx::CUSTOM_DOMAIN_VERSION)]);
    assert_eq!(m.functions.len(), 1);
    let f = &m.functions[0];
    assert_eq!(f.domain.as_deref(), Some(ir::CUSTOM_DOMAIN));
    assert!(f.opset_import.iter().any(|o| o.domain.as_deref() == Some("") && o.version == Some(ir::OPSET)));
    let g = m.graph.as_ref().unwrap();
    assert!(g.node.iter().all(|n| n.name.as_deref().is_some_and(|s| !s.is_empty())), "every node is named");
    // The batch dimension is symbolic.
    let t = match g.input[0].r#type.as_ref().unwrap().value.as_ref().unwrap() {
        onnx::proto::type_proto::Value::TensorType(t) => t,
        other => panic!("{other:?}"),
    };
    let d0 = &t.shape.as_ref().unwrap().dim[0];
    assert_eq!(d0.value, Some(onnx::proto::tensor_shape_proto::dimension::Value::DimParam("N".into())));
    // Initialisers as raw_data only.
    assert!(g.initializer.iter().all(|t| t.raw_data.is_some() && t.float_data.is_empty()));
    // A graph without functions imports only the standard domain.
    assert_eq!(onnx::to_model(&mlp(), "x").opset_import.len(), 1);
}

fn expect_file_error(p: &Path, needles: &[&str]) {
    let e = onnx::read(p).expect_err("must fail");
    assert_eq!(e.exit_code(), 2, "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&p.display().to_string()), "error must name the file: {msg}");
    for n in needles {
        assert!(msg.contains(n), "error must say `{n}`: {msg}");
    }
}

#[test]
fn not_onnx_truncated_and_empty_files_give_clear_errors() {
    let d = temp_dir("onnx-bad");
    let good = d.join("good.onnx");
    onnx::write(&mlp(), &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let text = d.join("text.onnx");
    std::fs::write(&text, "this is not a model\n").unwrap();
    expect_file_error(&text, &["not an ONNX model", "text file", "this is not a model"]);

    let png = d.join("image.onnx");
    std::fs::write(&png, [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13]).unwrap();
    expect_file_error(&png, &["ONNX"]);

    // Cut inside the graph (an initialiser's raw data): a protobuf field ends early.
    let cut = d.join("truncated.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    expect_file_error(&cut, &["truncated"]);
    // Cut right after the first field (ir_version): decodes, but the graph is missing.
    let header = d.join("header-only.onnx");
    std::fs::write(&header, &bytes[..2]).unwrap();
    expect_file_error(&header, &["truncated", "graph"]);

    let empty = d.join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    expect_file_error(&empty, &["empty"]);

    expect_file_error(&d.join("missing.onnx"), &["cannot read"]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn failed_writes_leave_no_file_and_bad_graphs_are_refused() {
    let d = temp_dir("onnx-write-fail");
    let p = d.join("no-such-folder").join("m.onnx");
    let e = onnx::write(&mlp(), &p).expect_err("folder does not exist");
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("m.onnx"), "{e}");
    assert!(!p.exists());

    let mut bad = mlp();
    bad.nodes.remove(1); // `relu` now reads `t1`, which nothing produces
    let out = d.join("bad.onnx");
    let e = onnx::write(&bad, &out).expect_err("ill-formed graph");
    assert!(e.to_string().contains("t1"), "{e}");
    assert!(!out.exists(), "no partial file");
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "nothing left behind");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn python_onnx_checker_accepts_the_files_and_refuses_a_broken_one() {
    let d = temp_dir("onnx-checker");
    for g in [mlp(), layer_norm_gelu(), function_graph()] {
        let p = d.join(format!("{}.onnx", g.name));
        onnx::write(&g, &p).unwrap();
        adaptir::runtime::check_model(&p).unwrap_or_else(|e| panic!("{e}"));
    }
    // A node with an op that opset 20 does not have: the checker must say no (so the checks above mean something).
    let mut bad = mlp();
    bad.nodes[2].op = "NoSuchOp".into();
    let p = d.join("bad.onnx");
    onnx::write(&bad, &p).unwrap();
    let e = adaptir::runtime::check_model(&p).expect_err("unknown op");
    assert!(e.to_string().contains("bad.onnx") && e.to_string().contains("NoSuchOp"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}
