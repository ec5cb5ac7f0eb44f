//! The IPT config read from an official state dict's tensor shapes.
//!
//! Every size is in the shapes except the number of attention heads (`in_proj_weight` is (3E, E) for any count):
//! it comes from `--config`, from `--backbone`'s record, or from the preset of the same n_feats and depth
//! (ipt-base is the released IPT: 12 heads), else the import asks for `--config`.
use std::collections::BTreeSet;

use crate::backbone::config::OFFICIAL_TASKS;
use crate::backbone::IptConfig;
use crate::params::StateDict;

/// The official MeanShift mean of the red channel: `sub_mean.bias[0] = -rgb_range * 0.4488`.
const RGB_MEAN_R: f64 = 0.4488;

/// What the shapes say; `num_heads` is not among them.
#[derive(Clone, Debug, PartialEq)]
pub struct Shapes {
    pub n_feats: usize,
    pub num_layers: usize,
    pub patch_size: usize,
    pub patch_dim: usize,
    pub scales: Vec<usize>,
    pub rgb_range: f64,
}

impl Shapes {
    /// A config with these sizes and `num_heads`.
    pub fn config(&self, num_heads: usize) -> IptConfig {
        IptConfig {
            n_feats: self.n_feats,
            num_heads,
            num_layers: self.num_layers,
            rgb_range: self.rgb_range,
            patch_size: self.patch_size,
            patch_dim: self.patch_dim,
            num_tasks: self.scales.len(),
            scales: self.scales.clone(),
            ..IptConfig::new(self.n_feats, num_heads, self.num_layers)
        }
    }

    /// The preset with these sizes, whose head count then applies: (name, heads).
    pub fn preset(&self) -> Option<(&'static str, usize)> {
        crate::backbone::config::PRESETS.iter().find_map(|&name| {
            let p = IptConfig::preset(name).ok()?;
            (p == self.config(p.num_heads)).then_some((name, p.num_heads))
        })
    }

    /// The sizes in which `config` differs from these, `what: ours vs theirs` each; empty when none.
    pub fn differences(&self, config: &IptConfig) -> Vec<String> {
        let mut out = vec![];
        let mut cmp = |what: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{what} {a} in the checkpoint, {b} there"));
            }
        };
        cmp("n_feats", self.n_feats.to_string(), config.n_feats.to_string());
        cmp("layers", self.num_layers.to_string(), config.num_layers.to_string());
        cmp("patch_dim", self.patch_dim.to_string(), config.patch_dim.to_string());
        cmp("patch_size", self.patch_size.to_string(), config.patch_size.to_string());
        cmp("scales", format!("{:?}", self.scales), format!("{:?}", config.scales));
        cmp("rgb_range", self.rgb_range.to_string(), config.rgb_range.to_string());
        out
    }

    pub fn describe(&self) -> String {
        format!(
            "n_feats {}, {}+{} layers, {} tasks (scales {:?}), {}x{} input in {}x{} patches, rgb_range {}",
            self.n_feats,
            self.num_layers,
            self.num_layers,
            self.scales.len(),
            self.scales,
            self.patch_size,
            self.patch_size,
            self.patch_dim,
            self.patch_dim,
            self.rgb_range
        )
    }
}

fn dims(sd: &StateDict, key: &str) -> Result<Vec<usize>, String> {
    sd.get(key).map(|t| t.dims().to_vec()).ok_or_else(|| format!("no `{key}`"))
}

/// Indices `i` of keys `{prefix}{i}.`.
fn indices(sd: &StateDict, prefix: &str) -> BTreeSet<usize> {
    sd.tensors.keys().filter_map(|k| k.strip_prefix(prefix)?.split('.').next()?.parse().ok()).collect()
}

fn exact_sqrt(n: usize) -> Option<usize> {
    let r = (n as f64).sqrt().round() as usize;
    (r * r == n).then_some(r)
}

/// The sizes of the IPT whose backbone tensors `sd` holds (official key names, no prefix). An error says which
/// key or shape does not fit IPT.
pub fn shapes(sd: &StateDict) -> Result<Shapes, String> {
    let not_ipt = |why: String| {
        let some: Vec<&str> = sd.tensors.keys().take(6).map(String::as_str).collect();
        format!(
            "not an IPT state dict with the official key names ({why}; its keys begin {}): expected an official \
             IPT or IPT + AdaptIR checkpoint",
            some.join(", ")
        )
    };
    let head = dims(sd, "head.0.0.weight").map_err(not_ipt)?;
    let n_feats = match head.as_slice() {
        [f, 3, 3, 3] => *f,
        other => return Err(not_ipt(format!("`head.0.0.weight` has shape {other:?}, expected (n_feats, 3, 3, 3)"))),
    };
    let enc = dims(sd, "body.linear_encoding.weight").map_err(not_ipt)?;
    let e = match enc.as_slice() {
        [a, b] if a == b => *a,
        other => return Err(not_ipt(format!("`body.linear_encoding.weight` has shape {other:?}, expected (E, E)"))),
    };
    let patch_dim = (e % n_feats == 0).then(|| exact_sqrt(e / n_feats)).flatten().ok_or_else(|| {
        not_ipt(format!("the transformer width {e} is not n_feats {n_feats} times a square (patch_dim^2)"))
    })?;
    let pe = dims(sd, "body.position_encoding.pe.weight").map_err(not_ipt)?;
    let side = match pe.as_slice() {
        [t, w] if *w == e => exact_sqrt(*t),
        _ => None,
    }
    .ok_or_else(|| not_ipt(format!("`body.position_encoding.pe.weight` has shape {pe:?}, expected (side^2, {e})")))?;
    let enc_layers = indices(sd, "body.encoder.layers.");
    let dec_layers = indices(sd, "body.decoder.layers.");
    let num_layers = enc_layers.len();
    if enc_layers != (0..num_layers).collect() || dec_layers != enc_layers || num_layers == 0 {
        return Err(not_ipt(format!(
            "encoder layers {enc_layers:?} and decoder layers {dec_layers:?}, expected 0..n both"
        )));
    }
    let heads = indices(sd, "head.");
    let tails = indices(sd, "tail.");
    let official: Vec<usize> = OFFICIAL_TASKS.iter().map(|t| t.1).collect();
    let names: Vec<String> = OFFICIAL_TASKS.iter().enumerate().map(|(i, t)| format!("{i} {}", t.0)).collect();
    if heads != (0..official.len()).collect() || tails != heads {
        return Err(format!(
            "holds the heads of tasks {heads:?} and the tails of tasks {tails:?}: expected the {} heads and tails of \
             IPT's official task map ({}), which task names refer to; a checkpoint cut down to some tasks cannot be \
             mapped onto them",
            official.len(),
            names.join(", ")
        ));
    }
    let mut scales = vec![];
    for t in &tails {
        let mut scale = 1;
        let stages = indices(sd, &format!("tail.{t}.0."));
        for j in stages {
            let key = format!("tail.{t}.0.{j}.weight");
            scale *= match dims(sd, &key)?.first() {
                Some(&c) if c == 4 * n_feats => 2,
                Some(&c) if c == 9 * n_feats => 3,
                other => return Err(format!("`{key}` has {other:?} output channels, expected 4 or 9 x n_feats")),
            };
        }
        scales.push(scale);
    }
    if scales != official {
        return Err(format!("its tails upscale by {scales:?}, expected IPT's official {official:?}"));
    }
    let bias = sd.get("sub_mean.bias").ok_or_else(|| not_ipt("no `sub_mean.bias`".into()))?;
    let b0 = bias
        .flatten_all()
        .and_then(|b| b.to_dtype(candle_core::DType::F64))
        .and_then(|b| b.get(0))
        .and_then(|b| b.to_scalar::<f64>())
        .map_err(|e| format!("`sub_mean.bias`: {e}"))?;
    let r = -b0 / RGB_MEAN_R;
    let rgb_range = [255.0, 1.0]
        .into_iter()
        .find(|&c: &f64| (r - c).abs() <= 1e-4 * c)
        .ok_or_else(|| format!("`sub_mean.bias[0]` = {b0} is not -rgb_range x 0.4488 for rgb_range 255 or 1"))?;
    Ok(Shapes { n_feats, num_layers, patch_size: side * patch_dim, patch_dim, scales, rgb_range })
}
