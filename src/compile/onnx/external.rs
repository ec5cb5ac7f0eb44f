//! ONNX external data: initialisers whose bytes live in another file beside the model
//! (`TensorProto.data_location = EXTERNAL`, `external_data` entries `location`, `offset`, `length`), as
//! `export --out-dir` writes them for the weights that several task files share (`compile::shared`).
//!
//! A model that references external data records which file and its sha256 in `metadata_props`
//! ([`META_FILE`], [`META_SHA256`], [`META_BYTES`]). [`check`] verifies that record before anything runs: the file
//! lies in the model's folder (a plain relative name, as ONNX requires), has the recorded size (a truncated file is
//! named before its hash is computed) and sha256 (a swapped file), and every tensor's range lies inside it.
//! [`resolve`] then copies the bytes into the tensors, for readers that want a self-contained model (the IR).
//! Runtimes are given the model's path (or folder) and read the file themselves.
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use super::proto;
use crate::{Error, Result};

/// `metadata_props` key: the shared weight file's name, relative to the model's folder.
pub const META_FILE: &str = "external_data";
/// `metadata_props` key: its sha256 (hex).
pub const META_SHA256: &str = "external_data_sha256";
/// `metadata_props` key: its size in bytes.
pub const META_BYTES: &str = "external_data_bytes";

/// Whether a tensor's data is external.
pub fn is_external(t: &proto::TensorProto) -> bool {
    t.data_location == Some(proto::tensor_proto::DataLocation::External as i32) || !t.external_data.is_empty()
}

/// Whether any initialiser of the model is external.
pub fn has_external(m: &proto::ModelProto) -> bool {
    m.graph.as_ref().is_some_and(|g| g.initializer.iter().any(is_external))
}

/// One external tensor's place: (location, offset, length).
fn place(t: &proto::TensorProto) -> std::result::Result<(String, u64, u64), String> {
    let get = |k: &str| t.external_data.iter().find(|e| e.key.as_deref() == Some(k)).and_then(|e| e.value.clone());
    let location = get("location").ok_or("expected an external_data entry `location`, found none")?;
    let num = |k: &str| -> std::result::Result<Option<u64>, String> {
        get(k)
            .map(|v| v.parse::<u64>().map_err(|_| format!("external_data `{k}` is `{v}`, expected an integer")))
            .transpose()
    };
    let offset = num("offset")?.unwrap_or(0);
    let length = num("length")?.ok_or("expected an external_data entry `length`, found none")?;
    Ok((location, offset, length))
}

/// The file `location` names, inside `dir`: a relative path of plain components (ONNX's rule; tract refuses
/// anything else too).
fn located(dir: &Path, location: &str, model: &Path) -> Result<PathBuf> {
    let p = Path::new(location);
    if location.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(Error::file(
            model,
            format!("external data location `{location}`: expected a file name relative to the model's folder"),
        ));
    }
    Ok(dir.join(p))
}

/// The model's folder (empty for a bare file name: the working folder).
pub fn model_dir(model: &Path) -> PathBuf {
    model.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Files whose recorded sha256 this process has verified, by (path, size, modification time, inode): a file
/// replaced or rewritten since is hashed again.
static VERIFIED: Mutex<BTreeMap<(PathBuf, u64, i128, u64), String>> = Mutex::new(BTreeMap::new());

fn identity(path: &Path, md: &std::fs::Metadata) -> (PathBuf, u64, i128, u64) {
    let mtime = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(-1);
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(md);
    #[cfg(not(unix))]
    let ino = 0;
    (path.canonicalize().unwrap_or_else(|_| path.to_path_buf()), md.len(), mtime, ino)
}

/// Verify the model's external data before anything runs it (see the module docs). `model` is the model's path
/// (its folder holds the external file). Returns the external file, or `None` for a self-contained model.
/// Errors name the weight file (missing, truncated, swapped) or the model (a bad reference).
pub fn check(m: &proto::ModelProto, model: &Path) -> Result<Option<PathBuf>> {
    let md: BTreeMap<&str, &str> =
        m.metadata_props.iter().filter_map(|p| Some((p.key.as_deref()?, p.value.as_deref()?))).collect();
    let external: Vec<&proto::TensorProto> =
        m.graph.as_ref().map(|g| g.initializer.iter().filter(|t| is_external(t)).collect()).unwrap_or_default();
    if external.is_empty() && !md.contains_key(META_FILE) {
        return Ok(None);
    }
    let dir = model_dir(model);
    let Some(&file) = md.get(META_FILE) else {
        return Err(Error::file(
            model,
            format!(
                "{} initialisers hold external data, but metadata_props has no `{META_FILE}` and `{META_SHA256}`: \
                 expected a file written by `adaptir export --out-dir`",
                external.len()
            ),
        ));
    };
    let weights = located(&dir, file, model)?;
    let (Some(sha), Some(bytes)) = (md.get(META_SHA256), md.get(META_BYTES).and_then(|b| b.parse::<u64>().ok())) else {
        return Err(Error::file(
            model,
            format!("metadata_props names `{file}` but has no `{META_SHA256}` or `{META_BYTES}`"),
        ));
    };
    for t in &external {
        let name = t.name.as_deref().unwrap_or("");
        let (location, offset, length) =
            place(t).map_err(|e| Error::file(model, format!("initializer `{name}`: {e}")))?;
        if location != file {
            return Err(Error::file(
                model,
                format!("initializer `{name}` is stored in `{location}`, expected the recorded weight file `{file}`"),
            ));
        }
        if offset.checked_add(length).is_none_or(|end| end > bytes) {
            return Err(Error::file(
                model,
                format!(
                    "initializer `{name}`: bytes {offset}..+{length} lie outside `{file}` ({bytes} bytes recorded)"
                ),
            ));
        }
    }
    let found = std::fs::metadata(&weights).map_err(|e| {
        Error::file(
            &weights,
            format!(
                "{} keeps its shared weights in this file, which cannot be read ({e}); export the task files and \
                 `{file}` together (adaptir export --out-dir) and keep them in one folder",
                model.display()
            ),
        )
    })?;
    if found.len() != bytes {
        return Err(Error::file(
            &weights,
            format!(
                "{} bytes, but {} was exported with a shared weight file of {bytes} bytes (sha256 {sha}): the file is \
                 {} or is another export's; copy the folder again or re-export it",
                found.len(),
                model.display(),
                if found.len() < bytes { "truncated" } else { "longer than recorded" }
            ),
        ));
    }
    let id = identity(&weights, &found);
    if VERIFIED.lock().ok().and_then(|v| v.get(&id).cloned()).as_deref() != Some(*sha) {
        let hash = sha256_streamed(&weights)
            .map_err(|e| Error::file(&weights, format!("cannot read the shared weight file: {e}")))?;
        if hash != *sha {
            return Err(Error::file(
                &weights,
                format!(
                    "sha256 {hash}, but {} was exported with a shared weight file of sha256 {sha}: the file was \
                     swapped or corrupted; copy the folder again or re-export it",
                    model.display()
                ),
            ));
        }
        if let Ok(mut v) = VERIFIED.lock() {
            v.insert(id, hash);
        }
    }
    Ok(Some(weights))
}

/// Hex sha256 of a file, read in 1 MiB pieces (the shared file of a large backbone is not held in memory).
pub fn sha256_streamed(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// [`check`], then copy every external tensor's bytes into its `raw_data` (the model becomes self-contained).
pub fn resolve(m: &mut proto::ModelProto, model: &Path) -> Result<()> {
    let Some(weights) = check(m, model)? else { return Ok(()) };
    let mut f = std::fs::File::open(&weights)
        .map_err(|e| Error::file(&weights, format!("cannot open the shared weight file: {e}")))?;
    for t in m.graph.iter_mut().flat_map(|g| g.initializer.iter_mut()).filter(|t| is_external(t)) {
        let (_, offset, length) = place(t).map_err(|e| Error::file(model, e))?;
        let mut buf = vec![0u8; length as usize];
        f.seek(SeekFrom::Start(offset))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| Error::file(&weights, format!("cannot read bytes {offset}..+{length}: {e}")))?;
        t.raw_data = Some(buf);
        t.external_data.clear();
        t.data_location = None;
    }
    Ok(())
}
