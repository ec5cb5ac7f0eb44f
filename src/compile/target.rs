//! Who an exported file is for. The default is the portable file: ONNX Runtime (CPU and CUDA), OpenVINO and tract
//! load it, because it holds standard ONNX ops only (the `ai.adaptir` functions inlined: OpenVINO 2026.4 and tract
//! 0.23 do not expand model-local functions), with the spectral products in f64 (in f32 they missed the model on
//! real images: `lower_options`). TensorRT has no f64: its target keeps f32. Runtime-specific forms are options.
use adaptir_ops::graph::{FftLowering, SpectralPrecision};

use super::lower::LowerOptions;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Target {
    /// Standard ops only, f64 spectral products: ONNX Runtime, OpenVINO, tract.
    #[default]
    Portable,
    /// ONNX Runtime (CPU, CUDA): the `ai.adaptir` model-local functions kept as functions and the spectral
    /// products in f64 (the numerics of the candle reference, exact zeros with 1e-15 of headroom). The place for
    /// ONNX Runtime-only speed-ups.
    Ort,
    /// The portable graph with f32 spectral products (TensorRT has no f64), checked at export against TensorRT's
    /// published ONNX operator support (`src/compile/tensorrt.rs`); the export fails if anything is outside it.
    TensorRt,
}

impl Target {
    pub const ALL: &'static [Target] = &[Target::Portable, Target::Ort, Target::TensorRt];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::Portable => "portable",
            Target::Ort => "ort",
            Target::TensorRt => "tensorrt",
        }
    }

    /// The lowering for this target. The portable file computes its spectral products in f64 (since 2026-12-07):
    /// with f32 products, four of the six shipped adapters' files missed the model by 4.7e-5 to 1.3e-3 on real
    /// photos while passing on seeded noise (docs/compiler.md "Real images and the spectral products"); ONNX
    /// Runtime, tract and OpenVINO run the f64 Casts and products. TensorRT has no f64, so its target keeps f32
    /// (centered planes since, which fixed lowlight's file but not lr4-jpeg30's, realnoise's or EDT's).
    pub fn lower_options(self, fft: FftLowering) -> LowerOptions {
        match self {
            Target::Portable => {
                LowerOptions { fft, inline_functions: true, spectral: SpectralPrecision::F64, whole_image: None }
            }
            Target::TensorRt => {
                LowerOptions { fft, inline_functions: true, spectral: SpectralPrecision::F32, whole_image: None }
            }
            Target::Ort => {
                LowerOptions { fft, inline_functions: false, spectral: SpectralPrecision::F64, whole_image: None }
            }
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Target::ALL.iter().copied().find(|t| t.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Target::ALL.iter().map(|t| t.as_str()).collect();
            format!("--target: expected one of {}, found `{s}`", names.join(", "))
        })
    }
}

/// `--spectral f32|f64`.
pub fn parse_spectral(s: &str) -> Result<SpectralPrecision, String> {
    match s {
        "f32" => Ok(SpectralPrecision::F32),
        "f64" => Ok(SpectralPrecision::F64),
        other => Err(format!("--spectral: expected `f32` or `f64`, found `{other}`")),
    }
}
