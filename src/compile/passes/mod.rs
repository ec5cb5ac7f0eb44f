//! Graph passes, one file each, run to a fixpoint by [`optimize`] with the graph checked after every
//! application. Each is tested for equivalence by running the graph before and after it in ONNX Runtime
//! (`tests/passes.rs`). Adding a pass: one file here and one line in [`PASSES`] (or in [`OPT_IN_PASSES`], for one
//! that pays off only in some runtimes).
mod batchnorm;
mod constant_folding;
mod dead_nodes;
mod dedup_constants;
mod lim_kernel;
mod mean_shift;
mod merge_linear;
mod pointwise_transpose;
mod softmax_floor;
mod subpixel_conv;
pub mod util;

use super::ir::Graph;
use candle_core::Result;

/// A rewrite of the graph that keeps what it computes.
pub trait Pass: Sync {
    fn name(&self) -> &'static str;
    /// Apply once where it matches; `true` if the graph changed.
    fn run(&self, g: &mut Graph) -> Result<bool>;
}

/// Every pass, in the order one round applies them.
pub const PASSES: &[&dyn Pass] = &[
    &lim_kernel::LimKernel,
    &batchnorm::FoldBatchNorm,
    &mean_shift::FoldMeanShift,
    &merge_linear::MergeLinear,
    &pointwise_transpose::PointwiseThroughTranspose,
    &softmax_floor::SoftmaxFloor,
    &constant_folding::ConstantFolding,
    &dedup_constants::DedupConstants,
    &dead_nodes::DeadNodes,
];

/// Passes that keep what the graph computes but pay off in some runtimes and cost in others, so that a default
/// (portable) file does not run them: `export --pass NAME` adds them to [`PASSES`]. Each says where it pays.
pub const OPT_IN_PASSES: &[&dyn Pass] = &[&subpixel_conv::SubpixelConv];

/// A pass of [`PASSES`] or [`OPT_IN_PASSES`] by name.
pub fn by_name(name: &str) -> Option<&'static dyn Pass> {
    PASSES.iter().chain(OPT_IN_PASSES).copied().find(|p| p.name() == name)
}

/// An opt-in pass by name, or an error that lists them.
pub fn opt_in(name: &str) -> std::result::Result<&'static dyn Pass, String> {
    OPT_IN_PASSES.iter().copied().find(|p| p.name() == name).ok_or_else(|| {
        let names: Vec<&str> = OPT_IN_PASSES.iter().map(|p| p.name()).collect();
        format!("--pass: expected one of {}, found `{name}`", names.join(", "))
    })
}

/// Run every pass until none changes the graph; returns how often each applied.
pub fn optimize(g: &mut Graph) -> Result<Vec<(&'static str, usize)>> {
    optimize_with(g, &[])
}

/// [`optimize`] with `extra` passes (of [`OPT_IN_PASSES`]) in each round after the default ones.
pub fn optimize_with(g: &mut Graph, extra: &[&'static dyn Pass]) -> Result<Vec<(&'static str, usize)>> {
    let all: Vec<&'static dyn Pass> = PASSES.iter().copied().chain(extra.iter().copied()).collect();
    let mut counts: Vec<(&'static str, usize)> = all.iter().map(|p| (p.name(), 0)).collect();
    for _round in 0..1000 {
        let mut changed = false;
        for (i, pass) in all.iter().enumerate() {
            while pass.run(g)? {
                g.check().map_err(|e| candle_core::Error::Msg(format!("after pass {}: {e}", pass.name())))?;
                counts[i].1 += 1;
                changed = true;
            }
        }
        if !changed {
            return Ok(counts);
        }
    }
    candle_core::bail!("passes did not reach a fixpoint in 1000 rounds")
}
