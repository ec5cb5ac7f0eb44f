//! Hardening of the writers (issue 18, docs/reliability.md): `train`, `pretrain`, `export --golden` and
//! `restore` killed with SIGKILL at seeded random moments, run out of disk, and run twice at once on one output.
//!
//! After every kill, each output path holds nothing, the earlier complete output, or the new complete output
//! (loaded with the library's reader and compared byte for byte with a known good run); the only debris is the
//! killed process's own `.NAME.PID.N.tmp` (SIGKILL gives it no chance to remove it), and the next successful run
//! removes such files of dead processes. `train --resume` / `pretrain --resume` after kills ends with the same
//! bytes as an uninterrupted run.
//!
//! Kills per command: `ADAPTIR_KILLS` (default 20; `scripts/kill-soak.sh N` runs more); seed:
//! `ADAPTIR_KILL_SEED` (default 18).
mod train_util;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use train_util::{backbone, dir, photos, s, train_args};

const BIN: &str = env!("CARGO_BIN_EXE_adaptir");

fn kills() -> usize {
    std::env::var("ADAPTIR_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

fn rng(salt: u64) -> ChaCha8Rng {
    let seed: u64 = std::env::var("ADAPTIR_KILL_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(18);
    ChaCha8Rng::seed_from_u64(seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn spawn(args: &[String]) -> Child {
    Command::new(BIN).args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Run to the end; panics unless it exits 0. Returns the wall time.
fn run_ok(args: &[String]) -> Duration {
    let t = Instant::now();
    let out = Command::new(BIN).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "adaptir {}: {err}", args.join(" "));
    assert!(!err.contains("panicked"), "{err}");
    t.elapsed()
}

/// `a b c` -> owned arguments.
fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

/// The temporary files `.NAME.PID.N.tmp` in `dir`: (name, pid).
fn temps(dir: &Path) -> Vec<(String, u32)> {
    let mut v = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') || !name.ends_with(".tmp") {
            continue;
        }
        let parts: Vec<&str> = name.rsplitn(4, '.').collect();
        let pid = parts.get(2).and_then(|p| p.parse().ok()).unwrap_or(0);
        v.push((name, pid));
    }
    v
}

/// A moment to kill at: half uniform over the whole run (and a little past it), half late, where the outputs
/// are written.
fn moment(rng: &mut ChaCha8Rng, d: Duration) -> Duration {
    let ms = d.as_millis().max(1) as u64;
    if rng.random_bool(0.5) {
        Duration::from_millis(rng.random_range(0..=ms * 11 / 10))
    } else {
        Duration::from_millis(rng.random_range(ms * 6 / 10..=ms * 21 / 20))
    }
}

/// Start `args`, SIGKILL it after `wait` (unless it ended before), reap it. Returns (pid, exited normally).
fn kill_after(args: &[String], wait: Duration) -> (u32, Option<i32>) {
    let mut child = spawn(args);
    let pid = child.id();
    let t = Instant::now();
    while t.elapsed() < wait {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2).min(wait.saturating_sub(t.elapsed())));
    }
    let _ = child.kill(); // SIGKILL on unix
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    (pid, out.status.code())
}

/// One output of a command: its path, the reader that must accept it, the complete new content (None: any
/// content the reader accepts, e.g. a checkpoint) and the earlier complete content placed there before a kill.
struct Output {
    path: PathBuf,
    read: fn(&Path) -> Result<(), String>,
    good: Option<Vec<u8>>,
    earlier: Option<Vec<u8>>,
}

fn read_onnx(p: &Path) -> Result<(), String> {
    adaptir::compile::onnx::read_model(p).map(|_| ()).map_err(|e| e.to_string())
}
fn read_tensors(p: &Path) -> Result<(), String> {
    adaptir::params::StateDict::load(p).map(|_| ()).map_err(|e| e.to_string())
}
fn read_png(p: &Path) -> Result<(), String> {
    adaptir::commands::restore::load(p).map(|_| ()).map_err(|e| e.to_string())
}
fn read_adapter(p: &Path) -> Result<(), String> {
    adaptir::peft::file::AdapterFile::load(p).map(|_| ()).map_err(|e| e.to_string())
}
/// A training checkpoint, read by `Checkpoint::load` with the fingerprint it records.
fn read_checkpoint(p: &Path) -> Result<(), String> {
    let bytes = std::fs::read(p).map_err(|e| e.to_string())?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| e.to_string())?;
    let fp = header.metadata().as_ref().and_then(|m| m.get("fingerprint")).ok_or("no fingerprint")?;
    let fp: serde_json::Value = serde_json::from_str(fp).map_err(|e| e.to_string())?;
    adaptir::train::checkpoint::Checkpoint::load(p, &fp).map(|_| ()).map_err(|e| e.to_string())
}

/// After a kill: every output is absent (only if it was absent before), the earlier content, or the complete
/// new content, and its reader accepts it.
fn check_outputs(what: &str, outputs: &[Output], placed: &[bool]) {
    for (o, &was) in outputs.iter().zip(placed) {
        let Ok(bytes) = std::fs::read(&o.path) else {
            assert!(!was, "{what}: the earlier {} is gone", o.path.display());
            continue;
        };
        let earlier = was && o.earlier.as_ref() == Some(&bytes);
        let new = o.good.as_ref().is_none_or(|g| *g == bytes);
        assert!(
            earlier || new,
            "{what}: {} is neither the earlier nor the new output ({} bytes)",
            o.path.display(),
            bytes.len()
        );
        if let Err(e) = (o.read)(&o.path) {
            panic!("{what}: {} does not load: {e}", o.path.display());
        }
    }
}

/// Temporary files in `dir` may only belong to killed processes.
fn check_temps(what: &str, dir: &Path, killed: &[u32]) -> usize {
    let t = temps(dir);
    for (name, pid) in &t {
        assert!(killed.contains(pid), "{what}: {name} belongs to no killed process");
    }
    t.len()
}

struct Figures {
    kills: usize,
    mid_write: usize,
    ended_first: usize,
}

/// Kill `args` `n` times at seeded moments spread over `d`; for each, place the earlier outputs (or not) first.
fn kill_loop(name: &str, args: &[String], outputs: &[Output], d: Duration, salt: u64) -> Figures {
    let dir = outputs[0].path.parent().unwrap().to_path_buf();
    let mut r = rng(salt);
    let mut f = Figures { kills: 0, mid_write: 0, ended_first: 0 };
    let mut killed = vec![];
    let mut i = 0;
    while f.kills < kills() && i < 4 * kills() {
        i += 1;
        let placed: Vec<bool> = outputs
            .iter()
            .map(|o| match &o.earlier {
                Some(e) if r.random_bool(0.5) => {
                    std::fs::write(&o.path, e).unwrap();
                    true
                }
                _ => {
                    let _ = std::fs::remove_file(&o.path);
                    false
                }
            })
            .collect();
        let before = temps(&dir).len();
        let at = moment(&mut r, d);
        let (pid, code) = kill_after(args, at);
        killed.push(pid);
        let what = format!("{name}: kill {i} at {} ms", at.as_millis());
        match code {
            Some(c) => {
                assert_eq!(c, 0, "{what}: exited {c} before the kill");
                f.ended_first += 1;
            }
            None => f.kills += 1,
        }
        check_outputs(&what, outputs, &placed);
        if check_temps(&what, &dir, &killed) > before {
            f.mid_write += 1;
        }
    }
    f
}

/// The next successful run replaces everything and leaves no temporary file (it removes dead processes' ones).
fn rerun_clean(name: &str, args: &[String], outputs: &[Output]) {
    run_ok(args);
    for o in outputs {
        if let Some(g) = &o.good {
            assert!(std::fs::read(&o.path).unwrap() == *g, "{name}: {} differs after a clean run", o.path.display());
        }
    }
    let dir = outputs[0].path.parent().unwrap();
    assert_eq!(temps(dir), vec![], "{name}: temporary files left after a successful run");
}

fn report(name: &str, f: &Figures, d: Duration, t: Instant) {
    eprintln!(
        "kill {name}: {} SIGKILLs ({} during a write, leaving the killed process's temporary file), {} runs ended \
         before their kill; run {:.2} s, test {:.1} s",
        f.kills,
        f.mid_write,
        f.ended_first,
        d.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    assert_eq!(f.kills, kills(), "{name}: too few kills landed before the runs ended");
}

/// Backbone, photos, an adapter and the images `export` and `restore` use: made once per test.
struct Setup {
    root: PathBuf,
    backbone: PathBuf,
    adapter: PathBuf,
    photos: PathBuf,
}

fn setup(name: &str) -> Setup {
    let root = dir(name);
    let bb = root.join("backbone.safetensors");
    backbone(&bb);
    let ph = photos(&root.join("photos"), 2, 64, 56);
    let adapter = root.join("adapter.safetensors");
    let mut train = train_args(&bb, &ph, &adapter, "1");
    train.extend(["--eval-every", "1000"]);
    run_ok(&argv(&train));
    Setup { root, backbone: bb, adapter, photos: ph }
}

fn export_args(st: &Setup, adapter: bool, out: &Path, golden: &Path) -> Vec<String> {
    let mut a = argv(&["export", "--backbone", s(&st.backbone), "-o", s(out), "--golden", s(golden)]);
    if adapter {
        a.extend(argv(&["--adapter", s(&st.adapter)]));
    } else {
        a.extend(argv(&["--task", "sr2"]));
    }
    a
}

fn restore_args(st: &Setup, image: &Path, out: &Path) -> Vec<String> {
    argv(&["restore", "--adapter", s(&st.adapter), "--backbone", s(&st.backbone), s(image), "-o", s(out), "--quiet"])
}

#[test]
fn export_golden_killed_at_random_moments() {
    let t = Instant::now();
    let st = setup("kill-export");
    let (ref_dir, out_dir) = (st.root.join("ref"), st.root.join("out"));
    std::fs::create_dir_all(&ref_dir).unwrap();
    std::fs::create_dir_all(&out_dir).unwrap();
    // The earlier output: the backbone alone for another task; the new: backbone + adapter.
    run_ok(&export_args(&st, false, &ref_dir.join("old.onnx"), &ref_dir.join("old.golden.safetensors")));
    let d = run_ok(&export_args(&st, true, &ref_dir.join("new.onnx"), &ref_dir.join("new.golden.safetensors")));
    let read = |p: &str| Some(std::fs::read(ref_dir.join(p)).unwrap());
    let outputs = [
        Output { path: out_dir.join("m.onnx"), read: read_onnx, good: read("new.onnx"), earlier: read("old.onnx") },
        Output {
            path: out_dir.join("m.golden.safetensors"),
            read: read_tensors,
            good: read("new.golden.safetensors"),
            earlier: read("old.golden.safetensors"),
        },
    ];
    let args = export_args(&st, true, &outputs[0].path, &outputs[1].path);
    let f = kill_loop("export --golden", &args, &outputs, d, 1);
    rerun_clean("export --golden", &args, &outputs);
    report("export --golden", &f, d, t);
}

#[test]
fn restore_killed_at_random_moments() {
    let t = Instant::now();
    let st = setup("kill-restore");
    let (ref_dir, out_dir) = (st.root.join("ref"), st.root.join("out"));
    std::fs::create_dir_all(&ref_dir).unwrap();
    std::fs::create_dir_all(&out_dir).unwrap();
    let big = photos(&st.root.join("big"), 1, 160, 120).join("img0.png");
    run_ok(&restore_args(&st, &st.photos.join("img1.png"), &ref_dir.join("old.png")));
    let d = run_ok(&restore_args(&st, &big, &ref_dir.join("new.png")));
    let read = |p: &str| Some(std::fs::read(ref_dir.join(p)).unwrap());
    let outputs =
        [Output { path: out_dir.join("r.png"), read: read_png, good: read("new.png"), earlier: read("old.png") }];
    let args = restore_args(&st, &big, &outputs[0].path);
    let f = kill_loop("restore", &args, &outputs, d, 2);
    rerun_clean("restore", &args, &outputs);
    report("restore", &f, d, t);
}

/// `train` / `pretrain` with `--resume`, killed over and over: every checkpoint on disk loads, the adapter and
/// curve are absent or the uninterrupted run's bytes, and the run that finally ends (every one that ends after
/// resuming a killed run's checkpoint) writes them byte-identical to the uninterrupted run.
fn resume_kill_loop(
    name: &str,
    base: Vec<String>,
    out: &Path,
    reference: &Path,
    read: fn(&Path) -> Result<(), String>,
    salt: u64,
) {
    let t = Instant::now();
    let stem = |p: &Path, ext: &str| p.with_file_name(format!("{}.{ext}", p.file_stem().unwrap().to_string_lossy()));
    let mut ref_args = base.clone();
    ref_args.extend(argv(&["--out", s(reference)]));
    let d = run_ok(&ref_args);
    let good = std::fs::read(reference).unwrap();
    let good_curve = std::fs::read(stem(reference, "curve.png")).unwrap();
    let ckpt = stem(out, "ckpt.safetensors");
    let outputs = [
        Output { path: out.to_path_buf(), read, good: Some(good.clone()), earlier: None },
        Output { path: stem(out, "curve.png"), read: read_png, good: Some(good_curve), earlier: None },
        Output { path: ckpt.clone(), read: read_checkpoint, good: None, earlier: None },
    ];
    let mut args = base;
    args.extend(argv(&["--out", s(out), "--resume"]));
    let dir = out.parent().unwrap().to_path_buf();
    let mut r = rng(salt);
    let mut f = Figures { kills: 0, mid_write: 0, ended_first: 0 };
    let (mut killed, mut resumed_to_end, mut i, mut aim) = (vec![], 0, 0, 0.7f64);
    while f.kills < kills() && i < 4 * kills() {
        i += 1;
        let resuming = ckpt.exists();
        let placed: Vec<bool> = outputs.iter().map(|o| o.path.exists()).collect();
        let before = temps(&dir).len();
        // A resumed run has only the rest of the steps to do: aim earlier, the more so the more runs end first.
        let at = moment(&mut r, d.mul_f64(aim));
        let (pid, code) = kill_after(&args, at);
        killed.push(pid);
        let what = format!("{name}: kill {i} at {} ms", at.as_millis());
        check_outputs(&what, &outputs, &placed);
        if check_temps(&what, &dir, &killed) > before {
            f.mid_write += 1;
        }
        match code {
            Some(c) => {
                assert_eq!(c, 0, "{what}: exited {c} before the kill");
                f.ended_first += 1;
                aim = (aim * 0.8).max(0.1);
                assert!(std::fs::read(out).unwrap() == good, "{what}: the finished output differs");
                resumed_to_end += usize::from(resuming);
                // Start over (the finished output stays: it is the earlier output of the next runs).
                std::fs::remove_file(&ckpt).unwrap();
            }
            None => {
                f.kills += 1;
                aim = (aim * 1.05).min(1.0);
            }
        }
    }
    // Resume whatever the last kill left to the end.
    let resuming = ckpt.exists();
    run_ok(&args);
    resumed_to_end += usize::from(resuming);
    assert!(std::fs::read(out).unwrap() == good, "{name}: resumed output differs from the uninterrupted run's");
    assert_eq!(temps(&dir), vec![], "{name}: temporary files left after a successful run");
    assert!(resumed_to_end >= 1, "{name}: no run resumed a killed run's checkpoint");
    eprintln!("kill {name}: {resumed_to_end} runs resumed after kills and ended byte-identical");
    report(name, &f, d, t);
}

#[test]
fn train_killed_at_random_moments_resumes_bit_identical() {
    let st = setup("kill-train");
    let base = argv(&[
        "train",
        "--method",
        "adaptir",
        "--task",
        "denoise30",
        "--backbone",
        s(&st.backbone),
        "--data",
        s(&st.photos),
        "--steps",
        "6",
        "--batch",
        "1",
        "--checkpoint-every",
        "1",
        "--eval-every",
        "3",
    ]);
    let out_dir = st.root.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    resume_kill_loop("train", base, &out_dir.join("k.safetensors"), &st.root.join("ref.safetensors"), read_adapter, 3);
}

#[test]
fn pretrain_killed_at_random_moments_resumes_bit_identical() {
    let root = dir("kill-pretrain");
    let ph = photos(&root.join("photos"), 2, 200, 196);
    let base = argv(&[
        "pretrain",
        "--data",
        s(&ph),
        "--steps",
        "2",
        "--batch",
        "1",
        "--checkpoint-every",
        "1",
        "--eval-every",
        "1000",
    ]);
    let out_dir = root.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    resume_kill_loop("pretrain", base, &out_dir.join("b.safetensors"), &root.join("ref.safetensors"), read_tensors, 4);
}

/// A tmpfs of 256 KiB mounted for one test (unmounted on drop), or None where mounting is refused.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", "size=256k", "tmpfs", s(dir)]).output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
            Ok(o) => {
                eprintln!(
                    "SKIPPED disk-full test: `mount -t tmpfs` refused ({}); run as root to check it",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED disk-full test: no `mount` ({e})");
                None
            }
        }
    }

    /// Fill the filesystem but for one 4 KiB page.
    fn fill(&self) {
        use std::io::Write;
        let p = self.0.join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let page = [0u8; 4096];
        while f.write_all(&page).and_then(|_| f.sync_all()).is_ok() {}
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(4096)).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Every writer on a full disk: exit 2 naming the file and the full disk, the earlier output intact, no
/// temporary file left.
#[test]
fn a_full_disk_fails_cleanly_and_keeps_the_earlier_output() {
    let st = setup("diskfull");
    let big = photos(&st.root.join("big"), 2, 200, 196);
    let mnt = st.root.join("mnt");
    let Some(fs) = Tmpfs::mount(&mnt) else {
        return;
    };
    let earlier = b"the earlier complete output".to_vec();
    let cases: Vec<(&str, Vec<String>, PathBuf, PathBuf)> = vec![
        (
            "export",
            export_args(&st, true, &mnt.join("m.onnx"), &mnt.join("g.safetensors")),
            mnt.join("m.onnx"),
            mnt.join("m.onnx"),
        ),
        ("restore", restore_args(&st, &big.join("img0.png"), &mnt.join("r.png")), mnt.join("r.png"), mnt.join("r.png")),
        (
            "train",
            argv(&[
                "train",
                "--method",
                "adaptir",
                "--task",
                "denoise30",
                "--backbone",
                s(&st.backbone),
                "--data",
                s(&st.photos),
                "--steps",
                "2",
                "--batch",
                "1",
                "--eval-every",
                "1000",
                "--out",
                s(&mnt.join("k.safetensors")),
            ]),
            mnt.join("k.safetensors"),
            mnt.join("k.ckpt.safetensors"),
        ),
        (
            "pretrain",
            argv(&[
                "pretrain",
                "--data",
                s(&big),
                "--steps",
                "1",
                "--batch",
                "1",
                "--out",
                s(&mnt.join("b.safetensors")),
            ]),
            mnt.join("b.safetensors"),
            mnt.join("b.ckpt.safetensors"),
        ),
    ];
    for (_, _, out, _) in &cases {
        std::fs::write(out, &earlier).unwrap();
    }
    fs.fill();
    for (name, args, out, failing) in &cases {
        let o = Command::new(BIN).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name} on a full disk: {err}");
        assert!(!err.contains("panicked"), "{err}");
        let file = failing.file_name().unwrap().to_string_lossy();
        assert!(
            err.contains(&*file) && err.contains("cannot write") && err.contains("the disk is full"),
            "{name}: unclear message: {err}"
        );
        assert_eq!(std::fs::read(out).unwrap(), earlier, "{name}: the earlier output changed");
        assert_eq!(temps(&mnt), vec![], "{name}: temporary file left on a full disk");
        eprintln!("disk full, {name}: {}", err.trim());
    }
}

/// Two commands, and per output path the two single-run contents it may end with.
type Race<'a> = (Vec<String>, Vec<String>, Vec<(&'a Path, Vec<u8>, Vec<u8>)>);

/// Two processes writing one output path at once: both finish, and the file is one of the two complete outputs.
#[test]
fn two_runs_on_one_output_leave_one_complete_file() {
    let t = Instant::now();
    let st = setup("race");
    let (ref_dir, out_dir) = (st.root.join("ref"), st.root.join("out"));
    std::fs::create_dir_all(&ref_dir).unwrap();
    std::fs::create_dir_all(&out_dir).unwrap();
    let big = photos(&st.root.join("big"), 1, 160, 120).join("img0.png");
    let single = |a: Vec<String>, b: Vec<String>| {
        run_ok(&a);
        run_ok(&b);
    };
    let (ra, rb) = (ref_dir.join("a.onnx"), ref_dir.join("b.onnx"));
    let (ga, gb) = (ref_dir.join("a.g.safetensors"), ref_dir.join("b.g.safetensors"));
    single(export_args(&st, true, &ra, &ga), export_args(&st, false, &rb, &gb));
    let (pa, pb) = (ref_dir.join("a.png"), ref_dir.join("b.png"));
    single(restore_args(&st, &st.photos.join("img0.png"), &pa), restore_args(&st, &big, &pb));
    let bytes = |p: &Path| std::fs::read(p).unwrap();
    let (o, g, r) = (out_dir.join("m.onnx"), out_dir.join("m.g.safetensors"), out_dir.join("r.png"));
    let rounds = 4;
    for round in 0..rounds {
        let pairs: [Race; 2] = [
            (
                export_args(&st, true, &o, &g),
                export_args(&st, false, &o, &g),
                vec![(&o, bytes(&ra), bytes(&rb)), (&g, bytes(&ga), bytes(&gb))],
            ),
            (
                restore_args(&st, &st.photos.join("img0.png"), &r),
                restore_args(&st, &big, &r),
                vec![(&r, bytes(&pa), bytes(&pb))],
            ),
        ];
        for (a, b, files) in pairs {
            let (ca, cb) = (spawn(&a), spawn(&b));
            for c in [ca, cb] {
                let out = c.wait_with_output().unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "round {round}: {err}");
            }
            for (p, x, y) in files {
                let got = bytes(p);
                assert!(got == x || got == y, "round {round}: {} is a mix of the two runs", p.display());
            }
        }
        assert_eq!(temps(&out_dir), vec![], "round {round}: temporary files left");
    }
    eprintln!("race: {rounds} rounds of two exports and two restores on one path, {:.1} s", t.elapsed().as_secs_f64());
}
