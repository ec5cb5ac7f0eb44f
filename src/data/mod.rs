//! Images, datasets, degradation synthesis, crops and augmentation (see `docs/data.md`).
//!
//! Free of candle: images are plain [`Image`] buffers (`f32` in `[0, 1]`, interleaved).

pub mod crops;
pub mod degrade;
pub mod error;
pub mod image;
pub mod io;
pub mod pairs;
pub mod seed;
pub mod tolerances;

pub use self::image::Image;
pub use degrade::Task;
pub use error::{DataError, Result};
pub use io::{load_image, load_image_with, save_png, BitDepth, LoadOptions, DEFAULT_MAX_PIXELS};
