//! PyTorch zip checkpoints read without executing anything ([`super::pickle`]): a plain state dict
//! (`torch.save(model.state_dict())`) or a dict holding one under `state_dict` (a Lightning `.ckpt`, with
//! `epoch`, `global_step`, `optimizer_states`, `hyper_parameters`, ... beside it).
//!
//! Inside the weights every entry must be a tensor made by the torch rebuild functions from a typed storage;
//! anything else there is an error. Outside them a global off the allow-list is skipped and reported as a note.
//! Only the storages the weights use are read; each must be stored uncompressed (as `torch.save` writes it) and
//! hold every element its tensors address.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value as Json};

use super::pickle::{self, Map, StorageType, TensorRef, Value};
use crate::error::{Error, Result};

/// The pickle of a checkpoint may hold at most this many bytes (the same bound as [`super::StateDict`]'s reader).
pub const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// Notes kept about skipped objects (the rest are counted).
const MAX_NOTES: usize = 20;

/// Where the weights were in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Container {
    /// The top-level dict is the state dict.
    StateDict,
    /// The top-level dict holds it under `state_dict` (a Lightning checkpoint).
    Lightning,
}

/// What [`read_checkpoint`] found.
pub struct TorchCheckpoint {
    pub container: Container,
    /// The weights, by their key in the file.
    pub tensors: BTreeMap<String, Tensor>,
    /// The top-level keys beside the weights (`epoch`, `optimizer_states`, ...).
    pub other_keys: Vec<String>,
    /// Plain values of interest from beside the weights (`epoch`, `global_step`, `pytorch-lightning_version`,
    /// `hyper_parameters`) as JSON; objects of unknown globals appear as `"<module.name: not read>"`.
    pub info: serde_json::Map<String, Json>,
    /// One line per object skipped outside the weights: where it was and which global it asked for.
    pub notes: Vec<String>,
}

/// Read a PyTorch zip checkpoint's weights (see the module docs).
pub fn read_checkpoint(path: &Path) -> Result<TorchCheckpoint> {
    let bad = |m: String| Error::file(path, m);
    let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| bad(format!("not a readable PyTorch zip checkpoint (truncated or damaged zip: {e})")))?;
    let names: Vec<String> = (0..zip.len())
        .filter_map(|i| zip.by_index_raw(i).ok().map(|f| String::from_utf8_lossy(f.name_raw()).into_owned()))
        .collect();
    let pkls: Vec<&String> = names.iter().filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1).collect();
    let pkl_name = match pkls.as_slice() {
        [one] => (*one).clone(),
        [] => return Err(bad("a zip file without `<name>/data.pkl`: not a PyTorch checkpoint (torch.save)".into())),
        many => return Err(bad(format!("a zip file with {} pickles ({many:?}), expected one", many.len()))),
    };
    let archive = pkl_name.trim_end_matches("/data.pkl").to_string();
    if let Ok(mut f) = zip.by_name(&format!("{archive}/byteorder")) {
        let mut s = String::new();
        f.by_ref().take(16).read_to_string(&mut s).map_err(|e| bad(format!("`{archive}/byteorder`: {e}")))?;
        if s.trim() != "little" {
            return Err(bad(format!("byte order `{}`, expected `little`", s.trim())));
        }
    }
    let mut pkl = Vec::new();
    zip.by_name(&pkl_name)
        .map_err(|e| bad(format!("`{pkl_name}`: {e}")))?
        .take(MAX_PICKLE_BYTES + 1)
        .read_to_end(&mut pkl)
        .map_err(|e| bad(format!("`{pkl_name}`: cannot read ({e}); a truncated file?")))?;
    if pkl.len() as u64 > MAX_PICKLE_BYTES {
        return Err(bad(format!("`{pkl_name}` is larger than {MAX_PICKLE_BYTES} bytes")));
    }
    let top = pickle::read(&pkl).map_err(|e| bad(format!("`{pkl_name}`: {e}")))?;
    let top = match top {
        Value::Dict(m) => m,
        other => {
            return Err(bad(format!(
                "holds {}, expected a state dict (name -> tensor) or a dict with `state_dict` (a Lightning checkpoint)",
                other.describe()
            )))
        }
    };
    let (container, weights, other_keys) = locate(path, &top)?;
    let mut notes = Vec::new();
    let mut skipped = 0usize;
    let mut info = serde_json::Map::new();
    if container == Container::Lightning {
        for (k, v) in &top.items {
            let key = key_name(k);
            if key == "state_dict" {
                continue;
            }
            collect_notes(v, &key, &mut notes, &mut skipped);
            if ["epoch", "global_step", "pytorch-lightning_version", "hyper_parameters"].contains(&key.as_str()) {
                info.insert(key.clone(), to_json(v, 0));
            }
        }
    }
    if skipped > 0 {
        notes.push(format!("... and {skipped} more objects of unknown globals skipped"));
    }
    let tensors = load_tensors(path, &mut zip, &archive, weights)?;
    Ok(TorchCheckpoint { container, tensors, other_keys, info, notes })
}

fn key_name(k: &Value) -> String {
    match k {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => other.describe(),
    }
}

/// The state dict: the top-level dict, or its `state_dict` entry.
fn locate<'a>(path: &Path, top: &'a Map) -> Result<(Container, &'a Map, Vec<String>)> {
    let keys: Vec<String> = top.items.iter().map(|(k, _)| key_name(k)).collect();
    if let Some(sd) = top.get("state_dict") {
        let others = keys.iter().filter(|k| *k != "state_dict").cloned().collect();
        return match sd {
            Value::Dict(m) => Ok((Container::Lightning, m, others)),
            other => {
                Err(Error::file(path, format!("`state_dict` is {}, expected a dict of tensors", other.describe())))
            }
        };
    }
    let lightning = ["epoch", "global_step", "pytorch-lightning_version", "optimizer_states", "hyper_parameters"];
    if keys.iter().any(|k| lightning.contains(&k.as_str())) {
        return Err(Error::file(
            path,
            format!(
                "a Lightning-style checkpoint without `state_dict`: expected the weights under `state_dict`, found \
                 only the keys {}",
                list(&keys)
            ),
        ));
    }
    let tensors = top.items.iter().filter(|(_, v)| matches!(v, Value::Tensor(_))).count();
    if top.items.is_empty() || tensors == 0 {
        return Err(Error::file(
            path,
            format!(
                "expected a state dict (name -> tensor) or a dict with `state_dict`; found a dict with no tensors \
                 (keys: {})",
                list(&keys)
            ),
        ));
    }
    Ok((Container::StateDict, top, vec![]))
}

fn list(keys: &[String]) -> String {
    let shown: Vec<&str> = keys.iter().take(12).map(String::as_str).collect();
    let more = if keys.len() > 12 { format!(", ... ({} in all)", keys.len()) } else { String::new() };
    format!("{}{more}", shown.join(", "))
}

/// Notes for every object of an unknown global below `v` (at `at`).
fn collect_notes(v: &Value, at: &str, notes: &mut Vec<String>, skipped: &mut usize) {
    match v {
        Value::Unknown(g) => {
            if notes.len() < MAX_NOTES {
                notes.push(format!(
                    "skipped `{at}`: an object of `{g}` (not a global torch checkpoints need; not read)"
                ));
            } else {
                *skipped += 1;
            }
        }
        Value::Tuple(s) | Value::List(s) => {
            for (i, x) in s.items.iter().enumerate() {
                collect_notes(x, &format!("{at}[{i}]"), notes, skipped);
            }
        }
        Value::Dict(m) | Value::Namespace(m) => {
            for (k, x) in &m.items {
                collect_notes(k, &format!("{at} key"), notes, skipped);
                collect_notes(x, &format!("{at}.{}", key_name(k)), notes, skipped);
            }
        }
        _ => {}
    }
}

/// Plain values as JSON (bounded: deeper than 6 levels or longer than 64 items is summarised).
fn to_json(v: &Value, depth: usize) -> Json {
    if depth > 6 {
        return json!("<nested too deep: not shown>");
    }
    match v {
        Value::None => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f) => json!(f),
        Value::Str(s) => json!(s.chars().take(256).collect::<String>()),
        Value::Tuple(s) | Value::List(s) => {
            if s.items.len() > 64 {
                return json!(format!("<{} items: not shown>", s.items.len()));
            }
            Json::Array(s.items.iter().map(|x| to_json(x, depth + 1)).collect())
        }
        Value::Dict(m) | Value::Namespace(m) => {
            if m.items.len() > 64 {
                return json!(format!("<{} entries: not shown>", m.items.len()));
            }
            Json::Object(m.items.iter().map(|(k, x)| (key_name(k), to_json(x, depth + 1))).collect())
        }
        Value::Tensor(t) => json!(format!("<tensor {:?}>", t.size)),
        Value::Unknown(g) => json!(format!("<{g}: not read>")),
        other => json!(format!("<{}>", other.describe())),
    }
}

fn dtype_of(s: StorageType) -> Option<DType> {
    Some(match s {
        StorageType::Float => DType::F32,
        StorageType::Double => DType::F64,
        StorageType::Half => DType::F16,
        StorageType::BFloat16 => DType::BF16,
        StorageType::Long => DType::I64,
        StorageType::Int => DType::I32,
        StorageType::Short => DType::I16,
        StorageType::Byte | StorageType::Bool => DType::U8,
        StorageType::Char => return None,
    })
}

/// Every weight's tensor, checked first (all entries tensors; every storage present, uncompressed, large
/// enough), then read storage by storage.
fn load_tensors<R: Read + std::io::Seek>(
    path: &Path,
    zip: &mut zip::ZipArchive<R>,
    archive: &str,
    weights: &Map,
) -> Result<BTreeMap<String, Tensor>> {
    let bad = |m: String| Error::file(path, m);
    let mut refs: Vec<(String, &TensorRef)> = Vec::new();
    for (k, v) in &weights.items {
        let name = match k {
            Value::Str(s) => s.clone(),
            other => return Err(bad(format!("a state-dict key is {}, expected a str", other.describe()))),
        };
        match v {
            Value::Tensor(t) => refs.push((name, t)),
            Value::Unknown(g) => {
                return Err(bad(format!(
                    "weight `{name}`: the pickle asks for the global `{g}`, which torch checkpoints do not use \
                     (expected torch._utils._rebuild_tensor_v2 of a typed storage); refused, nothing was run"
                )))
            }
            other => return Err(bad(format!("weight `{name}` is {}, expected a tensor", other.describe()))),
        }
    }
    let mut storages: BTreeMap<&str, (StorageType, u64)> = BTreeMap::new();
    for (name, t) in &refs {
        let s = &t.storage;
        if dtype_of(s.dtype).is_none() {
            return Err(bad(format!("weight `{name}`: storage type {:?} is not supported", s.dtype)));
        }
        // Elements the view addresses: up to offset + sum((size - 1) * stride), or none when a dim is 0.
        let elems = t.size.iter().try_fold(1u64, |a, &n| a.checked_mul(n));
        let need = if t.size.contains(&0) {
            Some(0)
        } else {
            t.size
                .iter()
                .zip(&t.stride)
                .try_fold(t.offset.checked_add(1), |e, (&n, &st)| {
                    Some((n - 1).checked_mul(st).and_then(|x| x.checked_add(e?)))
                })
                .flatten()
        };
        match (need, elems) {
            (Some(n), Some(e)) if n <= s.numel && e <= s.numel.max(1) => {}
            _ => {
                return Err(bad(format!(
                "weight `{name}`: shape {:?} (stride {:?}, offset {}) addresses more than its storage's {} elements",
                t.size, t.stride, t.offset, s.numel
            )))
            }
        }
        let prev = storages.insert(&s.key, (s.dtype, s.numel));
        if prev.is_some_and(|p| p != (s.dtype, s.numel)) {
            return Err(bad(format!("storage `{}` is declared twice with different types or sizes", s.key)));
        }
    }
    let mut bytes: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    for (key, (dtype, numel)) in &storages {
        let entry = format!("{archive}/data/{key}");
        let want = numel
            .checked_mul(dtype.size() as u64)
            .ok_or_else(|| bad(format!("storage `{entry}`: {numel} elements overflow")))?;
        let f = zip.by_name(&entry).map_err(|e| bad(format!("storage `{entry}` is not in the archive ({e})")))?;
        if f.compression() != zip::CompressionMethod::Stored {
            return Err(bad(format!("storage `{entry}` is compressed; torch.save stores storages uncompressed")));
        }
        if f.size() < want {
            return Err(bad(format!("storage `{entry}` holds {} bytes, its tensors need {want}", f.size())));
        }
        let mut buf = Vec::new();
        f.take(want).read_to_end(&mut buf).map_err(|e| bad(format!("storage `{entry}`: cannot read ({e})")))?;
        if (buf.len() as u64) < want {
            return Err(bad(format!("storage `{entry}`: {} of {want} bytes readable; a truncated file?", buf.len())));
        }
        bytes.insert(key, buf);
    }
    let mut out = BTreeMap::new();
    for (name, t) in refs {
        let s = &t.storage;
        let (Some(dtype), Some(buf)) = (dtype_of(s.dtype), bytes.get(s.key.as_str())) else { continue };
        let es = s.dtype.size();
        let dims: Vec<usize> = t.size.iter().map(|&d| d as usize).collect();
        let n: usize = dims.iter().product();
        let contiguous = {
            let mut want = 1u64;
            let mut ok = true;
            for (&d, &st) in t.size.iter().zip(&t.stride).rev() {
                ok &= d == 1 || st == want;
                want *= d;
            }
            ok
        };
        if contiguous {
            let at = t.offset as usize * es;
            let tensor = Tensor::from_raw_buffer(&buf[at..at + n * es], dtype, &dims, &Device::Cpu)
                .map_err(|e| bad(format!("weight `{name}`: {e}")))?;
            out.insert(name, tensor);
            continue;
        }
        let mut data = Vec::with_capacity(n * es);
        // Row-major walk over the indices, reading each element at offset + sum(index * stride).
        let mut idx = vec![0usize; dims.len()];
        for _ in 0..n {
            let at = idx.iter().zip(&t.stride).map(|(&i, &st)| i as u64 * st).sum::<u64>() + t.offset;
            let at = at as usize * es;
            data.extend_from_slice(&buf[at..at + es]);
            for d in (0..dims.len()).rev() {
                idx[d] += 1;
                if idx[d] < dims[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        let tensor = Tensor::from_raw_buffer(&data, dtype, &dims, &Device::Cpu)
            .map_err(|e| bad(format!("weight `{name}`: {e}")))?;
        out.insert(name, tensor);
    }
    Ok(out)
}
