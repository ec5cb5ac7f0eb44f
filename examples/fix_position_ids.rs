//! One-off maintenance (issue 17's finding): backbones written by `pretrain` before this fix stored the official
//! buffer `body.position_encoding.position_ids` as all zeros. Ours ignored the buffer then and used 0..L-1, but
//! the official PyTorch model loads it like a weight and looks its position embeddings up by it: in PyTorch such
//! a file was another model (every token took the first embedding). Now both read the buffer, so the files must
//! hold what they were trained with, 0..L-1.
//!
//! For each backbone given: position_ids all zero -> 0..L-1 (through `train::save_backbone`; every other tensor
//! byte and the metadata unchanged), then the new sha256 is re-recorded in every adapter beside it that named the
//! old one (`AdapterFile::save`: tensors and every other field unchanged). For each `--checkpoint`: the same
//! buffer in the checkpoint's variables, and its fingerprint's `init_sha256` moved from the old backbone sha256
//! to the new one, so that a run started with `--init` on a fixed backbone still resumes. Idempotent.
//!
//!     cargo run --release --example fix_position_ids -- models/ipt-tiny/backbone.safetensors \
//!         fixtures/golden/micro/backbone.safetensors --checkpoint runs/pretrain-ipt-tiny-2/backbone.ckpt.safetensors
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adaptir::backbone::ipt::POSITION_IDS;
use adaptir::params::StateDict;
use adaptir::peft::file::{sha256_file, AdapterFile};
use adaptir::train::checkpoint::Checkpoint;
use candle_core::{Device, Tensor};

fn arange_if_zero(t: &Tensor) -> adaptir::Result<Option<Tensor>> {
    let v: Vec<i64> = t.flatten_all()?.to_vec1()?;
    if v.iter().any(|&i| i != 0) {
        return Ok(None);
    }
    Ok(Some(Tensor::arange(0i64, v.len() as i64, &Device::Cpu)?.reshape(t.shape())?))
}

/// Fix one backbone; returns (old sha256, new sha256) when it changed.
fn fix_backbone(path: &Path) -> adaptir::Result<Option<(String, String)>> {
    let old_sha = sha256_file(path)?;
    let mut tensors = StateDict::load(path)?.tensors;
    let Some(ids) = tensors.get(POSITION_IDS) else { return Ok(None) };
    let Some(fixed) = arange_if_zero(ids)? else { return Ok(None) };
    tensors.insert(POSITION_IDS.to_string(), fixed);
    let bytes = std::fs::read(path).map_err(|e| adaptir::Error::file(path, e.to_string()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| adaptir::Error::file(path, format!("not a safetensors file: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let summary: serde_json::Value =
        serde_json::from_str(meta.get("training").map(String::as_str).unwrap_or("null"))
            .map_err(|e| adaptir::Error::file(path, format!("metadata `training` is not JSON: {e}")))?;
    let config = adaptir::model::backbone_config(path)?;
    adaptir::train::save_backbone(path, &tensors, &config, &summary)?;
    Ok(Some((old_sha, sha256_file(path)?)))
}

fn main() -> adaptir::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut backbones: Vec<PathBuf> = vec![];
    let mut checkpoints: Vec<PathBuf> = vec![];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--checkpoint" => checkpoints.extend(it.next().map(PathBuf::from)),
            _ => backbones.push(PathBuf::from(a)),
        }
    }
    let mut moved: BTreeMap<String, String> = BTreeMap::new();
    for b in &backbones {
        let Some((old, new)) = fix_backbone(b)? else {
            println!("{}: position_ids already set, unchanged", b.display());
            continue;
        };
        println!("{}: position_ids 0..L-1, sha256 {old} -> {new}", b.display());
        let dir = b.parent().unwrap_or(Path::new("."));
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| adaptir::Error::file(dir, e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p != b && p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        entries.sort();
        for path in entries {
            // Golden outputs and other files beside the backbone are not adapters: left alone.
            let Ok(mut a) = AdapterFile::load(&path) else { continue };
            if a.meta.backbone_sha256 != old {
                continue;
            }
            a.meta.backbone_sha256 = new.clone();
            AdapterFile::save(&path, &a.meta, &a.tensors)?;
            println!("  {}: backbone_sha256 re-recorded", path.display());
        }
        moved.insert(old, new);
    }
    for c in &checkpoints {
        let bytes = std::fs::read(c).map_err(|e| adaptir::Error::file(c, e.to_string()))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| adaptir::Error::file(c, format!("not a checkpoint: {e}")))?;
        let stored: serde_json::Value = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("fingerprint"))
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| adaptir::Error::file(c, "checkpoint has no fingerprint"))?;
        let mut ck = Checkpoint::load(c, &stored)?;
        let mut changed = false;
        if let Some(fixed) = ck.vars.get(POSITION_IDS).map(arange_if_zero).transpose()?.flatten() {
            ck.vars.insert(POSITION_IDS.to_string(), fixed);
            changed = true;
        }
        let init = ck.fingerprint.get("init_sha256").and_then(|v| v.as_str()).map(str::to_string);
        if let Some(new) = init.and_then(|old| moved.get(&old)) {
            ck.fingerprint["init_sha256"] = new.clone().into();
            changed = true;
        }
        if changed {
            ck.save(c)?;
        }
        println!("{}: {}", c.display(), if changed { "position_ids / init_sha256 fixed" } else { "unchanged" });
    }
    Ok(())
}
