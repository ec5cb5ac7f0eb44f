//! A linear map as the backbone holds it and the methods fold into it: (weight (out, in), optional bias (out)),
//! applied over the last dim of a tensor of any rank, and its ONNX lowering. Shared by `backbone` and `peft`;
//! a leaf over `adaptir_ops`.
use adaptir_ops::graph::GraphBuilder;
use candle_core::{Result, Tensor};

/// A merged linear map: weight (out, in) and optional bias (out).
pub type Linear = (Tensor, Option<Tensor>);

/// candle's Linear over the last dim of a tensor of any rank.
pub fn apply_linear(l: &candle_nn::Linear, x: &Tensor) -> Result<Tensor> {
    linear_map(&(l.weight().clone(), l.bias().cloned()), x)
}

/// `x @ w^T` over the last dim of a tensor of any rank; no gradient work for a frozen `w`.
pub fn apply_linear_t(w: &Tensor, x: &Tensor) -> Result<Tensor> {
    adaptir_ops::frozen::linear_t(x, w)
}

/// A (weight, bias) map over the last dim.
pub fn linear_map((w, b): &Linear, x: &Tensor) -> Result<Tensor> {
    adaptir_ops::frozen::linear(x, w, b.as_ref())
}

/// `x @ w^T + b` over the last dim: MatMul with the transposed weight as a constant, then Add.
pub fn lower_linear(b: &mut dyn GraphBuilder, x: &str, (w, bias): &Linear, hint: &str) -> Result<String> {
    let wt = b.constant(&format!("{hint}.weight_t"), &w.t()?.contiguous()?)?;
    let y = b.op("MatMul", &[x, &wt], vec![])?;
    match bias {
        Some(bias) => {
            let c = b.constant(&format!("{hint}.bias"), bias)?;
            b.op("Add", &[&y, &c], vec![])
        }
        None => Ok(y),
    }
}
