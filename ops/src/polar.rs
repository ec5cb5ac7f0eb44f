//! Polar to Cartesian: `(mag cos(pha), mag sin(pha))`, i.e. `torch.polar` / `complex(Mag*cos(Pha), Mag*sin(Pha))`.
//! Plain candle ops: it runs on every device and candle's autograd gives its backward.
use candle_core::{Result, Tensor};

/// Returns `(re, im)`; `mag` and `pha` broadcast against each other.
pub fn polar(mag: &Tensor, pha: &Tensor) -> Result<(Tensor, Tensor)> {
    Ok((mag.broadcast_mul(&pha.cos()?)?, mag.broadcast_mul(&pha.sin()?)?))
}

/// Emit `(mag cos(pha), mag sin(pha))` as the model-local function `Polar`.
pub fn lower(b: &mut dyn crate::graph::GraphBuilder, mag: &str, pha: &str) -> Result<(String, String)> {
    let outs = b.function("Polar", &[mag, pha], 2, &|b, i| {
        let c = b.op("Cos", &[&i[1]], vec![])?;
        let s = b.op("Sin", &[&i[1]], vec![])?;
        Ok(vec![b.op("Mul", &[&i[0], &c], vec![])?, b.op("Mul", &[&i[0], &s], vec![])?])
    })?;
    Ok((outs[0].clone(), outs[1].clone()))
}
