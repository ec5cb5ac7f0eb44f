//! One way to assemble a model: backbone weights plus an optional adapter file, checked, as an [`Ipt`].
//! `export`, `forward`, `validate`, `eval` and `restore` all load through here.
//!
//! **Finding the backbone** when none is given (`--backbone`), the one rule. The backbone's name is the one the
//! adapter records (`ipt-tiny/backbone.safetensors` as `train` writes it, or a folder name such as `ipt-tiny`; an
//! exported file records it in its metadata), or [`DEFAULT_BACKBONE_NAME`] without either. The first file that
//! exists wins:
//!
//! 1. `backbone.safetensors` beside the adapter (for `validate`: beside the adapter, then beside the ONNX file);
//! 2. under `models/` relative to the working folder: `models/<name>/backbone.safetensors` for a folder name,
//!    `models/<name>` and then `<name>` for a name that ends in `.safetensors`;
//! 3. the same under the repository the running `adaptir` was built in (the nearest folder above the
//!    executable that holds a `Cargo.toml` and a `models/` folder), so that `target/release/adaptir` run from
//!    any folder finds the shipped models.
//!
//! The backbone found is then checked against the adapter's record (sha256 and config). Every error says
//! where it looked.
pub mod edt;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::backbone::{Ipt, IptConfig};
use crate::error::{Error, Result};
use crate::params::{StateDict, Strict};
use crate::peft::adaptir::AdaptIrMethod;
use crate::peft::file::AdapterFile;
use crate::peft::{AdaptIrConfig, Layout, Method, MethodModules};

/// The backbone looked for when neither `--backbone` nor an adapter names one: the shipped default.
pub const DEFAULT_BACKBONE_NAME: &str = "ipt-tiny";

/// The file name a backbone has beside its adapters (and under `models/<name>/`).
pub const BACKBONE_FILE: &str = "backbone.safetensors";

/// A model for one task, whichever the backbone: IPT with the head of the task, or an EDT checkpoint's one
/// head. What training and evaluation need of it.
pub enum Net {
    Ipt(Box<Ipt>, usize),
    Edt(Box<crate::backbone::Edt>),
}

impl Net {
    /// (N, 3, P, P) in [0, 1] -> (N, 3, P s, P s).
    pub fn forward(&self, x: &candle_core::Tensor, train: bool) -> candle_core::Result<candle_core::Tensor> {
        match self {
            Net::Ipt(m, head) => m.forward(x, *head, train),
            Net::Edt(m) => m.forward(x, train),
        }
    }

    /// Seed the randomness of the next training forward: EDT's stochastic depth (IPT has none). The trainer calls
    /// it before each step with a seed of the run and the step, so a resumed run draws the same masks.
    pub fn seed_step(&self, seed: u64) -> candle_core::Result<()> {
        match self {
            Net::Ipt(..) => Ok(()),
            Net::Edt(m) => m.body.seed_drop_path(seed),
        }
    }

    /// The method's own buffers (BatchNorm statistics), by model path.
    pub fn method_buffers(&self) -> candle_core::Result<Vec<(String, candle_core::Tensor)>> {
        match self {
            Net::Ipt(m, _) => m.method_buffers(),
            Net::Edt(m) => m.method_buffers(),
        }
    }

    /// The side P of the square inputs it takes (IPT's patch size; EDT's task input size).
    pub fn input_size(&self) -> usize {
        match self {
            Net::Ipt(m, _) => m.config.patch_size,
            Net::Edt(m) => m.task.input_size(),
        }
    }

    /// The upscaling factor of its task.
    pub fn scale(&self) -> usize {
        match self {
            Net::Ipt(m, head) => m.config.scales.get(*head).copied().unwrap_or(1),
            Net::Edt(m) => m.task.scale(),
        }
    }
}

/// A checked model and the files it was assembled from.
pub struct Model {
    pub ipt: Ipt,
    /// The backbone file used (given, or found by the rule of the module docs).
    pub backbone: PathBuf,
    /// The adapter applied, if any.
    pub adapter: Option<AdapterFile>,
}

impl Model {
    pub fn config(&self) -> &IptConfig {
        &self.ipt.config
    }

    /// The adapter's method, or `pretrain` (the backbone alone).
    pub fn method(&self) -> &str {
        self.adapter.as_ref().map(|a| a.meta.method.as_str()).unwrap_or(crate::peft::PRETRAIN.name)
    }
}

/// Backbone + adapter -> a checked model. `backbone`: `--backbone`, else found by the rule of the module docs;
/// the config is the adapter's record, else the backbone file's (see [`backbone_config`]).
pub fn load_model(backbone: Option<&Path>, adapter: Option<&Path>, dtype: DType, device: &Device) -> Result<Model> {
    let adapter = adapter.map(AdapterFile::load).transpose()?;
    load_model_with(backbone, adapter, None, dtype, device)
}

/// [`load_model`] with the adapter already read and, optionally, the config given (`--config`, `--preset`:
/// with an adapter, it must equal the adapter's record).
pub fn load_model_with(
    backbone: Option<&Path>,
    adapter: Option<AdapterFile>,
    config: Option<IptConfig>,
    dtype: DType,
    device: &Device,
) -> Result<Model> {
    let name = adapter.as_ref().map(|a| a.meta.backbone.clone()).unwrap_or_else(|| DEFAULT_BACKBONE_NAME.into());
    let beside: Vec<&Path> = adapter.as_ref().and_then(|a| a.path.parent()).into_iter().collect();
    let backbone = find_backbone(backbone, &name, &beside, "")?;
    let config = match (config, &adapter) {
        (Some(c), _) => c,
        (None, Some(a)) => a.ipt_config("this command")?.clone(),
        (None, None) => backbone_config(&backbone)?,
    };
    let ipt = build_model(&backbone, &config, adapter.as_ref(), dtype, device)?;
    Ok(Model { ipt, backbone, adapter })
}

/// The backbone file: `given` (which must exist), else the first of [`backbone_candidates`] that exists.
/// `hint` is added to the not-found message (e.g. another way to proceed).
pub fn find_backbone(given: Option<&Path>, name: &str, beside: &[&Path], hint: &str) -> Result<PathBuf> {
    if let Some(b) = given {
        if !b.is_file() {
            return Err(Error::file(
                b,
                "backbone not found: expected the backbone weights (.safetensors), found no such file",
            ));
        }
        return Ok(b.to_path_buf());
    }
    let candidates = backbone_candidates(name, beside);
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => {
            let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            Err(Error::invalid(format!(
                "backbone `{name}` not found; looked for {}: pass --backbone PATH{hint}",
                looked.join(", ")
            )))
        }
    }
}

/// Where the rule of the module docs looks for the backbone named `name`, in order.
pub fn backbone_candidates(name: &str, beside: &[&Path]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = beside.iter().map(|d| d.join(BACKBONE_FILE)).collect();
    let under = |root: &Path| -> Vec<PathBuf> {
        if name.ends_with(".safetensors") {
            vec![root.join("models").join(name), root.join(name)]
        } else {
            vec![root.join("models").join(name).join(BACKBONE_FILE)]
        }
    };
    out.extend(under(Path::new("")));
    if let Some(repo) = repository_of_executable() {
        let cwd = std::env::current_dir().ok().and_then(|d| d.canonicalize().ok());
        if cwd.as_deref() != Some(repo.as_path()) {
            out.extend(under(&repo));
        }
    }
    out
}

/// Where an adapter (or another file recorded by name) may be under `models/<backbone>/`: relative to the working
/// folder, then to the executable's repository (as [`backbone_candidates`]).
pub fn models_candidates(backbone: &str, file: &str) -> Vec<PathBuf> {
    // `ipt-tiny/backbone.safetensors` (a file under models/) or `ipt-tiny` (a folder there).
    let folder = match backbone.strip_suffix(".safetensors") {
        Some(n) => n.rsplit_once('/').map_or("", |(d, _)| d),
        None => backbone,
    };
    let mut out = vec![Path::new("models").join(folder).join(file)];
    if let Some(repo) = repository_of_executable() {
        let cwd = std::env::current_dir().ok().and_then(|d| d.canonicalize().ok());
        if cwd.as_deref() != Some(repo.as_path()) {
            out.push(repo.join("models").join(folder).join(file));
        }
    }
    out
}

/// The repository the running executable was built in: the nearest folder above it holding a `Cargo.toml` and a
/// `models/` folder (`target/release/adaptir` -> the repository root); `None` for an installed copy.
pub fn repository_of_executable() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
    exe.ancestors().skip(1).find(|d| d.join("Cargo.toml").is_file() && d.join("models").is_dir()).map(Path::to_path_buf)
}

/// The config of a backbone file: in its safetensors metadata (`ipt_config`, as `adaptir pretrain` writes it, or
/// `config`) or in `config.json` beside it.
pub fn backbone_config(backbone: &Path) -> Result<IptConfig> {
    if let Ok(bytes) = std::fs::read(backbone) {
        if let Ok((_, header)) = safetensors::SafeTensors::read_metadata(&bytes) {
            let md = header.metadata().as_ref();
            if let Some(json) = md.and_then(|m| m.get("ipt_config").or_else(|| m.get("config"))) {
                let cfg: IptConfig = serde_json::from_str(json)
                    .map_err(|e| Error::file(backbone, format!("metadata `config` is not an IPT config: {e}")))?;
                cfg.validate().map_err(|m| Error::file(backbone, m))?;
                return Ok(cfg);
            }
        }
    }
    let beside = backbone.with_file_name("config.json");
    if beside.exists() {
        return IptConfig::from_json_file(&beside);
    }
    Err(Error::file(
        backbone,
        "no model config: expected an `ipt_config` entry in its metadata or a config.json beside it (or pass --config)",
    ))
}

/// The model of `backbone` (+ `adapter`) with `config`, computing in `dtype` (f64 for `validate`'s peer check).
/// The adapter must have been trained on this backbone (sha256 and config); every missing, unexpected or
/// mis-shaped tensor is one error naming the file. A full fine-tuning adapter holds every weight itself.
pub fn build_model(
    backbone: &Path,
    config: &IptConfig,
    adapter: Option<&AdapterFile>,
    dtype: DType,
    device: &Device,
) -> Result<Ipt> {
    let mut weights = StateDict::load(backbone)?;
    let modules = match adapter {
        Some(a) => {
            a.check_backbone(backbone, &config.clone().into())?;
            if a.method()?.trains_backbone() {
                weights = StateDict { path: a.path.clone(), tensors: a.tensors.clone() };
                MethodModules::none(&config.host_dims())
            } else {
                a.modules(dtype, device)?
            }
        }
        None => MethodModules::none(&config.host_dims()),
    };
    let strict = Strict::new(weights);
    strict.finish_model(Ipt::new(strict.var_builder(dtype, device), config, modules), backbone)
}

/// Where the first adapter's keys live in an IPT state dict.
const FIRST_ADAPTER: &str = "body.encoder.layers.0.adaptir.";

/// IPT from one official checkpoint (`forward` without `--adapter`, the parity fixtures); AdaptIR is present,
/// with its sizes, iff the checkpoint holds its keys. Every missing, unexpected or mis-shaped key is reported in
/// one error naming the file. Returns the model and the adapter sizes found.
pub fn load_ipt(checkpoint: &Path, config: &IptConfig, device: &Device) -> Result<(Ipt, Option<AdaptIrConfig>)> {
    let sd = StateDict::load(checkpoint)?;
    let adapter = AdaptIrConfig::from_state_dict(&sd, FIRST_ADAPTER, Layout::Ipt);
    if let Some(a) = &adapter {
        a.validate().map_err(|m| Error::file(checkpoint, m))?;
        if a.dim != config.embed_dim() {
            return Err(Error::file(
                checkpoint,
                format!(
                    "its adapters take {} channels, but the config's transformer width is {} (n_feats {} x {}^2)",
                    a.dim,
                    config.embed_dim(),
                    config.n_feats,
                    config.patch_dim
                ),
            ));
        }
    }
    let strict = Strict::new(sd);
    let vb = strict.var_builder(DType::F32, device);
    let host = config.host_dims();
    let modules = match adapter {
        Some(a) => AdaptIrMethod::with_sizes(a).build(vb.clone(), &host),
        None => Ok(MethodModules::none(&host)),
    };
    let model = strict.finish_model(modules.and_then(|m| Ipt::new(vb, config, m)), checkpoint)?;
    Ok((model, adapter))
}
