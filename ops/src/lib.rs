//! `adaptir-ops`: the numerical ops that candle lacks and AdaptIR's frequency branch needs, with torch's
//! semantics, differentiable, and free of device-specific code paths except for the element-wise forward kernels.
//!
//! | op | file | implementation | backward |
//! |---|---|---|---|
//! | `rfft2`, `irfft2` (norm "ortho") | `dft.rs` | products with constant real DFT bases | candle autograd (transposed products) |
//! | `atan2` | `atan2.rs` | custom op calling IEEE `atan2` | closed form in candle ops, 0 at the origin |
//! | `amplitude` | `amplitude.rs` | custom op calling `hypot` | closed form in candle ops, 0 at the origin |
//! | `polar` | `polar.rs` | candle `cos` / `sin` / `mul` | candle autograd |
//! | `linear_t` (frozen weight) | `frozen.rs`, `products.rs` | f32 CPU: `gemm` into an unzeroed buffer, bias added in place; elsewhere candle's matmul | input gradient only |
//! | `softmax_last_dim`, `layer_norm_frozen` | `fused.rs`, `softmax.rs` | vectorised exp (f32 CPU), candle-nn's fused kernels (LayerNorm on the f32 CPU: the same arithmetic into an unzeroed buffer, same bits) | closed form, graph holds input and output only |
//! | `attention` (core of multi-head attention) | `fused.rs`, `attention.rs` | f32 CPU: one `gemm` per product per (batch, head) task, strided; elsewhere candle's batched matmul | recomputes the weights, closed form |
//! | `relu` | `fused.rs` | f32 CPU: one parallel pass; elsewhere candle's | one pass from the output (`y > 0`) |
//! | `channel::add`, `channel::mul` (a trained per-channel vector) | `channel.rs` | candle's broadcast op | the vector's gradient summed by products with ones |
//! | `conv2d` (frozen kernel) | `frozen.rs`, `conv.rs` | im2col + `gemm` on the CPU, candle's elsewhere | input gradient only (the adjoint convolution) |
//!
//! Why this split: the DFTs are tiny (16x16 to 48x48 planes), so dense products cost little, run on every
//! device and every ONNX Runtime execution provider, and need no hand-written backward. `atan2` cannot be built
//! from candle ops (candle has no `atan`), and the branch cut with signed zeros must be exactly IEEE's, so it is
//! a custom op whose CPU forward is the platform `atan2`; on CUDA it is the same one-line kernel (`atan2f`)
//! behind the `cuda` feature. `amplitude` is a custom op for a NaN-free backward at zero bins.
//!
//! Adding an op: one file here, one line in [`OPS`] and in the module list below.
pub mod amplitude;
pub mod atan2;
mod attention;
pub mod channel;
pub mod conv;
pub mod dft;
mod elementwise;
pub mod frozen;
pub mod fused;
pub mod graph;
pub mod polar;
mod products;
mod softmax;
pub mod tolerance;

pub use amplitude::amplitude;
pub use atan2::atan2;
pub use dft::{irfft2, rfft2};
pub use polar::polar;

/// The model-local functions of the ONNX custom domain `ai.adaptir` that the lowerings here define (`--target ort`
/// keeps them; the portable target inlines their bodies under a scope of the same name, which is how
/// `runtime::profile` attributes kernel time to them). `amplitude` lowers to plain ops (`Sqrt` of a sum of
/// squares), so it is not a function.
pub const OPS: &[&str] = &["Rfft2", "Rfft2Dft", "Irfft2", "Atan2", "Polar"];
