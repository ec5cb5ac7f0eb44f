//! State dicts (official key names) and the parameter sources models are built from.
//!
//! Models are constructed through a `candle_nn::VarBuilder`; this module provides its backends:
//! - [`StateDict`] + [`Strict`]: tensors from a `.safetensors` or PyTorch `.pt` file; every missing,
//!   mis-shaped or unexpected key is recorded and reported at once by [`Strict::finish`].
//! - [`ShapeOnly`]: records names and shapes without allocating (parameter counts, key lists).
//!
//! And the way back: [`write_safetensors`] writes named tensors (golden files, `adaptir forward`'s output).
//!
//! [`torch`] reads whole PyTorch checkpoints (Lightning `.ckpt` included) through [`pickle`], a pickle reader
//! that executes nothing and recognises only the globals torch checkpoints use (`adaptir import`).
pub mod pickle;
pub mod torch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::error::{Error, Result};

/// Tensors by their path in the model, as read from one file.
#[derive(Clone)]
pub struct StateDict {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, Tensor>,
}

impl StateDict {
    /// Read a state dict: safetensors, or a PyTorch zip checkpoint (`torch.save(state_dict)`), by content.
    pub fn load(path: &Path) -> Result<Self> {
        let mut head = [0u8; 8];
        {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
            let n = f.read(&mut head).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
            if n < 8 {
                return Err(Error::file(
                    path,
                    format!("file is {n} bytes long: too short for safetensors or a PyTorch checkpoint"),
                ));
            }
        }
        if head[0] == 0x80 && head[1] <= 5 {
            return Err(Error::file(
                path,
                "a raw pickle (PyTorch's legacy pre-1.6 format), which is not supported: re-save it with \
                 torch >= 1.6 as `torch.save(torch.load(path), path)`, or convert it to safetensors",
            ));
        }
        let tensors =
            if head.starts_with(b"PK\x03\x04") { Self::read_pytorch(path)? } else { Self::read_safetensors(path)? };
        Ok(Self { path: path.to_path_buf(), tensors })
    }

    fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
        let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::file(path, format!("not a safetensors file or a PyTorch zip checkpoint ({e})")))?;
        let mut out = BTreeMap::new();
        for (name, view) in st.tensors() {
            let t = candle_core::safetensors::Load::load(&view, &Device::Cpu)
                .map_err(|e| Error::file(path, format!("tensor `{name}`: {e}")))?;
            out.insert(name, t);
        }
        Ok(out)
    }

    /// candle's pickle reader trusts the file: a length field allocates what it says, a tensor's shape
    /// allocates its size before reading, and a malformed argument tuple panics. So the archive is checked
    /// first ([`check_pytorch`]: every pickle length fits in the pickle, every tensor's bytes are in the
    /// archive), and a panic left in candle's reader becomes an error.
    fn read_pytorch(path: &Path) -> Result<BTreeMap<String, Tensor>> {
        let bad = |e: String| Error::file(path, format!("a zip file, but not a readable PyTorch state dict: {e}"));
        check_pytorch(path)?;
        let all = std::panic::catch_unwind(|| candle_core::pickle::read_all(path))
            .map_err(|_| bad("its pickle is malformed (the reader stopped on an inconsistent object)".into()))?
            .map_err(|e| bad(e.to_string()))?;
        if all.is_empty() {
            // Not a flat state dict: a Lightning checkpoint holds its weights under `state_dict`, its keys under
            // the module's attribute (`net.` in the official AdaptIR code). The safe reader finds them, or says
            // what the file holds instead.
            let ck = torch::read_checkpoint(path)?;
            let sd = StateDict { path: path.to_path_buf(), tensors: ck.tensors };
            return Ok(match ck.container {
                torch::Container::Lightning => sd.strip_wrappers().0.tensors,
                torch::Container::StateDict => sd.tensors,
            });
        }
        Ok(all.into_iter().collect())
    }

    /// Remove the wrapper prefixes ([`WRAPPER_PREFIXES`]) that every key shares, outermost first; returns them.
    pub fn strip_wrappers(self) -> (StateDict, Vec<String>) {
        let mut sd = self;
        let mut removed = vec![];
        loop {
            let all = |p: &str| !sd.tensors.is_empty() && sd.tensors.keys().all(|k| k.starts_with(p));
            let Some(p) = WRAPPER_PREFIXES.iter().find(|p| all(p)) else {
                return (sd, removed);
            };
            removed.push(p.to_string());
            sd = sd.strip_prefix(p);
        }
    }

    /// Tensors whose name starts with `prefix`, with the prefix removed.
    pub fn strip_prefix(&self, prefix: &str) -> StateDict {
        let tensors = self
            .tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
            .collect();
        StateDict { path: self.path.clone(), tensors }
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }
}

/// Prefixes that wrap every key of a checkpoint: the official Lightning module's `net`, DataParallel's `module`,
/// and `model`.
pub const WRAPPER_PREFIXES: &[&str] = &["net.", "module.", "model."];

/// A PyTorch zip checkpoint's pickle(s) may hold at most this many bytes (a state dict's pickle is ~100
/// bytes a tensor: this is a million tensors).
const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// Check a PyTorch zip checkpoint before candle reads it: the pickle is at most [`MAX_PICKLE_BYTES`] and
/// every length-prefixed argument in it fits in what is left of it; then every tensor's shape, dtype and
/// offset need no more bytes than its storage entry in the archive holds.
fn check_pytorch(path: &Path) -> Result<()> {
    use std::io::Read;
    let bad = |e: String| Error::file(path, format!("a zip file, but not a readable PyTorch state dict: {e}"));
    let file = std::fs::File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| bad(e.to_string()))?;
    let mut sizes = BTreeMap::new();
    let mut pickles = Vec::new();
    for i in 0..zip.len() {
        let f = zip.by_index(i).map_err(|e| bad(e.to_string()))?;
        let name = String::from_utf8_lossy(f.name_raw()).into_owned();
        if name.ends_with("data.pkl") {
            pickles.push(name.clone());
        }
        sizes.insert(name, f.size());
    }
    for name in &pickles {
        let f = zip.by_name(name).map_err(|e| bad(format!("`{name}`: {e}")))?;
        let mut pkl = Vec::new();
        f.take(MAX_PICKLE_BYTES + 1).read_to_end(&mut pkl).map_err(|e| bad(format!("`{name}`: {e}")))?;
        if pkl.len() as u64 > MAX_PICKLE_BYTES {
            return Err(bad(format!(
                "`{name}` is larger than {MAX_PICKLE_BYTES} bytes, expected a state dict's pickle"
            )));
        }
        check_pickle(&pkl).map_err(|e| bad(format!("`{name}`: {e}")))?;
    }
    let infos = std::panic::catch_unwind(|| candle_core::pickle::read_pth_tensor_info(path, false, None))
        .map_err(|_| bad("its pickle is malformed (the reader stopped on an inconsistent object)".into()))?
        .map_err(|e| bad(e.to_string()))?;
    for t in infos {
        let dims = t.layout.dims();
        let need = dims
            .iter()
            .try_fold(t.dtype.size_in_bytes(), |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_add(t.layout.start_offset()));
        let have = sizes.get(&t.path).copied();
        match (need, have) {
            (Some(n), Some(h)) if n as u64 <= h => {}
            (_, None) => {
                return Err(bad(format!("tensor `{}`: its storage `{}` is not in the archive", t.name, t.path)))
            }
            (n, Some(h)) => {
                let n = n.map_or("more than 2^64".to_string(), |n| n.to_string());
                return Err(bad(format!(
                    "tensor `{}`: shape {dims:?} of {:?} at byte offset {} needs {n} bytes of `{}`, which holds {h}",
                    t.name,
                    t.dtype,
                    t.layout.start_offset(),
                    t.path
                )));
            }
        }
    }
    Ok(())
}

/// Walk a pickle's opcodes (those candle's reader knows): every argument, length-prefixed ones included, must
/// fit in the bytes left. Stops at STOP or at an opcode candle does not know (its reader then refuses it).
fn check_pickle(p: &[u8]) -> std::result::Result<(), String> {
    let mut i = 0usize;
    let need = |i: usize, n: usize, op: u8| {
        if p.len().saturating_sub(i) < n {
            Err(format!("opcode {op:#04x} at byte {} needs {n} more bytes, the pickle has {}", i - 1, p.len() - i))
        } else {
            Ok(())
        }
    };
    while i < p.len() {
        let op = p[i];
        i += 1;
        let n = match op {
            b'.' => return Ok(()),
            0x80 | b'q' | b'K' | b'h' => 1,
            b'M' => 2,
            b'r' | b'J' | b'j' => 4,
            b'G' => 8,
            b'X' => {
                need(i, 4, op)?;
                let len = u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]) as usize;
                i += 4;
                len
            }
            0x8a => {
                need(i, 1, op)?;
                let len = p[i] as usize;
                i += 1;
                if len > 8 {
                    return Err(format!("LONG1 at byte {} has {len} bytes, expected at most 8", i - 2));
                }
                len
            }
            b'c' => {
                for _ in 0..2 {
                    let nl = p[i..].iter().position(|&b| b == b'\n').ok_or_else(|| {
                        format!("GLOBAL at byte {}: expected a newline-terminated name, found the end", i - 1)
                    })?;
                    i += nl + 1;
                }
                0
            }
            b')' | b'R' | b'(' | b't' | b'Q' | b'N' | 0x85 | 0x86 | 0x87 | 0x88 | 0x89 | b's' | b'u' | b'}' | b'd'
            | b'b' | 0x81 | b']' | b'a' | b'e' => 0,
            _ => return Ok(()),
        };
        need(i, n, op)?;
        i += n;
    }
    Ok(())
}

/// Write tensors to a safetensors file atomically ([`crate::fsutil::write_atomic`]).
pub fn write_safetensors(path: &Path, tensors: &[(&str, Tensor)]) -> Result<()> {
    let map: std::collections::HashMap<String, Tensor> =
        tensors.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let bytes =
        safetensors::tensor::serialize(&map, None).map_err(|e| Error::file(path, format!("cannot serialise: {e}")))?;
    Ok(crate::fsutil::write_atomic(path, &bytes)?)
}

#[derive(Default)]
struct Problems {
    used: BTreeSet<String>,
    missing: Vec<(String, Vec<usize>)>,
    misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
}

/// A VarBuilder backend over a state dict that never fails mid-construction: it records every missing or
/// mis-shaped key (handing out zeros so construction goes on) and reports them all in [`Strict::finish`].
#[derive(Clone)]
pub struct Strict {
    sd: Arc<StateDict>,
    problems: Arc<Mutex<Problems>>,
}

impl Strict {
    pub fn new(sd: StateDict) -> Self {
        Self { sd: Arc::new(sd), problems: Default::default() }
    }

    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// One error listing every missing, mis-shaped and unexpected key, or Ok.
    pub fn finish(&self) -> Result<()> {
        self.report(true)
    }

    /// The model built over this state dict, checked: [`Strict::finish`]'s error when a key is at fault, else the
    /// model's own refusal, naming `path`. A refused value stops construction early, so the keys left unread
    /// then are not unexpected.
    pub fn finish_model<T>(&self, built: candle_core::Result<T>, path: &Path) -> Result<T> {
        match built {
            Ok(model) => {
                self.finish()?;
                Ok(model)
            }
            Err(e) => {
                self.report(false)?;
                Err(Error::file(path, e.to_string()))
            }
        }
    }

    fn report(&self, all_read: bool) -> Result<()> {
        let p = self.problems.lock().map_err(|_| Error::invalid("state dict check: lock poisoned"))?;
        let unexpected: Vec<&String> = self.sd.tensors.keys().filter(|k| all_read && !p.used.contains(*k)).collect();
        if p.missing.is_empty() && p.misshaped.is_empty() && unexpected.is_empty() {
            return Ok(());
        }
        let mut msg = String::from("the state dict does not match the model");
        if !p.missing.is_empty() {
            msg += &format!("\n  missing ({}):", p.missing.len());
            for (k, s) in &p.missing {
                msg += &format!("\n    {k} (expected shape {s:?})");
            }
        }
        if !p.misshaped.is_empty() {
            msg += &format!("\n  wrong shape ({}):", p.misshaped.len());
            for (k, want, got) in &p.misshaped {
                msg += &format!("\n    {k}: expected {want:?}, found {got:?}");
            }
        }
        if !unexpected.is_empty() {
            msg += &format!("\n  unexpected ({}):", unexpected.len());
            for k in unexpected {
                msg += &format!("\n    {k} {:?}", self.sd.tensors[k].dims());
            }
        }
        Err(Error::file(&self.sd.path, msg))
    }
}

impl SimpleBackend for Strict {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let mut p = self.problems.lock().map_err(|_| candle_core::Error::Msg("lock poisoned".into()))?;
        match self.sd.tensors.get(name) {
            Some(t) if t.shape() == &s => {
                p.used.insert(name.to_string());
                t.to_dtype(dtype)?.to_device(dev)
            }
            Some(t) => {
                p.used.insert(name.to_string());
                p.misshaped.push((name.to_string(), s.dims().to_vec(), t.dims().to_vec()));
                Tensor::zeros(s, dtype, dev)
            }
            None => {
                p.missing.push((name.to_string(), s.dims().to_vec()));
                Tensor::zeros(s, dtype, dev)
            }
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.sd.tensors.get(name) {
            Some(t) => t.to_dtype(dtype)?.to_device(dev),
            None => candle_core::bail!("missing tensor {name}"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.sd.tensors.contains_key(name)
    }
}

/// A VarBuilder backend that records (name, shape, dtype) and hands out stride-0 views of one zero:
/// enough to walk a model's constructor for its key list and parameter count without allocating.
#[derive(Clone, Default)]
pub struct ShapeOnly {
    seen: Arc<Mutex<BTreeMap<String, (Vec<usize>, DType)>>>,
}

impl ShapeOnly {
    pub fn var_builder(&self) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), DType::F32, Device::Cpu)
    }

    pub fn entries(&self) -> BTreeMap<String, (Vec<usize>, DType)> {
        self.seen.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

impl SimpleBackend for ShapeOnly {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if let Ok(mut m) = self.seen.lock() {
            m.insert(name.to_string(), (s.dims().to_vec(), dtype));
        }
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("shape-only builder has no tensor {name}")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        false
    }
}

/// State-dict entries that are buffers in the official modules, not parameters.
pub const BUFFER_SUFFIXES: &[&str] = &["running_mean", "running_var", "num_batches_tracked", "position_ids"];

pub fn is_buffer(name: &str) -> bool {
    BUFFER_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Number of parameters (torch's `sum(p.numel() for p in model.parameters())`) among state-dict entries.
pub fn count_parameters<'a>(entries: impl IntoIterator<Item = (&'a String, &'a [usize])>) -> usize {
    entries.into_iter().filter(|(k, _)| !is_buffer(k)).map(|(_, s)| s.iter().product::<usize>()).sum()
}
