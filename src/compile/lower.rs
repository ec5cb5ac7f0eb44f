//! Lowering an (IPT, method, task) model into the IR, in eval mode.
use adaptir_ops::graph::{FftLowering, GraphBuilder, SpectralPrecision};
use candle_core::Result;

use super::builder::Builder;
use super::ir::{Dim, ElemType, Graph, ValueInfo};
use super::whole_image::{self, WholeImage};
use crate::backbone::{Edt, Ipt};
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
    let mut g = finish_with_output(b, &out)?;
    match opts.whole_image {
        Some(_) => set_whole_image_io(&mut g)?,
        None => set_patch_io(&mut g, p, p * scale)?,
    }
    Ok(g)
}

/// A whole-image graph's interface: `image` (1, 3, H, W) -> `output` (1, 3, H_out, W_out), then checked.
fn set_whole_image_io(g: &mut Graph) -> Result<()> {
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
    g.check().map_err(candle_core::Error::Msg)
}

/// The builder's graph with `out` renamed `output` (through an Identity, so that it is never an input's name).
fn finish_with_output(mut b: Builder, out: &str) -> Result<Graph> {
    let out = b.op("Identity", &[out], vec![])?;
    let mut g = b.finish();
    for n in g.nodes.iter_mut() {
        for o in n.outputs.iter_mut() {
            if *o == out {
                *o = "output".into();
            }
        }
    }
    Ok(g)
}

/// A patch graph's interface: `input` (N, 3, side, side) -> `output` (N, 3, out_side, out_side), then checked.
fn set_patch_io(g: &mut Graph, side: usize, out_side: usize) -> Result<()> {
    let io = |name: &str, s: usize| ValueInfo {
        name: name.into(),
        elem: ElemType::F32,
        shape: vec![Dim::Sym("N".into()), Dim::Fixed(3), Dim::Fixed(s), Dim::Fixed(s)],
    };
    g.inputs = vec![io("input", side)];
    g.outputs = vec![io("output", out_side)];
    g.check().map_err(candle_core::Error::Msg)
}

/// The graph of an EDT model's `forward(input, train = false)`: input `input` (N, 3, S, S) at the task's training
/// size, output `output` (N, 3, S s, S s); or, with `opts.whole_image`, `restore` on one image with tiles of S.
pub fn lower_edt(model: &Edt, opts: LowerOptions) -> Result<Graph> {
    let (side, scale) = (model.task.input_size(), model.task.scale());
    let mut b = Builder::with_spectral("adaptir", opts.fft, opts.inline_functions, opts.spectral);
    let out = match opts.whole_image {
        None => model.lower(&mut b, "input")?,
        Some(tiling) => {
            let wi = WholeImage { p: side, scale, tiling };
            whole_image::lower(&mut b, WHOLE_IMAGE_INPUT, &wi, &mut |b, tiles| model.lower(b, tiles))?
        }
    };
    let mut g = finish_with_output(b, &out)?;
    match opts.whole_image {
        Some(_) => set_whole_image_io(&mut g)?,
        None => set_patch_io(&mut g, side, side * scale)?,
    }
    Ok(g)
}
