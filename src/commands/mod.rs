//! The subcommands of the `adaptir` binary, one file each: its clap arguments (`Args`), a `run` that checks them
//! and calls the library, and a report that renders what the command prints ([`Report`]). `main.rs` only parses
//! and dispatches. Nothing below this layer imports it.
//!
//! Adding a command: a file here with `Args`, `run` and its report, one line below, and one variant in
//! `main.rs`'s `Command` (its doc comment is the command's help).
pub mod degrade;
pub mod eval;
pub mod export;
pub mod forward;
pub mod import;
pub mod inspect;
pub mod methods;
pub mod metrics;
pub mod ort_latency;
pub mod parity;
pub mod pretrain;
pub mod restore;
pub mod train;
pub mod validate;

use crate::error::{Error, Result};
use crate::runtime::RunOptions;

/// What a command hands back to `main`: everything it prints on standard output (written once, at the end) and
/// its exit code.
pub trait Report {
    /// The whole output: text, or JSON where the command was given `--json`.
    fn render(&self) -> String;
    /// 0; 1 for a command that ran but found a failure to report (`validate`, `parity`).
    fn exit_code(&self) -> u8 {
        0
    }
}

/// `--device`: where candle computes (`forward`, `parity`, `train`, `eval`, `pretrain`).
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Where candle computes: cpu, cuda or cuda:N (cuda needs the CUDA build, scripts/build-cuda.sh).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl DeviceArgs {
    /// Select the device for the process (`crate::device`) and return it.
    pub fn select(&self) -> Result<candle_core::Device> {
        crate::device::select(&self.device)
    }
}

/// How an ONNX file is run (`validate`, `restore`, `ort-latency`).
#[derive(clap::Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// ONNX Runtime's execution provider: cpu or cuda (cuda needs the CUDA build, scripts/build-cuda.sh, and the
    /// onnxruntime-gpu library).
    #[arg(long, default_value = "cpu")]
    pub ep: String,
    /// No CPU fallback: every node must run on --ep.
    #[arg(long)]
    pub strict_ep: bool,
    /// Threads: ONNX Runtime's intra-op threads, tract's matrix-product pool, OpenVINO's INFERENCE_NUM_THREADS.
    #[arg(long)]
    pub threads: Option<usize>,
    /// f32, or bf16: OpenVINO only (`--runtime openvino`), which then runs the f32 file with bf16 matrix products
    /// on CPUs with AVX-512 BF16 or AMX; judged like an int8 file, by the PSNR of its difference from f32.
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// ONNX Runtime only: flush f32 denormals to zero in its threads (`session.set_denormal_as_zero`), which
    /// spares the CPU kernels the slow path of underflowing attention probabilities (BENCHMARKS.md).
    #[arg(long)]
    pub denormal_as_zero: bool,
}

impl RuntimeArgs {
    /// The library's options (`--ep` checked), with ONNX Runtime's profile file prefix where asked.
    pub fn options(&self, profile: Option<std::path::PathBuf>) -> Result<RunOptions> {
        Ok(RunOptions {
            ep: self.ep.parse()?,
            strict_ep: self.strict_ep,
            threads: self.threads,
            profile,
            precision: self.precision.parse()?,
            denormal_as_zero: self.denormal_as_zero,
        })
    }
}

/// What `train` and `pretrain` share: the seed, checkpoints and interruption, the device.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainRunArgs {
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue from the checkpoint beside --out (bit-identical to an uninterrupted run).
    #[arg(long)]
    pub resume: bool,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// Stop after this many steps (checkpointed), as an interruption would.
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// CPU: flush f32 denormals to zero (FTZ / DAZ), which spares the arithmetic the slow path of underflowing
    /// attention (about 1.26x faster on ipt-base, BENCHMARKS.md). Part of the checkpoint's fingerprint.
    #[arg(long)]
    pub flush_denormals: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl TrainRunArgs {
    /// Select the device and, with `--flush-denormals`, set the CPU's flush mode: before any computation.
    pub fn prepare(&self) -> Result<candle_core::Device> {
        let d = self.device.select()?;
        if self.flush_denormals {
            crate::device::flush_denormals()?;
        }
        Ok(d)
    }
}

/// Thousands separators, as the papers print parameter counts.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `line` plus `\n`: reports are built line by line.
fn line(s: &mut String, l: impl AsRef<str>) {
    s.push_str(l.as_ref());
    s.push('\n');
}

/// Before a training run writes `out`, its checkpoint and its curve: create `out`'s folder (so a run is never lost
/// to a missing folder at its first checkpoint) and clear stale temporary files of those three.
pub fn prepare_training_outputs(out: &std::path::Path) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::file(out, format!("cannot create its folder {}: {e}", dir.display())))?;
    }
    for p in [out.to_path_buf(), crate::train::checkpoint_path(out), crate::train::curve_path(out)] {
        remove_stale_temps(&p);
    }
    Ok(())
}

/// Remove the temporary files `.NAME.PID.N.tmp` (the names `fsutil::write_atomic` gives them) that writers killed
/// mid-write (SIGKILL, OOM killer, a power cut) left beside `path`, but only those of processes that no longer run
/// on this machine: a live writer's file, ours included, is never touched. Called by the commands that write
/// outputs (`train`, `pretrain`, `export`, `restore`), so a killed run's debris goes with the next run. Errors are
/// ignored: a stale temporary file is clutter, not damage.
///
/// On a folder shared between machines (NFS), a writer on another machine with the same process id as a dead
/// one here looks dead; its rename then fails with an error and nothing is half-written.
pub fn remove_stale_temps(path: &std::path::Path) {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.");
    for e in entries.flatten() {
        let file = e.file_name();
        let file = file.to_string_lossy();
        let Some(rest) = file.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".tmp")) else {
            continue;
        };
        let Some((pid, n)) = rest.split_once('.') else {
            continue;
        };
        let (Ok(pid), Ok(_)) = (pid.parse::<u32>(), n.parse::<u64>()) else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Whether process `pid` exists on this machine (when unsure: yes).
fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(p) = i32::try_from(pid) else {
            return true;
        };
        if p <= 0 {
            return true;
        }
        // SAFETY: signal 0 sends nothing; kill only checks that the process exists and may be signalled.
        let r = unsafe { libc::kill(p, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}
