//! AdamW exactly as `torch.optim.AdamW` computes it (decoupled weight decay, bias-corrected moments), with its
//! state in the open so checkpoints can hold it; and the step schedule (halve at 50/80/90/95% of the steps).
//!
//! One update, for a parameter `p` with gradient `g` at step `t` (1-based), learning rate `lr`:
//! ```text
//! p <- p * (1 - lr * wd)
//! m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
//! p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
//! ```
//! A parameter without a gradient in a step (a head of another task during pre-training) is left alone, moments
//! and weight decay included, as torch does for `p.grad is None`.
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

/// The official training's AdamW: betas (0.9, 0.999), eps 1e-8, weight decay 0.01.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// AdamW over a fixed, ordered list of variables. `t[i]` counts the updates parameter `i` received.
pub struct AdamW {
    pub config: AdamWConfig,
    pub vars: Vec<(String, Var)>,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub t: Vec<u64>,
}

impl AdamW {
    /// Zero moments for `vars` (named, in a fixed order).
    pub fn new(vars: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        let m = vars.iter().map(|(_, v)| v.as_tensor().zeros_like()).collect::<Result<Vec<_>>>()?;
        let v = m.clone();
        let t = vec![0; vars.len()];
        Ok(Self { config, vars, m, v, t })
    }

    /// One update with learning rate `lr` from the gradients in `grads`.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let c = self.config;
        for i in 0..self.vars.len() {
            let var = &self.vars[i].1;
            // Detached: the update must not keep the step's autograd graph alive through the moments.
            let Some(g) = grads.get(var.as_tensor()).map(|g| g.detach()) else { continue };
            self.t[i] += 1;
            let t = self.t[i] as i32;
            let m = ((&self.m[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let m_hat = (&m / (1.0 - c.beta1.powi(t)))?;
            let v_hat = (&v / (1.0 - c.beta2.powi(t)))?;
            let decayed = (var.as_tensor().detach() * (1.0 - lr * c.weight_decay))?;
            let update = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
            var.set(&(decayed - (update * lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }
}

/// The fractions of the run at which the learning rate is halved.
pub const HALVE_AT: [f64; 4] = [0.5, 0.8, 0.9, 0.95];

/// Learning rate of step `step` (0-based) of `total`: `base` halved once for every milestone
/// `floor(f * total)` (f in [`HALVE_AT`]) that `step` has reached, as torch's `MultiStepLR(gamma=0.5)`.
pub fn lr_at(base: f64, step: usize, total: usize) -> f64 {
    let halvings = HALVE_AT.iter().filter(|f| step >= (*f * total as f64).floor() as usize).count();
    base * 0.5f64.powi(halvings as i32)
}
