//! `adaptir degrade` and `adaptir metrics` through the binary: outputs, exit code 2 on bad input with
//! the file named, nothing half-written, no panic.

use std::path::PathBuf;
use std::process::Command;

fn adaptir(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_adaptir")).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

fn fixture(rel: &str) -> String {
    format!("{}/fixtures/images/{rel}", env!("CARGO_MANIFEST_DIR"))
}

fn scratch(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("data_cli_bin_{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn degrade_writes_pngs_named_by_stem() {
    let out = scratch("ok").join("out");
    let o = out.to_str().unwrap();
    let (code, stdout, stderr) = adaptir(&[
        "degrade",
        "--task",
        "lr4-jpeg30",
        &fixture("set5/butterfly.png"),
        &fixture("metrics"),
        "-o",
        o,
        "--seed",
        "7",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("wrote 7 image(s)"), "{stdout}");
    let lr = adaptir::data::load_image(out.join("butterfly.png")).unwrap();
    assert_eq!((lr.width, lr.height), (64, 64));
}

#[test]
fn degrade_bad_input_exits_2_naming_the_file() {
    let dir = scratch("bad");
    let out = dir.join("out");
    let o = out.to_str().unwrap();
    let truncated = dir.join("cut.png");
    let bytes = std::fs::read(fixture("metrics/coffee_clean.png")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let not_image = dir.join("notes.jpg");
    std::fs::write(&not_image, "hello").unwrap();
    let missing = dir.join("missing.png");
    let good = fixture("metrics/coffee_clean.png");
    for (args, needle) in [
        (vec!["--task", "sr9", good.as_str()], "sr9"),
        (vec!["--task", "sr2", missing.to_str().unwrap()], "missing.png"),
        (vec!["--task", "sr2", good.as_str(), not_image.to_str().unwrap()], "notes.jpg"),
        (vec!["--task", "noise30", good.as_str(), truncated.to_str().unwrap()], "cut.png"),
        (vec!["--task", "sr2", &fixture("io/bomb_100000x100000.png")], "pixels"),
    ] {
        let mut full = vec!["degrade"];
        full.extend(args.iter());
        full.extend(["-o", o]);
        let (code, _, stderr) = adaptir(&full);
        assert_eq!(code, 2, "{full:?}: {stderr}");
        assert!(stderr.contains(needle), "{full:?}: {stderr}");
        // The truncated file passes the header check, so its partner may be written, whole; the
        // truncated one never is, and no temporary file is left.
        if out.exists() {
            for e in std::fs::read_dir(&out).unwrap() {
                let name = e.unwrap().file_name().into_string().unwrap();
                assert_eq!(name, "coffee_clean.png", "{full:?}: left {name}");
            }
        }
    }
    let blocker = dir.join("blocker");
    std::fs::write(&blocker, "x").unwrap();
    let (code, _, stderr) = adaptir(&["degrade", "--task", "sr2", &good, "-o", blocker.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("blocker"), "{stderr}");
}

#[test]
fn metrics_prints_json_and_rejects_bad_pairs() {
    let (code, stdout, stderr) = adaptir(&[
        "metrics",
        &fixture("metrics/astronaut_clean.png"),
        &fixture("metrics/astronaut_noisy15.png"),
        "--y",
        "--crop",
        "4",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(v["psnr"].as_f64().is_some() && v["ssim"].as_f64().is_some(), "{stdout}");
    assert_eq!(v["images"].as_array().map(Vec::len), Some(1));

    let (code, _, stderr) =
        adaptir(&["metrics", &fixture("metrics/astronaut_clean.png"), &fixture("metrics/coffee_clean.png")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("coffee_clean.png"), "{stderr}");

    let dir = scratch("metrics");
    let (a, b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::copy(fixture("metrics/coffee_clean.png"), a.join("x.png")).unwrap();
    std::fs::copy(fixture("metrics/coffee_blur.png"), b.join("x.png")).unwrap();
    std::fs::copy(fixture("metrics/coffee_blur.png"), b.join("extra.png")).unwrap();
    let (code, _, stderr) = adaptir(&["metrics", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("extra.png"), "{stderr}");
}
