//! The paper's Table 1 at small scale, fair (issue 14, item 3): every PETL method of the zoo sized to the same
//! trainable-parameter budget (`adaptir::peft::budget`), trained on the same frozen backbone with several seeds on
//! two tasks, evaluated on held-out benchmarks, and reported as mean ± sample standard deviation over the seeds,
//! ordered as the numbers come out.
//!
//! ```sh
//! cargo run --release --example compare_methods -- --budget 21000 --seeds 0,1,2 --tasks lr4-noise30,derain \
//!   --steps 500 --batch 16 --lr 1e-2 --backbone models/ipt-tiny/backbone.safetensors \
//!   --data ../shared/data/train/photos_hr --work models/ipt-tiny/table1 --out models/ipt-tiny/table1/TABLE1.md
//! ```
//! Other options: `--methods a,b,c` (default: every registered method but `full` and `pretrain`), `--bench DIR`
//! (`../shared/data/benchmarks`), `--paired DIR` (`../shared/data/paired`), `--limit N` (evaluate the first N
//! images of each set: smoke runs only), `--dry-run` (print the sized configurations and stop).
//!
//! Each run writes `<work>/<task>/<method>-s<seed>.safetensors` (the adapter) and `.json` (its evaluation); a run
//! whose two files exist and match the settings is read back, not retrained, and an interrupted training resumes
//! from its checkpoint. The table is rewritten after every run, so a stopped command leaves a partial table.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use adaptir::peft::budget::{config_for_budget, Sized, BUDGET_BAND};
use adaptir::peft::file::{sha256_file, AdapterFile};
use adaptir::train::adapt::{train, TrainArgs};
use adaptir::train::eval::{eval, EvalArgs};
use adaptir::{Error, Result};
use serde_json::{json, Value};

/// The default budget on ipt-tiny (E = 216, one encoder and one decoder layer); see [`budget_reason`].
const IPT_TINY_BUDGET: usize = 21_000;
/// Inputs of every evaluation are synthesised with this seed, whatever the training seed.
const EVAL_SEED: u64 = 0;
const RUN_FORMAT: &str = "adaptir-table1-run";

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}

/// One evaluation set: clean images degraded on the fly, or real pairs.
struct EvalSet {
    name: &'static str,
    clean: Option<PathBuf>,
    pairs: Option<PathBuf>,
    what: &'static str,
}

/// The evaluation sets of each task the harness knows.
fn eval_sets(task: &str, bench: &Path, paired: &Path) -> Result<Vec<EvalSet>> {
    let clean =
        |name: &'static str, what| EvalSet { name, clean: Some(bench.join(name).join("HR")), pairs: None, what };
    Ok(match task {
        "lr4-noise30" | "lr4-jpeg30" => vec![
            clean("Set5", "x4 + degradation synthesised, Y, crop 4"),
            clean("Set14", "x4 + degradation synthesised, Y, crop 4"),
            clean("BSD100", "x4 + degradation synthesised, Y, crop 4"),
        ],
        "derain" => vec![
            clean("Set5", "synthetic light rain, Y"),
            clean("Set14", "synthetic light rain, Y"),
            EvalSet {
                name: "Rain100L3",
                clean: None,
                pairs: Some(paired.join("Rain100L_sample3")),
                what: "3 real Rain100L pairs, Y",
            },
        ],
        "lowlight" => vec![EvalSet {
            name: "Kodak24",
            clean: Some(bench.join("Kodak24")),
            pairs: None,
            what: "synthetic low light, RGB",
        }],
        other => {
            return Err(Error::invalid(format!(
                "--tasks: no evaluation sets for `{other}`: expected lr4-noise30, lr4-jpeg30, derain or lowlight"
            )))
        }
    })
}

struct Opts {
    backbone: PathBuf,
    data: PathBuf,
    bench: PathBuf,
    paired: PathBuf,
    work: PathBuf,
    out: PathBuf,
    tasks: Vec<String>,
    methods: Vec<String>,
    seeds: Vec<u64>,
    budget: Option<usize>,
    steps: usize,
    batch: usize,
    lr: f64,
    limit: Option<usize>,
    dry_run: bool,
}

/// `path` relative to the working folder (`..` where needed), so nothing written holds an absolute path.
fn relative(path: &Path) -> PathBuf {
    let Ok(cwd) = std::env::current_dir() else { return path.to_path_buf() };
    if !path.is_absolute() {
        return path.to_path_buf();
    }
    let (a, b): (Vec<Component>, Vec<Component>) = (path.components().collect(), cwd.components().collect());
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut rel: PathBuf = b[common..].iter().map(|_| Component::ParentDir).collect();
    rel.extend(&a[common..]);
    rel
}

fn list<T: std::str::FromStr>(key: &str, s: &str) -> Result<Vec<T>> {
    let items: Vec<T> = s
        .split(',')
        .map(|x| x.trim().parse().map_err(|_| Error::invalid(format!("--{key}: `{x}` is not valid in `{s}`"))))
        .collect::<Result<_>>()?;
    if items.is_empty() {
        return Err(Error::invalid(format!("--{key} needs at least one value")));
    }
    Ok(items)
}

fn parse(argv: &[String]) -> Result<Opts> {
    let mut opt: BTreeMap<String, String> = BTreeMap::new();
    let mut dry_run = false;
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        let key = k.strip_prefix("--").ok_or_else(|| Error::invalid(format!("unexpected argument {k}")))?;
        if key == "dry-run" {
            dry_run = true;
            continue;
        }
        let v = it.next().ok_or_else(|| Error::invalid(format!("--{key} needs a value")))?;
        opt.insert(key.to_string(), v.clone());
    }
    const KNOWN: &[&str] = &[
        "backbone", "data", "bench", "paired", "work", "out", "tasks", "methods", "seeds", "budget", "steps", "batch",
        "lr", "limit",
    ];
    if let Some(k) = opt.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(Error::invalid(format!("unknown option --{k}: expected one of --{}", KNOWN.join(", --"))));
    }
    let get = |k: &str, d: &str| opt.get(k).cloned().unwrap_or_else(|| d.to_string());
    let path = |k: &str, d: &str| relative(Path::new(&get(k, d)));
    let num = |k: &str, d: &str| -> Result<usize> {
        get(k, d).parse().map_err(|_| Error::invalid(format!("--{k} expects a whole number, got `{}`", get(k, d))))
    };
    let default_methods: Vec<String> = adaptir::peft::METHODS
        .iter()
        .filter(|m| !matches!(m.name, "full" | "pretrain"))
        .map(|m| m.name.to_string())
        .collect();
    let mut seeds: Vec<u64> = list("seeds", &get("seeds", "0,1,2"))?;
    seeds.dedup();
    let lr: f64 = get("lr", "1e-2").parse().map_err(|_| Error::invalid("--lr expects a number"))?;
    if !(lr.is_finite() && lr > 0.0) {
        return Err(Error::invalid(format!("--lr must be positive, got {lr}")));
    }
    let (steps, batch) = (num("steps", "500")?, num("batch", "16")?);
    if steps == 0 || batch == 0 {
        return Err(Error::invalid("--steps and --batch must be at least 1"));
    }
    let work = path("work", "models/ipt-tiny/table1");
    Ok(Opts {
        backbone: path("backbone", "models/ipt-tiny/backbone.safetensors"),
        data: path("data", "../shared/data/train/photos_hr"),
        bench: path("bench", "../shared/data/benchmarks"),
        paired: path("paired", "../shared/data/paired"),
        out: opt.get("out").map(|o| relative(Path::new(o))).unwrap_or_else(|| work.join("TABLE1.md")),
        work,
        tasks: list("tasks", &get("tasks", "lr4-noise30,derain"))?,
        methods: list("methods", &get("methods", &default_methods.join(",")))?,
        seeds,
        budget: opt.get("budget").map(|_| num("budget", "0")).transpose()?,
        steps,
        batch,
        lr,
        limit: opt.get("limit").map(|_| num("limit", "0")).transpose()?,
        dry_run,
    })
}

/// The command line that reproduces this table: every setting, with the relative paths actually used.
fn command(o: &Opts, budget: usize) -> String {
    let seeds: Vec<String> = o.seeds.iter().map(u64::to_string).collect();
    let mut c = format!(
        "cargo run --release --example compare_methods -- --budget {budget} --seeds {} --tasks {} --methods {} \
         --steps {} --batch {} --lr {} --backbone {} --data {} --bench {} --paired {} --work {} --out {}",
        seeds.join(","),
        o.tasks.join(","),
        o.methods.join(","),
        o.steps,
        o.batch,
        o.lr,
        o.backbone.display(),
        o.data.display(),
        o.bench.display(),
        o.paired.display(),
        o.work.display(),
        o.out.display()
    );
    if let Some(n) = o.limit {
        let _ = write!(c, " --limit {n}");
    }
    c
}

fn th(n: usize) -> String {
    adaptir::commands::thousands(n)
}

/// Why the default budget is what it is, from the sized plan (only said when `--budget` was not given).
fn budget_reason(plan: &[Sized], host: &adaptir::hooks::HostDims, backbone_params: usize) -> Result<String> {
    let mut kept = vec![];
    let mut moved = vec![];
    for s in plan {
        let default = adaptir::peft::method(s.method, &Value::Null, host).map_err(Error::invalid)?;
        let n = adaptir::peft::trainable_params(default.as_ref(), host, backbone_params)?;
        match (s.knob, default.config() == s.config) {
            (None, _) => {}
            (Some(_), true) => kept.push(format!("{} {}", s.method, th(n))),
            (Some((k, w)), false) => moved.push(format!(
                "{} {} {} -> {w} ({} -> {})",
                s.method,
                k,
                knob_of(default.as_ref()),
                th(n),
                th(s.params)
            )),
        }
    }
    Ok(format!(
        "The default budget, {} trainable parameters, is where the default (paper-derived) configurations of {} \
         already are on ipt-tiny, so those keep the paper's settings; it is {:.2} % of the backbone's {} \
         parameters, inside the 0.31-0.84 % that the paper's Table 1 methods take on the full IPT. The others are \
         resized: {}.",
        th(IPT_TINY_BUDGET),
        kept.join(", "),
        100.0 * IPT_TINY_BUDGET as f64 / backbone_params as f64,
        th(backbone_params),
        moved.join("; ")
    ))
}

/// The current value of a method's width knob, read from its configuration (`hidden` absent: AdaptIR's official
/// C / 24, written as "C/24").
fn knob_of(m: &dyn adaptir::peft::Method) -> String {
    let Some(k) = m.width_knob() else { return "-".into() };
    match m.config().get(k) {
        Some(v) => v.to_string(),
        None => "official".into(),
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::file(path, e.to_string())
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    serde_json::from_str(&text).map(Some).map_err(|e| io(path, format!("not valid JSON: {e}")))
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| io(path, e))? + "\n";
    Ok(adaptir::fsutil::write_atomic(path, text.as_bytes())?)
}

/// Evaluate one model (an adapter, or the backbone alone for `task`) on one set; the report as JSON.
fn eval_one(o: &Opts, adapter: Option<&Path>, task: &str, set: &EvalSet) -> Result<Value> {
    let r = eval(&EvalArgs {
        adapter: adapter.map(Path::to_path_buf),
        backbone: Some(o.backbone.clone()),
        method: adapter.is_none().then(|| "pretrain".to_string()),
        task: adapter.is_none().then(|| task.to_string()),
        data: set.clean.clone(),
        pairs: set.pairs.clone(),
        seed: EVAL_SEED,
        limit: o.limit,
        ..Default::default()
    })?;
    serde_json::to_value(&r).map_err(|e| Error::invalid(e.to_string()))
}

/// Evaluations in `old` made under `settings` are kept; the missing sets are evaluated.
fn evals(
    o: &Opts,
    adapter: Option<&Path>,
    task: &str,
    sets: &[EvalSet],
    old: Option<&Value>,
    settings: &Value,
) -> Result<(Value, bool)> {
    let mut out = serde_json::Map::new();
    let mut changed = false;
    let old = old.filter(|v| v.get("eval_settings") == Some(settings)).and_then(|v| v.get("eval"));
    for set in sets {
        let v = match old.and_then(|e| e.get(set.name)) {
            Some(v) => v.clone(),
            None => {
                changed = true;
                eval_one(o, adapter, task, set)?
            }
        };
        out.insert(set.name.to_string(), v);
    }
    Ok((Value::Object(out), changed))
}

/// What must hold of an existing adapter for it to count as this run; the differences, named.
fn adapter_differences(file: &AdapterFile, s: &Sized, task: &str, seed: u64, o: &Opts, sha: &str) -> Vec<String> {
    let m = &file.meta;
    let t = &m.training;
    let data = o.data.display().to_string();
    let checks: [(&str, Value, Value); 9] = [
        ("method", json!(m.method), json!(s.method)),
        ("method_config", m.method_config.clone(), s.config.clone()),
        ("task", json!(m.task), json!(task)),
        ("backbone_sha256", json!(m.backbone_sha256), json!(sha)),
        ("steps", t["steps"].clone(), json!(o.steps)),
        ("batch", t["batch"].clone(), json!(o.batch)),
        ("lr", t["lr"].clone(), json!(o.lr)),
        ("seed", t["seed"].clone(), json!(seed)),
        ("data", t["data"].clone(), json!(data)),
    ];
    checks.into_iter().filter(|(_, a, b)| a != b).map(|(k, a, b)| format!("{k}: file has {a}, this run {b}")).collect()
}

fn adapter_path(o: &Opts, method: &str, task: &str, seed: u64) -> PathBuf {
    o.work.join(task).join(format!("{method}-s{seed}.safetensors"))
}

/// Whether this run's adapter already exists; an error naming every difference if it is another run's.
fn check_existing(adapter: &Path, o: &Opts, s: &Sized, task: &str, seed: u64, sha: &str) -> Result<bool> {
    if !adapter.exists() {
        return Ok(false);
    }
    let file = AdapterFile::load(adapter)?;
    let diffs = adapter_differences(&file, s, task, seed, o, sha);
    if !diffs.is_empty() {
        return Err(Error::file(
            adapter,
            format!("exists but is not this run ({}); move it away or choose another --work", diffs.join("; ")),
        ));
    }
    Ok(true)
}

/// Train (or resume, or read back) one run and evaluate it; its record.
fn one_run(o: &Opts, s: &Sized, task: &str, seed: u64, sets: &[EvalSet], sha: &str) -> Result<Value> {
    let dir = o.work.join(task);
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let adapter = adapter_path(o, s.method, task, seed);
    let record = dir.join(format!("{}-s{seed}.json", s.method));
    let old = read_json(&record)?;
    let mut train_seconds = None;
    let mut threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into());
    if !check_existing(&adapter, o, s, task, seed, sha)? {
        eprintln!("  training {} (seed {seed}, {task}) ...", s.method);
        let t0 = Instant::now();
        let rep = train(&TrainArgs {
            method: s.method.to_string(),
            method_config: Some(s.config.clone()),
            task: task.to_string(),
            data: vec![o.data.clone()],
            exclude: vec![],
            pairs: None,
            backbone: o.backbone.clone(),
            preset: None,
            config: None,
            steps: o.steps,
            batch: o.batch,
            patch: 48,
            lr: o.lr,
            seed,
            out: adapter.clone(),
            resume: true,
            checkpoint_every: 50,
            eval_every: o.steps,
            stop_after: None,
            quiet: true,
        })?;
        if !rep.finished {
            return Err(Error::invalid(format!(
                "{}: training stopped at step {} of {}",
                adapter.display(),
                rep.steps,
                o.steps
            )));
        }
        if rep.trainable != s.params {
            return Err(Error::invalid(format!(
                "{}: trained {} parameters but the budget plan counted {}",
                adapter.display(),
                rep.trainable,
                s.params
            )));
        }
        train_seconds = Some(t0.elapsed().as_secs_f64());
        // The adapter is complete; its checkpoint (moments included) is not needed to read the run back.
        let _ = std::fs::remove_file(&rep.checkpoint);
    }
    let adapter_sha = sha256_file(&adapter)?;
    let same_adapter = old.as_ref().filter(|v| v["adapter_sha256"] == json!(adapter_sha));
    if train_seconds.is_none() {
        train_seconds = same_adapter.and_then(|v| v["train_seconds"].as_f64());
        if let Some(t) = same_adapter.and_then(|v| v["threads"].as_str()) {
            threads = t.to_string();
        }
    }
    let settings = json!({"seed": EVAL_SEED, "limit": o.limit});
    let (eval, changed) = evals(o, Some(&adapter), task, sets, same_adapter, &settings)?;
    let file = AdapterFile::load(&adapter)?;
    let v = json!({
        "format": RUN_FORMAT,
        "method": s.method, "method_config": s.config, "trainable_params": s.params,
        "task": task, "seed": seed, "steps": o.steps, "batch": o.batch, "lr": o.lr,
        "data": o.data.display().to_string(),
        "backbone": o.backbone.display().to_string(), "backbone_sha256": sha,
        "adapter": adapter.display().to_string(), "adapter_sha256": adapter_sha,
        "final_loss": file.meta.training["final_loss"], "final_val_psnr": file.meta.training["final_val_psnr"],
        "train_seconds": train_seconds, "threads": threads,
        "eval_settings": settings, "eval": eval,
    });
    if changed || old.as_ref() != Some(&v) {
        write_json(&record, &v)?;
    }
    Ok(v)
}

/// Mean and sample standard deviation (n - 1 in the denominator; `None` for one value).
fn mean_std(xs: &[f64]) -> (f64, Option<f64>) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let std = (xs.len() > 1).then(|| (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (mean, std)
}

fn pm(xs: &[f64], digits: usize, want: usize) -> String {
    if xs.is_empty() {
        return "-".into();
    }
    let (m, s) = mean_std(xs);
    let mut c = match s {
        Some(s) => format!("{m:.digits$} ± {s:.digits$}"),
        None => format!("{m:.digits$}"),
    };
    if xs.len() < want {
        let _ = write!(c, " (n={})", xs.len());
    }
    c
}

struct Ctx<'a> {
    o: &'a Opts,
    budget: usize,
    reason: Option<String>,
    plan: &'a [Sized],
    sha: &'a str,
    backbone_params: usize,
    sets: &'a BTreeMap<String, Vec<EvalSet>>,
    base: &'a BTreeMap<String, Value>,
    started: Instant,
}

/// Per task and method, the seeds' records.
type Runs = BTreeMap<(String, String), Vec<Value>>;

fn psnr(v: &Value, set: &str, key: &str) -> Option<f64> {
    v["eval"][set][key].as_f64()
}

/// The Markdown table from whatever runs are finished.
fn render(c: &Ctx, runs: &Runs) -> String {
    let o = c.o;
    let want = o.seeds.len();
    let mut md = String::new();
    let _ = writeln!(md, "# Table 1 at small scale: PETL methods at matched trainable-parameter budgets\n");
    let _ =
        writeln!(md, "Produced by (run from the repository root; every run is resumable and read back when done):\n");
    let _ = writeln!(md, "```sh\n{}\n```\n", command(o, c.budget));
    let done: usize = runs.values().map(Vec::len).sum();
    let total = o.tasks.len() * c.plan.len() * want;
    let _ = writeln!(
        md,
        "{done} of {total} runs finished; this invocation took {:.1} min of wall time ({} rayon threads).\n",
        c.started.elapsed().as_secs_f64() / 60.0,
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into())
    );
    let _ = writeln!(
        md,
        "- **Backbone**: `{}` (sha256 `{}`, {} parameters), frozen.\n\
         - **Training**: {} steps of batch {} (48x48 inputs), AdamW lr {} (weight decay 0.01) halved at \
         50/80/90/95 %, seeds {}, degradations synthesised from `{}` (its last photo held out).\n\
         - **Evaluation**: on images none of the runs trained on, inputs synthesised per file with seed {EVAL_SEED} \
         (the same inputs for every run){}. Cells: PSNR mean ± sample standard deviation (n - 1) over the seeds, \
         then mean SSIM. \"mean\" = the mean over the task's sets, per seed, then over the seeds; the rows are \
         ordered by it.",
        o.backbone.display(),
        c.sha,
        th(c.backbone_params),
        o.steps,
        o.batch,
        o.lr,
        o.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
        o.data.display(),
        o.limit
            .map(|n| format!("; **only the first {n} image(s) of each set** (a smoke run, not a result)"))
            .unwrap_or_default()
    );
    let band = 100.0 * BUDGET_BAND;
    let _ = writeln!(
        md,
        "- **Budget**: {} trainable parameters (counted as `adaptir methods` counts them); every method with a \
         width knob is sized to the count closest to it and must be within ±{band:.0} %.{}\n",
        th(c.budget),
        c.reason.as_ref().map(|r| format!(" {r}")).unwrap_or_default()
    );
    let _ = writeln!(
        md,
        "## Configurations\n\n| method | width | configuration | trainable | vs budget |\n|---|---|---|---:|---:|"
    );
    for s in c.plan {
        let width = match s.knob {
            Some((k, w)) => format!("{k} {w}"),
            None => "none: **not matched** (fixed size)".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {width} | `{}` | {} | {:+.1} % |",
            s.method,
            s.config,
            th(s.params),
            100.0 * s.deviation(c.budget)
        );
    }
    let unmatched: Vec<&Sized> = c.plan.iter().filter(|s| !s.matched).collect();
    if !unmatched.is_empty() {
        let names: Vec<String> = unmatched.iter().map(|s| format!("{} ({})", s.method, th(s.params))).collect();
        let _ = writeln!(
            md,
            "\n{} {} no width to scale, so {} cannot be matched: listed below the ranked rows at {} fixed budget, \
             outside the ordering.",
            names.join(", "),
            if unmatched.len() == 1 { "has" } else { "have" },
            if unmatched.len() == 1 { "it" } else { "they" },
            if unmatched.len() == 1 { "its" } else { "their" }
        );
    }
    let mut ranks: BTreeMap<String, Vec<(usize, String, f64)>> = BTreeMap::new();
    for task in &o.tasks {
        let sets = &c.sets[task];
        let base = &c.base[task];
        let _ = writeln!(md, "\n## {task}\n");
        for s in sets {
            let _ = writeln!(md, "- {}: {}", s.name, s.what);
        }
        let _ = write!(md, "\n| rank | method | trainable |");
        for s in sets {
            let _ = write!(md, " {} |", s.name);
        }
        let _ =
            writeln!(md, " mean PSNR | train time (mean) |\n|---:|---|---:|{}---:|---:|", "---|".repeat(sets.len()));
        let baseline_name = base["eval"][sets[0].name]["baseline"].as_str().unwrap_or("input");
        for (label, key, ssim) in [
            (if baseline_name == "bicubic" { "bicubic" } else { "degraded input" }, "baseline_psnr", "baseline_ssim"),
            ("backbone alone", "psnr", "ssim"),
        ] {
            let _ = write!(md, "| | {label} | {} |", if key == "psnr" { "0" } else { "-" });
            let mut all = vec![];
            for s in sets {
                let p = psnr(base, s.name, key).unwrap_or(f64::NAN);
                all.push(p);
                let _ = write!(md, " {p:.2} / {:.4} |", psnr(base, s.name, ssim).unwrap_or(f64::NAN));
            }
            let _ = writeln!(md, " {:.2} | - |", all.iter().sum::<f64>() / all.len() as f64);
        }
        let backbone_mean: f64 =
            sets.iter().map(|s| psnr(base, s.name, "psnr").unwrap_or(f64::NAN)).sum::<f64>() / sets.len() as f64;
        let mut rows = vec![];
        for s in c.plan {
            let recs = runs.get(&(task.clone(), s.method.to_string())).cloned().unwrap_or_default();
            let per_seed: Vec<f64> = recs
                .iter()
                .map(|r| {
                    sets.iter().map(|set| psnr(r, set.name, "psnr").unwrap_or(f64::NAN)).sum::<f64>()
                        / sets.len() as f64
                })
                .collect();
            rows.push((s, recs, per_seed));
        }
        let key = |p: &[f64]| if p.is_empty() { f64::NEG_INFINITY } else { mean_std(p).0 };
        rows.sort_by(|a, b| (!a.0.matched).cmp(&!b.0.matched).then(key(&b.2).total_cmp(&key(&a.2))));
        let mut rank = 0;
        for (s, recs, per_seed) in &rows {
            let r = if s.matched && !per_seed.is_empty() {
                rank += 1;
                ranks.entry(s.method.to_string()).or_default().push((
                    rank,
                    task.clone(),
                    key(per_seed) - backbone_mean,
                ));
                rank.to_string()
            } else if s.matched {
                "-".into()
            } else {
                "not matched".into()
            };
            let _ = write!(md, "| {r} | {} | {} |", s.method, th(s.params));
            for set in sets {
                let p: Vec<f64> = recs.iter().filter_map(|v| psnr(v, set.name, "psnr")).collect();
                let q: Vec<f64> = recs.iter().filter_map(|v| psnr(v, set.name, "ssim")).collect();
                let ssim = if q.is_empty() { "-".into() } else { format!("{:.4}", mean_std(&q).0) };
                let _ = write!(md, " {} / {ssim} |", pm(&p, 2, want));
            }
            let t: Vec<f64> = recs.iter().filter_map(|v| v["train_seconds"].as_f64()).collect();
            let time = if t.is_empty() { "-".into() } else { format!("{:.0} s", mean_std(&t).0) };
            let _ = writeln!(md, " {} | {time} |", pm(per_seed, 2, want));
        }
        let order: Vec<String> = rows
            .iter()
            .filter(|(s, _, p)| s.matched && !p.is_empty())
            .map(|(s, _, p)| format!("{} {:.3}", s.method, key(p)))
            .collect();
        let _ = writeln!(
            md,
            "\nOrdering by mean PSNR, as it came out: {} (backbone alone {backbone_mean:.3}).",
            order.join(" > ")
        );
    }
    if o.tasks.len() > 1 {
        let _ = write!(md, "\n## Across tasks (the stability claim)\n\nRank among the matched methods and mean gain over the backbone alone (dB).\n\n| method |");
        for t in &o.tasks {
            let _ = write!(md, " {t} |");
        }
        let _ = writeln!(md, "\n|---|{}", "---|".repeat(o.tasks.len()));
        for s in c.plan.iter().filter(|s| s.matched) {
            let _ = write!(md, "| {} |", s.method);
            for t in &o.tasks {
                match ranks.get(s.method).and_then(|v| v.iter().find(|(_, task, _)| task == t)) {
                    Some((r, _, g)) => {
                        let _ = write!(md, " {r} ({g:+.2}) |");
                    }
                    None => md.push_str(" - |"),
                }
            }
            md.push('\n');
        }
    }
    md
}

fn run() -> Result<()> {
    let started = Instant::now();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let o = parse(&argv)?;
    let config = adaptir::model::backbone_config(&o.backbone)?;
    let host = config.host_dims();
    let backbone_params = adaptir::commands::methods::backbone_params(&config)?;
    let tiny = adaptir::backbone::IptConfig::preset("ipt-tiny")?.host_dims() == host;
    let (budget, default_budget) = match (o.budget, tiny) {
        (Some(b), _) => (b, false),
        (None, true) => (IPT_TINY_BUDGET, true),
        (None, false) => {
            return Err(Error::invalid(format!(
                "--budget: no default for this backbone (E = {}, {} + {} layers; the default {} is for ipt-tiny); \
                 `adaptir methods` lists the default configurations' counts",
                host.embed,
                host.encoder_layers,
                host.decoder_layers,
                th(IPT_TINY_BUDGET)
            )))
        }
    };
    let plan = o.methods.iter().map(|m| config_for_budget(m, budget, &host)).collect::<Result<Vec<_>>>()?;
    eprintln!("budget {} trainable parameters (±{:.0} %):", th(budget), 100.0 * BUDGET_BAND);
    for s in &plan {
        eprintln!(
            "  {:<12} {:<16} {:>9}  {:+6.1} %  {}{}",
            s.method,
            s.knob.map(|(k, w)| format!("{k} {w}")).unwrap_or_else(|| "(no width)".into()),
            th(s.params),
            100.0 * s.deviation(budget),
            s.config,
            if s.matched { "" } else { "  NOT MATCHED" }
        );
    }
    let off: Vec<String> = plan
        .iter()
        .filter(|s| s.knob.is_some() && !s.matched)
        .map(|s| format!("{} ({})", s.method, th(s.params)))
        .collect();
    if !off.is_empty() {
        return Err(Error::invalid(format!(
            "--budget {budget}: {} cannot come within ±{:.0} % of it with one width knob; choose another budget",
            off.join(", "),
            100.0 * BUDGET_BAND
        )));
    }
    let reason = if default_budget { Some(budget_reason(&plan, &host, backbone_params)?) } else { None };
    if let Some(r) = &reason {
        eprintln!("{r}");
    }
    let sets: BTreeMap<String, Vec<EvalSet>> =
        o.tasks.iter().map(|t| Ok((t.clone(), eval_sets(t, &o.bench, &o.paired)?))).collect::<Result<_>>()?;
    if o.dry_run {
        eprintln!("{}", command(&o, budget));
        return Ok(());
    }
    let sha = sha256_file(&o.backbone)?;
    // Before any work: every adapter already in --work must belong to this table.
    for &seed in &o.seeds {
        for task in &o.tasks {
            for s in &plan {
                check_existing(&adapter_path(&o, s.method, task, seed), &o, s, task, seed, &sha)?;
            }
        }
    }
    // Baselines per task: the degraded input (or bicubic) and the backbone alone.
    let mut base = BTreeMap::new();
    for task in &o.tasks {
        let dir = o.work.join(task);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let path = dir.join("backbone.json");
        let old = read_json(&path)?.filter(|v| v["backbone_sha256"] == json!(sha));
        let settings = json!({"seed": EVAL_SEED, "limit": o.limit});
        let (eval, changed) = evals(&o, None, task, &sets[task], old.as_ref(), &settings)?;
        let v = json!({"format": RUN_FORMAT, "method": "pretrain", "task": task, "backbone": o.backbone.display().to_string(),
            "backbone_sha256": sha, "eval_settings": settings, "eval": eval});
        if changed || old.as_ref() != Some(&v) {
            write_json(&path, &v)?;
        }
        for s in &sets[task] {
            eprintln!(
                "{task} {}: baseline {:.3} dB, backbone alone {:.3} dB",
                s.name,
                psnr(&v, s.name, "baseline_psnr").unwrap_or(f64::NAN),
                psnr(&v, s.name, "psnr").unwrap_or(f64::NAN)
            );
        }
        base.insert(task.clone(), v);
    }
    let ctx = Ctx { o: &o, budget, reason, plan: &plan, sha: &sha, backbone_params, sets: &sets, base: &base, started };
    let mut runs: Runs = BTreeMap::new();
    let total = o.seeds.len() * o.tasks.len() * plan.len();
    let mut k = 0;
    // Seed-major, so that an interrupted table has every method of the first seeds.
    for &seed in &o.seeds {
        for task in &o.tasks {
            for s in &plan {
                k += 1;
                let v = one_run(&o, s, task, seed, &sets[task], &sha)?;
                let scores: Vec<String> = sets[task]
                    .iter()
                    .map(|x| format!("{} {:.3}", x.name, psnr(&v, x.name, "psnr").unwrap_or(f64::NAN)))
                    .collect();
                eprintln!("[{k}/{total}] {task} {} seed {seed}: {}", s.method, scores.join(", "));
                runs.entry((task.clone(), s.method.to_string())).or_default().push(v);
                if let Some(dir) = o.out.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
                }
                adaptir::fsutil::write_atomic(&o.out, render(&ctx, &runs).as_bytes())?;
            }
        }
    }
    println!("{}", render(&ctx, &runs));
    Ok(())
}
