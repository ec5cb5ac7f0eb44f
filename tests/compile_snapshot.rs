//! Stable text dumps of what the compiler produces (insta snapshots): the official small IPT + AdaptIR for the
//! denoise30 task, before and after the passes, and the FFT functions. A change here is a change of the
//! exported graph and must be looked at (`INSTA_UPDATE=always cargo test --release --test compile_snapshot`
//! rewrites the snapshots).
mod common;

use adaptir::compile::lower::{lower, LowerOptions};
use adaptir::compile::passes::optimize;
use adaptir::compile::text::{dump, dump_structure};
use candle_core::Device;
use common::fixture;

fn model() -> adaptir::backbone::Ipt {
    let config = adaptir::backbone::IptConfig::from_json_file(&fixture("ipt_small.json")).unwrap();
    adaptir::model::load_ipt(&fixture("parity/ipt_small_adaptir/weights.safetensors"), &config, &Device::Cpu).unwrap().0
}

#[test]
fn ipt_small_adaptir_lowered() {
    let g = lower(&model(), 4, LowerOptions::default()).unwrap();
    insta::assert_snapshot!("ipt_small_adaptir_task4_lowered", dump(&g));
}

#[test]
fn ipt_small_adaptir_optimised() {
    let mut g = lower(&model(), 4, LowerOptions::default()).unwrap();
    optimize(&mut g).unwrap();
    // Folded constants are products computed here, whose last bits may depend on the CPU: structure only.
    insta::assert_snapshot!("ipt_small_adaptir_task4_optimised", dump_structure(&g));
}
