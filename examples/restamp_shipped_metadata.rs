//! One-off maintenance of the shipped models (issue 15): the shipped backbone's metadata recorded the absolute path
//! of the folder it was trained on (`/work/shared/data/train/photos_hr`: the command was run with an absolute
//! `--data`). This rewrites that one field to the path relative to the repository, `../shared/data/train/photos_hr`
//! (the same folder), through the project's own writer (`train::save_backbone`: every tensor byte unchanged), and
//! then re-records the new backbone sha256 in each shipped adapter (`AdapterFile::save`: tensors and every other
//! field unchanged), since adapters refuse a backbone of another sha256. Idempotent: a second run changes nothing.
//!
//!     cargo run --release --example restamp_shipped_metadata
use std::path::Path;

use adaptir::params::StateDict;
use adaptir::peft::file::{sha256_file, AdapterFile};

const DIR: &str = "models/ipt-tiny";
const ADAPTERS: &[&str] = &["derain", "lowlight", "lr4-jpeg30", "lr4-noise30", "realnoise"];
const ABSOLUTE: &str = "/work/shared/data/train/photos_hr";
const RELATIVE: &str = "../shared/data/train/photos_hr";

fn main() -> adaptir::Result<()> {
    let backbone = Path::new(DIR).join("backbone.safetensors");
    let old_sha = sha256_file(&backbone)?;
    let bytes = std::fs::read(&backbone).map_err(|e| adaptir::Error::file(&backbone, e.to_string()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| adaptir::Error::file(&backbone, format!("not a safetensors file: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let training = meta.get("training").cloned().unwrap_or_default();
    let mut summary: serde_json::Value = serde_json::from_str(&training)
        .map_err(|e| adaptir::Error::file(&backbone, format!("metadata `training` is not JSON: {e}")))?;
    if summary["data"] == ABSOLUTE {
        summary["data"] = RELATIVE.into();
    }
    let config = adaptir::model::backbone_config(&backbone)?;
    let tensors = StateDict::load(&backbone)?.tensors;
    adaptir::train::save_backbone(&backbone, &tensors, &config, &summary)?;
    let new_sha = sha256_file(&backbone)?;
    println!("backbone: training.data = {}, sha256 {old_sha} -> {new_sha}", summary["data"]);
    for name in ADAPTERS {
        let path = Path::new(DIR).join(format!("{name}.safetensors"));
        let mut a = AdapterFile::load(&path)?;
        if a.meta.backbone_sha256 == old_sha {
            a.meta.backbone_sha256 = new_sha.clone();
        }
        AdapterFile::save(&path, &a.meta, &a.tensors)?;
        println!("{name}: backbone_sha256 {}, adapter sha256 {}", a.meta.backbone_sha256, sha256_file(&path)?);
    }
    Ok(())
}
