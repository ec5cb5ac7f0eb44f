//! Image loading / saving policy (docs/data.md, "Image policy") and bad input.

use std::path::PathBuf;

use adaptir::data::io::{probe_image, save_png, BitDepth, LoadOptions};
use adaptir::data::{load_image, load_image_with, DataError, Image};

fn io_fixture(name: &str) -> PathBuf {
    PathBuf::from(format!("{}/fixtures/images/io/{name}", env!("CARGO_MANIFEST_DIR")))
}

fn scratch(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("data_io_{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn lossless_formats_agree_and_are_rgb() {
    let png = load_image(io_fixture("rgb8.png")).unwrap();
    assert_eq!((png.width, png.height, png.channels), (16, 12, 3));
    for f in ["rgb8.bmp", "rgb8.tif"] {
        assert_eq!(load_image(io_fixture(f)).unwrap(), png, "{f}");
    }
    let jpg = load_image(io_fixture("rgb8.jpg")).unwrap();
    assert_eq!((jpg.width, jpg.height, jpg.channels), (16, 12, 3));
}

#[test]
fn grayscale_is_replicated_and_alpha_dropped() {
    let gray = load_image(io_fixture("gray8.png")).unwrap();
    assert_eq!(gray.channels, 3);
    for p in gray.data.chunks_exact(3) {
        assert!(p[0] == p[1] && p[1] == p[2]);
    }
    assert_eq!(load_image(io_fixture("la8.png")).unwrap(), gray);
    assert_eq!(load_image(io_fixture("rgba8.png")).unwrap(), load_image(io_fixture("rgb8.png")).unwrap());
}

#[test]
fn sixteen_bit_precision_is_kept() {
    let g = load_image(io_fixture("gray16.png")).unwrap();
    // Some samples are not on the 8-bit grid: the 16-bit values were not truncated.
    let off_grid = g.data.iter().filter(|&&v| ((v as f64) * 255.0 - ((v as f64) * 255.0).round()).abs() > 1e-3).count();
    assert!(off_grid > 0);
    // 16-bit round trip through save_png is exact.
    let dir = scratch("sixteen");
    let out = dir.join("g16.png");
    save_png(&out, &g, BitDepth::Sixteen).unwrap();
    assert_eq!(load_image(&out).unwrap().to_u16(), g.to_u16());
}

#[test]
fn decompression_bomb_is_refused_from_the_header() {
    let path = io_fixture("bomb_100000x100000.png");
    match load_image(&path) {
        Err(DataError::TooLarge { path: p, width, height, .. }) => {
            assert_eq!(p, path);
            assert_eq!((width, height), (100_000, 100_000));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let e = probe_image(&path, &LoadOptions::default()).unwrap_err();
    assert!(e.to_string().contains("bomb_100000x100000.png"), "{e}");
    // A lower limit refuses ordinary images too.
    let small = LoadOptions { max_pixels: 100 };
    let e = load_image_with(io_fixture("rgb8.png"), &small).unwrap_err();
    assert!(matches!(e, DataError::TooLarge { .. }), "{e}");
}

#[test]
fn bad_files_are_errors_that_name_the_file() {
    let dir = scratch("bad");
    let empty = dir.join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.join("notes.png");
    std::fs::write(&text, b"this is not an image at all").unwrap();
    let truncated = dir.join("truncated.png");
    let full =
        std::fs::read(format!("{}/fixtures/images/metrics/coffee_clean.png", env!("CARGO_MANIFEST_DIR"))).unwrap();
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    let truncated_jpg = dir.join("truncated.jpg");
    let jpg =
        std::fs::read(format!("{}/fixtures/images/jpeg/chelsea_256_q30_pil.jpg", env!("CARGO_MANIFEST_DIR"))).unwrap();
    std::fs::write(&truncated_jpg, &jpg[..40]).unwrap();
    let missing = dir.join("missing.png");
    let folder = dir.join("folder.png");
    std::fs::create_dir_all(&folder).unwrap();
    for (path, kind) in [
        (&folder, "found a folder"),
        (&empty, "empty"),
        (&text, "not a supported image"),
        (&truncated, "cannot decode PNG"),
        (&truncated_jpg, "cannot decode JPEG"),
        (&missing, "cannot read"),
    ] {
        let e = load_image(path).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(kind), "{msg}");
    }
}

#[test]
fn save_is_atomic_and_reports_the_path() {
    let dir = scratch("save");
    let img = load_image(io_fixture("rgb8.png")).unwrap();
    let out = dir.join("x.png");
    save_png(&out, &img, BitDepth::Eight).unwrap();
    assert_eq!(load_image(&out).unwrap(), img);
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "temporary files left: {names:?}");
    let bad = dir.join("no/such/dir/x.png");
    let e = save_png(&bad, &img, BitDepth::Eight).unwrap_err();
    assert!(e.to_string().contains("no/such/dir/x.png"), "{e}");
    assert!(!bad.exists());
    let two = Image::zeros(4, 4, 2);
    assert!(save_png(dir.join("two.png"), &two, BitDepth::Eight).is_err());
}

#[test]
fn chw_layout_round_trips() {
    let img = load_image(io_fixture("rgb8.png")).unwrap();
    let chw = img.to_chw();
    // First plane is red: pixel 1's red sample sits at index 1.
    assert_eq!(chw[1], img.data[3]);
    assert_eq!(chw[img.pixels()], img.data[1]);
    assert_eq!(Image::from_chw(16, 12, 3, &chw).unwrap(), img);
    assert!(Image::from_chw(16, 12, 3, &chw[1..]).is_err());
}
