//! `adaptir degrade`: synthesise a degradation on clean images (`data::degrade`), one PNG per input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Report;
use crate::data::degrade::Task;
use crate::data::error::DataError;
use crate::data::io::{load_image, probe_image, save_png, BitDepth, LoadOptions};
use crate::data::pairs::{list_images, stem_of};
use crate::data::seed::stem_seed;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// sr2, sr3, sr4, noise15, noise25, noise30, noise50, jpeg10, jpeg20, jpeg30, jpeg40, lr4-noise30,
    /// lr4-jpeg30, lr2-noise30, rain-light, rain-heavy or lowlight.
    #[arg(long)]
    pub task: String,
    /// Clean images, or folders of them.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output folder (created if missing).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Seed of the random degradations (each file's seed also depends on its stem).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub struct DegradeReport {
    pub task: String,
    pub written: Vec<PathBuf>,
    pub output: PathBuf,
}

pub fn run(a: &Args) -> crate::error::Result<DegradeReport> {
    let written = degrade(&a.task, &a.inputs, &a.output, a.seed)?;
    Ok(DegradeReport { task: a.task.clone(), written, output: a.output.clone() })
}

impl Report for DegradeReport {
    fn render(&self) -> String {
        format!("{}: wrote {} image(s) to {}\n", self.task, self.written.len(), self.output.display())
    }
}

/// `adaptir degrade --task TASK IN... -o OUTDIR [--seed S]`.
///
/// `IN` may be image files or folders (their images, not recursive). Each output is
/// `OUTDIR/<input stem>.png` (8-bit), written atomically; the seed of a file is derived from `seed`
/// and its stem, so an output does not depend on the other inputs. Every input's header is
/// checked (readable, supported format, pixel limit) before anything is written; two inputs with
/// the same stem, or an output that would overwrite an input, are refused. Returns the written
/// paths.
pub fn degrade(task: &str, inputs: &[PathBuf], out_dir: &Path, seed: u64) -> crate::error::Result<Vec<PathBuf>> {
    Ok(degrade_files(task, inputs, out_dir, seed)?)
}

/// [`degrade`] with the data module's error type.
pub fn degrade_files(
    task: &str,
    inputs: &[PathBuf],
    out_dir: &Path,
    seed: u64,
) -> crate::data::error::Result<Vec<PathBuf>> {
    let task = Task::parse(task)?;
    if inputs.is_empty() {
        return Err(DataError::invalid("inputs", "at least one image or folder", "none"));
    }
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    for input in inputs {
        let found: Vec<(String, PathBuf)> = if input.is_dir() {
            list_images(input)?.into_iter().collect()
        } else {
            vec![(stem_of(input)?, input.clone())]
        };
        for (stem, path) in found {
            if let Some(prev) = files.insert(stem.clone(), path.clone()) {
                return Err(DataError::invalid(
                    format!("{}", path.display()),
                    format!("inputs with distinct stems (outputs are named <stem>.png); `{stem}` is also"),
                    format!("{}", prev.display()),
                ));
            }
        }
    }
    let opts = LoadOptions::default();
    for path in files.values() {
        probe_image(path, &opts)?;
    }
    std::fs::create_dir_all(out_dir).map_err(|source| DataError::Write { path: out_dir.to_path_buf(), source })?;
    let mut written = Vec::with_capacity(files.len());
    for (stem, path) in &files {
        let out = out_dir.join(format!("{stem}.png"));
        if same_file(&out, path) {
            return Err(DataError::invalid(
                format!("{}", out.display()),
                "an output path different from its input",
                "the input itself",
            ));
        }
        let clean = load_image(path)?;
        let degraded = task.apply(&clean, stem_seed(seed, stem)).map_err(|e| match e {
            DataError::Invalid { what, expected, found } => {
                DataError::Invalid { what: format!("{}: {what}", path.display()), expected, found }
            }
            other => other,
        })?;
        save_png(&out, &degraded, BitDepth::Eight)?;
        written.push(out);
    }
    Ok(written)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
