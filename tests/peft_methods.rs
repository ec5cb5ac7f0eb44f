//! The PETL zoo, one row per method: identity at initialisation, an effect once perturbed, training that
//! touches only the method's parameters, merging where the method is linear, and the paper's parameter counts.
mod common;

use std::collections::BTreeMap;

use adaptir::backbone::{Ipt, IptConfig};
use adaptir::commands::methods::table;
use adaptir::params::{StateDict, Strict};
use adaptir::peft::{method, Method, MethodModules};
use adaptir::tolerance::{EXACT, F32_REASSOCIATION_REL};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use common::{max_abs, max_abs_diff};

struct Row {
    name: &'static str,
    /// A fresh method leaves the output exactly unchanged (VPT cannot: its prompts join attention at once).
    identity_at_init: bool,
    mergeable: bool,
}

const ROWS: &[Row] = &[
    Row { name: "adaptir", identity_at_init: true, mergeable: false },
    Row { name: "lora", identity_at_init: true, mergeable: true },
    Row { name: "adapter", identity_at_init: true, mergeable: false },
    Row { name: "adaptformer", identity_at_init: true, mergeable: false },
    Row { name: "ssf", identity_at_init: true, mergeable: true },
    Row { name: "vpt", identity_at_init: false, mergeable: false },
    Row { name: "fact", identity_at_init: true, mergeable: true },
    Row { name: "moe", identity_at_init: true, mergeable: false },
    Row { name: "full", identity_at_init: true, mergeable: false },
    Row { name: "pretrain", identity_at_init: true, mergeable: false },
];

/// A small IPT (E = 216 so that AdaptIR's official widths are all >= 1), randomly initialised, then frozen
/// into a plain state dict, as a pre-trained backbone is.
fn backbone() -> (IptConfig, StateDict) {
    let config = IptConfig { num_tasks: 2, scales: vec![2, 1], ..IptConfig::new(24, 4, 1) };
    let vm = VarMap::new();
    Ipt::fresh(&vm, &config, MethodModules::none(&config.host_dims()), &Device::Cpu).unwrap();
    let tensors: BTreeMap<String, Tensor> =
        vm.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().detach().copy().unwrap())).collect();
    (config, StateDict { path: "random-backbone".into(), tensors })
}

/// The adapted model: backbone frozen from `sd` (or trainable from `backbone_vm` for full fine-tuning),
/// method tensors from `vm`.
fn model(config: &IptConfig, sd: &StateDict, m: &dyn Method, vm: &VarMap, backbone_vm: Option<&VarMap>) -> Ipt {
    let strict = Strict::new(sd.clone());
    let bb = match backbone_vm {
        Some(bvm) => VarBuilder::from_varmap(bvm, DType::F32, &Device::Cpu),
        None => strict.var_builder(DType::F32, &Device::Cpu),
    };
    let modules = m.build(VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu), &config.host_dims()).unwrap();
    let ipt = Ipt::new(bb, config, modules).unwrap();
    if backbone_vm.is_none() {
        strict.finish().unwrap();
    }
    ipt
}

/// The method's tensors, detached from the VarMap: a method loaded for inference, as from an adapter file.
/// (With variables, activations are tracked and frozen products take the input-gradient-only path, whose
/// summation order differs from candle's conv2d by rounding; inference never takes it.)
fn frozen(vm: &VarMap) -> VarMap {
    let out = VarMap::new();
    {
        let mut data = out.data().lock().unwrap();
        for (k, v) in vm.data().lock().unwrap().iter() {
            data.insert(k.clone(), Var::from_tensor(&v.as_tensor().detach().copy().unwrap()).unwrap());
        }
    }
    out
}

/// The adapted model for inference: backbone and method tensors both frozen.
fn inference_model(config: &IptConfig, sd: &StateDict, m: &dyn Method, vm: &VarMap) -> Ipt {
    let method_sd = StateDict {
        path: "method".into(),
        tensors: frozen(vm).data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect(),
    };
    let strict = Strict::new(sd.clone());
    let method_strict = Strict::new(method_sd);
    let modules = m.build(method_strict.var_builder(DType::F32, &Device::Cpu), &config.host_dims()).unwrap();
    let ipt = Ipt::new(strict.var_builder(DType::F32, &Device::Cpu), config, modules).unwrap();
    strict.finish().unwrap();
    method_strict.finish().unwrap();
    ipt
}

fn input() -> Tensor {
    Tensor::rand(0f32, 1.0, (2, 3, 48, 48), &Device::Cpu).unwrap()
}

fn perturb(vm: &VarMap, scale: f64) {
    for var in vm.all_vars() {
        if var.dtype().is_float() {
            let noise = (var.as_tensor().randn_like(0.0, 1.0).unwrap() * scale).unwrap();
            var.set(&(var.as_tensor() + noise).unwrap()).unwrap();
        }
    }
}

fn trainable_vm(sd: &StateDict) -> VarMap {
    let vm = VarMap::new();
    {
        let mut data = vm.data().lock().unwrap();
        for (k, t) in &sd.tensors {
            data.insert(k.clone(), Var::from_tensor(t).unwrap());
        }
    }
    vm
}

#[test]
fn every_registered_method_has_a_row() {
    let names: Vec<&str> = adaptir::peft::METHODS.iter().map(|m| m.name).collect();
    assert_eq!(names, ROWS.iter().map(|r| r.name).collect::<Vec<_>>());
}

#[test]
fn identity_at_init_and_effect_when_perturbed() {
    let (config, sd) = backbone();
    let x = input();
    let reference = model(
        &config,
        &sd,
        method("pretrain", &serde_json::Value::Null, &config.host_dims()).unwrap().as_ref(),
        &VarMap::new(),
        None,
    );
    for task in 0..2 {
        let y0 = reference.forward(&x, task, false).unwrap();
        for row in ROWS.iter().filter(|r| r.name != "full" && r.name != "pretrain") {
            let m = method(row.name, &serde_json::Value::Null, &config.host_dims()).unwrap();
            let vm = VarMap::new();
            let _ = model(&config, &sd, m.as_ref(), &vm, None); // initialises the method's variables
            let fresh = inference_model(&config, &sd, m.as_ref(), &vm).forward(&x, task, false).unwrap();
            let d = max_abs_diff(&fresh, &y0);
            if row.identity_at_init {
                assert!(d <= EXACT, "{}: a fresh method changes the output by {d:e}", row.name);
            } else {
                assert!(d > 0.0, "{}: expected prompts to change the output", row.name);
            }
            perturb(&vm, 0.05);
            let y = inference_model(&config, &sd, m.as_ref(), &vm).forward(&x, task, false).unwrap();
            let d = max_abs_diff(&y, &y0);
            assert!(d > 1e-4 * max_abs(&y0), "{}: perturbed method changes the output by only {d:e}", row.name);
        }
    }
}

#[test]
fn training_changes_only_the_method() {
    let (config, sd) = backbone();
    let host = config.host_dims();
    let x = input();
    let target = Tensor::rand(0f32, 1.0, (2, 3, 48, 48), &Device::Cpu).unwrap();
    for row in ROWS.iter().filter(|r| r.name != "pretrain") {
        let m = method(row.name, &serde_json::Value::Null, &host).unwrap();
        let vm = VarMap::new();
        let bvm = m.trains_backbone().then(|| trainable_vm(&sd));
        let ipt = model(&config, &sd, m.as_ref(), &vm, bvm.as_ref());
        let mut vars = vm.all_vars();
        if let Some(b) = &bvm {
            vars.extend(b.all_vars());
        }
        let before: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().copy().unwrap()).collect();
        let backbone_before: Vec<Tensor> = sd.tensors.values().map(|t| t.copy().unwrap()).collect();
        let mut opt =
            candle_nn::AdamW::new(vars.clone(), candle_nn::ParamsAdamW { lr: 1e-3, ..Default::default() }).unwrap();
        for _ in 0..3 {
            let y = ipt.forward(&x, 1, true).unwrap();
            let loss = (y - &target).unwrap().abs().unwrap().mean_all().unwrap();
            let grads = loss.backward().unwrap();
            if bvm.is_none() {
                // No gradient work for the frozen backbone: none of its tensors gets a gradient buffer.
                let with_grad: Vec<&String> =
                    sd.tensors.iter().filter(|(_, t)| grads.get(t).is_some()).map(|(k, _)| k).collect();
                assert!(with_grad.is_empty(), "{}: gradients for backbone tensors {with_grad:?}", row.name);
            }
            opt.step(&grads).unwrap();
        }
        let changed = vars.iter().zip(&before).filter(|(v, b)| max_abs_diff(v.as_tensor(), b) > 0.0).count();
        assert!(changed > 0, "{}: no parameter changed", row.name);
        if bvm.is_none() {
            // The frozen backbone is bit-identical.
            for ((k, t), b) in sd.tensors.iter().zip(&backbone_before) {
                assert_eq!(max_abs_diff(t, b), EXACT, "{}: backbone tensor {k} changed", row.name);
            }
        }
        eprintln!("{}: {changed} of {} trainable tensors changed", row.name, vars.len());
    }
}

#[test]
fn lora_ssf_fact_merge_into_the_weights() {
    let (config, sd) = backbone();
    let host = config.host_dims();
    let x = input();
    for row in ROWS.iter().filter(|r| r.mergeable) {
        let m = method(row.name, &serde_json::Value::Null, &host).unwrap();
        assert!(m.mergeable(), "{}", row.name);
        let vm = VarMap::new();
        let _ = model(&config, &sd, m.as_ref(), &vm, None);
        perturb(&vm, 0.05);
        let unmerged = inference_model(&config, &sd, m.as_ref(), &vm);
        let mut merged = inference_model(&config, &sd, m.as_ref(), &vm);
        merged.merge_method().unwrap();
        for task in 0..2 {
            let (a, b) = (unmerged.forward(&x, task, false).unwrap(), merged.forward(&x, task, false).unwrap());
            let (d, scale) = (max_abs_diff(&a, &b), max_abs(&a));
            eprintln!("{} task {task}: merged vs unmerged {d:.3e} (max |y| {scale:.3})", row.name);
            assert!(d <= F32_REASSOCIATION_REL * scale, "{}: {d:e}", row.name);
        }
    }
    for row in ROWS.iter().filter(|r| !r.mergeable) {
        assert!(!method(row.name, &serde_json::Value::Null, &host).unwrap().mergeable(), "{}", row.name);
    }
}

/// The paper's trainable-parameter counts on ipt-base (Table 1), and our documented choices where the
/// paper's configuration is not known (adapter 691K, FacT 537K, MoE 667K).
#[test]
fn parameter_counts_on_ipt_base() {
    let rows = table(&IptConfig::preset("ipt-base").unwrap()).unwrap();
    let got: BTreeMap<&str, usize> = rows.iter().map(|r| (r.method, r.trainable_params.unwrap())).collect();
    let want: BTreeMap<&str, usize> = [
        ("adaptir", 697_656),
        ("lora", 995_328),
        ("vpt", 884_736),
        ("adaptformer", 677_952),
        ("ssf", 373_248),
        ("adapter", 691_776),
        ("fact", 528_960),
        ("moe", 664_128),
        ("full", 119_590_050 - 697_656),
        ("pretrain", 0),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
}

#[test]
fn bad_method_configurations() {
    let host = IptConfig::preset("ipt-base").unwrap().host_dims();
    let err = |name: &str, json: &str| method(name, &serde_json::from_str(json).unwrap(), &host).err().unwrap();
    assert!(err("lora", r#"{"targets": ["q", "w"]}"#).contains("lora target `w` matches no module"));
    assert!(err("lora", r#"{"rank": 0}"#).contains("rank must be at least 1"));
    assert!(err("lora", r#"{"rnak": 4}"#).contains("unknown field `rnak`"));
    assert!(err("adaptir", r#"{"hidden": 1}"#).contains("hidden = 1 but must be at least 2"));
    assert!(err("dora", "null").contains("unknown method `dora`"));
    assert!(err("ssf", r#"{"x": 1}"#).contains("ssf takes no configuration"));
}

/// docs/methods.md's table has one row per registered method and no other: a method added to `METHODS` without
/// its documentation (or a row left for a removed one) fails here.
#[test]
fn the_methods_doc_table_is_the_registry() {
    let doc =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/methods.md")).unwrap();
    let rows: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    let registry: Vec<String> = adaptir::peft::METHODS.iter().map(|m| m.name.to_string()).collect();
    assert_eq!(rows, registry, "docs/methods.md rows vs adaptir::peft::METHODS (same order)");
}

/// `LayerHooks::acts_at` tells the backbone where it may fuse frozen maps into one graph node (IPT's FFN and
/// attention blocks), skipping `site` there. So for every method, layer and site: where `acts_at` says `false`,
/// `site` must hand the output back unchanged. LoRA, SSF and FacT, the methods that act at sites, must change the
/// output at each site they claim (their parameters perturbed), so that the check is not vacuous; the others claim
/// none, so that their blocks fuse.
#[test]
fn acts_at_agrees_with_site() {
    use adaptir::hooks::{LayerHooks, Site};
    let (config, _) = backbone();
    let host = config.host_dims();
    let mut claimed = BTreeMap::new();
    for row in ROWS {
        let m = method(row.name, &serde_json::Value::Null, &host).unwrap();
        let vm = VarMap::new();
        let modules = m.build(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), &host).unwrap();
        perturb(&vm, 0.05);
        for (hooks, layer) in modules.layers.iter().zip(host.layers()) {
            let hooks: &dyn LayerHooks = hooks.as_ref();
            for site in Site::all(layer.stack) {
                let (cin, cout) = site.widths(&host);
                let input = Tensor::randn(0f32, 1.0, (host.tokens, 2, cin), &Device::Cpu).unwrap();
                let output = Tensor::randn(0f32, 1.0, (host.tokens, 2, cout), &Device::Cpu).unwrap();
                let d = max_abs_diff(&hooks.site(site, &input, output.clone()).unwrap(), &output);
                if hooks.acts_at(site) {
                    *claimed.entry(row.name).or_insert(0) += 1;
                    if ["lora", "ssf", "fact"].contains(&row.name) {
                        assert!(d > 0.0, "{}: claims {site:?} in {layer:?} but leaves it unchanged", row.name);
                    }
                } else {
                    assert!(
                        d <= EXACT,
                        "{}: says it leaves {site:?} in {layer:?} alone, but changes it by {d:e}",
                        row.name
                    );
                }
            }
        }
    }
    for name in ["lora", "ssf", "fact"] {
        assert!(claimed.get(name).is_some_and(|&n| n > 0), "{name}: acts at no site");
    }
    for name in ["adaptir", "adapter", "adaptformer", "vpt", "moe", "full", "pretrain"] {
        assert_eq!(claimed.get(name), None, "{name}: leaves every site alone, so its blocks can be fused");
    }
}
