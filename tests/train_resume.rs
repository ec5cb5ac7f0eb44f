//! An interrupted and resumed run ends with the same adapter file, byte for byte, as an uninterrupted one;
//! a checkpoint from another configuration is refused.
mod train_util;

use adaptir::train::adapt::{train, TrainArgs};
use train_util::{backbone, cli, dir, photos, s, train_args};

fn args(root: &std::path::Path, out: &str) -> TrainArgs {
    TrainArgs {
        method: "adaptir".into(),
        method_config: None,
        task: "denoise30".into(),
        data: vec![root.join("photos")],
        exclude: vec![],
        pairs: None,
        backbone: root.join("backbone.safetensors"),
        preset: None,
        config: None,
        steps: 4,
        batch: 2,
        patch: 48,
        lr: 1e-3,
        seed: 7,
        out: root.join(out),
        resume: false,
        checkpoint_every: 1,
        eval_every: 2,
        stop_after: None,
        quiet: true,
    }
}

#[test]
fn interrupted_and_resumed_run_equals_an_uninterrupted_one_byte_for_byte() {
    let root = dir("resume");
    backbone(&root.join("backbone.safetensors"));
    photos(&root.join("photos"), 3, 64, 56);

    let a = train(&args(&root, "a.safetensors")).unwrap();
    assert!(a.finished && a.steps == 4);

    let mut b = args(&root, "b.safetensors");
    b.stop_after = Some(2);
    let first = train(&b).unwrap();
    assert!(!first.finished && first.steps == 2);
    assert!(!root.join("b.safetensors").exists(), "no adapter before the run finishes");
    b.stop_after = None;
    b.resume = true;
    let second = train(&b).unwrap();
    assert!(second.finished && second.steps == 4);

    let (x, y) =
        (std::fs::read(root.join("a.safetensors")).unwrap(), std::fs::read(root.join("b.safetensors")).unwrap());
    assert!(x == y, "resumed adapter differs from the uninterrupted one");
    assert_eq!(a.final_loss.map(f64::to_bits), second.final_loss.map(f64::to_bits));
    assert!(root.join("a.curve.png").exists());
    // The adapter trained something and holds the BatchNorm statistics.
    let f = adaptir::peft::file::AdapterFile::load(&root.join("a.safetensors")).unwrap();
    assert!(f.tensors.keys().any(|k| k.ends_with("running_mean")));
    assert_eq!(f.meta.task, "denoise30");
}

#[test]
fn resume_with_another_configuration_is_refused() {
    let root = dir("resume-other");
    backbone(&root.join("backbone.safetensors"));
    photos(&root.join("photos"), 2, 60, 60);
    let (bb, data, out) = (root.join("backbone.safetensors"), root.join("photos"), root.join("x.safetensors"));
    let base = train_args(&bb, &data, &out, "3");
    let mut first = base.to_vec();
    first.extend(["--stop-after", "1"]);
    let (code, _, err) = cli(&first);
    assert_eq!(code, 0, "{err}");
    let mut other = base.to_vec();
    other.extend(["--resume", "--lr", "3e-4"]);
    let (code, _, err) = cli(&other);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("another configuration") && err.contains("lr"), "{err}");
}

#[test]
fn killing_the_process_never_corrupts_the_checkpoint() {
    let root = dir("kill");
    backbone(&root.join("backbone.safetensors"));
    photos(&root.join("photos"), 2, 60, 60);
    let (bb, data, out) = (root.join("backbone.safetensors"), root.join("photos"), root.join("k.safetensors"));
    let args = [
        "train",
        "--method",
        "adaptir",
        "--task",
        "denoise30",
        "--backbone",
        s(&bb),
        "--data",
        s(&data),
        "--steps",
        "400",
        "--batch",
        "1",
        "--checkpoint-every",
        "1",
        "--eval-every",
        "1000",
        "--out",
        s(&out),
    ];
    let ckpt = root.join("k.ckpt.safetensors");
    // Kill at a few moments; whatever is on disk must always be a complete checkpoint that resumes.
    for wait_ms in [700u64, 1100, 1500] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_adaptir"))
            .args(args)
            .arg("--resume")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(wait_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        if ckpt.exists() {
            let bytes = std::fs::read(&ckpt).unwrap();
            assert!(safetensors::SafeTensors::deserialize(&bytes).is_ok(), "torn checkpoint after {wait_ms} ms");
        }
    }
    assert!(ckpt.exists(), "no checkpoint was written within the waits");
    let mut resume = args.to_vec();
    resume.extend(["--resume", "--stop-after", "0"]);
    let (code, out, err) = cli(&resume);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stopped"), "{out}");
}
