//! The one table of numerical tolerances. Tests name these; they never write a literal tolerance.
//!
//! Each is a bound on `max |ours - reference|`, either absolute or relative to `max |reference|` as its name
//! says. Where a bound comes from a parity fixture's README, the doc says which.

/// Bit-identical.
pub const EXACT: f64 = 0.0;

/// f64 computation against an independent f64 reference (rustfft, closed forms), relative to the max |reference|.
pub const F64_REL: f64 = 1e-12;

/// f32 computation against an independent f64 reference of the same maths, relative to the max |reference|.
pub const F32_REL: f64 = 1e-6;

/// Central finite differences in f64 against autograd, relative to the max |gradient|.
pub const FINITE_DIFFERENCE_REL: f64 = 1e-6;

/// Our f32 AdaptIR block against the official f32 output, relative to max |official| (issue 2).
pub const BLOCK_PARITY_REL: f64 = 1e-5;

/// Whole IPT through `forward` against the official f32 output on the [0,1] scale (issue 2).
pub const MODEL_PARITY_ABS: f64 = 1e-5;

/// `adaptir_fft_edges`: channels the fixture marks portable, absolute (its README: "about 1e-6").
pub const FFT_EDGES_PORTABLE_ABS: f64 = 1e-6;

/// The f32 spectral path (dense DFT products in f32: the portable export, `--fp16`) against torch's f32 FFT,
/// relative to max |reference| (of the whole output, as every `_REL` bound here). A dense product rounds over
/// every term (the 24x48 inverse sums 2 (W/2 + 1) H = 1,200 of them) where an FFT rounds over log2 of them, so
/// the f64 path's absolute `FFT_EDGES_PORTABLE_ABS` does not carry over to outputs of magnitude 3.
pub const F32_SPECTRAL_REL: f64 = 1e-6;

/// `adaptir_block_edt`: elements next to FFT bins that torch's f32 FFT leaves on the other side of the angle
/// branch cut (its README: "expect max-abs differences of up to about 0.00023").
pub const EDT_BRANCH_CUT_ABS: f64 = 2.5e-4;

/// `adaptir_block_edt`: every other element, absolute (issue 2).
pub const EDT_ELSEWHERE_ABS: f64 = 1e-5;

/// A whole-image export (`export --whole-image`: tiling and blending inside the graph) against `adaptir
/// restore` with the candle engine on the same image, absolute on the [0, 1] scale (issue 13).
pub const WHOLE_IMAGE_ABS: f64 = 1e-5;

/// An imported official checkpoint exported to ONNX (`import` then `export`, run in ONNX Runtime) against
/// `adaptir forward` on the original checkpoint, absolute on the [0, 1] scale (issue 16's bound). Import copies
/// tensors bit for bit; what is left is the f32 reassociation of the exported graph (measured: about 1e-6).
pub const IMPORT_EXPORT_ABS: f64 = 1e-5;

/// The `Atan2` lowering (Cephes' atan from standard ops) against the platform `atan2`, relative, in units of the
/// dtype's machine epsilon: Cephes' atan is within about one ulp, plus one rounding each of the inputs, the
/// ratio and the result.
pub const ATAN2_EPS_UNITS: f64 = 4.0;

/// The same f32 maths evaluated in another order (merged weights, folded graphs), relative to max |reference|.
pub const F32_REASSOCIATION_REL: f64 = 1e-5;

/// An f16 model (`--fp16` export) against the f32 reference, relative to max |reference|. f16 has a unit
/// roundoff of 2^-11 = 4.9e-4; rounding the inputs, the weights and every intermediate to f16 and accumulating
/// through a network's residual stream costs some tens of units at the output's scale, so the bound is 1e-2
/// (about 20 units of f16 roundoff). A judgement, not a fixture's number: tighten it when a measured export says so.
pub const F16_REL: f64 = 1e-2;

/// For deep, randomly initialised models whose own f32 rounding error is far above `F32_REASSOCIATION_REL`
/// (ipt-base at random init: 2.4e-4 between our f32 and f64 forwards): another f32 implementation of the same
/// model (ONNX Runtime) may be at most this many times further from the f64 result than our f32 forward is.
pub const F32_PEER_FACTOR: f64 = 2.0;

/// The ceiling of the peer check, relative to max |f64 reference|: however large candle's own f32 error is, a
/// runtime further than this from the f64 forward fails. Measured legitimate cases: a random ipt-base (24 layers)
/// on ONNX Runtime's CPU provider, 6.3e-4 (9.0e-4 of max 1.42; candle's own f32: 5.5e-4); on the CUDA provider,
/// 2.8e-4 (docs/validation.md). So 5e-3 is 8x the worst seen: a deep model's rounding passes, an output 0.5 %
/// off never does.
pub const F32_PEER_CEILING_REL: f64 = 5e-3;

// ---- Data and metrics (issue 7): acceptance thresholds of the checks against MATLAB, scikit-image and PIL ----

/// Our PSNR vs the reference implementation's (dB).
pub const PSNR_VS_REFERENCE_DB: f64 = 1e-3;
/// Our SSIM vs the reference implementation's.
pub const SSIM_VS_REFERENCE: f64 = 1e-4;
/// Bicubic downscaling vs MATLAB: minimum fraction of samples exactly equal.
pub const BICUBIC_MIN_EQUAL_FRACTION: f64 = 0.999;
/// Bicubic downscaling vs MATLAB: largest allowed difference in 8-bit levels.
pub const BICUBIC_MAX_LEVEL_DIFF: u8 = 1;
/// Our JPEG decode vs the reference encoder's JPEG decode: minimum PSNR (dB).
pub const JPEG_MIN_PSNR_VS_REFERENCE_DB: f64 = 40.0;
/// Our JPEG file size vs the reference encoder's: maximum relative difference.
pub const JPEG_MAX_SIZE_REL_DIFF: f64 = 0.05;
/// Sample statistics of a seeded random generator vs their expectation: relative tolerance
/// (a few standard errors for the sample sizes the tests use).
pub const NOISE_STAT_REL: f64 = 0.02;

/// An `export --int8` file against its own f32 model, on real images: the least PSNR (dB) of the difference.
/// From issue 17's target (at most 0.1 dB lost on Set14): an error independent of the model's own error costs
/// `10 log10(1 + 10^((P_model - P_int8) / 10))` dB, at most 0.1 dB when `P_int8 >= P_model + 16.3`; 50 dB holds
/// that for every model of up to 33.7 dB (the shipped adapters measure 22-33 dB on their benchmarks).
pub const INT8_MIN_PSNR_DB: f64 = 50.0;

/// `export --int8` leaves nodes f32 until its file is this much above the asked bound (`--int8-min-psnr`, default
/// `INT8_MIN_PSNR_DB`) on its calibration patches: `validate --images` judges other patches of the same images (its
/// own grid), where a file that just met the bound can miss it (the lowlight adapter: 50.34 dB on the export's 64
/// patches, 49.8-49.9 dB on validate's 32, 2026-12-07).
pub const INT8_SELECTION_MARGIN_DB: f64 = 1.0;

/// An f32 file run with bf16 inference (OpenVINO, `--precision bf16`) against the same file in f32, on the same
/// inputs: the least PSNR (dB) of the difference. The same target and derivation as `INT8_MIN_PSNR_DB` (at most
/// 0.1 dB lost by a model of up to 33.7 dB).
pub const BF16_MIN_PSNR_DB: f64 = INT8_MIN_PSNR_DB;

/// An `export --int8` file's PSNR against the ground truth may be at most this far below its f32 model's, on the
/// same images (issue 17's target for the shipped adapters on Set14).
pub const INT8_MAX_PSNR_LOSS_DB: f64 = 0.1;
