//! Every pass keeps what the graph computes (ONNX Runtime before and after, random inputs), applies where it
//! should, and together they reach a fixpoint that folds the adapters that are linear (LoRA, SSF, FacT) away
//! completely: the optimised graph has the op counts of the optimised backbone alone.
mod common;

use adaptir::backbone::{Ipt, IptConfig};
use adaptir::compile::ir::Graph;
use adaptir::compile::lower::{lower, LowerOptions};
use adaptir::compile::onnx::to_bytes;
use adaptir::compile::passes::{by_name, optimize, PASSES};
use adaptir::params::{StateDict, Strict};
use adaptir::peft::{method, MethodModules, METHODS};
use adaptir::runtime::{RunOptions, Session};
use adaptir::tolerance::F32_REASSOCIATION_REL;
use candle_core::{DType, Device, Tensor};
use common::*;

fn run(g: &Graph, x: &Tensor) -> Tensor {
    let bytes = to_bytes(g, "test").unwrap();
    let mut s = Session::from_memory(&bytes, std::path::Path::new("pass-test.onnx"), &RunOptions::default()).unwrap();
    s.run(&[("input", x.clone())]).unwrap().remove(0).1
}

fn config() -> IptConfig {
    IptConfig { num_tasks: 2, scales: vec![2, 1], ..IptConfig::new(24, 4, 1) }
}

fn frozen(vm: &candle_nn::VarMap) -> StateDict {
    StateDict {
        path: "t".into(),
        tensors: vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach().copy().unwrap()))
            .collect(),
    }
}

/// The small random backbone with a perturbed method, lowered for task 0 (x2).
fn graph(name: &str, backbone: &StateDict) -> Graph {
    let host = config().host_dims();
    let m = method(name, &serde_json::Value::Null, &host).unwrap();
    let mvm = candle_nn::VarMap::new();
    m.build(candle_nn::VarBuilder::from_varmap(&mvm, DType::F32, &Device::Cpu), &host).unwrap();
    for var in mvm.all_vars().into_iter().filter(|v| v.dtype().is_float()) {
        var.set(&(var.as_tensor() + var.as_tensor().randn_like(0.0, 0.05).unwrap()).unwrap()).unwrap();
    }
    let modules = m.build(Strict::new(frozen(&mvm)).var_builder(DType::F32, &Device::Cpu), &host).unwrap();
    let model =
        Ipt::new(Strict::new(backbone.clone()).var_builder(DType::F32, &Device::Cpu), &config(), modules).unwrap();
    lower(&model, 0, LowerOptions::default()).unwrap()
}

fn backbone() -> StateDict {
    let vm = candle_nn::VarMap::new();
    Ipt::fresh(&vm, &config(), MethodModules::none(&config().host_dims()), &Device::Cpu).unwrap();
    frozen(&vm)
}

fn assert_same(name: &str, a: &Tensor, b: &Tensor) {
    let (d, s) = (max_abs_diff(a, b), max_abs(a));
    assert!(d <= F32_REASSOCIATION_REL * s, "{name}: {d:e} (max |y| {s:e})");
}

/// Each pass alone, to its own fixpoint, on graphs where it must apply.
#[test]
fn each_pass_keeps_the_output() {
    let bb = backbone();
    let x = Tensor::rand(0f32, 1.0, (2, 3, 48, 48), &Device::Cpu).unwrap();
    // (pass, method whose graph it must change)
    let cases = [
        ("lim-kernel", "adaptir"),
        ("fold-batchnorm", "adaptir"),
        ("fold-mean-shift", "pretrain"),
        ("merge-linear", "lora"),
        ("merge-linear", "ssf"),
        ("merge-linear", "fact"),
        ("pointwise-through-transpose", "adaptir"),
        ("softmax-floor", "adaptir"),
        ("subpixel-conv", "adaptir"),
        ("constant-folding", "adaptir"),
        ("dedup-constants", "adaptir"),
        ("dead-nodes", "adaptir"),
    ];
    for p in PASSES {
        assert!(cases.iter().any(|(n, _)| *n == p.name()), "pass `{}` (in PASSES) has no case here", p.name());
    }
    for (pass_name, m) in cases {
        let g0 = graph(m, &bb);
        let y0 = run(&g0, &x);
        let pass = by_name(pass_name).unwrap();
        let mut g = g0.clone();
        // dead-nodes and dedup need something to remove: give them the leftovers of a LIM fold.
        if pass_name == "dead-nodes" || pass_name == "dedup-constants" {
            while by_name("lim-kernel").unwrap().run(&mut g).unwrap() {}
            let c = g.initializers.values().next().unwrap().clone();
            g.initializers.insert("duplicate.of.first".into(), c);
            let first = g.initializers.keys().find(|k| *k != "duplicate.of.first").unwrap().clone();
            for n in g.nodes.iter_mut() {
                if let Some(i) = n.inputs.iter_mut().find(|i| **i == first) {
                    *i = "duplicate.of.first".into();
                    break;
                }
            }
        }
        let before = (g.nodes.len(), g.initializers.len());
        let mut applied = 0;
        while pass.run(&mut g).unwrap() {
            g.check().unwrap();
            applied += 1;
        }
        assert!(applied > 0, "{pass_name} did not apply to the {m} graph");
        let y = run(&g, &x);
        eprintln!(
            "{pass_name} on {m}: {applied} applications, nodes/initialisers {before:?} -> {:?}, max diff {:.3e}",
            (g.nodes.len(), g.initializers.len()),
            max_abs_diff(&y, &y0)
        );
        assert_same(&format!("{pass_name} on {m}"), &y0, &y);
    }
}

/// All passes to a fixpoint, on every registered method: same output, and LoRA / SSF / FacT leave no trace (same op
/// counts as the backbone).
#[test]
fn optimize_folds_linear_methods_away() {
    let bb = backbone();
    let x = Tensor::rand(0f32, 1.0, (2, 3, 48, 48), &Device::Cpu).unwrap();
    let mut base = graph("pretrain", &bb);
    optimize(&mut base).unwrap();
    let base_counts = base.op_counts();
    // Every registered method (`full` and `pretrain` add no module: their graph is the backbone's).
    for m in METHODS.iter().map(|e| e.name) {
        let g0 = graph(m, &bb);
        let y0 = run(&g0, &x);
        let mut g = g0.clone();
        let counts = optimize(&mut g).unwrap();
        let y = run(&g, &x);
        eprintln!("{m}: {} -> {} nodes, passes {counts:?}", g0.nodes.len(), g.nodes.len());
        assert_same(m, &y0, &y);
        // Every pass but softmax-floor removes nodes; it adds three before each Softmax.
        let floors = 3 * g0.nodes.iter().filter(|n| n.op == "Softmax").count();
        assert!(g.nodes.len() <= g0.nodes.len() + floors, "{m}: {} nodes, from {}", g.nodes.len(), g0.nodes.len());
        if ["lora", "fact", "full", "pretrain"].contains(&m) {
            assert_eq!(g.op_counts(), base_counts, "{m} was not folded away");
        }
        if m == "ssf" {
            // SSF's shift after IPT's bias-free attention projections becomes their bias: one Add each
            // (q, k, v, out of the encoder's self-attention and the decoder's two attentions), nothing else.
            let mut want = base_counts.clone();
            *want.entry("Add".into()).or_insert(0) += 4 * 3 * config().num_layers;
            assert_eq!(g.op_counts(), want, "{m} was not folded away");
        }
    }
}

/// `softmax-floor`: a softmax row that spreads by more than 87 (here [0, -95]) gives a probability below the normal
/// f32 range: the denormal exp(-95) ~ 5.5e-42, or 0 where ONNX Runtime's kernel for the CPU flushes it (its AVX2
/// path on an AMD EPYC did, 2026-12-07; its AVX-512 path on an Intel Xeon wrote the denormal). Floored at the row's
/// maximum - 80 it gives e^-80 / (1 + e^-80), a normal f32, on every CPU, and the other entry stays 1. Applied once
/// per Softmax.
#[test]
fn softmax_floor_keeps_probabilities_out_of_the_denormal_range() {
    use adaptir::compile::ir::{Attr, Dim, ElemType, Node, ValueInfo};
    let value =
        |name: &str| ValueInfo { name: name.into(), elem: ElemType::F32, shape: vec![Dim::Fixed(1), Dim::Fixed(2)] };
    let mut g = Graph { name: "softmax".into(), ..Default::default() };
    g.inputs.push(value("input"));
    g.outputs.push(value("output"));
    g.nodes.push(Node {
        name: "softmax".into(),
        op: "Softmax".into(),
        domain: String::new(),
        inputs: vec!["input".into()],
        outputs: vec!["output".into()],
        attrs: [("axis".to_string(), Attr::Int(-1))].into_iter().collect(),
    });
    let x = Tensor::from_vec(vec![0f32, -95.0], (1, 2), &Device::Cpu).unwrap();
    let plain = run(&g, &x).flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(plain[1] < f32::MIN_POSITIVE, "expected an underflow (a denormal or 0), found {:e}", plain[1]);
    let pass = by_name("softmax-floor").unwrap();
    assert!(pass.run(&mut g).unwrap());
    assert!(!pass.run(&mut g).unwrap(), "applied twice to one Softmax");
    g.check().unwrap();
    let floored = run(&g, &x).flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = (-80f64).exp() / (1.0 + (-80f64).exp());
    assert_eq!(floored[0], 1.0);
    assert!(floored[1] >= f32::MIN_POSITIVE, "{:e}", floored[1]);
    assert!((floored[1] as f64 - want).abs() <= 1e-6 * want, "{:e} vs {want:e}", floored[1]);
}

/// `export --pass subpixel-conv` (an opt-in pass): the shipped x4 adapter's file computes what the default one does,
/// within the f32 tolerance of its golden file, in every runtime of the matrix, and has the conv before the
/// shuffle; an unknown name is refused with the list.
#[test]
fn opt_in_subpixel_conv_export_passes_its_golden_everywhere() {
    let dir = std::env::temp_dir().join(format!("adaptir-subpixel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let adapter = root.join("models/ipt-tiny/lr4-noise30.safetensors");
    let golden = root.join("fixtures/golden/ipt-tiny/lr4-noise30.golden.safetensors");
    let file = dir.join("subpixel.onnx");
    let (a, f) = (adapter.to_str().unwrap(), file.to_str().unwrap());
    let (code, out, err) = adaptir_cli(&["export", "--adapter", a, "-o", f, "--pass", "subpixel-conv"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("subpixel-conv x1"), "{out}");
    let g = adaptir::compile::onnx::read(&file).unwrap();
    let last = g.nodes.iter().rev().find(|n| n.op == "Conv" || n.op == "DepthToSpace").unwrap();
    assert_eq!(last.op, "DepthToSpace", "the shuffle now comes last");
    let (code, out, err) =
        adaptir_cli(&["validate", f, "--golden", golden.to_str().unwrap(), "--runtime", "all", "--latency-runs", "0"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, _, err) = adaptir_cli(&["export", "--adapter", a, "-o", f, "--pass", "no-such-pass"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--pass: expected one of subpixel-conv, found `no-such-pass`"), "{err}");
    let (code, _, err) = adaptir_cli(&["export", "--adapter", a, "-o", f, "--pass", "subpixel-conv", "--no-passes"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--pass cannot be used with --no-passes"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
