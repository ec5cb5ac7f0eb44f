//! ONNX Runtime CPU latency of the portable export's two new parts, as ratios from interleaved pairs in one run:
//!
//! 1. the f32 spectral path against the f64 one (same graph otherwise: functions inlined), on ipt-base + AdaptIR
//!    (random weights, adapter perturbed) at batch 1 and on ipt-tiny + the shipped derain adapter at batch 2;
//! 2. the whole-image graph (`export --whole-image`) against `restore --engine onnx` (tiling in Rust, batches of
//!    16 tiles through the patch export) on one image, with the shipped derain adapter.
//!
//!     cargo run --release --example bench_portable [-- --threads 2 --pairs 9 --size 256]
mod common;

use std::path::Path;
use std::time::Instant;

use adaptir::backbone::Ipt;
use adaptir::compile::lower::{lower, LowerOptions};
use adaptir::compile::onnx::to_bytes;
use adaptir::compile::passes::optimize;
use adaptir::compile::target::Target;
use adaptir::data::Image;
use adaptir::peft::file::AdapterFile;
use adaptir::restore::{restore_with, Tiling};
use adaptir::runtime::{RunOptions, Session};
use adaptir_ops::graph::{FftLowering, SpectralPrecision};
use candle_core::{DType, Device, Tensor};
use common::{arg, random_ipt_with_adaptir};

fn session(model: &Ipt, task: usize, opts: LowerOptions, run: &RunOptions) -> adaptir::Result<Session> {
    let mut g = lower(model, task, opts)?;
    optimize(&mut g)?;
    Session::from_memory(&to_bytes(&g, "bench")?, Path::new("bench.onnx"), run)
}

/// Median (with quartiles) of the per-pair ratios b / a and the medians of a and b, from `pairs` interleaved pairs.
fn pairs(
    n: usize,
    a: &mut dyn FnMut() -> adaptir::Result<()>,
    b: &mut dyn FnMut() -> adaptir::Result<()>,
) -> adaptir::Result<(Ratio, f64, f64)> {
    let time = |f: &mut dyn FnMut() -> adaptir::Result<()>| -> adaptir::Result<f64> {
        let t = Instant::now();
        f()?;
        Ok(t.elapsed().as_secs_f64())
    };
    time(a)?;
    time(b)?;
    let (mut ta, mut tb, mut r) = (vec![], vec![], vec![]);
    for i in 0..n {
        let (x, y) = if i % 2 == 0 {
            (time(a)?, time(b)?)
        } else {
            let y = time(b)?;
            (time(a)?, y)
        };
        ta.push(x);
        tb.push(y);
        r.push(y / x);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let m = med(&mut r);
    let ratio = Ratio { q1: r[r.len() / 4], median: m, q3: r[3 * r.len() / 4] };
    Ok((ratio, med(&mut ta), med(&mut tb)))
}

/// A ratio's median and quartiles over the pairs.
struct Ratio {
    q1: f64,
    median: f64,
    q3: f64,
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3} (quartiles {:.3} - {:.3})", self.median, self.q1, self.q3)
    }
}

fn main() -> adaptir::Result<()> {
    let (threads, n, size) = (arg("--threads", 2), arg("--pairs", 9), arg("--size", 256));
    let run = RunOptions { threads: Some(threads), ..Default::default() };
    let inlined =
        |spectral| LowerOptions { fft: FftLowering::MatMul, inline_functions: true, spectral, whole_image: None };
    println!("ONNX Runtime CPU EP, {threads} intra-op threads, medians of {n} interleaved pairs");

    // 1a. ipt-base + AdaptIR, random weights.
    let base = random_ipt_with_adaptir("ipt-base")?;
    let mut s64 = session(&base, 3, inlined(SpectralPrecision::F64), &run)?;
    let mut s32 = session(&base, 3, inlined(SpectralPrecision::F32), &run)?;
    let x = Tensor::rand(0f32, 1.0, (1, 3, 48, 48), &Device::Cpu)?;
    let (r, a, b) = pairs(n, &mut || s64.run(&[("input", x.clone())]).map(|_| ()), &mut || {
        s32.run(&[("input", x.clone())]).map(|_| ())
    })?;
    println!(
        "ipt-base + AdaptIR, batch 1: f64 spectral {:.1} ms, f32 spectral {:.1} ms, ratio f32/f64 {r}",
        a * 1e3,
        b * 1e3
    );
    drop((s64, s32, base));

    // 1b. ipt-tiny + the shipped derain adapter.
    let backbone = Path::new("models/ipt-tiny/backbone.safetensors");
    let adapter = AdapterFile::load(Path::new("models/ipt-tiny/derain.safetensors"))?;
    let tiny = adaptir::model::build_model(
        backbone,
        adapter.ipt_config("bench_portable")?,
        Some(&adapter),
        DType::F32,
        &Device::Cpu,
    )?;
    let task = adaptir::backbone::config::task_index(&adapter.meta.task).unwrap_or(3);
    let mut s64 = session(&tiny, task, inlined(SpectralPrecision::F64), &run)?;
    let mut s32 = session(&tiny, task, inlined(SpectralPrecision::F32), &run)?;
    let x = Tensor::rand(0f32, 1.0, (2, 3, 48, 48), &Device::Cpu)?;
    let (r, a, b) = pairs(n * 5, &mut || s64.run(&[("input", x.clone())]).map(|_| ()), &mut || {
        s32.run(&[("input", x.clone())]).map(|_| ())
    })?;
    println!(
        "ipt-tiny + derain, batch 2: f64 spectral {:.2} ms, f32 spectral {:.2} ms, ratio f32/f64 {r}",
        a * 1e3,
        b * 1e3
    );

    // 2. Whole-image graph vs restore's tiling in Rust over the patch export (both the portable target).
    let portable = Target::Portable.lower_options(FftLowering::MatMul);
    let mut patches = session(&tiny, task, portable, &run)?;
    let tiling = Tiling::default();
    let mut whole =
        session(&tiny, task, LowerOptions { whole_image: Some(Tiling { batch: 4096, ..tiling }), ..portable }, &run)?;
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let img = Image::new(size, size, 3, (0..size * size * 3).map(|_| rng.random::<f32>()).collect())?;
    let nchw = adaptir::compile::export::image_to_nchw(&img)?;
    let (r, a, b) = pairs(
        n,
        &mut || {
            restore_with(48, 1, &img, tiling, &Device::Cpu, &mut |t| {
                Ok(patches.run(&[("input", t.clone())])?.remove(0).1)
            })
            .map(|_| ())
        },
        &mut || whole.run(&[("image", nchw.clone())]).map(|_| ()),
    )?;
    println!(
        "ipt-tiny + derain, {size}x{size} image: restore --engine onnx {:.1} ms, whole-image graph {:.1} ms, ratio whole/restore {r}",
        a * 1e3,
        b * 1e3
    );
    Ok(())
}
