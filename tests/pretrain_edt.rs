//! `pretrain --preset edt-tiny` (issue 19, item 5): an EDT backbone from scratch, resumable bit-identically,
//! written with its `--config` beside it so that `train` adapts it. What pre-training it costs on this CPU is in
//! docs/training.md ("edt-tiny"); these runs are a few steps of batch 1.
mod train_util;
use train_util::{cli, dir, photos, s};

use adaptir::backbone::EdtConfig;

fn pretrain_args<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    let mut a = vec!["pretrain", "--preset", "edt-tiny", "--data", data, "--out", out];
    a.extend_from_slice(&["--steps", "2", "--batch", "1", "--eval-every", "1", "--checkpoint-every", "1"]);
    a
}

#[test]
fn edt_tiny_pretrains_resumes_bit_identically_and_its_output_is_adaptable() {
    let root = dir("pretrain-edt");
    let data = photos(&root.join("photos"), 3, 200, 200);
    let (straight, cut) = (root.join("straight.safetensors"), root.join("cut").join("cut.safetensors"));
    std::fs::create_dir_all(cut.parent().unwrap()).unwrap();

    let (code, out, err) = cli(&pretrain_args(s(&data), s(&straight)));
    assert_eq!(code, 0, "{err}");
    let config_file = root.join("straight.edt.json");
    assert!(out.contains(s(&config_file)), "{out}");
    assert_eq!(EdtConfig::from_json_file(&config_file).unwrap(), EdtConfig::preset("edt-tiny").unwrap());

    // Stopped after step 1, then resumed: the same bytes as the straight run.
    let mut stop = pretrain_args(s(&data), s(&cut));
    stop.extend_from_slice(&["--stop-after", "1"]);
    let (code, _, err) = cli(&stop);
    assert_eq!(code, 0, "{err}");
    assert!(!cut.exists(), "a stopped run wrote its backbone");
    // The backbone of the unfinished run, with its config beside it (the resumed run overwrites both).
    let (code, _, err) = cli(&["pretrain", "--preset", "edt-tiny", "--out", s(&cut), "--export-checkpoint"]);
    assert_eq!(code, 0, "{err}");
    let exported = adaptir::params::StateDict::load(&cut).unwrap();
    assert!(exported.tensors.contains_key("head_sr_x2.0.weight"), "{:?}", exported.tensors.keys());
    assert_eq!(
        EdtConfig::from_json_file(&root.join("cut").join("cut.edt.json")).unwrap(),
        EdtConfig::preset("edt-tiny").unwrap()
    );
    let mut resume = pretrain_args(s(&data), s(&cut));
    resume.push("--resume");
    let (code, _, err) = cli(&resume);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&straight).unwrap(), std::fs::read(&cut).unwrap());

    // Every tensor of the file is one the EDT model reads (train loads the backbone strictly), and AdaptIR
    // attaches to it.
    let adapter = root.join("adapter.safetensors");
    let (code, _, err) = cli(&[
        "train",
        "--backbone",
        s(&straight),
        "--config",
        s(&config_file),
        "--data",
        s(&data),
        "--method",
        "adaptir",
        "--task",
        "sr2",
        "--steps",
        "1",
        "--batch",
        "1",
        "--out",
        s(&adapter),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(adapter.exists());
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn edt_tiny_refuses_init_and_unknown_presets_list_it() {
    let root = dir("pretrain-edt-refusals");
    let data = photos(&root.join("photos"), 2, 200, 200);
    let out = root.join("bb.safetensors");
    let mut args = pretrain_args(s(&data), s(&out));
    args.extend_from_slice(&["--init", "models/ipt-tiny/backbone.safetensors"]);
    let (code, _, err) = cli(&args);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--init") && err.contains("edt-tiny"), "{err}");

    let (code, _, err) =
        cli(&["pretrain", "--preset", "edt-huge", "--data", s(&data), "--steps", "1", "--out", s(&out)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("edt-huge") && err.contains("edt-tiny") && err.contains("ipt-tiny"), "{err}");
    assert!(!out.exists());
    std::fs::remove_dir_all(&root).ok();
}
