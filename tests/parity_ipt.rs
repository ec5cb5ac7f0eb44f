//! The whole IPT + AdaptIR against the official model (`fixtures/parity/ipt_small_adaptir`), both tasks.
mod common;

use adaptir::backbone::IptConfig;
use adaptir::model::load_ipt;
use adaptir::tolerance::MODEL_PARITY_ABS;
use candle_core::Device;
use common::*;

#[test]
fn ipt_small_adaptir_both_tasks() {
    let config = IptConfig::from_json_file(&fixture("ipt_small.json")).unwrap();
    let (model, _) = load_ipt(&fixture("parity/ipt_small_adaptir/weights.safetensors"), &config, &Device::Cpu).unwrap();
    let io = load("parity/ipt_small_adaptir/io.safetensors");
    let x = &io["x"];
    for task in [2usize, 4] {
        let want = &io[&format!("task{task}.y")];
        let got = model.forward(x, task, false).unwrap();
        let err = max_abs_diff(&got, want);
        eprintln!("task {task}: output {:?}, max abs diff {err:.3e}", got.dims());
        if let Some(want64) = io.get(&format!("task{task}.y_f64")) {
            eprintln!(
                "task {task} vs float64: ours f32 {:.3e}, torch f32 {:.3e}",
                max_abs_diff(&got, want64),
                max_abs_diff(want, want64)
            );
        }
        assert!(err <= MODEL_PARITY_ABS, "task {task}: {err:e} > {MODEL_PARITY_ABS:e}");
    }
}
