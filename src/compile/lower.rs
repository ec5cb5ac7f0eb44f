//! Lowering an (IPT, method, task) model into the IR, in eval mode.
use adaptir_ops::graph::{FftLowering, GraphBuilder, SpectralPrecision};
use candle_core::Result;

use super::builder::Builder;
use super::ir::{Dim, ElemType, Graph, ValueInfo};
use super::whole_image::{self, WholeImage};
use crate::backbone::Ipt;
use crate::restore::Tiling;

/// The input of a whole-image graph.
pub const WHOLE_IMAGE_INPUT: &str = "image";

/// Options of the lowering.
#[derive(Clone, Copy, Debug, Default)]
pub struct LowerOptions {
    pub fft: FftLowering,
    /// Flatten the model-local functions into the graph.
    pub inline_functions: bool,
    /// The precision of the spectral products (f64 by default; f32 for the portable target).
    pub spectral: SpectralPrecision,
    /// Take one image of any size and tile it inside the graph (`whole_image.rs`) instead of a patch batch.
    pub whole_image: Option<Tiling>,
}

/// The graph of `model.forward(input, task, train = false)`: input `input` (N, 3, P, P), output `output`; or,
/// with `opts.whole_image`, the graph of `restore` on one image: input `image` (1, 3, H, W), output `output`
/// (1, 3, s H, s W).
pub fn lower(model: &Ipt, task: usize, opts: LowerOptions) -> Result<Graph> {
    let cfg = &model.config;
    let (p, scale) = (cfg.patch_size, cfg.scales.get(task).copied().unwrap_or(1));
    let mut b = Builder::with_spectral("adaptir", opts.fft, opts.inline_functions, opts.spectral);
    let out = match opts.whole_image {
        None => model.lower(&mut b, "input", task)?,
        Some(tiling) => {
            let wi = WholeImage { p, scale, tiling };
            whole_image::lower(&mut b, WHOLE_IMAGE_INPUT, &wi, &mut |b, tiles| model.lower(b, tiles, task))?
        }
    };
    let out = b.op("Identity", &[&out], vec![])?;
    let mut g = b.finish();
    for n in g.nodes.iter_mut() {
        for o in n.outputs.iter_mut() {
            if *o == out {
                *o = "output".into();
            }
        }
    }
    if opts.whole_image.is_some() {
        let sym = |s: &str| Dim::Sym(s.into());
        g.inputs = vec![ValueInfo {
            name: WHOLE_IMAGE_INPUT.into(),
            elem: ElemType::F32,
            shape: vec![Dim::Fixed(1), Dim::Fixed(3), sym("H"), sym("W")],
        }];
        g.outputs = vec![ValueInfo {
            name: "output".into(),
            elem: ElemType::F32,
            shape: vec![Dim::Fixed(1), Dim::Fixed(3), sym("H_out"), sym("W_out")],
        }];
        g.check().map_err(candle_core::Error::Msg)?;
        return Ok(g);
    }
    let batch = || Dim::Sym("N".into());
    g.inputs = vec![ValueInfo {
        name: "input".into(),
        elem: ElemType::F32,
        shape: vec![batch(), Dim::Fixed(3), Dim::Fixed(p), Dim::Fixed(p)],
    }];
    g.outputs = vec![ValueInfo {
        name: "output".into(),
        elem: ElemType::F32,
        shape: vec![batch(), Dim::Fixed(3), Dim::Fixed(p * scale), Dim::Fixed(p * scale)],
    }];
    g.check().map_err(candle_core::Error::Msg)?;
    Ok(g)
}
