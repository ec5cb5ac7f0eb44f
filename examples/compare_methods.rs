//! The paper's Table 1 at small scale: every PETL method of the zoo trained on LR4&Noise30 on the same frozen
//! backbone with the same budget and seed, evaluated (PSNR / SSIM on Y, crop 4) on Set5, Set14 and BSD100; writes
//! a Markdown table with the command, the budget and the wall times.
//!
//! ```sh
//! cargo run --release --example compare_methods -- --backbone models/ipt-tiny/backbone.safetensors \
//!   --data ../shared/data/train/photos_hr --bench ../shared/data/benchmarks --steps 100 \
//!   --out models/ipt-tiny/RESULTS.md
//! ```
//! Options: `--methods a,b,c` (default: every method but `full`), `--batch 16`, `--lr 5e-4`, `--seed 0`,
//! `--work DIR` (adapters, default `runs/compare`), `--task lr4-noise30`.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use adaptir::train::adapt::{train, TrainArgs};
use adaptir::train::eval::{eval, EvalArgs};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn run() -> adaptir::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut opt: BTreeMap<String, String> = BTreeMap::new();
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        let key = k.strip_prefix("--").ok_or_else(|| adaptir::Error::invalid(format!("unexpected argument {k}")))?;
        let v = it.next().ok_or_else(|| adaptir::Error::invalid(format!("--{key} needs a value")))?;
        opt.insert(key.to_string(), v.clone());
    }
    let get = |k: &str, d: &str| opt.get(k).cloned().unwrap_or_else(|| d.to_string());
    let num = |k: &str, d: &str| -> adaptir::Result<f64> {
        get(k, d).parse().map_err(|_| adaptir::Error::invalid(format!("--{k} expects a number")))
    };
    let backbone = PathBuf::from(get("backbone", "models/ipt-tiny/backbone.safetensors"));
    let data = PathBuf::from(get("data", "../shared/data/train/photos_hr"));
    let bench = PathBuf::from(get("bench", "../shared/data/benchmarks"));
    let work = PathBuf::from(get("work", "runs/compare"));
    let out = PathBuf::from(get("out", "models/ipt-tiny/RESULTS.md"));
    let task = get("task", "lr4-noise30");
    let (steps, batch, lr, seed) =
        (num("steps", "100")? as usize, num("batch", "16")? as usize, num("lr", "5e-4")?, num("seed", "0")? as u64);
    let methods: Vec<String> =
        get("methods", "adaptir,lora,adapter,adaptformer,ssf,vpt,fact,moe").split(',').map(str::to_string).collect();
    std::fs::create_dir_all(&work).map_err(|e| adaptir::Error::file(&work, e.to_string()))?;
    let sets = ["Set5", "Set14", "BSD100"];
    let t_all = Instant::now();
    let mut rows = vec![];
    // Baselines: bicubic and the backbone alone (no adaptation).
    let mut base = vec![];
    for set in sets {
        let r = eval(&EvalArgs {
            backbone: Some(backbone.clone()),
            method: Some("pretrain".into()),
            task: Some(task.clone()),
            data: Some(bench.join(set).join("HR")),
            ..Default::default()
        })?;
        eprintln!("{set}: bicubic {:.3} dB, backbone alone {:.3} dB", r.baseline_psnr, r.psnr);
        base.push(r);
    }
    for m in &methods {
        let adapter = work.join(format!("{m}.safetensors"));
        let t0 = Instant::now();
        let rep = train(&TrainArgs {
            method: m.clone(),
            method_config: None,
            task: task.clone(),
            data: Some(data.clone()),
            pairs: None,
            backbone: backbone.clone(),
            preset: None,
            steps,
            batch,
            patch: 48,
            lr,
            seed,
            out: adapter.clone(),
            resume: true,
            checkpoint_every: 50,
            eval_every: steps.max(1),
            stop_after: None,
            quiet: true,
        })?;
        let train_s = t0.elapsed().as_secs_f64();
        let mut scores = vec![];
        for set in sets {
            let r = eval(&EvalArgs {
                adapter: Some(adapter.clone()),
                backbone: Some(backbone.clone()),
                data: Some(bench.join(set).join("HR")),
                ..Default::default()
            })?;
            scores.push((r.psnr, r.ssim));
        }
        eprintln!("{m}: {} params, {:.0} s, {:?}", rep.trainable, train_s, scores);
        rows.push((m.clone(), rep.trainable, train_s, scores));
    }
    let mut md = String::new();
    let _ = writeln!(md, "# PETL methods on {task} (ipt-tiny), the paper's Table 1 at small scale\n");
    let _ = writeln!(
        md,
        "Produced by `cargo run --release --example compare_methods -- {}` ({}), total wall time {:.1} min \
         on this machine's CPU ({} rayon threads).\n",
        argv.join(" "),
        "see examples/compare_methods.rs",
        t_all.elapsed().as_secs_f64() / 60.0,
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into())
    );
    let _ = writeln!(
        md,
        "Budget per method: {steps} steps of batch {batch} (48x48 inputs), AdamW lr {lr} halved at 50/80/90/95%, \
         seed {seed}, the methods' default configurations (the paper's settings scaled to E = 216), on \
         `{}` (held-out photo excluded). PSNR / SSIM on Y, 4 pixels cropped, inputs synthesised per file with seed 0.\n",
        data.display()
    );
    let _ = writeln!(md, "| method | trainable params | Set5 | Set14 | BSD100 | train time |");
    let _ = writeln!(md, "|---|---:|---|---|---|---:|");
    let cell = |p: f64, s: f64| format!("{p:.2} / {s:.4}");
    let _ = writeln!(
        md,
        "| bicubic | - | {} | {} | {} | - |",
        cell(base[0].baseline_psnr, base[0].baseline_ssim),
        cell(base[1].baseline_psnr, base[1].baseline_ssim),
        cell(base[2].baseline_psnr, base[2].baseline_ssim)
    );
    let _ = writeln!(
        md,
        "| backbone alone (x4 head) | 0 | {} | {} | {} | - |",
        cell(base[0].psnr, base[0].ssim),
        cell(base[1].psnr, base[1].ssim),
        cell(base[2].psnr, base[2].ssim)
    );
    for (m, n, t, s) in &rows {
        let _ = writeln!(
            md,
            "| {m} | {n} | {} | {} | {} | {:.0} s |",
            cell(s[0].0, s[0].1),
            cell(s[1].0, s[1].1),
            cell(s[2].0, s[2].1),
            t
        );
    }
    adaptir::fsutil::write_atomic(&out, md.as_bytes())?;
    println!("{md}");
    Ok(())
}
