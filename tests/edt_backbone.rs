//! The EDT backbone beyond the x2 parity fixture: the full-size EDT-B key list and parameter counts of KEYS.md,
//! the denoise and derain heads and tails as the official constructor builds them (no official fixture exists
//! for them), output shapes for every task, input gradients against central finite differences in f64, and the
//! configs it refuses.
mod common;

use std::collections::{BTreeMap, HashMap};

use adaptir::backbone::edt::config::BODY_SIZE;
use adaptir::backbone::{Edt, EdtConfig};
use adaptir::model::edt::adaptir_hooks;
use adaptir::params::{count_parameters, ShapeOnly};
use adaptir::peft::{AdaptIrConfig, Layout};
use adaptir::tolerance::FINITE_DIFFERENCE_REL;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use common::fixture;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn config(task: &str, depths: Vec<usize>, heads: Vec<usize>, embed: usize, window: [usize; 2]) -> EdtConfig {
    EdtConfig { depths, num_heads: heads, embed_dim: embed, window_size: window, ..EdtConfig::official(task) }
}

/// (key -> (shape, dtype)) of our model of `config` with official-size AdaptIR, by walking its constructor.
fn our_keys(config: &EdtConfig) -> BTreeMap<String, (Vec<usize>, String)> {
    let rec = ShapeOnly::default();
    let vb = rec.var_builder();
    let hooks = adaptir_hooks(&vb, config, AdaptIrConfig::official(config.embed_dim, Layout::Edt)).unwrap();
    Edt::new(vb, config, hooks).unwrap();
    rec.entries()
        .into_iter()
        .map(|(k, (s, d))| (k, (s, if d == DType::I64 { "int64" } else { "float32" }.to_string())))
        .collect()
}

/// Section 2 of KEYS.md (EDT-B + AdaptIR, sr_4), with `{i}` (stage) and `{j}` (block) expanded; the mask buffers
/// exist in the odd blocks only (18 of the 36 blocks, as its table's counts say).
fn official_edt_keys() -> BTreeMap<String, (Vec<usize>, String)> {
    let text = std::fs::read_to_string(fixture("parity/KEYS.md")).unwrap();
    let section = &text[text.find("## 2.").unwrap()..];
    let section = section.split("\n### ").next().unwrap();
    let mut out = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        let pattern = cols[1].trim_matches('`');
        let shape: Vec<usize> = cols[2]
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse().unwrap())
            .collect();
        let count: usize = cols[4].parse().unwrap();
        let blocks = |odd_only: bool| -> Vec<String> {
            let mut v = vec![];
            for i in 0..6 {
                for j in (0..6).filter(|j| !odd_only || j % 2 == 1) {
                    v.push(pattern.replace("{i}", &i.to_string()).replace("{j}", &j.to_string()));
                }
            }
            v
        };
        let expanded =
            if pattern.contains("{j}") { blocks(pattern.contains("attn_mask")) } else { vec![pattern.to_string()] };
        assert_eq!(expanded.len(), count, "{pattern}");
        for k in expanded {
            out.insert(k, (shape.clone(), cols[3].to_string()));
        }
    }
    out
}

/// Our EDT-B + AdaptIR for sr4 has every official key with its shape and dtype. The mask buffers are read from
/// a checkpoint that has them and computed otherwise, so a constructor walk does not list them: they are checked
/// against the masks we compute instead.
#[test]
fn edt_b_with_adaptir_has_the_official_keys_shapes_and_counts() {
    let official = official_edt_keys();
    assert_eq!(official.len(), 1700);
    let ours = our_keys(&EdtConfig::official("sr4"));
    let (masks, weights): (BTreeMap<_, _>, BTreeMap<_, _>) =
        official.into_iter().partition(|(k, _)| k.contains("attn_mask"));
    let missing: Vec<_> = weights.keys().filter(|k| !ours.contains_key(*k)).collect();
    let extra: Vec<_> = ours.keys().filter(|k| !weights.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}\nextra {extra:?}");
    for (k, v) in &weights {
        assert_eq!(&ours[k], v, "{k}");
    }
    assert_eq!(masks.len(), 36);
    for (k, (shape, _)) in &masks {
        let (window, shift) = if k.ends_with("_h") { ((6, 24), (3, 12)) } else { ((24, 6), (12, 3)) };
        let m = adaptir::backbone::edt::swin::shifted_window_mask(
            (BODY_SIZE, BODY_SIZE),
            window,
            shift,
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(m.dims(), shape.as_slice(), "{k}");
    }
    // KEYS.md: 11,800,479 parameters, 173,412 of them AdaptIR (36 x 4,817); masks and BN statistics are buffers.
    let count = |f: &dyn Fn(&str) -> bool| {
        count_parameters(ours.iter().filter(|(k, _)| f(k)).map(|(k, (s, _))| (k, s.as_slice())))
    };
    assert_eq!(count(&|_| true), 11_800_479);
    assert_eq!(count(&|k| k.contains(".adaptir.")), 173_412);
}

/// The denoise and derain heads and tails, shape by shape as `EDT.__init__` builds them (num_feat 32, depth 2,
/// embed 180): `ResBlockDown(.., down=True)` with its bias-free 4x4 `conv_down`, `UpResBlock`s with a 2x2
/// transposed conv, and no upsampler; derain is the same under `head_dr_H` / `tail_dr_H`.
#[test]
fn denoise_and_derain_heads_and_tails_are_the_official_modules() {
    for (task, name) in [("denoise30", "dn_g30"), ("denoise50", "dn_g50"), ("derain", "dr_H")] {
        let ours = our_keys(&config(task, vec![2], vec![6], 180, [6, 24]));
        let expected: &[(&str, &[usize])] = &[
            ("head_{}.0.weight", &[32, 3, 3, 3]),
            ("head_{}.1.conv_1.weight", &[32, 32, 3, 3]),
            ("head_{}.1.conv_2.weight", &[64, 32, 3, 3]),
            ("head_{}.1.shortcut.weight", &[64, 32, 1, 1]),
            ("head_{}.1.conv_down.weight", &[64, 64, 4, 4]),
            ("head_{}.2.conv_1.weight", &[64, 64, 3, 3]),
            ("head_{}.2.conv_2.weight", &[128, 64, 3, 3]),
            ("head_{}.2.shortcut.weight", &[128, 64, 1, 1]),
            ("head_{}.2.conv_down.weight", &[128, 128, 4, 4]),
            ("head_{}.3.weight", &[180, 128, 3, 3]),
            ("tail_{}.0.up.weight", &[180, 128, 2, 2]),
            ("tail_{}.0.up.bias", &[128]),
            ("tail_{}.0.block.conv_1.weight", &[128, 256, 3, 3]),
            ("tail_{}.0.block.conv_2.weight", &[128, 128, 3, 3]),
            ("tail_{}.0.block.shortcut.weight", &[128, 256, 1, 1]),
            ("tail_{}.1.up.weight", &[128, 64, 2, 2]),
            ("tail_{}.1.block.conv_1.weight", &[64, 128, 3, 3]),
            ("tail_{}.1.block.conv_2.weight", &[64, 64, 3, 3]),
            ("tail_{}.1.block.shortcut.weight", &[64, 128, 1, 1]),
            ("tail_{}.2.weight", &[3, 64, 3, 3]),
        ];
        for (pattern, shape) in expected {
            let k = pattern.replace("{}", name);
            assert_eq!(ours.get(&k).map(|v| v.0.as_slice()), Some(*shape), "{task}: {k}");
        }
        let heads_tails: Vec<&String> =
            ours.keys().filter(|k| k.starts_with("head_") || k.starts_with("tail_")).collect();
        // The 19 weights above are all there are: no upsampler, no other stage.
        let weights = heads_tails.iter().filter(|k| k.ends_with("weight")).count();
        assert_eq!(weights, 19, "{task}: {heads_tails:?}");
        assert!(!ours.keys().any(|k| k.starts_with("head_sr") || k.starts_with("tail_sr")), "{task}");
    }
}

/// A model of `config` with seeded random weights (AdaptIR's zero-initialised convs included, so that every branch
/// acts), as plain tensors: the input gradient alone is tracked.
fn random_model(config: &EdtConfig, dtype: DType, seed: u64) -> Edt {
    let vm = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, dtype, &Device::Cpu);
    let sizes = AdaptIrConfig::official(config.embed_dim, Layout::Edt);
    Edt::fresh(&vm, config, adaptir_hooks(&vb, config, sizes).unwrap(), dtype, &Device::Cpu).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = vm.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut tensors = HashMap::new();
    for name in names {
        let t = data[name].as_tensor().detach();
        if !t.dtype().is_float() {
            tensors.insert(name.clone(), t);
            continue;
        }
        let dims = t.dims().to_vec();
        let fan_in: usize = dims.iter().skip(1).product::<usize>().max(1);
        let n = t.elem_count();
        let u = |rng: &mut ChaCha8Rng| rng.random::<f64>() * 2.0 - 1.0;
        let values: Vec<f64> = if name.ends_with("running_var") || (dims.len() == 1 && name.contains("norm")) {
            (0..n).map(|_| 1.0 + 0.1 * u(&mut rng)).collect() // positive variances, LayerNorm gains near 1
        } else if dims.len() == 1 {
            (0..n).map(|_| 0.1 * u(&mut rng)).collect()
        } else {
            let bound = 1.0 / (fan_in as f64).sqrt();
            (0..n).map(|_| bound * u(&mut rng)).collect()
        };
        tensors.insert(name.clone(), Tensor::from_vec(values, dims, &Device::Cpu).unwrap().to_dtype(dtype).unwrap());
    }
    drop(data);
    let vb = VarBuilder::from_tensors(tensors, dtype, &Device::Cpu);
    Edt::new(vb.clone(), config, adaptir_hooks(&vb, config, sizes).unwrap()).unwrap()
}

fn random_input(shape: (usize, usize, usize, usize), dtype: DType, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let v: Vec<f64> = (0..n).map(|_| rng.random::<f64>()).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

/// Every task at its training size with the official heads, tails and widths (a one-stage body of two blocks,
/// so that the shifted block runs too): denoise and derain 192x192 -> 192x192, SR 48x48 -> 48 s.
#[test]
fn every_task_has_its_output_shape() {
    for (task, side, out) in
        [("denoise30", 192, 192), ("derain", 192, 192), ("sr2", 48, 96), ("sr3", 48, 144), ("sr4", 48, 192)]
    {
        let cfg = config(task, vec![2], vec![6], 180, [6, 24]);
        let model = random_model(&cfg, DType::F32, 1);
        assert_eq!(model.task.input_size(), side, "{task}");
        let y = model.forward(&random_input((2, 3, side, side), DType::F32, 2), false).unwrap();
        assert_eq!(y.dims(), &[2, 3, out, out], "{task}");
        let finite = y.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| v.is_finite());
        assert!(finite, "{task}: non-finite output");
    }
}

/// d sum(w * f(x)) / dx by candle's autograd against central differences, in f64, at `probes` input elements.
fn input_gradient_check(model: &Edt, x: &Tensor, probes: usize, seed: u64) -> f64 {
    let y_shape = model.forward(x, false).unwrap().dims().to_vec();
    let w = {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n: usize = y_shape.iter().product();
        Tensor::from_vec((0..n).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect::<Vec<_>>(), y_shape, &Device::Cpu)
            .unwrap()
    };
    let loss = |x: &Tensor| (model.forward(x, false).unwrap() * &w).unwrap().sum_all().unwrap();
    let var = Var::from_tensor(x).unwrap();
    let grads = loss(var.as_tensor()).backward().unwrap();
    let analytic = grads.get(&var).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let base = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
    let step = 1e-6;
    let (mut worst, mut scale) = (0f64, 0f64);
    for _ in 0..probes {
        let j = rng.random_range(0..base.len());
        let at = |delta: f64| {
            let mut v = base.clone();
            v[j] += delta;
            let t = Tensor::from_vec(v, x.shape(), &Device::Cpu).unwrap();
            loss(&t).to_scalar::<f64>().unwrap()
        };
        let numeric = (at(step) - at(-step)) / (2.0 * step);
        scale = scale.max(numeric.abs());
        worst = worst.max((analytic[j] - numeric).abs());
    }
    assert!(scale > 0.0, "all probed gradients are zero");
    worst / scale
}

/// Input gradients of the whole model (head, shifted and unshifted blocks with AdaptIR, tail, image skip) on a
/// tiny config: windows [2, 4] on an 8x8 body grid (its masks computed, not the 48x48 ones), embed 56 (the least
/// whose AdaptIR has every width >= 1: h = 4, gate 1).
#[test]
fn input_gradients_match_finite_differences() {
    for (seed, (task, side)) in [("denoise30", 32), ("derain", 32), ("sr2", 8), ("sr3", 8)].into_iter().enumerate() {
        let cfg = config(task, vec![2], vec![2], 56, [2, 4]);
        let model = random_model(&cfg, DType::F64, 3 + seed as u64);
        let x = random_input((1, 3, side, side), DType::F64, 10 + seed as u64);
        let err = input_gradient_check(&model, &x, 12, 20 + seed as u64);
        eprintln!("{task} {side}x{side}: worst relative error {err:.3e}");
        assert!(err <= FINITE_DIFFERENCE_REL, "{task}: {err:e}");
    }
}

/// Impossible sizes and unknown fields are refused with a message that names the problem.
#[test]
fn configs_the_official_code_cannot_build_are_refused() {
    let ok = EdtConfig::official("sr2");
    assert_eq!(ok.validate(), Ok(()));
    assert_eq!(
        (ok.depths.clone(), ok.num_heads.clone(), ok.embed_dim, ok.window_size),
        (vec![6; 6], vec![6; 6], 180, [6, 24])
    );
    let cases: Vec<(EdtConfig, &str)> = vec![
        (EdtConfig { task: "sr5".into(), ..ok.clone() }, "not an EDT task"),
        (EdtConfig { arch: "ipt".into(), ..ok.clone() }, "expected `edt`"),
        (EdtConfig { embed_dim: 181, ..ok.clone() }, "even"),
        (EdtConfig { num_heads: vec![7; 6], ..ok.clone() }, "does not divide"),
        (EdtConfig { num_heads: vec![6; 5], ..ok.clone() }, "one head count per stage"),
        (EdtConfig { depths: vec![], num_heads: vec![], ..ok.clone() }, "at least one stage"),
        (EdtConfig { depths: vec![6, 0, 6, 6, 6, 6], ..ok.clone() }, "depths[1] is 0"),
        (EdtConfig { window_size: [5, 24], ..ok.clone() }, "does not tile"),
        (EdtConfig { window_size: [1, 24], ..ok.clone() }, "at least 2"),
    ];
    for (cfg, needle) in cases {
        let err = cfg.validate().unwrap_err();
        assert!(err.contains(needle), "`{needle}` not in `{err}`");
    }
    let dir = std::env::temp_dir().join(format!("adaptir-edt-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("c.json");
    std::fs::write(&p, r#"{"arch": "edt", "task": "sr2", "n_feats": 22}"#).unwrap();
    let err = EdtConfig::from_json_file(&p).unwrap_err().to_string();
    assert!(err.contains("c.json") && err.contains("unknown field `n_feats`"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Stochastic depth (official `drop_path_rate` 0.1, `linspace(0, rate, blocks)` over the blocks): only a training
/// forward whose step was seeded drops anything; the same seed draws the same masks, another seed others; an eval
/// forward, or a training forward without a seed, is the plain model.
#[test]
fn stochastic_depth_is_seeded_and_training_only() {
    let cfg = EdtConfig { drop_path_rate: 0.5, ..config("sr2", vec![4], vec![6], 60, [6, 24]) };
    let rates = cfg.drop_path_rates();
    assert_eq!(rates.len(), 4);
    for (k, want) in [0.0, 0.5 / 3.0, 1.0 / 3.0, 0.5].into_iter().enumerate() {
        assert!((rates[k] - want).abs() < 1e-12, "{rates:?}");
    }
    assert_eq!(EdtConfig::official("sr2").drop_path_rate, 0.1);

    // No method: the train flag changes nothing else (AdaptIR's BatchNorm would).
    let vm = candle_nn::VarMap::new();
    let model = Edt::fresh(&vm, &cfg, Edt::no_hooks(&cfg), DType::F32, &Device::Cpu).unwrap();
    let x = random_input((4, 3, 48, 48), DType::F32, 3);
    let max_diff = |a: &Tensor, b: &Tensor| {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    };
    let plain = model.forward(&x, false).unwrap();
    assert_eq!(max_diff(&model.forward(&x, true).unwrap(), &plain), 0.0, "unseeded training forward");
    let seeded = |seed: u64, train: bool| {
        model.body.seed_drop_path(seed).unwrap();
        model.forward(&x, train).unwrap()
    };
    assert_eq!(max_diff(&seeded(7, false), &plain), 0.0, "eval forward");
    // The eval forward left the seed for the next training forward, which uses it once.
    let first = model.forward(&x, true).unwrap();
    assert_eq!(max_diff(&first, &seeded(7, true)), 0.0, "same seed, same masks");
    assert_eq!(max_diff(&model.forward(&x, true).unwrap(), &plain), 0.0, "a seed serves one forward");
    assert!(max_diff(&first, &plain) > 0.0, "rate 0.5 over 4 samples and 4 blocks dropped nothing");
    assert!(max_diff(&first, &seeded(8, true)) > 0.0, "another seed, the same masks");
}
