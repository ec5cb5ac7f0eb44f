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

/// The official model looks its position embeddings up by the `position_ids` buffer, which it loads like a
/// weight; so does ours. Reversing the ids and the rows of `pe.weight` together is the same model, so the
/// official output still holds; all-zero ids (what our writer stored before this was found, with every token
/// then taking the first embedding in PyTorch) are another model; an id beyond the positions is refused.
#[test]
fn position_ids_are_read_like_the_official_buffer() {
    use adaptir::backbone::ipt::POSITION_IDS;
    use candle_core::Tensor;
    let config = IptConfig::from_json_file(&fixture("ipt_small.json")).unwrap();
    let dir = std::env::temp_dir().join(format!("adaptir-position-ids-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let official =
        candle_core::safetensors::load(fixture("parity/ipt_small_adaptir/weights.safetensors"), &Device::Cpu).unwrap();
    let io = load("parity/ipt_small_adaptir/io.safetensors");
    let (x, want) = (&io["x"], &io["task2.y"]);
    let l = config.num_tokens();
    let with_ids = |name: &str, ids: Vec<i64>, reverse_pe: bool| {
        let mut t = official.clone();
        if reverse_pe {
            let rows = Tensor::new((0..l as u32).rev().collect::<Vec<u32>>(), &Device::Cpu).unwrap();
            let pe = "body.position_encoding.pe.weight";
            t.insert(pe.into(), t[pe].index_select(&rows, 0).unwrap());
        }
        t.insert(POSITION_IDS.into(), Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap());
        let path = dir.join(name);
        candle_core::safetensors::save(&t, &path).unwrap();
        path
    };

    let reversed = with_ids("reversed.safetensors", (0..l as i64).rev().collect(), true);
    let (model, _) = load_ipt(&reversed, &config, &Device::Cpu).unwrap();
    let err = max_abs_diff(&model.forward(x, 2, false).unwrap(), want);
    eprintln!("reversed ids and pe rows: {err:.3e} from the official output");
    assert!(err <= MODEL_PARITY_ABS, "{err:e} > {MODEL_PARITY_ABS:e}");

    let zeros = with_ids("zeros.safetensors", vec![0; l], false);
    let (model, _) = load_ipt(&zeros, &config, &Device::Cpu).unwrap();
    let err = max_abs_diff(&model.forward(x, 2, false).unwrap(), want);
    eprintln!("all-zero ids: {err:.3e} from the official output (another model)");
    assert!(err > MODEL_PARITY_ABS, "all-zero position ids were not read: {err:e}");

    let mut ids: Vec<i64> = (0..l as i64).collect();
    ids[3] = l as i64;
    let beyond = with_ids("beyond.safetensors", ids, false);
    let e = load_ipt(&beyond, &config, &Device::Cpu).err().expect("an id beyond the positions must be refused");
    assert!(e.to_string().contains("position_ids holds 256"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
