//! Issue 17, side by side with the official code (driven by `scripts/official_bench.sh`):
//!
//!     cargo run --release --example bench_official -- --write-weights W.safetensors
//!         a random ipt-base with a perturbed AdaptIR (examples/common), every tensor under its official key
//!         (plus `position_ids` and BatchNorm's `num_batches_tracked`, so that PyTorch's strict
//!         `load_state_dict` takes it): the one weight file both tools run (ours through `adaptir import`)
//!
//!     cargo run --release --example bench_official -- --ours A.onnx --official B.onnx \
//!         [--ours-backbone C.onnx --official-backbone D.onnx] [--official-b16 B16.onnx] \
//!         [--threads 2] [--pairs 15] [--pairs16 7] [--denormal-as-zero] [--json OUT.json]
//!         ONNX Runtime CPU latency of both files in one process, interleaved: each round runs every session
//!         once, in an order rotated every round, after one untimed run of each; the median of each and the
//!         median and quartiles of the per-round ratios ours / official, at batch 1 and 16. With the backbone-only
//!         files, also each side's adapter overhead (with / without AdaptIR, per round). `--official-b16`: an
//!         official file exported for batch 16 only (when torch's exporter could not make the batch dynamic).
//!         `--denormal-as-zero`: every session with ONNX Runtime's `session.set_denormal_as_zero` (the first
//!         session of the process sets it for the main thread too, so all four run flushed).
//!
//! Sessions are made from the bytes (`Session::from_memory`), so the official file goes to ONNX Runtime as torch
//! wrote it. Ratios from this one run; never a timed assertion.
use std::path::{Path, PathBuf};
use std::time::Instant;

use adaptir::runtime::{RunOptions, Session};
use adaptir::{Error, Result};
use candle_core::{DType, Device, Tensor};

mod common;

fn opt(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn write_weights(path: &Path) -> Result<()> {
    let (config, backbone, adapter) = common::random_ipt_with_adaptir_dicts("ipt-base")?;
    let mut tensors: Vec<(String, Tensor)> = backbone.tensors.into_iter().chain(adapter.tensors).collect();
    let has = |k: &str, t: &[(String, Tensor)]| t.iter().any(|(n, _)| n == k);
    if !has("body.position_encoding.position_ids", &tensors) {
        let ids = Tensor::arange(0i64, config_tokens(&config) as i64, &Device::Cpu)?.unsqueeze(0)?;
        tensors.push(("body.position_encoding.position_ids".into(), ids));
    }
    let bns: Vec<String> = tensors
        .iter()
        .filter_map(|(k, _)| k.strip_suffix(".BN.running_mean").map(|p| format!("{p}.BN.num_batches_tracked")))
        .collect();
    for k in bns {
        if !has(&k, &tensors) {
            tensors.push((k, Tensor::new(0i64, &Device::Cpu)?));
        }
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let n = tensors.len();
    let params: usize = tensors.iter().filter(|(_, t)| t.dtype() == DType::F32).map(|(_, t)| t.elem_count()).sum();
    safetensors::tensor::serialize_to_file(tensors, None, path)
        .map_err(|e| Error::file(path, format!("cannot write: {e}")))?;
    println!("{}: {n} tensors, {params} f32 values (ipt-base + AdaptIR, official keys)", path.display());
    Ok(())
}

fn config_tokens(config: &adaptir::backbone::IptConfig) -> usize {
    config.host_dims().tokens
}

fn quartiles(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.5), at(0.75))
}

struct Model {
    tag: &'static str,
    path: PathBuf,
    session: Session,
}

fn load(tag: &'static str, path: &str, opts: &RunOptions) -> Result<Model> {
    let path = PathBuf::from(path);
    let bytes = std::fs::read(&path).map_err(|e| Error::file(&path, format!("cannot read: {e}")))?;
    let t = Instant::now();
    let session = Session::from_memory(&bytes, &path, opts)?;
    println!(
        "{tag}: {} ({:.1} MiB), inputs {:?}, loaded in {:.1} s, nodes by provider {:?}",
        path.display(),
        bytes.len() as f64 / (1 << 20) as f64,
        session.input_names(),
        t.elapsed().as_secs_f64(),
        session.nodes_by_ep()
    );
    Ok(Model { tag, path, session })
}

fn run_once(m: &mut Model, x: &Tensor) -> Result<f64> {
    let name = m.session.input_names().first().cloned().ok_or_else(|| Error::file(&m.path, "no input"))?;
    let t = Instant::now();
    m.session.run(&[(name.as_str(), x.clone())])?;
    Ok(t.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    if let Some(p) = opt("--write-weights") {
        return write_weights(Path::new(&p));
    }
    let threads = common::arg("--threads", 2);
    let (pairs1, pairs16) = (common::arg("--pairs", 15), common::arg("--pairs16", 7));
    let denormal_as_zero = std::env::args().any(|a| a == "--denormal-as-zero");
    let opts = RunOptions { threads: Some(threads), denormal_as_zero, ..Default::default() };
    let need = |n: &str| opt(n).ok_or_else(|| Error::invalid(format!("{n} FILE is required")));
    let (ours, official) = (need("--ours")?, need("--official")?);
    let backbones = match (opt("--ours-backbone"), opt("--official-backbone")) {
        (Some(a), Some(b)) => Some((a, b)),
        (None, None) => None,
        _ => return Err(Error::invalid("--ours-backbone and --official-backbone go together")),
    };
    println!(
        "ONNX Runtime CPU EP, {threads} intra-op threads, one process; rounds interleaved (order rotated every \
         round), one untimed run of each first{}",
        if denormal_as_zero { "; denormals flushed to zero (session.set_denormal_as_zero)" } else { "" }
    );
    let mut json = serde_json::Map::new();
    json.insert("threads".into(), threads.into());
    json.insert("denormal_as_zero".into(), denormal_as_zero.into());
    for batch in [1usize, 16] {
        let pairs = if batch == 1 { pairs1 } else { pairs16 };
        if pairs == 0 {
            continue;
        }
        // Sessions per batch (the official file may be batch-specific); dropped before the next batch.
        let official_file = match (batch, opt("--official-b16")) {
            (16, Some(f)) => f,
            _ => official.clone(),
        };
        let mut models = vec![load("ours", &ours, &opts)?, load("official", &official_file, &opts)?];
        if let Some((a, b)) = &backbones {
            models.push(load("ours backbone", a, &opts)?);
            models.push(load("official backbone", b, &opts)?);
        }
        let x = Tensor::rand(0f32, 1.0, (batch, 3, 48, 48), &Device::Cpu)?;
        // The untimed first run of each, and what both files compute on the same input.
        let mut outs = vec![];
        for m in models.iter_mut() {
            let name = m.session.input_names().first().cloned().ok_or_else(|| Error::file(&m.path, "no input"))?;
            outs.push(m.session.run(&[(name.as_str(), x.clone())])?.remove(0).1);
        }
        let diff = |a: usize, b: usize| -> Result<f32> {
            Ok((&outs[a] - &outs[b])?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
        };
        let max_diff = diff(0, 1)?;
        println!("batch {batch}: max |ours - official| = {max_diff:.3e} (outputs in [0, 1] scale)");
        let k = models.len();
        let mut times = vec![vec![]; k];
        for round in 0..pairs {
            for j in 0..k {
                let i = (j + round) % k;
                times[i].push(run_once(&mut models[i], &x)?);
            }
        }
        let ratio = |a: usize, b: usize| -> Vec<f64> { times[a].iter().zip(&times[b]).map(|(x, y)| x / y).collect() };
        println!("\nbatch {batch}, {pairs} rounds:");
        let mut b = serde_json::Map::new();
        b.insert("max abs diff ours - official".into(), (max_diff as f64).into());
        for (i, m) in models.iter().enumerate() {
            let (q1, med, q3) = quartiles(&times[i]);
            println!("  {:<18} median {:>9.1} ms (q1 {:.1}, q3 {:.1})", m.tag, med * 1e3, q1 * 1e3, q3 * 1e3);
            b.insert(format!("{} median ms", m.tag), (med * 1e3).into());
        }
        let mut ratios = vec![("ours / official", 0, 1)];
        if k == 4 {
            ratios.push(("ours adapter overhead", 0, 2));
            ratios.push(("official adapter overhead", 1, 3));
            ratios.push(("ours / official, backbones", 2, 3));
        }
        for (what, a, c) in ratios {
            let (q1, med, q3) = quartiles(&ratio(a, c));
            println!("  {what:<28} {med:.3} (q1 {q1:.3}, q3 {q3:.3})");
            b.insert(what.into(), serde_json::json!({"median": med, "q1": q1, "q3": q3}));
        }
        json.insert(format!("batch {batch}"), serde_json::Value::Object(b));
    }
    if let Some(out) = opt("--json") {
        std::fs::write(&out, serde_json::to_string_pretty(&json).unwrap_or_default())
            .map_err(|e| Error::file(Path::new(&out), format!("cannot write: {e}")))?;
        println!("\nwrote {out}");
    }
    Ok(())
}
