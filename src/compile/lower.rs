//! Lowering an (IPT, method, task) model into the IR, in eval mode.
use adaptir_ops::graph::{FftLowering, GraphBuilder};
use candle_core::Result;

use super::builder::Builder;
use super::ir::{Dim, ElemType, Graph, ValueInfo};
use crate::backbone::Ipt;

/// Options of the lowering.
#[derive(Clone, Copy, Debug, Default)]
pub struct LowerOptions {
    pub fft: FftLowering,
    /// Flatten the model-local functions into the graph.
    pub inline_functions: bool,
}

/// The graph of `model.forward(input, task, train = false)`: input `input` (N, 3, P, P), output `output`.
pub fn lower(model: &Ipt, task: usize, opts: LowerOptions) -> Result<Graph> {
    let cfg = &model.config;
    let (p, scale) = (cfg.patch_size, cfg.scales.get(task).copied().unwrap_or(1));
    let mut b = Builder::new("adaptir", opts.fft, opts.inline_functions);
    let out = model.lower(&mut b, "input", task)?;
    let out = b.op("Identity", &[&out], vec![])?;
    let mut g = b.finish();
    for n in g.nodes.iter_mut() {
        for o in n.outputs.iter_mut() {
            if *o == out {
                *o = "output".into();
            }
        }
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
