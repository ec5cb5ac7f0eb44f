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
    /// Compile backbone + adapter for its task into an ONNX file (or the backbone alone with --task).
    Export {
        /// Adapter file; the output defaults to its stem with `.onnx`.
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// Backbone weights (default: models/<adapter's backbone>/backbone.safetensors, else models/ipt-tiny/).
        #[arg(long)]
        backbone: Option<PathBuf>,
        /// Backbone config JSON (default: the adapter's record, the backbone's metadata, or config.json beside it).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Task name or index, for the backbone alone (default: the adapter's task).
        #[arg(long)]
        task: Option<String>,
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// FFT lowering: `matmul` (constant DFT bases, every execution provider) or `dft` (the ONNX DFT op).
        #[arg(long, default_value = "matmul")]
        fft: String,
        /// Who the file is for: `portable` (standard ops only, no f64: ONNX Runtime, OpenVINO, tract, TensorRT),
        /// `ort` (ai.adaptir functions, f64 spectral products: ONNX Runtime), `tensorrt` (portable, checked
        /// against TensorRT's operator support matrix).
        #[arg(long, default_value = "portable")]
        target: String,
        /// Flatten the ai.adaptir functions into plain nodes (with --target ort; the portable targets always do).
        #[arg(long)]
        inline_functions: bool,
        /// Precision of the spectral products, overriding the target's: `f32` or `f64`.
        #[arg(long)]
        spectral: Option<String>,
        /// A graph that takes one image of any size, (1, 3, H, W) in [0, 1], and does restore's overlapped
        /// tiling and blending inside (output (1, 3, sH, sW)).
        #[arg(long)]
        whole_image: bool,
        /// With --whole-image: the most tiles one image may have (the graph runs them as one batch).
        #[arg(long, default_value_t = adaptir::compile::whole_image::DEFAULT_MAX_TILES)]
        max_tiles: usize,
        /// With --whole-image: pixels shared by neighbouring tiles (even, at most half a tile), as `restore --overlap`.
        #[arg(long, default_value_t = adaptir::restore::CLI_OVERLAP)]
        overlap: usize,
        /// Half-precision weights and compute (f32 input and output).
        #[arg(long)]
        fp16: bool,
        /// Skip the folding passes.
        #[arg(long)]
        no_passes: bool,
        /// ONNX opset of the standard domain (only 20 is supported: it has LayerNormalization and Gelu).
        #[arg(long, default_value_t = 20)]
        opset: i64,
        /// Also write seeded inputs and the candle reference outputs (tensors `input`, `output`) here.
        #[arg(long)]
        golden: Option<PathBuf>,
    },
    /// Run an exported ONNX file in ONNX Runtime (or tract, OpenVINO: --runtime) and compare every output with the
    /// candle model it was exported from (seeded inputs) or with stored golden outputs. Exit 0 pass, 1 mismatch or
    /// a file a runtime refuses, 2 error (a runtime that is not installed included).
    Validate {
        model: PathBuf,
        /// Runtime(s): ort (ONNX Runtime), tract (pure Rust), openvino (CPU, f32), or all (one matrix).
        #[arg(long, default_value = "ort")]
        runtime: String,
        /// Timed runs after a warm-up run, for the matrix's latency column (median; 0: not timed).
        #[arg(long, default_value_t = 3)]
        latency_runs: usize,
        /// Golden inputs and reference outputs (.safetensors: one tensor per model input and output, by name).
        #[arg(long)]
        golden: Option<PathBuf>,
        /// Execution provider: cpu or cuda (cuda needs a build with --features cuda).
        #[arg(long, default_value = "cpu")]
        ep: String,
        /// No CPU fallback: every node must run on --ep.
        #[arg(long)]
        strict_ep: bool,
        /// Threads: ONNX Runtime's intra-op threads, tract's matrix-product pool, OpenVINO's INFERENCE_NUM_THREADS.
        #[arg(long)]
        threads: Option<usize>,
        /// Print JSON: {"passed", "ep", "outputs": [{"name", "max_abs", "mean_abs", "psnr_db", ...}], "nodes_by_ep",
        /// "runtimes": [{"runtime", "loaded", "nodes", "placement", "max_abs", "passed", "latency_ms", "error", ...}]}.
        #[arg(long)]
        json: bool,
        /// Backbone of the reference (default: models/<backbone in the metadata>/backbone.safetensors).
        #[arg(long)]
        backbone: Option<PathBuf>,
        /// Adapter of the reference (default: the metadata's file name, beside the model or in models/<backbone>/).
        #[arg(long)]
        adapter: Option<PathBuf>,
    },
    /// Restore an image of any size with backbone + adapter (tiled, blended), with candle, ONNX Runtime or tract.
    Restore {
        #[arg(long)]
        adapter: PathBuf,
        input: PathBuf,
        /// Output PNG (default: <input folder>/<stem>_<task>.png).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// candle, onnx (the model compiled to ONNX in memory, or --onnx FILE, run by ONNX Runtime), or tract (the
        /// same ONNX run by tract, pure Rust: no C++ library).
        #[arg(long, default_value = "candle")]
        engine: String,
        /// Tile side: the model's patch size.
        #[arg(long, default_value_t = 48)]
        tile: usize,
        /// Pixels shared by neighbouring tiles (even).
        #[arg(long, default_value_t = adaptir::restore::CLI_OVERLAP)]
        overlap: usize,
        /// Tiles per model call.
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Backbone (default: backbone.safetensors beside the adapter, else models/<its backbone>/).
        #[arg(long)]
        backbone: Option<PathBuf>,
        /// With --engine onnx or tract: an exported file of this adapter to run instead of compiling in memory.
        #[arg(long)]
        onnx: Option<PathBuf>,
        /// With --engine onnx: execution provider (cpu or cuda).
        #[arg(long, default_value = "cpu")]
        ep: String,
        /// With --engine onnx or tract: intra-op threads (tract: its matrix-product pool).
        #[arg(long)]
        threads: Option<usize>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
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
        /// Where candle computes: cpu, cuda or cuda:N (cuda needs the CUDA build, scripts/build-cuda.sh).
        #[arg(long, default_value = "cpu")]
        device: String,
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
    /// Train a PETL method on a frozen backbone for one task; writes an adapter file (see docs/training.md).
    Train {
        /// adaptir, lora, adapter, adaptformer, ssf, vpt, fact, moe or full.
        #[arg(long)]
        method: String,
        /// The method's JSON configuration (default: its defaults).
        #[arg(long)]
        method_config: Option<String>,
        /// sr2, sr3, sr4, derain, denoise30, denoise50, lr4-noise30, lr4-jpeg30, lowlight or realnoise.
        #[arg(long)]
        task: String,
        /// Folder of clean photos (the degraded inputs are synthesised).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Folder of real pairs: clean/ plus one folder of degraded images (realnoise).
        #[arg(long)]
        pairs: Option<PathBuf>,
        /// The frozen backbone (.safetensors written by `pretrain`, or any official-key state dict with --preset).
        #[arg(long)]
        backbone: PathBuf,
        #[arg(long)]
        preset: Option<String>,
        #[arg(long)]
        steps: usize,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        #[arg(long, default_value_t = 48)]
        patch: usize,
        #[arg(long, default_value_t = 1e-4)]
        lr: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Adapter file to write; the checkpoint is X.ckpt.safetensors and the curve X.curve.png beside it.
        #[arg(long)]
        out: PathBuf,
        /// Continue from the checkpoint beside --out (bit-identical to an uninterrupted run).
        #[arg(long)]
        resume: bool,
        #[arg(long, default_value_t = 50)]
        checkpoint_every: usize,
        #[arg(long, default_value_t = 50)]
        eval_every: usize,
        /// Stop after this many steps (checkpointed), as an interruption would.
        #[arg(long)]
        stop_after: Option<usize>,
        /// Where candle computes: cpu, cuda or cuda:N (cuda needs the CUDA build, scripts/build-cuda.sh).
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Evaluate an adapter (or the backbone alone with --method pretrain) on whole images: PSNR / SSIM.
    Eval {
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// Backbone file (default with --adapter: backbone.safetensors beside it).
        #[arg(long)]
        backbone: Option<PathBuf>,
        /// `pretrain`: evaluate the backbone without adapter.
        #[arg(long)]
        method: Option<String>,
        #[arg(long)]
        preset: Option<String>,
        /// Task (default with --adapter: the adapter's).
        #[arg(long)]
        task: Option<String>,
        /// Folder of clean images (degraded inputs synthesised with --seed per file).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Folder of real pairs (clean/ and a degraded folder).
        #[arg(long)]
        pairs: Option<PathBuf>,
        /// Print JSON: {"task", "psnr", "ssim", "images": [...], ...}.
        #[arg(long)]
        json: bool,
        /// Write input | output | target side by side, one PNG per image, to this folder.
        #[arg(long)]
        save_images: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Only the first N images by name.
        #[arg(long)]
        limit: Option<usize>,
        /// Where candle computes: cpu, cuda or cuda:N (cuda needs the CUDA build, scripts/build-cuda.sh).
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Pre-train an IPT backbone from scratch on clean photos, all tasks (see docs/training.md).
    Pretrain {
        /// Backbone size preset (ipt-tiny is the shipped default).
        #[arg(long, default_value = "ipt-tiny")]
        preset: String,
        /// Folder of clean training photos.
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long)]
        steps: Option<usize>,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        #[arg(long, default_value_t = 2e-4)]
        lr: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output backbone (.safetensors); the checkpoint is X.ckpt.safetensors beside it.
        #[arg(long, default_value = "backbone.safetensors")]
        out: PathBuf,
        /// Continue from the checkpoint beside --out.
        #[arg(long)]
        resume: bool,
        #[arg(long, default_value_t = 50)]
        checkpoint_every: usize,
        #[arg(long, default_value_t = 100)]
        eval_every: usize,
        /// Stop after this many steps (checkpointed), as an interruption would.
        #[arg(long)]
        stop_after: Option<usize>,
        /// Instead of training: write the backbone of the checkpoint beside --out (an unfinished run) to --out.
        #[arg(long)]
        export_checkpoint: bool,
        /// Where candle computes: cpu, cuda or cuda:N (cuda needs the CUDA build, scripts/build-cuda.sh).
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Run the parity cases (fixtures/parity: AdaptIR block, whole IPT model; atan2 / amplitude ops) on a device
    /// and print each error against the official output and against the CPU. Exit 0 pass, 1 mismatch, 2 error.
    Parity {
        /// cpu, cuda or cuda:N (cuda needs the CUDA build, scripts/build-cuda.sh).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// The repository's fixtures folder.
        #[arg(long, default_value = "fixtures")]
        fixtures: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Time ONNX Runtime runs of an exported model on an execution provider (inputs from `export --golden`).
    OrtLatency {
        model: PathBuf,
        /// safetensors with one tensor per model input, by name (`adaptir export --golden`).
        #[arg(long)]
        golden: PathBuf,
        /// Execution provider: cpu or cuda (cuda needs the CUDA build and the onnxruntime-gpu library).
        #[arg(long, default_value = "cpu")]
        ep: String,
        /// No CPU fallback: every node must run on --ep.
        #[arg(long)]
        strict_ep: bool,
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        #[arg(long, default_value_t = 50)]
        iters: usize,
        /// Also write ONNX Runtime's per-node profile (PREFIX_DATE.json) and print its kernel time per part
        /// of the model: backbone, adapter nodes, each ai.adaptir function.
        #[arg(long, value_name = "PREFIX")]
        profile: Option<PathBuf>,
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
        Command::Export {
            adapter,
            backbone,
            config,
            task,
            output,
            fft,
            target,
            inline_functions,
            spectral,
            whole_image,
            max_tiles,
            overlap,
            fp16,
            no_passes,
            opset,
            golden,
        } => {
            if opset != adaptir::compile::ir::OPSET {
                return Err(adaptir::Error::invalid(format!(
                    "--opset: opset {opset} is not supported; adaptir writes opset {} (IR version {})",
                    adaptir::compile::ir::OPSET,
                    adaptir::compile::ir::IR_VERSION
                )));
            }
            let fft = match fft.as_str() {
                "matmul" => adaptir_ops::graph::FftLowering::MatMul,
                "dft" => adaptir_ops::graph::FftLowering::Dft,
                other => {
                    return Err(adaptir::Error::invalid(format!("--fft: expected `matmul` or `dft`, found `{other}`")))
                }
            };
            let r = adaptir::compile::export::export(&adaptir::compile::export::ExportArgs {
                adapter: adapter.as_deref(),
                backbone: backbone.as_deref(),
                config: config.as_deref(),
                task: task.as_deref(),
                output: output.as_deref(),
                fft,
                target: target.parse().map_err(adaptir::Error::invalid)?,
                inline_functions,
                spectral: spectral.as_deref().map(adaptir::compile::target::parse_spectral).transpose().map_err(adaptir::Error::invalid)?,
                whole_image: whole_image.then_some(adaptir::restore::Tiling { batch: max_tiles, overlap }),
                fp16,
                no_passes,
                golden: golden.as_deref(),
            })?;
            let total: usize = r.op_counts.values().sum();
            outln!(
                out,
                "wrote {} ({:.1} KiB, sha256 {}) in {:.2} s",
                r.output.display(),
                r.bytes as f64 / 1024.0,
                r.sha256,
                r.seconds
            );
            let ops: Vec<String> = r.op_counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
            outln!(out, "{total} nodes: {}", ops.join(", "));
            let applied: Vec<String> =
                r.passes.iter().filter(|(_, n)| *n > 0).map(|(k, n)| format!("{k} x{n}")).collect();
            if !applied.is_empty() {
                outln!(out, "passes: {}", applied.join(", "));
            }
            if let Some(t) = &r.tensorrt {
                outln!(out, "target tensorrt: every op, type and checkable restriction within {}", adaptir::compile::tensorrt::MATRIX);
                let _ = t;
            }
            if let Some(g) = r.golden {
                outln!(out, "golden input/output: {}", g.display());
            }
        }
        Command::Validate { model, runtime, latency_runs, golden, ep, strict_ep, threads, json, backbone, adapter } => {
            let r = adaptir::runtime::validate::validate(&adaptir::runtime::validate::ValidateArgs {
                model: &model,
                golden: golden.as_deref(),
                backbone: backbone.as_deref(),
                adapter: adapter.as_deref(),
                run: adaptir::runtime::RunOptions { ep: ep.parse()?, strict_ep, threads, profile: None },
                runtimes: adaptir::runtime::engine::Runtime::parse_list(&runtime)?,
                latency_runs,
            })?;
            out!(out, "{}", r.render(json));
            if json {
                outln!(out, "");
            }
            if !r.passed {
                EXIT_CODE.store(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        Command::Restore {
            adapter,
            input,
            output,
            engine,
            tile,
            overlap,
            batch,
            backbone,
            onnx,
            ep,
            threads,
            quiet,
        } => {
            let r = adaptir::restore_cli::restore_file(&adaptir::restore_cli::RestoreArgs {
                restorer: adaptir::restore_cli::RestorerArgs {
                    adapter: &adapter,
                    backbone: backbone.as_deref(),
                    engine: engine.parse()?,
                    onnx: onnx.as_deref(),
                    run: adaptir::runtime::RunOptions { ep: ep.parse()?, strict_ep: false, threads, profile: None },
                },
                input: &input,
                output: output.as_deref(),
                tile,
                overlap,
                batch,
                progress: !quiet,
            })?;
            outln!(
                out,
                "{} ({}x{}) -> {} ({}x{}{}{}{}), {}, {} tiles, {} engine, {:.2} s",
                input.display(),
                r.input_size.0,
                r.input_size.1,
                r.output.display(),
                r.output_size.0,
                r.output_size.1,
                if r.gray { ", gray" } else { "" },
                if r.alpha { ", alpha kept" } else { "" },
                if r.sixteen { ", 16-bit" } else { "" },
                r.task,
                r.tiles,
                r.engine,
                r.seconds
            );
        }
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
        Command::Forward { checkpoint, config, adapter, task_index, input, input_name, output, device } => {
            adaptir::device::select(&device)?;
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
        Command::Train {
            method,
            method_config,
            task,
            data,
            pairs,
            backbone,
            preset,
            steps,
            batch,
            patch,
            lr,
            seed,
            out: path,
            resume,
            checkpoint_every,
            eval_every,
            stop_after,
            device,
        } => {
            adaptir::device::select(&device)?;
            let method_config = match method_config {
                Some(s) => Some(
                    serde_json::from_str(&s)
                        .map_err(|e| adaptir::Error::invalid(format!("--method-config is not JSON: {e}")))?,
                ),
                None => None,
            };
            let r = adaptir::train::adapt::train(&adaptir::train::adapt::TrainArgs {
                method,
                method_config,
                task,
                data,
                pairs,
                backbone,
                preset,
                steps,
                batch,
                patch,
                lr,
                seed,
                out: path.clone(),
                resume,
                checkpoint_every,
                eval_every,
                stop_after,
                quiet: false,
            })?;
            outln!(
                out,
                "{} {} steps of {steps} in {:.1} s ({} trainable parameters), loss {}, held-out PSNR {}; checkpoint {}",
                if r.finished { "finished:" } else { "stopped:" },
                r.steps,
                r.seconds,
                r.trainable,
                r.final_loss.map(|l| format!("{l:.5}")).unwrap_or_else(|| "-".into()),
                r.final_psnr.map(|p| format!("{p:.2} dB")).unwrap_or_else(|| "-".into()),
                r.checkpoint.display()
            );
            if r.finished {
                outln!(out, "wrote {}", path.display());
            }
        }
        Command::Eval {
            adapter,
            backbone,
            method,
            preset,
            task,
            data,
            pairs,
            json,
            save_images,
            seed,
            limit,
            device,
        } => {
            adaptir::device::select(&device)?;
            let r = adaptir::train::eval::eval(&adaptir::train::eval::EvalArgs {
                adapter,
                backbone,
                method,
                preset,
                task,
                data,
                pairs,
                save_images,
                seed,
                limit,
            })?;
            outln!(out, "{}", r.render(json));
        }
        Command::Pretrain {
            preset,
            data,
            steps,
            batch,
            lr,
            seed,
            out: path,
            resume,
            checkpoint_every,
            eval_every,
            stop_after,
            export_checkpoint,
            device,
        } => {
            adaptir::device::select(&device)?;
            if export_checkpoint {
                let ckpt = adaptir::train::checkpoint_path(&path);
                let step = adaptir::train::pretrain::backbone_from_checkpoint(&ckpt, &path)?;
                outln!(out, "wrote the backbone of {} (step {step}) to {}", ckpt.display(), path.display());
                return Ok(());
            }
            let (Some(data), Some(steps)) = (data, steps) else {
                return Err(adaptir::Error::invalid("pretrain needs --data DIR and --steps N"));
            };
            let r = adaptir::train::pretrain::pretrain(&adaptir::train::pretrain::PretrainArgs {
                preset,
                data,
                steps,
                batch,
                lr,
                seed,
                out: path.clone(),
                resume,
                checkpoint_every,
                eval_every,
                stop_after,
                quiet: false,
            })?;
            outln!(
                out,
                "{} {} steps of {steps} in {:.1} s ({} parameters), held-out PSNR {}; checkpoint {}",
                if r.finished { "finished:" } else { "stopped:" },
                r.steps,
                r.seconds,
                r.params,
                r.final_psnr.map(|p| format!("{p:.2} dB")).unwrap_or_else(|| "-".into()),
                r.checkpoint.display()
            );
            if r.finished {
                outln!(out, "wrote {}", path.display());
            }
        }
        Command::Parity { device, fixtures, json } => {
            let dev = adaptir::device::select(&device)?;
            let r = adaptir::parity::parity(&fixtures, &dev)?;
            out!(out, "{}", r.render(json));
            if !r.passed {
                EXIT_CODE.store(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        Command::OrtLatency { model, golden, ep, strict_ep, threads, warmup, iters, profile, json } => {
            let run = adaptir::runtime::RunOptions { ep: ep.parse()?, strict_ep, threads, profile };
            let r = adaptir::runtime::latency::latency(&model, &golden, &run, warmup, iters)?;
            outln!(out, "{}", r.render(json));
        }
    }
    Ok(())
}

/// Exit code of a command that succeeded but found a failure to report (`validate`: 1 on a mismatch).
static EXIT_CODE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

fn main() -> ExitCode {
    adaptir::memory::keep_freed_memory_in_process();
    let mut out = String::new();
    let result = run(Cli::parse(), &mut out);
    {
        use std::io::Write;
        let _ = std::io::stdout().lock().write_all(out.as_bytes());
    }
    match result {
        Ok(()) => ExitCode::from(EXIT_CODE.load(std::sync::atomic::Ordering::SeqCst)),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
