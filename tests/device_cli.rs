//! `--device`: the default (CPU) build refuses CUDA with exit code 2 and says the feature is missing (never a
//! silent CPU fall back); `adaptir parity` runs the fixtures' parity cases on the CPU.
mod common;

use common::*;

#[cfg(not(feature = "cuda"))]
#[test]
fn default_build_rejects_device_cuda_with_exit_2() {
    let out = std::env::temp_dir().join(format!("adaptir-device-cli-{}.safetensors", std::process::id()));
    let out = out.to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["parity", "--device", "cuda"],
        vec!["parity", "--device", "cuda:1"],
        vec![
            "train",
            "--method",
            "adaptir",
            "--task",
            "denoise30",
            "--backbone",
            "no-such.safetensors",
            "--steps",
            "1",
            "--out",
            out,
            "--device",
            "cuda",
        ],
        vec!["eval", "--adapter", "no-such.safetensors", "--device", "cuda"],
        vec!["pretrain", "--data", "no-such-folder", "--steps", "1", "--out", out, "--device", "cuda"],
        vec![
            "forward",
            "--checkpoint",
            "no-such.safetensors",
            "--input",
            "no-such.safetensors",
            "-o",
            out,
            "--device",
            "cuda",
        ],
    ];
    for args in cases {
        let (code, stdout, stderr) = adaptir_cli(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains("built without the `cuda` feature"), "{args:?}: {stderr}");
        assert!(stderr.contains("scripts/build-cuda.sh"), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
    assert!(!std::path::Path::new(out).exists());
}

#[test]
fn unknown_device_exits_2() {
    let (code, _, stderr) = adaptir_cli(&["parity", "--device", "tpu"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("expected `cpu`, `cuda` or `cuda:N`, found `tpu`"), "{stderr}");
}

#[test]
fn parity_on_cpu_passes() {
    let fixtures = fixture("");
    let (code, stdout, stderr) = adaptir_cli(&["parity", "--device", "cpu", "--fixtures", fixtures.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("parity: all cases pass"), "{stdout}");
    for case in ["block adaptir_block_ipt ", "block adaptir_block_edt h24w48_n1", "model ipt_small task 4"] {
        assert!(stdout.contains(case), "{case}: {stdout}");
    }
}
