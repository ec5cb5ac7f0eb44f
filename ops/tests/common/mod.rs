#![allow(dead_code)]
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Standard-normal-ish values in [-1, 1) times `scale`, f64.
pub fn random(rng: &mut ChaCha8Rng, shape: &[usize], scale: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| scale * (rng.gen::<f64>() * 2.0 - 1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

pub fn max_abs(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_dtype(DType::F64).unwrap();
    let b = b.to_dtype(DType::F64).unwrap();
    max_abs(&(a - b).unwrap())
}

/// Check the autograd gradient of `loss(inputs)` w.r.t. every input against central differences, in f64.
/// Returns the worst relative error (to the max |gradient| of that input).
pub fn finite_difference_check(inputs: &[Tensor], loss: impl Fn(&[Tensor]) -> Result<Tensor>) -> f64 {
    let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let l = loss(&tensors).unwrap();
    let grads = l.backward().unwrap();
    let step = 1e-6;
    let mut worst: f64 = 0.0;
    for (i, var) in vars.iter().enumerate() {
        let analytic = grads.get(var).map(|g| g.flatten_all().unwrap().to_vec1::<f64>().unwrap());
        let base = inputs[i].flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let mut numeric = vec![0f64; base.len()];
        for j in 0..base.len() {
            let eval = |delta: f64| {
                let mut v = base.clone();
                v[j] += delta;
                let mut ts = inputs.to_vec();
                ts[i] = Tensor::from_vec(v, inputs[i].shape(), &Device::Cpu).unwrap();
                loss(&ts).unwrap().to_scalar::<f64>().unwrap()
            };
            numeric[j] = (eval(step) - eval(-step)) / (2.0 * step);
        }
        let analytic = analytic.unwrap_or_else(|| vec![0.0; base.len()]);
        let scale = numeric.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
        let err = analytic.iter().zip(&numeric).fold(0f64, |m, (a, n)| m.max((a - n).abs()));
        worst = worst.max(err / scale);
    }
    worst
}

/// A random weighting so that `sum(w * out)` exercises every output element.
pub fn weighted_sum(out: &Tensor, w: &Tensor) -> Result<Tensor> {
    (out * w)?.sum_all()
}
