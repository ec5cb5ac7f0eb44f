//! The `adaptir` command line: parse, call the library, print. No logic here.
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// List the PETL methods with their trainable parameters on a backbone preset.
    Methods {
        /// Backbone preset (ipt-base is the released IPT).
        #[arg(long, default_value = "ipt-base")]
        backbone: String,
        /// Print a JSON list of {"method", "trainable_params"}.
        #[arg(long)]
        json: bool,
    },
    /// Show the tensors of a checkpoint (.safetensors or PyTorch .pt), grouped by module, with parameter counts.
    Inspect {
        file: PathBuf,
        /// Also list every tensor with its dtype and shape.
        #[arg(long)]
        tensors: bool,
    },
    /// Run an IPT checkpoint (official key names; AdaptIR if its keys are present) on a tensor file, in eval mode.
    Forward {
        /// State dict with the official IPT key names (.safetensors or .pt).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Model config JSON, e.g. {"arch": "ipt", "n_feats": 22, "num_heads": 6, "num_layers": 1}
        /// (optional with --adapter, which records its backbone's).
        #[arg(long)]
        config: Option<PathBuf>,
        /// An adapter file to apply; the checkpoint must be the backbone it was trained on.
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// Task index (official map: 0 sr2, 1 sr3, 2 sr4, 3 derain, 4 denoise30, 5 denoise50);
        /// optional with --adapter, which records its task.
        #[arg(long)]
        task_index: Option<usize>,
        /// safetensors file with an (N, 3, 48, 48) tensor in [0, 1].
        #[arg(long)]
        input: PathBuf,
        /// Name of the input tensor in that file.
        #[arg(long, default_value = "x")]
        input_name: String,
        /// Output safetensors file; its tensor is named `output`, on the [0, 1] scale.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Synthesise a degradation on clean images; writes OUTDIR/<stem>.png for each input (see docs/data.md).
    Degrade {
        /// sr2, sr3, sr4, noise15, noise25, noise30, noise50, jpeg10, jpeg20, jpeg30, jpeg40, lr4-noise30,
        /// lr4-jpeg30, rain-light, rain-heavy or lowlight.
        #[arg(long)]
        task: String,
        /// Clean images, or folders of them.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Output folder (created if missing).
        #[arg(short, long)]
        output: PathBuf,
        /// Seed of the random degradations (each file's seed also depends on its stem).
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// PSNR / SSIM of two images, or of two folders matched by file stem.
    Metrics {
        a: PathBuf,
        b: PathBuf,
        /// On the Y channel (BT.601, MATLAB rgb2ycbcr) instead of RGB.
        #[arg(long)]
        y: bool,
        /// Pixels cropped from each border.
        #[arg(long, default_value_t = 0)]
        crop: usize,
        /// Print JSON: {"psnr": X, "ssim": Y, "images": [...]}.
        #[arg(long)]
        json: bool,
    },
}

/// Everything a command prints goes to `out`, written once at the end (a closed pipe is not an error).
macro_rules! outln {
    ($o:expr, $($t:tt)*) => {{ use std::fmt::Write as _; let _ = writeln!($o, $($t)*); }};
}
macro_rules! out {
    ($o:expr, $($t:tt)*) => {{ use std::fmt::Write as _; let _ = write!($o, $($t)*); }};
}

fn run(cli: Cli, out: &mut String) -> adaptir::Result<()> {
    match cli.command {
        Command::Methods { backbone, json } => {
            let config = adaptir::backbone::IptConfig::preset(&backbone)?;
            let rows = adaptir::methods::table(&config)?;
            if json {
                outln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&rows).map_err(|e| adaptir::Error::invalid(e.to_string()))?
                );
            } else {
                let backbone_n = adaptir::methods::backbone_params(&config)?;
                outln!(out, "{backbone}: {} backbone parameters", adaptir::inspect::thousands(backbone_n));
                outln!(out, "{:<12} {:>14} {:>9}  {}", "method", "trainable", "% of bb", "what");
                for r in rows {
                    outln!(
                        out,
                        "{:<12} {:>14} {:>8.3}%  {}",
                        r.method,
                        adaptir::inspect::thousands(r.trainable_params),
                        r.percent_of_backbone,
                        r.summary
                    );
                }
            }
        }
        Command::Inspect { file, tensors } => {
            let report = adaptir::inspect::inspect(&file)?;
            out!(out, "{}", report.render(tensors));
        }
        Command::Forward { checkpoint, config, adapter, task_index, input, input_name, output } => {
            let r = adaptir::forward::forward_files(&adaptir::forward::ForwardArgs {
                checkpoint: &checkpoint,
                config: config.as_deref(),
                adapter: adapter.as_deref(),
                task: task_index,
                input: &input,
                input_name: &input_name,
                output: &output,
            })?;
            let adapter = r.method;
            outln!(
                out,
                "task {} (x{}), {adapter}: input {:?} -> output {:?}, written to {}",
                r.task,
                r.scale,
                r.input_shape,
                r.output_shape,
                output.display()
            );
        }
        Command::Degrade { task, inputs, output, seed } => {
            let written = adaptir::data::cli::degrade(&task, &inputs, &output, seed)?;
            outln!(out, "{task}: wrote {} image(s) to {}", written.len(), output.display());
        }
        Command::Metrics { a, b, y, crop, json } => outln!(out, "{}", adaptir::metrics::cli(&a, &b, y, crop, json)?),
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut out = String::new();
    let result = run(Cli::parse(), &mut out);
    {
        use std::io::Write;
        let _ = std::io::stdout().lock().write_all(out.as_bytes());
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
