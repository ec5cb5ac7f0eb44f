//! Training data in memory, and batches drawn from it as a pure function of (seed, step).
//!
//! Clean images are loaded once; those larger than `MAX_SIDE` on either side are cut into `CROPS_PER_LARGE`
//! seeded crops of `MAX_SIDE` x `MAX_SIDE` (the training photos are up to 20 MP: whole, 36 of them would take
//! 8 GiB as f32). A sample is a seeded random crop, a random dihedral transform, and the task's degradation
//! synthesised on the fly, as `data::pairs::CleanFolder::sample` does. Real pairs (`--pairs`) are cropped
//! together and transformed alike.
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::RngCore;

use crate::data::crops::{augment_pair, random_crop, random_crop_pair, Dihedral};
use crate::data::pairs::{list_images, Pair, PairedFolder};
use crate::data::seed::{below, rng_for, sample_seed, DataRng};
use crate::data::{load_image, Image, Task};
use crate::error::{Error, Result};

pub const MAX_SIDE: usize = 512;
pub const CROPS_PER_LARGE: usize = 4;

/// The images a run trains on.
pub enum Source {
    /// Clean images; the degraded input is synthesised per sample.
    Clean(Vec<(String, Image)>),
    /// Real (degraded, clean) pairs with the clean one `scale` times larger.
    Pairs(Vec<Pair>, usize),
}

impl Source {
    /// Clean images of `dir` (not recursive), cut as described above; `keep` selects files by stem.
    pub fn clean(dir: &Path, min_side: usize, keep: &dyn Fn(&str) -> bool) -> Result<Self> {
        Self::clean_dirs(&[dir], min_side, keep)
    }

    /// Clean images of several folders (each not recursive), in the order given, each folder's files by name.
    /// A stem names one image across all folders (it seeds the image's crops and names it in held-out lists),
    /// so a stem found in two folders is an error naming both files.
    pub fn clean_dirs(dirs: &[&Path], min_side: usize, keep: &dyn Fn(&str) -> bool) -> Result<Self> {
        let mut files: Vec<(String, std::path::PathBuf)> = vec![];
        let mut seen: std::collections::HashMap<String, std::path::PathBuf> = Default::default();
        for dir in dirs {
            for (stem, path) in list_images(dir)? {
                if let Some(first) = seen.insert(stem.clone(), path.clone()) {
                    return Err(Error::file(
                        &path,
                        format!(
                            "its name `{stem}` is also the name of {}: a training image is named by its file \
                             stem across all --data folders; rename one",
                            first.display()
                        ),
                    ));
                }
                files.push((stem, path));
            }
        }
        let dir = dirs.first().copied().unwrap_or(Path::new("."));
        let mut out = vec![];
        for (stem, path) in files.iter().filter(|(s, _)| keep(s)) {
            let img = load_image(path)?;
            if img.width < min_side || img.height < min_side {
                continue;
            }
            if img.width > MAX_SIDE || img.height > MAX_SIDE {
                let mut rng = rng_for(crate::data::seed::stem_seed(0, stem));
                for k in 0..CROPS_PER_LARGE {
                    out.push((
                        format!("{stem}#{k}"),
                        random_crop(&img, MAX_SIDE.min(img.width).min(img.height), &mut rng)?,
                    ));
                }
            } else {
                out.push((stem.clone(), img));
            }
        }
        if out.is_empty() && dirs.len() > 1 {
            let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            return Err(Error::invalid(format!(
                "no usable training image in {}: expected PNG/JPEG/BMP/TIFF files of at least {min_side}x{min_side} \
                 pixels",
                names.join(", ")
            )));
        }
        if out.is_empty() {
            return Err(Error::file(
                dir,
                format!(
                    "no usable training image: expected PNG/JPEG/BMP/TIFF files of at least {min_side}x{min_side} \
                     pixels{}",
                    if files.is_empty() { " (the folder has no image file)" } else { "" }
                ),
            ));
        }
        Ok(Source::Clean(out))
    }

    /// Real pairs from `dir`: a `clean` (or `HR`) subfolder and one other subfolder with the degraded images.
    pub fn pairs(dir: &Path, scale: usize, min_side: usize) -> Result<Self> {
        Ok(Source::Pairs(pair_list(dir, scale, min_side)?, scale))
    }

    pub fn len(&self) -> usize {
        match self {
            Source::Clean(v) => v.len(),
            Source::Pairs(v, _) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One sample: a `patch` x `patch` input and its target, from image `i`, seeded by `rng`.
    pub fn sample(&self, i: usize, task: &Task, patch: usize, rng: &mut DataRng) -> Result<Pair> {
        match self {
            Source::Clean(v) => {
                let (name, clean) = &v[i];
                let hr = random_crop(clean, patch * task.scale(), rng)?;
                let hr = Dihedral::random(rng).apply(&hr).quantized_u8();
                let input = task.apply(&hr, rng.next_u64())?;
                Ok(Pair { name: name.clone(), input, target: hr })
            }
            Source::Pairs(v, scale) => {
                let p = &v[i];
                let (input, target) = random_crop_pair(&p.input, &p.target, patch, *scale, rng)?;
                let (input, target) = augment_pair(&input, &target, Dihedral::random(rng));
                Ok(Pair { name: p.name.clone(), input, target })
            }
        }
    }

    /// The batch of step `step`: image indices and crops come from a generator seeded by (seed, step) only.
    pub fn batch(&self, task: &Task, batch: usize, patch: usize, seed: u64, step: usize) -> Result<Vec<Pair>> {
        let mut rng = rng_for(sample_seed(seed, step as u64));
        (0..batch)
            .map(|_| {
                let i = below(&mut rng, self.len());
                self.sample(i, task, patch, &mut rng)
            })
            .collect()
    }
}

/// `(degraded, clean)` subfolders of a pairs folder.
pub fn pair_folders(dir: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::file(dir, format!("cannot list pairs folder: {e}")))?;
    let mut subs: Vec<std::path::PathBuf> =
        entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    subs.sort();
    let is_clean = |p: &std::path::PathBuf| {
        p.file_name().map(|n| matches!(n.to_string_lossy().as_ref(), "clean" | "HR" | "gt" | "GT")).unwrap_or(false)
    };
    let clean: Vec<_> = subs.iter().filter(|p| is_clean(p)).cloned().collect();
    let other: Vec<_> = subs.iter().filter(|p| !is_clean(p)).cloned().collect();
    match (clean.as_slice(), other.as_slice()) {
        ([c], [d]) => Ok((d.clone(), c.clone())),
        _ => Err(Error::file(
            dir,
            format!(
                "expected two subfolders, `clean` (or HR/gt) and one with the degraded images; found {:?}",
                subs.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect::<Vec<_>>()
            ),
        )),
    }
}

/// Stack images (all the same size) into an (N, 3, H, W) tensor.
pub fn to_tensor(images: &[&Image], device: &Device) -> Result<Tensor> {
    let (w, h) = (images[0].width, images[0].height);
    let mut data = Vec::with_capacity(images.len() * 3 * w * h);
    for img in images {
        data.extend(img.to_chw());
    }
    Ok(Tensor::from_vec(data, (images.len(), 3, h, w), device)?)
}

/// Inputs and targets of a batch as tensors.
pub fn batch_tensors(pairs: &[Pair], device: &Device) -> Result<(Tensor, Tensor)> {
    let x: Vec<&Image> = pairs.iter().map(|p| &p.input).collect();
    let y: Vec<&Image> = pairs.iter().map(|p| &p.target).collect();
    Ok((to_tensor(&x, device)?, to_tensor(&y, device)?))
}

/// Real pairs from `dir` (see [`pair_folders`]) whose inputs are at least `min_side` on each side.
pub fn pair_list(dir: &Path, scale: usize, min_side: usize) -> Result<Vec<Pair>> {
    let (degraded, clean) = pair_folders(dir)?;
    let folder = PairedFolder::open(&degraded, &clean, scale)?;
    let mut out = vec![];
    for i in 0..folder.len() {
        let p = folder.load(i)?;
        if p.input.width >= min_side && p.input.height >= min_side {
            out.push(p);
        }
    }
    if out.is_empty() {
        return Err(Error::file(dir, format!("no usable pair: inputs of at least {min_side}x{min_side} expected")));
    }
    Ok(out)
}
