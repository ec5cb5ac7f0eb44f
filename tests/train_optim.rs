//! AdamW against its closed form, and the learning-rate schedule.
use adaptir::tolerance::{EXACT, F32_REL};
use adaptir::train::optim::{lr_at, AdamW, AdamWConfig};
use candle_core::{Device, Tensor, Var};

/// With a constant gradient g, every bias-corrected step is lr * g / (|g| + eps), so
/// p_t = a^t p_0 - c (1 - a^t) / (1 - a) with a = 1 - lr wd and c = lr g / (|g| + eps).
#[test]
fn adamw_matches_the_closed_form_for_a_constant_gradient() {
    let cfg = AdamWConfig::default();
    let (lr, p0, steps) = (1e-2f64, [0.5f64, -2.0, 3.0], 20);
    let g = [0.3f64, -1.5, 1e-3];
    let var =
        Var::from_tensor(&Tensor::new(&[p0[0] as f32, p0[1] as f32, p0[2] as f32], &Device::Cpu).unwrap()).unwrap();
    let mut opt = AdamW::new(vec![("p".into(), var.clone())], cfg).unwrap();
    let gt = Tensor::new(&[g[0] as f32, g[1] as f32, g[2] as f32], &Device::Cpu).unwrap();
    for _ in 0..steps {
        // loss = sum(p * g) has gradient g.
        let loss = (var.as_tensor() * &gt).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        opt.step(&grads, lr).unwrap();
    }
    let got: Vec<f32> = var.as_tensor().to_vec1().unwrap();
    let a = 1.0 - lr * cfg.weight_decay;
    let mut worst = 0f64;
    let mut scale = 0f64;
    for i in 0..3 {
        let c = lr * g[i] / (g[i].abs() + cfg.eps);
        let want = a.powi(steps) * p0[i] - c * (1.0 - a.powi(steps)) / (1.0 - a);
        worst = worst.max((got[i] as f64 - want).abs());
        scale = scale.max(want.abs());
    }
    println!("AdamW vs closed form: max abs {worst:.3e} (max |p| {scale:.3})");
    // f32 arithmetic over 20 steps: each step rounds to f32, so allow F32_REL per step.
    assert!(worst <= F32_REL * scale * steps as f64, "max abs diff {worst}");
    assert_eq!(opt.t[0], steps as u64);
}

/// A parameter without a gradient is left exactly alone (no decay, no moment update), as torch.
#[test]
fn parameters_without_gradient_are_untouched() {
    let dev = Device::Cpu;
    let a = Var::from_tensor(&Tensor::new(&[1f32, 2.0], &dev).unwrap()).unwrap();
    let b = Var::from_tensor(&Tensor::new(&[3f32], &dev).unwrap()).unwrap();
    let mut opt = AdamW::new(vec![("a".into(), a.clone()), ("b".into(), b.clone())], AdamWConfig::default()).unwrap();
    let grads = a.as_tensor().sum_all().unwrap().backward().unwrap();
    opt.step(&grads, 0.1).unwrap();
    let bv: Vec<f32> = b.as_tensor().to_vec1().unwrap();
    assert_eq!((bv[0] - 3.0).abs() as f64, EXACT);
    assert_eq!(opt.t, vec![1, 0]);
}

#[test]
fn learning_rate_is_halved_at_50_80_90_95_percent() {
    let total = 100;
    let lrs: Vec<f64> = (0..total).map(|s| lr_at(1.0, s, total)).collect();
    assert_eq!(lrs[0], 1.0);
    assert_eq!(lrs[49], 1.0);
    assert_eq!(lrs[50], 0.5);
    assert_eq!(lrs[79], 0.5);
    assert_eq!(lrs[80], 0.25);
    assert_eq!(lrs[90], 0.125);
    assert_eq!(lrs[94], 0.125);
    assert_eq!(lrs[95], 0.0625);
    assert_eq!(lrs[99], 0.0625);
}
