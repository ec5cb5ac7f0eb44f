//! Degradations, each a pure function of (image, parameters, seed), and the task list of the
//! paper. Every output is rounded to 8-bit levels, as the papers' degraded inputs are saved PNGs.

pub mod bicubic;
pub mod jpeg;
pub mod lowlight;
pub mod noise;
pub mod rain;

pub use bicubic::{bicubic_downscale, imresize};
pub use jpeg::{encode_jpeg, jpeg_compress};
pub use lowlight::{low_light, LowLightParams};
pub use noise::{gaussian_noise, NoiseConvention};
pub use rain::{add_rain, rain_layer, rain_stats, RainParams, RainStats};

use super::error::{DataError, Result};
use super::image::Image;
use super::seed::mix64;

/// A degradation task of the paper.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Task {
    /// Bicubic downscaling by 2, 3 or 4 (MATLAB `imresize`).
    Sr(usize),
    /// Gaussian noise, sigma on the 0-255 scale, clip and round.
    Noise(u32),
    /// JPEG at this quality.
    Jpeg(u8),
    /// x4 bicubic, then Gaussian noise sigma 30 with clip and truncate (the official hybrid pipeline).
    Lr4Noise30,
    /// x4 bicubic, then JPEG q30.
    Lr4Jpeg30,
    /// x2 bicubic, then Gaussian noise sigma 30 as [`Task::Lr4Noise30`]: the x2 hybrid that EDT's x2 head adapts to.
    Lr2Noise30,
    RainLight,
    RainHeavy,
    LowLight,
}

impl Task {
    /// The names `adaptir degrade --task` accepts.
    pub const NAMES: &'static [&'static str] = &[
        "sr2",
        "sr3",
        "sr4",
        "noise15",
        "noise25",
        "noise30",
        "noise50",
        "jpeg10",
        "jpeg20",
        "jpeg30",
        "jpeg40",
        "lr4-noise30",
        "lr4-jpeg30",
        "lr2-noise30",
        "rain-light",
        "rain-heavy",
        "lowlight",
    ];

    /// Parses one of [`Task::NAMES`].
    pub fn parse(name: &str) -> Result<Task> {
        let t = match name {
            "sr2" => Task::Sr(2),
            "sr3" => Task::Sr(3),
            "sr4" => Task::Sr(4),
            "noise15" => Task::Noise(15),
            "noise25" => Task::Noise(25),
            "noise30" => Task::Noise(30),
            "noise50" => Task::Noise(50),
            "jpeg10" => Task::Jpeg(10),
            "jpeg20" => Task::Jpeg(20),
            "jpeg30" => Task::Jpeg(30),
            "jpeg40" => Task::Jpeg(40),
            "lr4-noise30" => Task::Lr4Noise30,
            "lr4-jpeg30" => Task::Lr4Jpeg30,
            "lr2-noise30" => Task::Lr2Noise30,
            "rain-light" => Task::RainLight,
            "rain-heavy" => Task::RainHeavy,
            "lowlight" => Task::LowLight,
            other => {
                return Err(DataError::invalid(
                    "--task",
                    format!("one of {}", Task::NAMES.join(", ")),
                    format!("`{other}`"),
                ))
            }
        };
        Ok(t)
    }

    /// The canonical name.
    pub fn name(&self) -> String {
        match self {
            Task::Sr(s) => format!("sr{s}"),
            Task::Noise(s) => format!("noise{s}"),
            Task::Jpeg(q) => format!("jpeg{q}"),
            Task::Lr4Noise30 => "lr4-noise30".into(),
            Task::Lr4Jpeg30 => "lr4-jpeg30".into(),
            Task::Lr2Noise30 => "lr2-noise30".into(),
            Task::RainLight => "rain-light".into(),
            Task::RainHeavy => "rain-heavy".into(),
            Task::LowLight => "lowlight".into(),
        }
    }

    /// Clean size / degraded size.
    pub fn scale(&self) -> usize {
        match self {
            Task::Sr(s) => *s,
            Task::Lr4Noise30 | Task::Lr4Jpeg30 => 4,
            Task::Lr2Noise30 => 2,
            _ => 1,
        }
    }

    /// The clean target that goes with [`Task::apply`]'s output: mod-cropped and 8-bit-rounded.
    pub fn target(&self, clean: &Image) -> Result<Image> {
        Ok(clean.mod_crop(self.scale())?.quantized_u8())
    }

    /// Degrades `clean` (seeded; same seed, same output).
    pub fn apply(&self, clean: &Image, seed: u64) -> Result<Image> {
        match *self {
            Task::Sr(s) => bicubic_downscale(clean, s),
            Task::Noise(s) => gaussian_noise(clean, s as f64, NoiseConvention::ClipRound, seed),
            Task::Jpeg(q) => jpeg_compress(clean, q),
            Task::Lr4Noise30 | Task::Lr2Noise30 => {
                let lr = bicubic_downscale(clean, self.scale())?;
                gaussian_noise(&lr, 30.0, NoiseConvention::ClipTruncate, mix64(seed))
            }
            Task::Lr4Jpeg30 => jpeg_compress(&bicubic_downscale(clean, 4)?, 30),
            Task::RainLight => add_rain(clean, &RainParams::LIGHT, seed),
            Task::RainHeavy => add_rain(clean, &RainParams::HEAVY, seed),
            Task::LowLight => low_light(clean, &LowLightParams::DEFAULT, seed),
        }
    }
}
