//! The `adaptir` command line: parse, dispatch to `adaptir::commands`, print. Each command's arguments, checks and
//! report live in its own file there; this file names the commands (a variant's doc comment is its help).
use std::process::ExitCode;

use adaptir::commands::{self, Report};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "adaptir",
    version,
    about = "Adapt image-restoration transformers, export them to ONNX, prove the export"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile backbone + adapter for its task into an ONNX file (or the backbone alone with --task).
    Export(commands::export::Args),
    /// Run an exported ONNX file in ONNX Runtime (or tract, OpenVINO: --runtime) and compare every output with the
    /// candle model it was exported from (seeded inputs) or with stored golden outputs. Exit 0 pass, 1 mismatch or
    /// a file a runtime refuses, 2 error (a runtime that is not installed included).
    Validate(commands::validate::Args),
    /// Restore an image of any size with backbone + adapter (tiled, blended), with candle, ONNX Runtime or tract.
    Restore(commands::restore::Args),
    /// List the PETL methods with their trainable parameters on a backbone preset.
    Methods(commands::methods::Args),
    /// Show the tensors of a checkpoint (.safetensors or PyTorch .pt), grouped by module, with parameter counts.
    Inspect(commands::inspect::Args),
    /// Import an official checkpoint (Lightning .ckpt, PyTorch .pt, official-key .safetensors) as an adapter file for
    /// one task, and its backbone as a backbone file (see docs/import.md).
    Import(commands::import::Args),
    /// Run an IPT checkpoint (official key names; AdaptIR if its keys are present) on a tensor file, in eval mode.
    Forward(commands::forward::Args),
    /// Synthesise a degradation on clean images; writes OUTDIR/<stem>.png for each input (see docs/data.md).
    Degrade(commands::degrade::Args),
    /// PSNR / SSIM of two images, or of two folders matched by file stem.
    Metrics(commands::metrics::Args),
    /// Train a PETL method on a frozen backbone for one task; writes an adapter file (see docs/training.md).
    Train(commands::train::Args),
    /// Evaluate an adapter (or the backbone alone with --method pretrain) on whole images: PSNR / SSIM.
    Eval(commands::eval::Args),
    /// Pre-train an IPT backbone from scratch on clean photos, all tasks (see docs/training.md).
    Pretrain(commands::pretrain::Args),
    /// Run the parity cases (fixtures/parity: AdaptIR block, whole IPT model; atan2 / amplitude ops) on a device
    /// and print each error against the official output and against the CPU. Exit 0 pass, 1 mismatch, 2 error.
    Parity(commands::parity::Args),
    /// Time ONNX Runtime runs of an exported model on an execution provider (inputs from `export --golden`).
    OrtLatency(commands::ort_latency::Args),
}

/// Run one command; its report holds everything it prints.
fn run(command: Command) -> adaptir::Result<Box<dyn Report>> {
    use commands::*;
    Ok(match command {
        Command::Export(a) => Box::new(export::run(&a)?),
        Command::Validate(a) => Box::new(validate::run(&a)?),
        Command::Restore(a) => Box::new(restore::run(&a)?),
        Command::Methods(a) => Box::new(methods::run(&a)?),
        Command::Inspect(a) => Box::new(inspect::run(&a)?),
        Command::Forward(a) => Box::new(forward::run(&a)?),
        Command::Import(a) => Box::new(import::run(&a)?),
        Command::Degrade(a) => Box::new(degrade::run(&a)?),
        Command::Metrics(a) => Box::new(metrics::run(&a)?),
        Command::Train(a) => Box::new(train::run(&a)?),
        Command::Eval(a) => Box::new(eval::run(&a)?),
        Command::Pretrain(a) => Box::new(pretrain::run(&a)?),
        Command::Parity(a) => Box::new(parity::run(&a)?),
        Command::OrtLatency(a) => Box::new(ort_latency::run(&a)?),
    })
}

/// Exit codes: 0 done; 1 a command that ran but found a failure (`validate`, `parity`); 2 bad input (files,
/// arguments; clap's own usage errors too); 3 an internal failure.
fn main() -> ExitCode {
    adaptir::device::pin_cpu_thread_count();
    adaptir::memory::keep_freed_memory_in_process();
    match run(Cli::parse().command) {
        Ok(report) => {
            use std::io::Write;
            // Written once, at the end; a closed pipe is not an error.
            let _ = std::io::stdout().lock().write_all(report.render().as_bytes());
            ExitCode::from(report.exit_code())
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
