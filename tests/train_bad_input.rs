//! Bad input to train / eval / pretrain: exit code 2 and a message that says what to do.
mod train_util;

use train_util::{backbone, cli, dir, photos, s, train_args};

#[test]
fn a_folder_without_usable_images_is_refused() {
    let root = dir("no-images");
    backbone(&root.join("bb.safetensors"));
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("empty/readme.txt"), "not an image").unwrap();
    photos(&root.join("small"), 2, 20, 20);
    for data in ["empty", "small"] {
        let (code, _, err) = cli(&[
            "train",
            "--method",
            "adaptir",
            "--task",
            "denoise30",
            "--backbone",
            s(&root.join("bb.safetensors")),
            "--data",
            s(&root.join(data)),
            "--steps",
            "2",
            "--out",
            s(&root.join("x.safetensors")),
        ]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(data) && err.contains("image"), "{err}");
    }
}

#[test]
fn a_task_without_head_is_refused() {
    let root = dir("no-head");
    backbone(&root.join("bb.safetensors"));
    photos(&root.join("p"), 2, 60, 60);
    let (code, _, err) = cli(&[
        "train",
        "--method",
        "adaptir",
        "--task",
        "dehaze",
        "--backbone",
        s(&root.join("bb.safetensors")),
        "--data",
        s(&root.join("p")),
        "--steps",
        "2",
        "--out",
        s(&root.join("x.safetensors")),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no head") && err.contains("derain"), "{err}");
}

#[test]
fn an_adapter_for_another_backbone_is_refused() {
    let root = dir("other-backbone");
    backbone(&root.join("bb.safetensors"));
    backbone(&root.join("other.safetensors")); // another random init: another sha256
    photos(&root.join("p"), 2, 60, 60);
    let (code, _, err) = cli(&[
        "train",
        "--method",
        "lora",
        "--task",
        "denoise30",
        "--backbone",
        s(&root.join("bb.safetensors")),
        "--data",
        s(&root.join("p")),
        "--steps",
        "1",
        "--batch",
        "1",
        "--out",
        s(&root.join("a.safetensors")),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&[
        "eval",
        "--adapter",
        s(&root.join("a.safetensors")),
        "--backbone",
        s(&root.join("other.safetensors")),
        "--data",
        s(&root.join("p")),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sha256"), "{err}");
}

#[test]
fn nan_loss_stops_with_exit_2_and_keeps_the_last_good_checkpoint() {
    let root = dir("nan");
    backbone(&root.join("bb.safetensors"));
    photos(&root.join("p"), 2, 60, 60);
    // An absurd learning rate blows the weights up after the first update.
    let (code, _, err) = cli(&[
        "train",
        "--method",
        "full",
        "--task",
        "denoise30",
        "--backbone",
        s(&root.join("bb.safetensors")),
        "--data",
        s(&root.join("p")),
        "--steps",
        "6",
        "--batch",
        "1",
        "--lr",
        "1e30",
        "--checkpoint-every",
        "1",
        "--out",
        s(&root.join("n.safetensors")),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("loss is") && err.contains("last good checkpoint"), "{err}");
    assert!(!root.join("n.safetensors").exists());
    // The checkpoint that is left loads (it is a complete file).
    let ckpt = root.join("n.ckpt.safetensors");
    assert!(ckpt.exists());
    let bytes = std::fs::read(&ckpt).unwrap();
    assert!(safetensors::SafeTensors::deserialize(&bytes).is_ok());
}

#[test]
fn pretrain_refuses_an_empty_folder() {
    let root = dir("pretrain-empty");
    std::fs::create_dir_all(root.join("e")).unwrap();
    let (code, _, err) = cli(&[
        "pretrain",
        "--preset",
        "ipt-tiny",
        "--data",
        s(&root.join("e")),
        "--steps",
        "1",
        "--out",
        s(&root.join("b.safetensors")),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/e:") && err.contains("image"), "{err}");
}

/// `--flush-denormals` is part of a run's fingerprint: a run stopped with it resumes with it, and a resume without
/// it is refused naming the field (its steps would be computed in another mode).
#[test]
fn a_flushed_run_resumes_only_flushed() {
    let root = dir("flush");
    backbone(&root.join("bb.safetensors"));
    photos(&root.join("p"), 2, 60, 60);
    let (out, bb, data) = (root.join("f.safetensors"), root.join("bb.safetensors"), root.join("p"));
    let run = |extra: &[&str]| {
        let mut args = train_args(&bb, &data, &out, "2");
        args.extend_from_slice(&["--checkpoint-every", "1"]);
        args.extend_from_slice(extra);
        cli(&args)
    };
    let (code, _, err) = run(&["--flush-denormals", "--stop-after", "1"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["--resume"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("flush_denormals"), "{err}");
    let (code, _, err) = run(&["--resume", "--flush-denormals"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.exists());
}
