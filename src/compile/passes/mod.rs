//! Graph passes, one file each, run to a fixpoint by [`optimize`] with the graph checked after every
//! application. Each is tested for equivalence by running the graph before and after it in ONNX Runtime
//! (`tests/passes.rs`). Adding a pass: one file here and one line in [`PASSES`].
mod batchnorm;
mod constant_folding;
mod dead_nodes;
mod dedup_constants;
mod lim_kernel;
mod mean_shift;
mod merge_linear;
mod pointwise_transpose;
mod softmax_floor;
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

pub fn by_name(name: &str) -> Option<&'static dyn Pass> {
    PASSES.iter().copied().find(|p| p.name() == name)
}

/// Run every pass until none changes the graph; returns how often each applied.
pub fn optimize(g: &mut Graph) -> Result<Vec<(&'static str, usize)>> {
    let mut counts: Vec<(&'static str, usize)> = PASSES.iter().map(|p| (p.name(), 0)).collect();
    for _round in 0..1000 {
        let mut changed = false;
        for (i, pass) in PASSES.iter().enumerate() {
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
