//! Calibration for `export --int8` (`compile::quantize`): patches of real images, and the range each tensor of the
//! quantization plan takes when the f32 graph runs on them in ONNX Runtime (min / max over all patches). The
//! images are taken as the model's inputs, as `restore` takes them: degraded photos of the task (rainy, noisy,
//! low-resolution), not clean ones.
use std::path::Path;

use candle_core::{Device, Tensor};

use super::session::{RunOptions, Session};
use crate::compile::ir::{Attr, Dim, ElemType, Graph, Node, ValueInfo};
use crate::compile::quantize::{Plan, Ranges};
use crate::error::{Error, Result};

/// Up to `count` patches of `patch` x `patch` pixels from the images of `dir` (RGB in [0, 1], grey replicated):
/// the same number from each image, on an evenly spaced grid; (n, 3, patch, patch). Images smaller than a patch
/// are skipped; none large enough is an error.
pub fn calibration_patches(dir: &Path, patch: usize, count: usize) -> Result<Tensor> {
    if count == 0 {
        return Err(Error::invalid("--calibrate-patches: expected at least 1, found 0"));
    }
    let files = crate::data::pairs::list_images(dir).map_err(|e| Error::file(dir, format!("--calibrate: {e}")))?;
    let mut images = vec![];
    for path in files.values() {
        let img = crate::data::io::load_image(path).map_err(|e| Error::file(path, e.to_string()))?;
        if img.width >= patch && img.height >= patch {
            images.push(img);
        }
    }
    if images.is_empty() {
        return Err(Error::file(
            dir,
            format!("--calibrate: expected images of at least {patch} x {patch} pixels, found only smaller ones"),
        ));
    }
    let per_image = count.div_ceil(images.len());
    let mut data: Vec<f32> = vec![];
    let mut n = 0;
    'images: for img in &images {
        // A k x k grid of patch corners with k^2 >= per_image, spread over the whole image.
        let k = (per_image as f64).sqrt().ceil() as usize;
        let at = |extent: usize, i: usize| if k > 1 { i * (extent - patch) / (k - 1) } else { (extent - patch) / 2 };
        for (taken, (gy, gx)) in (0..k).flat_map(|y| (0..k).map(move |x| (y, x))).enumerate() {
            if taken == per_image || n == count {
                continue 'images;
            }
            let crop = img.crop(at(img.width, gx), at(img.height, gy), patch, patch)?;
            let chw = crop.to_chw();
            let plane = patch * patch;
            match crop.channels {
                // Grey (with or without alpha): the grey plane three times.
                1 | 2 => (0..3).for_each(|_| data.extend_from_slice(&chw[..plane])),
                // RGB, or RGBA without its alpha.
                _ => data.extend_from_slice(&chw[..3 * plane]),
            }
            n += 1;
        }
    }
    Ok(Tensor::from_vec(data, (n, 3, patch, patch), &Device::Cpu)?)
}

/// The (min, max) of each tensor of `names` when `g` runs on `patches` (in batches of `batch`): `g` with a
/// ReduceMin and a ReduceMax per tensor as extra scalar outputs, in ONNX Runtime.
pub fn ranges(g: &Graph, names: &[String], patches: &Tensor, batch: usize, opts: &RunOptions) -> Result<Ranges> {
    let mut probe = g.clone();
    probe.name = format!("{}-calibration", g.name);
    for (i, name) in names.iter().enumerate() {
        for op in ["ReduceMin", "ReduceMax"] {
            let out = format!("calibration.{i}.{op}");
            probe.nodes.push(Node {
                name: format!("calibration/{i}/{op}"),
                op: op.into(),
                domain: String::new(),
                inputs: vec![name.clone()],
                outputs: vec![out.clone()],
                attrs: [("keepdims".to_string(), Attr::Int(0))].into_iter().collect(),
            });
            probe.outputs.push(ValueInfo { name: out, elem: ElemType::F32, shape: Vec::<Dim>::new() });
        }
    }
    let mut out: Ranges = names.iter().map(|n| (n.clone(), (f32::INFINITY, f32::NEG_INFINITY))).collect();
    run_in_batches(&probe, patches, batch, opts, |results| {
        for (i, name) in names.iter().enumerate() {
            let get = |op: &str| -> Result<f32> {
                let key = format!("calibration.{i}.{op}");
                let t = results
                    .iter()
                    .find(|(n, _)| *n == key)
                    .map(|(_, t)| t)
                    .ok_or_else(|| Error::invalid(format!("calibration: no output {key}")))?;
                Ok(t.flatten_all()?.to_vec1::<f32>()?[0])
            };
            let (lo, hi) = (get("ReduceMin")?, get("ReduceMax")?);
            if let Some(r) = out.get_mut(name) {
                *r = (r.0.min(lo), r.1.max(hi));
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// Run `g` in ONNX Runtime on `patches` (its first input), `batch` at a time, handing each run's outputs to `each`.
fn run_in_batches(
    g: &Graph,
    patches: &Tensor,
    batch: usize,
    opts: &RunOptions,
    mut each: impl FnMut(Vec<(String, Tensor)>) -> Result<()>,
) -> Result<()> {
    let input = g.inputs.first().map(|v| v.name.clone()).ok_or_else(|| Error::invalid("the graph has no input"))?;
    let mut session = Session::from_graph(g, opts)?;
    let total = patches.dim(0)?;
    let mut start = 0;
    while start < total {
        let len = batch.min(total - start);
        let x = patches.narrow(0, start, len)?.contiguous()?;
        each(session.run(&[(input.as_str(), x)])?)?;
        start += len;
    }
    Ok(())
}

/// The first output of `g` on `patches` (in batches of `batch`), in ONNX Runtime, batches concatenated.
pub fn outputs(g: &Graph, patches: &Tensor, batch: usize, opts: &RunOptions) -> Result<Tensor> {
    let output = g.outputs.first().map(|v| v.name.clone()).ok_or_else(|| Error::invalid("the graph has no output"))?;
    let mut parts = vec![];
    run_in_batches(g, patches, batch, opts, |results| {
        let (_, t) = results
            .into_iter()
            .find(|(n, _)| *n == output)
            .ok_or_else(|| Error::invalid(format!("calibration: no output {output}")))?;
        parts.push(t);
        Ok(())
    })?;
    Ok(Tensor::cat(&parts, 0)?)
}

/// What [`choose_sites`] decided.
#[derive(Clone, Debug)]
pub struct SiteChoice {
    /// The sites to quantize.
    pub plan: Plan,
    /// The sites left f32 to meet the bound, most harmful first.
    pub kept_f32: Vec<String>,
    /// PSNR of the int8 graph's output from the f32 graph's on the calibration patches (the measure of `validate
    /// --images`): with every site of the plan quantized, and with the chosen ones.
    pub psnr_all_db: f64,
    pub psnr_db: f64,
}

/// Accuracy-driven mixed precision. Quantize every site of `plan`; if the result's output on `patches` is less than
/// `min_psnr_db` plus `INT8_SELECTION_MARGIN_DB` (no margin when `min_psnr_db` is 0 or less) from the f32 graph's,
/// rank the sites by the harm each does alone (the PSNR with only that site quantized, lowest first) and leave them
/// in f32 one at a time, most harmful first, until that is met. The effects of sites do not add up (they can
/// cancel), so the whole graph is measured again after each step rather than predicted from the ranking. One ONNX
/// Runtime session per measurement: nothing beyond the first two when the full plan meets the bound; at most twice
/// the site count otherwise. `progress` hears each step.
#[allow(clippy::too_many_arguments)]
pub fn choose_sites(
    g: &Graph,
    plan: Plan,
    ranges: &Ranges,
    patches: &Tensor,
    batch: usize,
    opts: &RunOptions,
    min_psnr_db: f64,
    progress: &mut dyn FnMut(&str),
) -> Result<SiteChoice> {
    use crate::compile::quantize::apply;
    use crate::runtime::compare::{compare, Tolerance};
    let reference = outputs(g, patches, batch, opts)?;
    let measure = |p: &Plan| -> Result<f64> {
        let mut q = g.clone();
        apply(&mut q, p, ranges)?;
        Ok(compare("int8 output", &outputs(&q, patches, batch, opts)?, &reference, Tolerance::INT8)?.psnr_db)
    };
    let margin = if min_psnr_db > 0.0 { crate::tolerance::INT8_SELECTION_MARGIN_DB } else { 0.0 };
    let target_db = min_psnr_db + margin;
    let psnr_all_db = measure(&plan)?;
    if psnr_all_db >= target_db || plan.sites.is_empty() {
        return Ok(SiteChoice { plan, kept_f32: vec![], psnr_all_db, psnr_db: psnr_all_db });
    }
    progress(&format!(
        "int8: {psnr_all_db:.2} dB from the f32 model on the calibration patches, below {target_db} dB (the bound \
         {min_psnr_db} dB + a margin of {margin} dB for other patches): ranking the {} sites by the harm each does \
         alone",
        plan.sites.len()
    ));
    let mut harm = Vec::with_capacity(plan.sites.len());
    for site in &plan.sites {
        harm.push((measure(&Plan { sites: vec![site.clone()] })?, site.node.clone(), site.weight.clone()));
    }
    harm.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut kept_f32 = vec![];
    let mut psnr_db = psnr_all_db;
    let mut chosen = plan;
    for (alone_db, node, weight) in harm {
        chosen.sites.retain(|s| s.node != node);
        psnr_db = if chosen.sites.is_empty() { f64::INFINITY } else { measure(&chosen)? };
        progress(&format!(
            "int8: `{node}` ({weight}) left f32 ({alone_db:.2} dB when quantized alone): {psnr_db:.2} dB"
        ));
        kept_f32.push(node);
        if psnr_db >= target_db {
            break;
        }
    }
    Ok(SiteChoice { plan: chosen, kept_f32, psnr_all_db, psnr_db })
}
