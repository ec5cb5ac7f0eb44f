//! Polar to Cartesian: `(mag cos(pha), mag sin(pha))`, i.e. `torch.polar` / `complex(Mag*cos(Pha), Mag*sin(Pha))`.
//! Plain candle ops: it runs on every device and candle's autograd gives its backward.
use candle_core::{Result, Tensor};

/// Returns `(re, im)`; `mag` and `pha` broadcast against each other.
pub fn polar(mag: &Tensor, pha: &Tensor) -> Result<(Tensor, Tensor)> {
    Ok((mag.broadcast_mul(&pha.cos()?)?, mag.broadcast_mul(&pha.sin()?)?))
}
