//! The adapter file: one self-describing `.safetensors` holding a method's tensors (named by their path in
//! the model) and, in `__metadata__`, the format name and version, the method and its configuration, the
//! task, the backbone's name, config and sha256, and a training summary. Loading checks all of it and says
//! exactly what differs.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::Method;
use crate::backbone::{BackboneConfig, IptConfig};
use crate::error::{Error, Result};
use crate::hooks::{HostDims, MethodModules};
use crate::params::{StateDict, Strict};

pub const FORMAT: &str = "adaptir-adapter";
/// The newest format version this build reads and the one it writes.
pub const VERSION: u32 = 1;

/// Everything about an adapter except its tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterMeta {
    pub method: String,
    pub method_config: Value,
    /// Task name (see `backbone::config::task_index`).
    pub task: String,
    pub backbone: String,
    pub backbone_sha256: String,
    /// IPT's config, or EDT's for an adapter trained on an EDT checkpoint.
    pub backbone_config: BackboneConfig,
    /// Free-form JSON: steps, data, seed, final loss and PSNR, time.
    pub training: Value,
}

pub struct AdapterFile {
    pub path: PathBuf,
    pub meta: AdapterMeta,
    pub tensors: BTreeMap<String, Tensor>,
}

/// Rewrite a safetensors buffer with its JSON header's keys sorted at every level (the data section and
/// its offsets are unchanged; the header stays padded to 8 bytes with spaces, as the format requires).
fn sorted_header(bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    fn sort(v: Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<String, Value> = m.into_iter().map(|(k, v)| (k, sort(v))).collect();
                let mut out = serde_json::Map::new();
                for (k, v) in sorted {
                    out.insert(k, v);
                }
                Value::Object(out)
            }
            other => other,
        }
    }
    let n = u64::from_le_bytes(bytes.get(..8).ok_or("short buffer")?.try_into().map_err(|_| "short buffer")?) as usize;
    let header: Value =
        serde_json::from_slice(bytes.get(8..8 + n).ok_or("short header")?).map_err(|e| e.to_string())?;
    let mut text = serde_json::to_vec(&sort(header)).map_err(|e| e.to_string())?;
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

/// Whether a file is a safetensors file whose metadata says it is an adapter file (read from the header only).
pub fn is_adapter_file(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    let mut len = [0u8; 8];
    if f.read_exact(&mut len).is_err() {
        return Ok(false);
    }
    let n = u64::from_le_bytes(len);
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    if n == 0 || n > 100_000_000 || n + 8 > size {
        return Ok(false);
    }
    let mut header = vec![0u8; n as usize];
    if f.read_exact(&mut header).is_err() {
        return Ok(false);
    }
    let Ok(json) = serde_json::from_slice::<Value>(&header) else { return Ok(false) };
    Ok(json.get("__metadata__").and_then(|m| m.get("format")).and_then(Value::as_str) == Some(FORMAT))
}

/// Hex sha256 of a file's bytes.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    Ok(format!("{:x}", sha2::Sha256::digest(&bytes)))
}

impl AdapterMeta {
    fn to_map(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert("format".into(), FORMAT.into());
        m.insert("format_version".into(), VERSION.to_string());
        m.insert("method".into(), self.method.clone());
        m.insert("method_config".into(), self.method_config.to_string());
        m.insert("task".into(), self.task.clone());
        m.insert("backbone".into(), self.backbone.clone());
        m.insert("backbone_sha256".into(), self.backbone_sha256.clone());
        m.insert("backbone_config".into(), self.backbone_config.to_value().to_string());
        m.insert("training".into(), self.training.to_string());
        m
    }

    fn from_map(path: &Path, m: &HashMap<String, String>) -> Result<Self> {
        let get = |k: &str| {
            m.get(k).cloned().ok_or_else(|| Error::file(path, format!("adapter metadata has no `{k}` entry")))
        };
        let json = |k: &str| -> Result<Value> {
            serde_json::from_str(&get(k)?)
                .map_err(|e| Error::file(path, format!("adapter metadata `{k}` is not JSON: {e}")))
        };
        let backbone_config = BackboneConfig::from_value(json("backbone_config")?)
            .map_err(|e| Error::file(path, format!("adapter metadata `backbone_config`: {e}")))?;
        Ok(Self {
            method: get("method")?,
            method_config: json("method_config")?,
            task: get("task")?,
            backbone: get("backbone")?,
            backbone_sha256: get("backbone_sha256")?,
            backbone_config,
            training: json("training")?,
        })
    }
}

impl AdapterFile {
    /// Write atomically. The bytes depend only on the tensors and the metadata (the header's keys are
    /// sorted: safetensors writes the metadata map in hash order).
    pub fn save(path: &Path, meta: &AdapterMeta, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        let data: Vec<(String, Tensor)> = tensors.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let bytes = safetensors::tensor::serialize(data, Some(meta.to_map()))
            .map_err(|e| Error::file(path, format!("cannot serialise: {e}")))?;
        let bytes = sorted_header(&bytes).map_err(|e| Error::file(path, format!("cannot serialise: {e}")))?;
        Ok(crate::fsutil::write_atomic(path, &bytes)?)
    }

    /// Read and check the format; the method and tensors are checked by [`AdapterFile::method`] and
    /// [`AdapterFile::modules`], the backbone by [`AdapterFile::check_backbone`].
    pub fn load(path: &Path) -> Result<Self> {
        let sd = StateDict::load(path)?;
        let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::file(path, format!("not an adapter file (safetensors expected): {e}")))?;
        let Some(map) = header.metadata().clone() else {
            return Err(Error::file(
                path,
                format!("not an adapter file: no metadata (expected format `{FORMAT}`); a plain state dict?"),
            ));
        };
        match map.get("format").map(String::as_str) {
            Some(FORMAT) => {}
            Some(other) => {
                let what = if other == "adaptir-backbone" { " (a backbone file: pass it as --backbone)" } else { "" };
                return Err(Error::file(
                    path,
                    format!("not an adapter file: its metadata says format `{other}`{what}, expected `{FORMAT}`"),
                ));
            }
            None => {
                return Err(Error::file(
                    path,
                    format!("not an adapter file: its metadata has no `format` (expected `{FORMAT}`)"),
                ))
            }
        }
        let version: u32 = map
            .get("format_version")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::file(path, "adapter metadata has no valid `format_version`"))?;
        if version > VERSION {
            return Err(Error::file(
                path,
                format!("adapter format version {version} is newer than this adaptir reads (up to {VERSION}): upgrade adaptir"),
            ));
        }
        let meta = AdapterMeta::from_map(path, &map)?;
        meta.backbone_config.validate().map_err(|m| Error::file(path, format!("backbone_config: {m}")))?;
        Ok(Self { path: path.to_path_buf(), meta, tensors: sd.tensors })
    }

    pub fn host(&self) -> HostDims {
        self.meta.backbone_config.host_dims()
    }

    /// The IPT config the adapter records; an adapter trained on EDT is refused, naming the file, by the paths
    /// that take IPT adapters only (`what`).
    pub fn ipt_config(&self, what: &str) -> Result<&IptConfig> {
        self.meta.backbone_config.ipt().ok_or_else(|| {
            Error::file(
                &self.path,
                format!(
                    "an adapter for an EDT backbone (task {}): {what} takes IPT adapters only so far",
                    self.meta.task
                ),
            )
        })
    }

    /// The method, from the registry and the stored configuration.
    pub fn method(&self) -> Result<Box<dyn Method>> {
        super::method(&self.meta.method, &self.meta.method_config, &self.host()).map_err(|m| Error::file(&self.path, m))
    }

    /// Refuse a backbone other than the one the adapter was trained on.
    pub fn check_backbone(&self, backbone: &Path, config: &BackboneConfig) -> Result<()> {
        let sha = sha256_file(backbone)?;
        if sha != self.meta.backbone_sha256 {
            return Err(Error::file(
                &self.path,
                format!(
                    "was trained on backbone `{}` (sha256 {}), but {} has sha256 {sha}",
                    self.meta.backbone,
                    self.meta.backbone_sha256,
                    backbone.display()
                ),
            ));
        }
        if config != &self.meta.backbone_config {
            return Err(Error::file(
                &self.path,
                format!("backbone config differs: adapter {:?}, given {:?}", self.meta.backbone_config, config),
            ));
        }
        Ok(())
    }

    /// Build the method's modules from the file's tensors; missing, extra or mis-shaped tensors are one error.
    pub fn modules(&self, dtype: DType, device: &Device) -> Result<MethodModules> {
        let method = self.method()?;
        let strict = Strict::new(StateDict { path: self.path.clone(), tensors: self.tensors.clone() });
        let modules = method.build(strict.var_builder(dtype, device), &self.host());
        strict.finish()?;
        modules.map_err(|e| Error::file(&self.path, e.to_string()))
    }
}

/// The tensors an adapter file (or a training checkpoint) stores for a method trained in `vm`: every variable
/// (detached), with the `buffers` the modules keep up to date themselves (BatchNorm running statistics, from
/// `MethodModules::buffers`) in place of their stale copies in the map.
pub fn method_tensors(vm: &candle_nn::VarMap, buffers: Vec<(String, Tensor)>) -> Result<BTreeMap<String, Tensor>> {
    let mut out: BTreeMap<String, Tensor> = vm
        .data()
        .lock()
        .map_err(|_| Error::invalid("VarMap lock poisoned"))?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    for (k, t) in buffers {
        out.insert(k, t.detach());
    }
    Ok(out)
}
