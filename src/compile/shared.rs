//! `export --adapter A --adapter B ... --out-dir DIR`: one ONNX file per task, `DIR/<task>.onnx`, and one weight
//! file that they all reference through ONNX external data (`DIR/backbone.weights`, or `backbone.fp16.weights`
//! for `--fp16`).
//!
//! **What is shared.** The shared file holds the body of the backbone as the export writes it (lowered,
//! folded, in the export's precision): the initialisers named `body.*` of a backbone-only lowering, except the
//! per-task query embedding (`body.query_embed.*`) and tensors under [`MIN_SHARED_BYTES`] (which stay inline, as
//! ONNX's own writer keeps them). It is computed from the backbone alone, so it does not depend on which adapters
//! are exported: two exports of one backbone with the same options write the same bytes.
//!
//! **What each task file holds.** Its graph, its adapter, its head, tail and query embedding, the DFT bases, and
//! every tensor that a folding pass changed: a task initialiser is written as a reference into the shared file
//! exactly when its dims, element type and bytes equal a shared tensor's; anything else stays inline. So a pass
//! that rewrites a shared weight (LoRA, SSF and FacT merged by `merge-linear`) makes a per-task copy of only the
//! tensors it changed, and the shared tensors a task no longer uses are listed in its report (`replaced`). For
//! AdaptIR nothing shared changes: every task file references every shared tensor.
//!
//! **Layout.** Tensors in name order, each at an offset aligned to [`ALIGN`] bytes (zero padding), as ONNX's and
//! ONNX Runtime's writers align for memory mapping. Each task file records the weight file's name, size and sha256
//! (`onnx::external::META_*`); every reader checks them before running (`onnx::external::check`).
//!
//! **Writes.** Everything is built in memory first; then the weight file (skipped when the folder already holds
//! the same bytes), then each task file, each atomically. A failure before the writes writes nothing.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use prost::Message;

use super::export::{build, lower_for, Built, ExportArgs};
use super::ir::{Constant, Graph};
use super::onnx::{external, proto};
use crate::error::{Error, Result};
use crate::peft::file::AdapterFile;

/// The shared weight file of an f32 export.
pub const WEIGHTS_F32: &str = "backbone.weights";
/// The shared weight file of an `--fp16` export (another name, so both precisions can live in one folder).
pub const WEIGHTS_F16: &str = "backbone.fp16.weights";
/// Offsets in the shared file are multiples of this (the page size: ONNX Runtime maps aligned external data).
pub const ALIGN: u64 = 4096;
/// Body tensors smaller than this stay inline in each task file (ONNX's `size_threshold` default).
pub const MIN_SHARED_BYTES: usize = 1024;

pub struct SharedArgs<'a> {
    pub adapters: &'a [PathBuf],
    pub out_dir: &'a Path,
    /// Every other option, as for one file; `adapter`, `output`, `task` and `golden` must be `None`.
    pub base: ExportArgs<'a>,
}

/// One task file.
pub struct TaskFile {
    pub task: String,
    pub adapter: PathBuf,
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    /// The same model as one self-contained file (every tensor inline), in bytes.
    pub standalone_bytes: u64,
    /// Initialisers stored in the shared file.
    pub external: usize,
    /// Initialisers stored inline.
    pub inline: usize,
    /// Shared tensors this task does not read: a folding pass replaced them with per-task copies.
    pub replaced: Vec<String>,
    pub op_counts: BTreeMap<String, usize>,
    pub passes: super::export::PassCounts,
}

pub struct SharedReport {
    pub out_dir: PathBuf,
    pub weights: PathBuf,
    pub weights_bytes: u64,
    pub weights_sha256: String,
    /// Tensors in the shared file.
    pub weights_tensors: usize,
    /// False when the folder already held the same weight file (left untouched).
    pub weights_written: bool,
    pub tasks: Vec<TaskFile>,
    pub seconds: f64,
}

impl SharedReport {
    /// The weight file and every task file.
    pub fn total_bytes(&self) -> u64 {
        self.weights_bytes + self.tasks.iter().map(|t| t.bytes).sum::<u64>()
    }

    /// The same tasks as self-contained files.
    pub fn standalone_bytes(&self) -> u64 {
        self.tasks.iter().map(|t| t.standalone_bytes).sum()
    }
}

/// A tensor by content: (dims, ONNX element type, little-endian bytes).
type TensorKey = (Vec<usize>, i32, Vec<u8>);

/// The shared file: its bytes, and where each tensor lies in it.
struct Shared {
    bytes: Vec<u8>,
    sha256: String,
    /// (dims, element type, bytes) -> (name in the backbone-only graph, offset, length).
    index: HashMap<TensorKey, (String, u64, u64)>,
}

/// Whether a body tensor of the backbone-only graph goes into the shared file.
fn is_shared(name: &str, c: &Constant) -> bool {
    name.starts_with("body.")
        && !name.starts_with("body.query_embed")
        && c.data.len() * elem_width(c) >= MIN_SHARED_BYTES
}

fn elem_width(c: &Constant) -> usize {
    c.data.elem().width()
}

/// Lay out the shared tensors of the backbone-only graph `body` (name order, aligned offsets).
fn shared_file(body: &Graph) -> Shared {
    let mut bytes: Vec<u8> = Vec::new();
    let mut index = HashMap::new();
    for (name, c) in body.initializers.iter().filter(|(n, c)| is_shared(n, c)) {
        let raw = c.data.raw_bytes();
        let key = (c.dims.clone(), c.data.elem().onnx_code(), raw);
        if index.contains_key(&key) {
            continue;
        }
        let offset = (bytes.len() as u64).div_ceil(ALIGN) * ALIGN;
        bytes.resize(offset as usize, 0);
        bytes.extend_from_slice(&key.2);
        let len = key.2.len() as u64;
        index.insert(key, (name.clone(), offset, len));
    }
    use sha2::Digest;
    let sha256 = format!("{:x}", sha2::Sha256::digest(&bytes));
    Shared { bytes, sha256, index }
}

/// The task graph as a model whose shared tensors point into `location`; with the names of the shared tensors it
/// references, and its size as one self-contained file.
fn task_model(g: &Graph, shared: &Shared, location: &str) -> Result<(proto::ModelProto, BTreeSet<String>, u64)> {
    g.check().map_err(|e| Error::invalid(format!("graph `{}` is not well formed: {e}", g.name)))?;
    let mut m = super::onnx::to_model(g, env!("CARGO_PKG_VERSION"));
    let standalone = m.encoded_len() as u64;
    let mut used = BTreeSet::new();
    for t in m.graph.iter_mut().flat_map(|g| g.initializer.iter_mut()) {
        let Some(raw) = t.raw_data.take() else { continue };
        let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        let key = (dims, t.data_type.unwrap_or(0), raw);
        match shared.index.get(&key) {
            Some((name, offset, len)) if key.2.len() >= MIN_SHARED_BYTES => {
                used.insert(name.clone());
                let entry = |k: &str, v: String| proto::StringStringEntryProto { key: Some(k.into()), value: Some(v) };
                t.external_data = vec![
                    entry("location", location.to_string()),
                    entry("offset", offset.to_string()),
                    entry("length", len.to_string()),
                ];
                t.set_data_location(proto::tensor_proto::DataLocation::External);
            }
            _ => t.raw_data = Some(key.2),
        }
    }
    Ok((m, used, standalone))
}

/// The task file of one built export: its record and its bytes.
fn task_file(adapter: &Path, b: &mut Built, sh: &Shared, location: &str) -> Result<(TaskFile, Vec<u8>)> {
    let md = &mut b.graph.metadata;
    md.insert(external::META_FILE.into(), location.into());
    md.insert(external::META_SHA256.into(), sh.sha256.clone());
    md.insert(external::META_BYTES.into(), sh.bytes.len().to_string());
    let (m, used, standalone_bytes) = task_model(&b.graph, sh, location)?;
    let bytes = m.encode_to_vec();
    let mut replaced: Vec<String> =
        sh.index.values().map(|(n, _, _)| n).filter(|n| !used.contains(*n)).cloned().collect();
    replaced.sort();
    let external =
        m.graph.as_ref().map(|g| g.initializer.iter().filter(|t| external::is_external(t)).count()).unwrap_or(0);
    use sha2::Digest;
    let file = TaskFile {
        task: b.graph.metadata.get("task").cloned().unwrap_or_default(),
        adapter: adapter.to_path_buf(),
        path: b.output.clone(),
        bytes: bytes.len() as u64,
        sha256: format!("{:x}", sha2::Sha256::digest(&bytes)),
        standalone_bytes,
        external,
        inline: b.graph.initializers.len() - external,
        replaced,
        op_counts: b.graph.op_counts(),
        passes: b.passes.clone(),
    };
    Ok((file, bytes))
}

/// Export every adapter of `args` into `args.out_dir` around one shared weight file (see the module docs).
pub fn export_shared(args: &SharedArgs) -> Result<SharedReport> {
    let start = Instant::now();
    let base = &args.base;
    if base.adapter.is_some() || base.output.is_some() || base.task.is_some() || base.golden.is_some() {
        return Err(Error::invalid(
            "--out-dir: the adapters name the tasks and the files; -o, --task and --golden are for one file",
        ));
    }
    let Some(first) = args.adapters.first() else {
        return Err(Error::invalid("--out-dir needs at least one --adapter"));
    };
    if args.out_dir.exists() && !args.out_dir.is_dir() {
        return Err(Error::file(args.out_dir, "--out-dir: expected a folder, found a file"));
    }
    // Every adapter names the same backbone, and each task once: checked before anything is built.
    let metas: Vec<AdapterFile> = args.adapters.iter().map(|a| AdapterFile::load(a)).collect::<Result<_>>()?;
    let mut tasks: BTreeMap<String, &Path> = BTreeMap::new();
    for (a, path) in metas.iter().zip(args.adapters) {
        let (m0, m) = (&metas[0].meta, &a.meta);
        if m.backbone_sha256 != m0.backbone_sha256 {
            return Err(Error::file(
                path,
                format!(
                    "adapter for backbone `{}` (sha256 {}), but {} is for backbone `{}` (sha256 {}): the task files \
                     of one --out-dir share one backbone; export the others into another folder",
                    m.backbone,
                    m.backbone_sha256,
                    first.display(),
                    m0.backbone,
                    m0.backbone_sha256
                ),
            ));
        }
        if let Some(other) = tasks.insert(m.task.clone(), path) {
            return Err(Error::file(
                path,
                format!(
                    "task `{}` is also the task of {}: both would be written to {}.onnx; export one of them \
                     into another folder",
                    m.task,
                    other.display(),
                    m.task
                ),
            ));
        }
    }
    drop(metas);
    let location = if base.fp16 { WEIGHTS_F16 } else { WEIGHTS_F32 };

    let mut shared: Option<Shared> = None;
    let mut files: Vec<(TaskFile, Vec<u8>)> = Vec::new();
    for adapter in args.adapters {
        let task = AdapterFile::load(adapter)?.meta.task;
        let output = args.out_dir.join(format!("{task}.onnx"));
        let mut b = build(&ExportArgs { adapter: Some(adapter), output: Some(&output), ..*base })?;
        if shared.is_none() {
            // The shared tensors, from the backbone alone (any task: the body does not depend on it).
            let model = crate::model::build_model(&b.backbone, &b.config, None, DType::F32, &Device::Cpu)?;
            let (body, _, _) = lower_for(&model, b.task, base)?;
            shared = Some(shared_file(&body));
        }
        let Some(sh) = shared.as_ref() else { continue };
        files.push(task_file(adapter, &mut b, sh, location)?);
    }
    let Some(shared) = shared else {
        return Err(Error::invalid("--out-dir needs at least one --adapter"));
    };

    // The writes.
    std::fs::create_dir_all(args.out_dir)
        .map_err(|e| Error::file(args.out_dir, format!("--out-dir: cannot create the folder: {e}")))?;
    let weights = args.out_dir.join(location);
    let same = std::fs::metadata(&weights).is_ok_and(|m| m.len() == shared.bytes.len() as u64)
        && external::sha256_streamed(&weights).is_ok_and(|h| h == shared.sha256);
    if !same {
        crate::fsutil::write_atomic(&weights, &shared.bytes)?;
    }
    let mut tasks = Vec::new();
    for (file, bytes) in files {
        crate::fsutil::write_atomic(&file.path, &bytes)?;
        tasks.push(file);
    }
    Ok(SharedReport {
        out_dir: args.out_dir.to_path_buf(),
        weights,
        weights_bytes: shared.bytes.len() as u64,
        weights_sha256: shared.sha256,
        weights_tensors: shared.index.len(),
        weights_written: !same,
        tasks,
        seconds: start.elapsed().as_secs_f64(),
    })
}
