//! `adaptir import`: official checkpoints -> our adapter file (+ the backbone file when the checkpoint carries
//! one). See docs/import.md for the rules; in short:
//!
//! - Input, by content: a PyTorch zip (`torch.save`: a plain state dict, or a Lightning `.ckpt` with the weights
//!   under `state_dict`) read by [`crate::params::torch`] (executes nothing), or a `.safetensors` state dict.
//!   Wrapper prefixes every key shares ([`crate::params::WRAPPER_PREFIXES`]: `net.` of the Lightning module,
//!   `module.` of DataParallel, `model.`) are removed.
//! - Method, from the keys: AdaptIR keys -> `adaptir`. Without them: `pretrain` (the backbone as it is), or, with
//!   `--backbone B` whose weights differ from the checkpoint's, `full` (full fine-tuning: the adapter file holds
//!   every weight).
//! - Backbone: with `--backbone B` the checkpoint's backbone weights must equal B's (for AdaptIR) and B is
//!   recorded; without it they are written to `--backbone-out` (default `backbone.safetensors` beside the adapter,
//!   where `export` looks first), or an existing file there with the same tensors is reused.
//! - Config: `--config`, else `--backbone`'s record, else read from the shapes ([`infer`]); it is checked against
//!   the shapes either way, and every tensor against the model it describes.
//!
//! Everything is read and checked before anything is written; each file is written atomically.
pub mod infer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value as Json};

use crate::backbone::{Ipt, IptConfig};
use crate::error::{Error, Result};
use crate::params::torch::{read_checkpoint, Container};
use crate::params::{StateDict, Strict};
use crate::peft::adaptir::{AdaptIrMethod, AdaptIrMethodConfig};
use crate::peft::file::{sha256_file, AdapterFile, AdapterMeta};
use crate::peft::{AdaptIrConfig, Layout, Method, MethodModules};

/// Where the first AdaptIR adapter's keys are (sizes are read there).
const FIRST_ADAPTER: &str = "body.encoder.layers.0.adaptir.";

/// What `adaptir import` is asked to do.
pub struct ImportArgs<'a> {
    pub input: &'a Path,
    pub task: &'a str,
    pub output: &'a Path,
    pub backbone: Option<&'a Path>,
    pub backbone_out: Option<&'a Path>,
    /// `--config`: its path and contents.
    pub config: Option<(&'a Path, IptConfig)>,
}

/// What was read and written.
#[derive(Debug)]
pub struct Imported {
    /// The checkpoint read.
    pub input: PathBuf,
    /// `Lightning checkpoint`, `PyTorch state dict`, `safetensors state dict`.
    pub source: String,
    /// Prefixes removed from every key.
    pub prefixes: Vec<String>,
    pub config: IptConfig,
    /// Where the config came from (and where its head count came from).
    pub config_from: String,
    pub method: String,
    /// e.g. `hidden 8, rank 4`; empty for methods without sizes.
    pub method_sizes: String,
    pub task: String,
    pub head: usize,
    /// Tensors in the adapter file.
    pub adapter_tensors: usize,
    pub adapter: PathBuf,
    pub backbone: PathBuf,
    /// `written`, `unchanged` (an existing file with the same tensors) or `given` (`--backbone`).
    pub backbone_state: &'static str,
    /// Lightning `epoch` / `global_step`, when present.
    pub info: serde_json::Map<String, Json>,
    /// Objects skipped outside the weights, and other remarks.
    pub notes: Vec<String>,
}

/// The input's tensors: how it was read, its weights, and what the file held beside them.
struct Source {
    kind: String,
    sd: StateDict,
    info: serde_json::Map<String, Json>,
    notes: Vec<String>,
}

fn read_source(path: &Path) -> Result<Source> {
    let mut head = [0u8; 4];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
        let n = f.read(&mut head).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        if n < 4 {
            return Err(Error::file(path, format!("file is {n} bytes long: not a checkpoint")));
        }
    }
    if head.starts_with(b"PK\x03\x04") {
        let ck = read_checkpoint(path)?;
        let kind = match ck.container {
            Container::Lightning => "Lightning checkpoint",
            Container::StateDict => "PyTorch state dict",
        };
        let sd = StateDict { path: path.to_path_buf(), tensors: ck.tensors };
        return Ok(Source { kind: kind.into(), sd, info: ck.info, notes: ck.notes });
    }
    if crate::peft::file::is_adapter_file(path)? {
        return Err(Error::file(path, "already an adapter file of this tool: pass it to `export --adapter` as it is"));
    }
    let sd = StateDict::load(path)?;
    Ok(Source { kind: "safetensors state dict".into(), sd, info: Default::default(), notes: vec![] })
}

fn is_adapter_key(k: &str) -> bool {
    k.contains(".adaptir.")
}

/// Whether two tensors hold the same dtype, shape and bits.
fn same(a: &Tensor, b: &Tensor) -> Result<bool> {
    if a.dtype() != b.dtype() || a.dims() != b.dims() {
        return Ok(false);
    }
    let (a, b) = (a.flatten_all()?, b.flatten_all()?);
    Ok(match a.dtype() {
        DType::F32 => {
            let (x, y) = (a.to_vec1::<f32>()?, b.to_vec1::<f32>()?);
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits())
        }
        DType::I64 => a.to_vec1::<i64>()? == b.to_vec1::<i64>()?,
        _ => {
            let (x, y) = (a.to_dtype(DType::F64)?.to_vec1::<f64>()?, b.to_dtype(DType::F64)?.to_vec1::<f64>()?);
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits())
        }
    })
}

/// Keys whose tensors differ between `ours` and `theirs` (missing on either side included).
fn differing(ours: &BTreeMap<String, Tensor>, theirs: &BTreeMap<String, Tensor>) -> Result<Vec<String>> {
    let mut out = vec![];
    for (k, t) in ours {
        match theirs.get(k) {
            Some(u) if same(t, u)? => {}
            _ => out.push(k.clone()),
        }
    }
    out.extend(theirs.keys().filter(|k| !ours.contains_key(*k)).cloned());
    Ok(out)
}

fn few(keys: &[String]) -> String {
    let shown: Vec<&str> = keys.iter().take(5).map(String::as_str).collect();
    let more = if keys.len() > 5 { format!(" and {} more", keys.len() - 5) } else { String::new() };
    format!("{}{more}", shown.join(", "))
}

/// The config: `--config`, else `--backbone`'s, else from the shapes; checked against the shapes.
fn choose_config(a: &ImportArgs, shapes: &infer::Shapes) -> Result<(IptConfig, String)> {
    let given = match (&a.config, a.backbone) {
        (Some((p, c)), _) => Some((p.to_path_buf(), c.clone(), "--config")),
        (None, Some(b)) => Some((b.to_path_buf(), crate::model::backbone_config(b)?, "--backbone")),
        (None, None) => None,
    };
    if let Some((path, config, flag)) = given {
        let diff = shapes.differences(&config);
        if !diff.is_empty() {
            return Err(Error::file(
                a.input,
                format!("a checkpoint of another size than {flag} {} describes: {}", path.display(), diff.join("; ")),
            ));
        }
        return Ok((config, format!("{flag} {}", path.display())));
    }
    match shapes.preset() {
        Some((name, heads)) => Ok((
            shapes.config(heads),
            format!(
                "the tensor shapes; {heads} attention heads as preset {name} of the same size (the head count is \
                 not in the weights: pass --config to give another)"
            ),
        )),
        None => Err(Error::file(
            a.input,
            format!(
                "the number of attention heads is not in the weights, and no preset has this size ({}): pass \
                 --config C.json with num_heads (e.g. {})",
                shapes.describe(),
                serde_json::to_string(&shapes.config(1))
                    .unwrap_or_default()
                    .replace("\"num_heads\":1", "\"num_heads\":H")
            ),
        )),
    }
}

/// Build IPT (+ `method`) over `sd` with `config`: every missing, unexpected or mis-shaped key in one error.
fn check_model(sd: &StateDict, config: &IptConfig, method: Option<&dyn Method>) -> Result<()> {
    let strict = Strict::new(sd.clone());
    let vb = strict.var_builder(DType::F32, &Device::Cpu);
    let host = config.host_dims();
    let modules = match method {
        Some(m) => m.build(vb.clone(), &host),
        None => Ok(MethodModules::none(&host)),
    };
    let model = modules.and_then(|m| Ipt::new(vb, config, m));
    strict.finish()?;
    model.map(|_| ()).map_err(|e| Error::file(&sd.path, e.to_string()))
}

/// The AdaptIR method whose sizes the checkpoint's adapters have, if it holds any.
fn adaptir_method(sd: &StateDict, config: &IptConfig) -> Result<Option<(AdaptIrMethod, AdaptIrConfig)>> {
    if !sd.tensors.keys().any(|k| is_adapter_key(k)) {
        return Ok(None);
    }
    let sizes = AdaptIrConfig::from_state_dict(sd, FIRST_ADAPTER, Layout::Ipt).ok_or_else(|| {
        Error::file(&sd.path, format!("holds AdaptIR keys but not the first adapter's (`{FIRST_ADAPTER}*`)"))
    })?;
    sizes.validate().map_err(|m| Error::file(&sd.path, m))?;
    if sizes.dim != config.embed_dim() {
        return Err(Error::file(
            &sd.path,
            format!("its adapters take {} channels, but the transformer width is {}", sizes.dim, config.embed_dim()),
        ));
    }
    // The adapter file records the hidden width; the other widths follow the official ratios.
    let recorded = AdaptIrMethod::new(AdaptIrMethodConfig { hidden: Some(sizes.hidden) }, &config.host_dims())
        .map_err(|m| Error::file(&sd.path, m))?;
    if recorded.sizes != sizes {
        return Err(Error::file(
            &sd.path,
            format!(
                "AdaptIR sizes {sizes:?} do not follow the official ratios (rank h/2, pooling h/2, gate h/8) that \
                 the adapter file records; expected {:?}",
                recorded.sizes
            ),
        ));
    }
    Ok(Some((AdaptIrMethod::with_sizes(sizes), sizes)))
}

/// Import a checkpoint (see the module docs). Nothing is written unless everything checks.
pub fn import(a: &ImportArgs) -> Result<Imported> {
    if a.output.extension().and_then(|e| e.to_str()) != Some("safetensors") || a.output.is_dir() {
        return Err(Error::invalid(format!(
            "-o {}: expected the adapter file to write, a path ending in .safetensors",
            a.output.display()
        )));
    }
    let Source { kind, sd, info, mut notes } = read_source(a.input)?;
    let (sd, prefixes) = sd.strip_wrappers();
    let (adapter_sd, backbone_sd) = {
        let (ad, bb): (BTreeMap<_, _>, BTreeMap<_, _>) = sd.tensors.into_iter().partition(|(k, _)| is_adapter_key(k));
        (StateDict { path: sd.path.clone(), tensors: ad }, StateDict { path: sd.path, tensors: bb })
    };
    let shapes = infer::shapes(&backbone_sd).map_err(|m| Error::file(a.input, m))?;
    let (config, config_from) = choose_config(a, &shapes)?;
    let head = crate::train::head_of(a.task, &config)?;
    let adaptir = adaptir_method(&adapter_sd, &config)?;
    match &adaptir {
        Some((m, _)) => {
            let mut all = backbone_sd.clone();
            all.tensors.extend(adapter_sd.tensors.iter().map(|(k, v)| (k.clone(), v.clone())));
            check_model(&all, &config, Some(m))?
        }
        None => check_model(&backbone_sd, &config, None)?,
    }
    if let Some(de_type) = info.get("hyper_parameters").and_then(de_type_of) {
        let norm = |s: &str| s.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_lowercase();
        let names = crate::backbone::config::OFFICIAL_TASKS.iter().map(|t| t.0);
        let names = names.chain(["lr4-noise30", "lr4-jpeg30", "lr2-noise30", "lowlight", "realnoise"]);
        let theirs = names.clone().find(|t| norm(t) == norm(&de_type));
        if theirs != Some(a.task) {
            notes.push(format!(
                "the checkpoint's hyper_parameters say de_type `{de_type}`; imported as --task {} (head {head}), as asked",
                a.task
            ));
        }
    }

    // Backbone: given (compare), or written / reused beside the adapter.
    let (backbone, backbone_state, method, tensors): (
        PathBuf,
        &'static str,
        Box<dyn Method>,
        BTreeMap<String, Tensor>,
    ) = match a.backbone {
        Some(b) => {
            let theirs = StateDict::load(b)?;
            let diff = differing(&backbone_sd.tensors, &theirs.tensors)?;
            match (adaptir, diff.is_empty()) {
                (Some((m, _)), true) => (b.to_path_buf(), "given", Box::new(m), adapter_sd.tensors),
                (Some(_), false) => {
                    return Err(Error::file(
                        a.input,
                        format!(
                            "its AdaptIR adapters were trained on another backbone: {} of its backbone tensors \
                                 differ from --backbone {} ({}); omit --backbone to write the checkpoint's own",
                            diff.len(),
                            b.display(),
                            few(&diff)
                        ),
                    ))
                }
                (None, true) => (b.to_path_buf(), "given", pretrain(&config)?, BTreeMap::new()),
                (None, false) => {
                    notes.push(format!(
                        "{} of {} backbone tensors differ from --backbone ({}): a full fine-tuning",
                        diff.len(),
                        backbone_sd.tensors.len(),
                        few(&diff)
                    ));
                    let full = crate::peft::method("full", &Json::Null, &config.host_dims()).map_err(Error::invalid)?;
                    (b.to_path_buf(), "given", full, backbone_sd.tensors.clone())
                }
            }
        }
        None => {
            let out = a
                .backbone_out
                .map(Path::to_path_buf)
                .unwrap_or_else(|| a.output.parent().unwrap_or(Path::new("")).join(crate::model::BACKBONE_FILE));
            if out == a.output {
                return Err(Error::invalid(format!(
                    "--backbone-out {} is the adapter file -o as well: give two paths",
                    out.display()
                )));
            }
            let state = if out.is_file() {
                let existing = StateDict::load(&out)?;
                let diff = differing(&backbone_sd.tensors, &existing.tensors)?;
                if !diff.is_empty() {
                    return Err(Error::file(
                        &out,
                        format!(
                            "exists and holds other backbone weights than {} ({} tensors differ: {}); adapters \
                                 beside it may need it: pass --backbone-out NEW.safetensors, or --backbone {} to \
                                 import against it",
                            a.input.display(),
                            diff.len(),
                            few(&diff),
                            out.display()
                        ),
                    ));
                }
                crate::model::backbone_config(&out).ok().filter(|c| *c == config).ok_or_else(|| {
                        Error::file(&out, "exists with the same tensors but another (or no) recorded config: remove it or pass --backbone-out")
                    })?;
                "unchanged"
            } else {
                "written"
            };
            let (method, tensors): (Box<dyn Method>, _) = match adaptir {
                Some((m, _)) => (Box::new(m), adapter_sd.tensors),
                None => (pretrain(&config)?, BTreeMap::new()),
            };
            (out, state, method, tensors)
        }
    };

    // Write: the backbone first (the adapter records its sha256), then the adapter.
    let source_sha = sha256_file(a.input)?;
    let source_name = a.input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let wrote_backbone = backbone_state == "written";
    if wrote_backbone {
        let summary = json!({"imported_from": source_name, "source_sha256": source_sha, "source": kind});
        crate::train::save_backbone(&backbone, &backbone_sd.tensors, &config, &summary)?;
    }
    let meta = AdapterMeta {
        method: method.name().to_string(),
        method_config: method.config(),
        task: a.task.to_string(),
        backbone: crate::train::adapt::backbone_name(&backbone),
        backbone_sha256: sha256_file(&backbone)?,
        backbone_config: config.clone().into(),
        training: json!({
            "imported_from": source_name, "source_sha256": source_sha, "source": kind,
            "prefixes_removed": prefixes, "lightning": Json::Object(info.clone()),
            "tool": format!("adaptir import {}", env!("CARGO_PKG_VERSION")),
        }),
    };
    if let Err(e) = AdapterFile::save(a.output, &meta, &tensors) {
        if wrote_backbone {
            let _ = std::fs::remove_file(&backbone);
        }
        return Err(e);
    }
    let method_sizes = match &meta.method[..] {
        "adaptir" => format!(
            "hidden {}, rank {}",
            meta.method_config.get("hidden").and_then(Json::as_u64).unwrap_or_default(),
            meta.method_config.get("hidden").and_then(Json::as_u64).unwrap_or_default() / 2
        ),
        _ => String::new(),
    };
    let lightning_info: serde_json::Map<String, Json> =
        info.into_iter().filter(|(k, _)| k == "epoch" || k == "global_step").collect();
    Ok(Imported {
        input: a.input.to_path_buf(),
        source: kind,
        prefixes,
        config,
        config_from,
        method: meta.method,
        method_sizes,
        task: a.task.to_string(),
        head,
        adapter_tensors: tensors.len(),
        adapter: a.output.to_path_buf(),
        backbone,
        backbone_state,
        info: lightning_info,
        notes,
    })
}

impl Imported {
    /// The checkpoint's file name.
    pub fn input_name(&self) -> String {
        self.input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

fn pretrain(config: &IptConfig) -> Result<Box<dyn Method>> {
    crate::peft::method(crate::peft::PRETRAIN.name, &Json::Null, &config.host_dims()).map_err(Error::invalid)
}

/// `hyper_parameters.args.de_type` (the official AdaptIR option), or `hyper_parameters.de_type`.
fn de_type_of(h: &Json) -> Option<String> {
    h.get("args").and_then(|a| a.get("de_type")).or_else(|| h.get("de_type")).and_then(Json::as_str).map(String::from)
}
