//! Datasets: a folder of clean images (degradation synthesised on the fly) and paired folders
//! (`noisy/` + `clean/`, `rainy/` + `clean/`, ...) matched by file stem.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::crops::{augment_pair, random_crop_pair, Dihedral};
use super::degrade::Task;
use super::error::{DataError, Result};
use super::image::Image;
use super::io::{has_image_extension, load_image};
use super::seed::{rng_for, sample_seed};

/// Image files of a folder (by extension, not recursive), keyed by stem, sorted.
/// Two files with the same stem (`a.png`, `a.jpg`) are an error.
pub fn list_images(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| DataError::Read { path: dir.to_path_buf(), source })?;
    let mut out = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|source| DataError::Read { path: dir.to_path_buf(), source })?;
        let path = entry.path();
        if !path.is_file() || !has_image_extension(&path) {
            continue;
        }
        let stem = stem_of(&path)?;
        if let Some(prev) = out.insert(stem.clone(), path.clone()) {
            return Err(DataError::invalid(
                format!("{}", dir.display()),
                format!("one image per file stem, found `{stem}` twice"),
                format!("{} and {}", prev.display(), path.display()),
            ));
        }
    }
    if out.is_empty() {
        return Err(DataError::invalid(
            format!("{}", dir.display()),
            "a folder with at least one PNG/JPEG/BMP/TIFF image",
            "none",
        ));
    }
    Ok(out)
}

/// The file stem as UTF-8.
pub fn stem_of(path: &Path) -> Result<String> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .map(str::to_owned)
        .ok_or_else(|| DataError::invalid(format!("{}", path.display()), "a file name with a UTF-8 stem", "none"))
}

/// Pairs two folders by stem: `(stem, a_path, b_path)`. Any file without a partner is an error
/// that names it.
pub fn match_folders(a: &Path, b: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>> {
    let la = list_images(a)?;
    let lb = list_images(b)?;
    let missing_b: Vec<_> = la.keys().filter(|k| !lb.contains_key(*k)).collect();
    let missing_a: Vec<_> = lb.keys().filter(|k| !la.contains_key(*k)).collect();
    if let Some(stem) = missing_b.first() {
        return Err(DataError::invalid(
            format!("{}", la[*stem].display()),
            format!("a partner with stem `{stem}` in {}", b.display()),
            format!("none ({} unpaired file(s) in {})", missing_b.len(), a.display()),
        ));
    }
    if let Some(stem) = missing_a.first() {
        return Err(DataError::invalid(
            format!("{}", lb[*stem].display()),
            format!("a partner with stem `{stem}` in {}", a.display()),
            format!("none ({} unpaired file(s) in {})", missing_a.len(), b.display()),
        ));
    }
    Ok(la
        .into_iter()
        .map(|(stem, pa)| {
            let pb = lb[&stem].clone();
            (stem, pa, pb)
        })
        .collect())
}

/// Two files (one pair named after the first stem) or two folders (matched by stem).
pub fn match_inputs(a: &Path, b: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>> {
    match (a.is_dir(), b.is_dir()) {
        (true, true) => match_folders(a, b),
        (false, false) => Ok(vec![(stem_of(a)?, a.to_path_buf(), b.to_path_buf())]),
        (a_dir, _) => Err(DataError::invalid(
            format!("{} and {}", a.display(), b.display()),
            "two image files or two folders",
            if a_dir { "a folder and a file" } else { "a file and a folder" },
        )),
    }
}

/// A training pair: degraded input and clean target (`target` is `scale` times larger).
#[derive(Debug, Clone)]
pub struct Pair {
    pub name: String,
    pub input: Image,
    pub target: Image,
}

/// Real pairs from two folders matched by stem, e.g. `rainy/` + `clean/`.
#[derive(Debug, Clone)]
pub struct PairedFolder {
    pub pairs: Vec<(String, PathBuf, PathBuf)>,
    /// Target size / input size (1 for denoising, deraining).
    pub scale: usize,
}

impl PairedFolder {
    /// Matches `degraded_dir` and `clean_dir` by stem; fails naming any file without a partner.
    pub fn open(degraded_dir: &Path, clean_dir: &Path, scale: usize) -> Result<Self> {
        Ok(PairedFolder { pairs: match_folders(degraded_dir, clean_dir)?, scale: scale.max(1) })
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Loads pair `i` whole, checking that the sizes agree with the scale.
    pub fn load(&self, i: usize) -> Result<Pair> {
        let (name, pa, pb) = self
            .pairs
            .get(i)
            .ok_or_else(|| DataError::invalid("pair index", format!("< {}", self.pairs.len()), i.to_string()))?;
        let input = load_image(pa)?;
        let target = load_image(pb)?;
        let s = self.scale;
        if target.width != input.width * s || target.height != input.height * s {
            return Err(DataError::invalid(
                format!("{} vs {}", pa.display(), pb.display()),
                format!(
                    "a clean image {s} times the size of the degraded one ({}x{})",
                    input.width * s,
                    input.height * s
                ),
                format!("{}x{}", target.width, target.height),
            ));
        }
        Ok(Pair { name: name.clone(), input, target })
    }

    /// Pair `i`, cropped to an input patch of `patch` pixels at a seeded random position and
    /// transformed by a seeded random one of the 8 dihedral transforms.
    pub fn sample(&self, i: usize, patch: usize, seed: u64) -> Result<Pair> {
        let pair = self.load(i)?;
        let mut rng = rng_for(sample_seed(seed, i as u64));
        let (input, target) = random_crop_pair(&pair.input, &pair.target, patch, self.scale, &mut rng)
            .map_err(|e| name_error(e, &self.pairs[i].1))?;
        let t = Dihedral::random(&mut rng);
        let (input, target) = augment_pair(&input, &target, t);
        Ok(Pair { name: pair.name, input, target })
    }
}

/// Clean images from which the degraded input is synthesised on the fly.
#[derive(Debug, Clone)]
pub struct CleanFolder {
    pub images: Vec<(String, PathBuf)>,
    pub task: Task,
}

impl CleanFolder {
    pub fn open(dir: &Path, task: Task) -> Result<Self> {
        Ok(CleanFolder { images: list_images(dir)?.into_iter().collect(), task })
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Image `i`: a seeded random clean crop of `patch * scale` pixels, one of the 8 dihedral
    /// transforms, then the task's degradation (seeded too). The same `(seed, i)` always gives
    /// the same pair.
    pub fn sample(&self, i: usize, patch: usize, seed: u64) -> Result<Pair> {
        let (name, path) = self
            .images
            .get(i)
            .ok_or_else(|| DataError::invalid("image index", format!("< {}", self.images.len()), i.to_string()))?;
        let clean = load_image(path)?;
        let s = self.task.scale();
        let mut rng = rng_for(sample_seed(seed, i as u64));
        let hr = super::crops::random_crop(&clean, patch * s, &mut rng).map_err(|e| name_error(e, path))?;
        let hr = Dihedral::random(&mut rng).apply(&hr).quantized_u8();
        let degrade_seed = rand::RngCore::next_u64(&mut rng);
        let input = self.task.apply(&hr, degrade_seed)?;
        Ok(Pair { name: name.clone(), input, target: hr })
    }
}

fn name_error(e: DataError, path: &Path) -> DataError {
    match e {
        DataError::Invalid { what, expected, found } => {
            DataError::Invalid { what: format!("{}: {what}", path.display()), expected, found }
        }
        other => other,
    }
}
