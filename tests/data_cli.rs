//! The commands `adaptir degrade` and `adaptir metrics`, called in process.

use std::path::{Path, PathBuf};

use adaptir::commands::degrade::degrade;
use adaptir::commands::{metrics, Report};
use adaptir::data::load_image;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(format!("{}/fixtures/images/{rel}", env!("CARGO_MANIFEST_DIR")))
}

/// `adaptir metrics A B [--y] [--crop N] [--json]`: what it prints.
fn metrics_cli(a: &Path, b: &Path, y: bool, crop: usize, json: bool) -> adaptir::Result<String> {
    let args = metrics::Args { a: a.to_path_buf(), b: b.to_path_buf(), y, crop, json };
    Ok(metrics::run(&args)?.render())
}

fn scratch(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("data_cli_{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn degrade_writes_one_png_per_stem_reproducibly() {
    let out = scratch("degrade").join("out");
    let inputs = vec![fixture("metrics"), fixture("set5/butterfly.png")];
    let written = degrade("sr4", &inputs, &out, 3).unwrap();
    assert_eq!(written.len(), 7);
    let b = load_image(out.join("butterfly.png")).unwrap();
    assert_eq!((b.width, b.height), (64, 64));
    // Noise for one file depends on the seed and its stem, not on the other inputs.
    let one = scratch("degrade_one").join("out");
    degrade("noise25", &[fixture("metrics/coffee_clean.png")], &one, 3).unwrap();
    let both = scratch("degrade_both").join("out");
    degrade("noise25", &[fixture("metrics/baboon_clean.png"), fixture("metrics/coffee_clean.png")], &both, 3).unwrap();
    assert_eq!(load_image(one.join("coffee_clean.png")).unwrap(), load_image(both.join("coffee_clean.png")).unwrap());
    let other_seed = scratch("degrade_seed").join("out");
    degrade("noise25", &[fixture("metrics/coffee_clean.png")], &other_seed, 4).unwrap();
    assert_ne!(
        load_image(one.join("coffee_clean.png")).unwrap(),
        load_image(other_seed.join("coffee_clean.png")).unwrap()
    );
}

#[test]
fn degrade_refuses_bad_input_before_writing_anything() {
    let dir = scratch("bad");
    let out = dir.join("out");
    let good = fixture("metrics/coffee_clean.png");
    let cases: Vec<(Vec<PathBuf>, &str, &str)> = vec![
        (vec![good.clone(), dir.join("missing.png")], "sr2", "missing.png"),
        (vec![good.clone(), fixture("io/bomb_100000x100000.png")], "sr2", "bomb_100000x100000.png"),
        (vec![good.clone(), fixture("io/rgb8.png"), fixture("io/rgb8.bmp")], "sr2", "rgb8"),
        (vec![good.clone()], "sr7", "--task"),
        (vec![], "sr2", "inputs"),
    ];
    for (inputs, task, needle) in cases {
        let e = degrade(task, &inputs, &out, 0).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
        assert!(!out.exists(), "{e}: output folder created");
    }
    // An output "folder" that is a file.
    let blocker = dir.join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let e = degrade("sr2", std::slice::from_ref(&good), &blocker, 0).unwrap_err().to_string();
    assert!(e.contains("cannot write") && e.contains("file"), "{e}");
    // An image too small for the task.
    let e = degrade("sr4", &[fixture("io/rgb8.png")], &out, 0);
    assert!(e.is_ok(), "16x12 is fine for x4");
    let tiny = dir.join("tiny.png");
    adaptir::data::save_png(&tiny, &adaptir::data::Image::zeros(3, 3, 3), adaptir::data::BitDepth::Eight).unwrap();
    let e = degrade("sr4", &[tiny], &dir.join("out2"), 0).unwrap_err().to_string();
    assert!(e.contains("tiny.png") && e.contains("at least 4x4"), "{e}");
    assert!(!dir.join("out2/tiny.png").exists());
}

#[test]
fn metrics_cli_on_files_and_folders() {
    let dir = scratch("metrics");
    let (a, b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    for (src, name) in [("astronaut_clean", "astro"), ("coffee_clean", "coffee")] {
        std::fs::copy(fixture(&format!("metrics/{src}.png")), a.join(format!("{name}.png"))).unwrap();
    }
    std::fs::copy(fixture("metrics/astronaut_noisy15.png"), b.join("astro.png")).unwrap();
    std::fs::copy(fixture("metrics/coffee_clean.png"), b.join("coffee.png")).unwrap();
    let json = metrics_cli(&a, &b, true, 4, true).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(images[0]["name"], "astro");
    assert!(images[1]["psnr"].is_null(), "identical images: infinite PSNR is null");
    assert_eq!(images[1]["ssim"], 1.0);
    // Reference: tests/metrics.rs (scikit-image), astronaut Y crop 4.
    let p = images[0]["psnr"].as_f64().unwrap();
    assert!((p - 29.5934937923).abs() < adaptir::data::tolerances::PSNR_VS_REFERENCE_DB);
    let text = metrics_cli(&a.join("astro.png"), &b.join("astro.png"), false, 0, false).unwrap();
    assert!(text.contains("PSNR 24.79"), "{text}");

    std::fs::remove_file(b.join("coffee.png")).unwrap();
    let e = metrics_cli(&a, &b, true, 4, true).unwrap_err().to_string();
    assert!(e.contains("coffee.png") && e.contains("partner"), "{e}");
    let e = metrics_cli(&a.join("astro.png"), &a.join("coffee.png"), true, 0, true).unwrap_err().to_string();
    assert!(e.contains("astro.png") && e.contains("coffee.png") && e.contains("same size"), "{e}");
    let e = metrics_cli(&a, &a.join("astro.png"), true, 0, true).unwrap_err().to_string();
    assert!(e.contains("two image files or two folders"), "{e}");
}
