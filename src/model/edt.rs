//! An EDT model from one official checkpoint (`forward` with an `"arch": "edt"` config, the parity fixture):
//! the backbone of `backbone::edt` with AdaptIR's EDT variant in every Swin block when the checkpoint holds its
//! keys. Here, not in `backbone`, because it joins a backbone and a method (layer 5 of src/lib.rs).
use std::path::Path;

use candle_core::{DType, Device, Result as CResult};
use candle_nn::VarBuilder;

use crate::backbone::edt::{depths_in, heads_in, is_edt_state_dict, Edt, EdtConfig};
use crate::error::{Error, Result};
use crate::hooks::LayerHooks;
use crate::params::{StateDict, Strict};
use crate::peft::adaptir::AdaptIrMethod;
use crate::peft::file::AdapterFile;
use crate::peft::{AdaptIrConfig, Layout, Method};

/// One AdaptIR of `sizes` per block, at the official keys `{block}.adaptir.*`: the `adaptir` method of the zoo on
/// EDT's host (its EDT layout follows from the host).
pub fn adaptir_hooks(vb: &VarBuilder, config: &EdtConfig, sizes: AdaptIrConfig) -> CResult<Vec<Box<dyn LayerHooks>>> {
    Ok(AdaptIrMethod::with_sizes(sizes).build(vb.clone(), &config.host_dims())?.layers)
}

/// Where the first block's AdaptIR keys live in an EDT state dict.
const FIRST_ADAPTER: &str = "body.layers.0.residual_group.blocks.0.adaptir.";

/// Check that the state dict `sd` can be the EDT of `config`, before reading it key by key: an IPT checkpoint,
/// a checkpoint whose head is another task's, and another number of blocks each get one message that says what
/// the file holds.
pub fn check_edt_state_dict(sd: &StateDict, config: &EdtConfig) -> Result<()> {
    let path = &sd.path;
    if !is_edt_state_dict(sd.tensors.keys()) {
        let what = if sd.tensors.keys().any(|k| k.starts_with("body.encoder.layers.") || k.starts_with("head.0.")) {
            "an IPT state dict (keys `head.{t}.*`, `body.encoder.layers.*`)"
        } else {
            "no EDT keys"
        };
        return Err(Error::file(
            path,
            format!(
                "the config's arch is `edt`, expected an EDT state dict (keys `head_<task>.*`, `body.layers.*`), found {what}"
            ),
        ));
    }
    let task = config.edt_task().map_err(Error::invalid)?;
    let heads = heads_in(sd.tensors.keys());
    if !heads.contains(&task.head_key()) {
        let found =
            if heads.is_empty() { "no task head".to_string() } else { format!("the head(s) {}", heads.join(", ")) };
        return Err(Error::file(
            path,
            format!(
                "the config's task `{}` (official de_type `{}`) needs the head `{}.*`, but the checkpoint holds {found}",
                config.task,
                task.official_de_type(),
                task.head_key()
            ),
        ));
    }
    let depths = depths_in(sd.tensors.keys());
    if depths != config.depths {
        return Err(Error::file(
            path,
            format!(
                "the config's depths are {:?}, but the checkpoint's body has stages of {depths:?} blocks",
                config.depths
            ),
        ));
    }
    Ok(())
}

/// EDT from one official checkpoint; AdaptIR is present, with its sizes, iff the checkpoint holds its keys. Every
/// missing, unexpected or mis-shaped key is reported in one error naming the file. Returns the model and the
/// adapter sizes found.
pub fn load_edt(
    checkpoint: &Path,
    config: &EdtConfig,
    dtype: DType,
    device: &Device,
) -> Result<(Edt, Option<AdaptIrConfig>)> {
    config.validate().map_err(Error::invalid)?;
    let sd = StateDict::load(checkpoint)?;
    check_edt_state_dict(&sd, config)?;
    let adapter = AdaptIrConfig::from_state_dict(&sd, FIRST_ADAPTER, Layout::Edt);
    if let Some(a) = &adapter {
        a.validate().map_err(|m| Error::file(checkpoint, m))?;
        if a.dim != config.embed_dim {
            return Err(Error::file(
                checkpoint,
                format!("its adapters take {} channels, but the config's embed_dim is {}", a.dim, config.embed_dim),
            ));
        }
    }
    let strict = Strict::new(sd);
    let vb = strict.var_builder(dtype, device);
    let hooks = match adapter {
        Some(a) => adaptir_hooks(&vb, config, a),
        None => Ok(Edt::no_hooks(config)),
    };
    let model = strict.finish_model(hooks.and_then(|h| Edt::new(vb, config, h)), checkpoint)?;
    Ok((model, adapter))
}

/// An EDT backbone checkpoint with an adapter trained on it (`train --config edt.json`): the adapter's recorded
/// EDT config, the checkpoint checked against its sha256, then every tensor read strictly (backbone from the
/// checkpoint, the method's from the adapter file).
pub fn load_edt_with_adapter(backbone: &Path, adapter: &AdapterFile, dtype: DType, device: &Device) -> Result<Edt> {
    let config =
        adapter.meta.backbone_config.edt().cloned().ok_or_else(|| {
            Error::file(&adapter.path, "an adapter for an IPT backbone, where an EDT one was expected")
        })?;
    adapter.check_backbone(backbone, &config.clone().into())?;
    // Full fine-tuning: the adapter file holds every weight of the model itself.
    let (sd, hooks) = if adapter.method()?.trains_backbone() {
        (StateDict { path: adapter.path.clone(), tensors: adapter.tensors.clone() }, Edt::no_hooks(&config))
    } else {
        (StateDict::load(backbone)?, adapter.modules(dtype, device)?.layers)
    };
    check_edt_state_dict(&sd, &config)?;
    let path = sd.path.clone();
    let strict = Strict::new(sd);
    strict.finish_model(Edt::new(strict.var_builder(dtype, device), &config, hooks), &path)
}
