//! Seeded initialisation. candle draws `Init::Randn` / `Uniform` / `Kaiming` from an unseeded generator, so
//! two runs with the same `--seed` would start from different weights. [`Seeded`] is a `VarBuilder` backend
//! over a `VarMap` that draws the same distributions (same formulas as `candle_nn::Init::var`) from a
//! ChaCha8 generator seeded by (seed, variable name): a run is reproducible, and a variable's initial value does
//! not depend on the order in which modules are built. Existing variables (restored from a checkpoint, or a
//! backbone being fine-tuned) are returned as they are.
use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::backbone::{Ipt, IptConfig};
use crate::data::seed::{rng_for, stem_seed};
use crate::peft::MethodModules;

#[derive(Clone)]
pub struct Seeded {
    pub vm: VarMap,
    pub seed: u64,
}

impl Seeded {
    pub fn var_builder(vm: &VarMap, seed: u64, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(Seeded { vm: vm.clone(), seed }), DType::F32, device.clone())
    }
}

/// A fresh IPT whose weights live in `vm`, drawn by [`Seeded`] (variables already in `vm` are kept), then
/// [`Ipt::fresh`]'s fixed MeanShift and `position_ids`: the same `seed` gives the same backbone on every run and
/// machine (pre-training, seeded tests).
pub fn seeded_ipt(vm: &VarMap, config: &IptConfig, seed: u64, device: &Device) -> Result<Ipt> {
    Ipt::new(Seeded::var_builder(vm, seed, device), config, MethodModules::none(&config.host_dims()))?;
    Ipt::fresh(vm, config, MethodModules::none(&config.host_dims()), device)
}

/// The initial value `h` describes, drawn from a generator seeded by `seed`.
pub fn init_tensor(s: &Shape, h: Init, dtype: DType, dev: &Device, seed: u64) -> Result<Tensor> {
    let n = s.elem_count();
    let mut rng = rng_for(seed);
    let uniform = |lo: f64, up: f64, rng: &mut crate::data::seed::DataRng| -> Vec<f32> {
        (0..n).map(|_| (lo + (up - lo) * rng.random::<f64>()) as f32).collect()
    };
    let normal = |mean: f64, std: f64, rng: &mut crate::data::seed::DataRng| -> Result<Vec<f32>> {
        let d = Normal::new(mean, std).map_err(|e| candle_core::Error::Msg(format!("init: {e}")))?;
        Ok((0..n).map(|_| d.sample(rng) as f32).collect())
    };
    let data = match h {
        Init::Const(v) if v == 0.0 => return Tensor::zeros(s, dtype, dev),
        Init::Const(v) if v == 1.0 => return Tensor::ones(s, dtype, dev),
        Init::Const(v) => return Tensor::ones(s, dtype, dev)?.affine(v, 0.0),
        Init::Uniform { lo, up } => uniform(lo, up, &mut rng),
        Init::Randn { mean, stdev } => normal(mean, stdev, &mut rng)?,
        Init::Kaiming { dist, fan, non_linearity } => {
            let std = non_linearity.gain() / (fan.for_shape(s) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => uniform(-(3f64.sqrt()) * std, 3f64.sqrt() * std, &mut rng),
                NormalOrUniform::Normal => normal(0.0, std, &mut rng)?,
            }
        }
    };
    Tensor::from_vec(data, s, dev)?.to_dtype(dtype)
}

impl candle_nn::var_builder::SimpleBackend for Seeded {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self.vm.data().lock().map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        if let Some(v) = data.get(name) {
            if v.shape() != &s {
                candle_core::bail!("variable `{name}`: shape {:?}, expected {s:?}", v.shape());
            }
            return Ok(v.as_tensor().clone());
        }
        let var = Var::from_tensor(&init_tensor(&s, h, dtype, dev, stem_seed(self.seed, name))?)?;
        data.insert(name.to_string(), var.clone());
        Ok(var.as_tensor().clone())
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        let data = self.vm.data().lock().map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        data.get(name)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| candle_core::Error::Msg(format!("no variable `{name}`")))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.vm.data().lock().map(|d| d.contains_key(name)).unwrap_or(false)
    }
}
