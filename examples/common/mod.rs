//! What the benchmarks share: a randomly initialised backbone of a preset with a perturbed AdaptIR (timing does
//! not depend on the weights; the perturbation makes sure no branch of the adapter is trivially zero), and
//! `--name value` arguments.
#![allow(dead_code)]
use adaptir::backbone::{Ipt, IptConfig};
use adaptir::params::{StateDict, Strict};
use adaptir::peft::{method, MethodModules};
use candle_core::{DType, Device};

/// `--name N` from the command line, else `default`.
pub fn arg(name: &str, default: usize) -> usize {
    std::env::args().skip_while(|a| a != name).nth(1).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The weights of [`random_ipt_with_adaptir`]: the backbone's state dict and AdaptIR's (BatchNorm running
/// statistics included), both under the official keys.
pub fn random_ipt_with_adaptir_dicts(preset: &str) -> adaptir::Result<(IptConfig, StateDict, StateDict)> {
    let config = IptConfig::preset(preset)?;
    let host = config.host_dims();
    let dict = |vm: &candle_nn::VarMap| StateDict {
        path: "random".into(),
        tensors: vm
            .data()
            .lock()
            .map(|d| d.iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect())
            .unwrap_or_default(),
    };
    let vm = candle_nn::VarMap::new();
    Ipt::fresh(&vm, &config, MethodModules::none(&host), &Device::Cpu)?;
    let m = method("adaptir", &serde_json::Value::Null, &host).map_err(adaptir::Error::invalid)?;
    let mvm = candle_nn::VarMap::new();
    m.build(candle_nn::VarBuilder::from_varmap(&mvm, DType::F32, &Device::Cpu), &host)?;
    for var in mvm.all_vars().into_iter().filter(|v| v.dtype().is_float()) {
        var.set(&(var.as_tensor() + var.as_tensor().randn_like(0.0, 0.05)?)?)?;
    }
    Ok((config, dict(&vm), dict(&mvm)))
}

/// A random backbone of `preset` with AdaptIR (official sizes) whose weights are perturbed by N(0, 0.05).
pub fn random_ipt_with_adaptir(preset: &str) -> adaptir::Result<Ipt> {
    let (config, backbone, adapter) = random_ipt_with_adaptir_dicts(preset)?;
    let host = config.host_dims();
    let m = method("adaptir", &serde_json::Value::Null, &host).map_err(adaptir::Error::invalid)?;
    Ok(Ipt::new(
        Strict::new(backbone).var_builder(DType::F32, &Device::Cpu),
        &config,
        m.build(Strict::new(adapter).var_builder(DType::F32, &Device::Cpu), &host)?,
    )?)
}
