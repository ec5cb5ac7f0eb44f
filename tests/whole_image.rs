//! Whole-image exports (`export --whole-image`): one image of any size in, the restored image out, tiling and
//! blending inside the graph. In ONNX Runtime the file must equal `adaptir restore` with the candle engine on
//! the same image within `WHOLE_IMAGE_ABS` on [0, 1], for sizes from one pixel to several tiles each way, for
//! a 1x task and an x4 task; and `validate` must pass it.
mod common;

use std::path::{Path, PathBuf};

use adaptir::compile::export::{export, image_to_nchw, ExportArgs};
use adaptir::compile::target::Target;
use adaptir::data::Image;
use adaptir::peft::file::AdapterFile;
use adaptir::restore::{restore, Tiling};
use adaptir::runtime::{RunOptions, Session};
use adaptir::tolerance::WHOLE_IMAGE_ABS;
use adaptir_ops::graph::FftLowering;
use candle_core::Device;
use common::*;

fn shipped(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/ipt-tiny").join(name)
}

fn export_whole_image(adapter: &Path, out: &Path, target: Target, fp16: bool, overlap: usize) {
    let backbone = shipped("backbone.safetensors");
    export(&ExportArgs {
        adapter: Some(adapter),
        backbone: Some(&backbone),
        config: None,
        task: None,
        output: Some(out),
        fft: FftLowering::MatMul,
        target,
        inline_functions: false,
        spectral: None,
        whole_image: Some(Tiling { batch: adaptir::compile::whole_image::DEFAULT_MAX_TILES, overlap }),
        fp16,
        no_passes: false,
        extra_passes: &[],
        golden: None,
        int8: None,
    })
    .unwrap();
}

fn seeded_image(w: usize, h: usize, seed: u64) -> Image {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    Image::new(w, h, 3, (0..w * h * 3).map(|_| rng.random::<f32>()).collect()).unwrap()
}

fn check_against_restore(adapter_name: &str, overlap: usize, sizes: &[(usize, usize)]) {
    let dir = tempdir(&format!("{adapter_name}-{overlap}"));
    let adapter = shipped(adapter_name);
    let onnx = dir.join("whole.onnx");
    export_whole_image(&adapter, &onnx, Target::Portable, false, overlap);
    let a = AdapterFile::load(&adapter).unwrap();
    let config = a.ipt_config("the test").unwrap().clone();
    let task = adaptir::backbone::config::task_index(&a.meta.task).unwrap();
    let model = adaptir::model::build_model(
        &shipped("backbone.safetensors"),
        &config,
        Some(&a),
        candle_core::DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let scale = config.scales[task];
    let mut session = Session::new(&onnx, &RunOptions { threads: Some(2), ..Default::default() }).unwrap();
    for (k, &(w, h)) in sizes.iter().enumerate() {
        let img = seeded_image(w, h, 100 + k as u64);
        let want = restore(&model, task, &img, Tiling { overlap, ..Default::default() }, &Device::Cpu).unwrap();
        let out = session.run(&[("image", image_to_nchw(&img).unwrap())]).unwrap();
        let got = &out[0].1;
        assert_eq!(got.dims(), &[1, 3, h * scale, w * scale], "{adapter_name} {w}x{h}");
        let err = max_abs_diff(got, &image_to_nchw(&want).unwrap());
        eprintln!(
            "{adapter_name} {w}x{h} (x{scale}, overlap {overlap}): whole-image graph in ORT vs restore {err:.3e}"
        );
        assert!(err <= WHOLE_IMAGE_ABS, "{adapter_name} {w}x{h}: {err:e}");
    }
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("adaptir-whole-image-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn derain_whole_image_equals_restore_for_any_size() {
    // One pixel, thinner than a tile, exactly a tile, odd sizes, several tiles each way.
    for overlap in [8, 16] {
        check_against_restore(
            "derain.safetensors",
            overlap,
            &[(1, 1), (70, 5), (48, 48), (71, 45), (33, 97), (130, 64)],
        );
    }
}

#[test]
fn x4_whole_image_equals_restore() {
    check_against_restore("lr4-noise30.safetensors", 8, &[(2, 3), (37, 50)]);
}

#[test]
fn whole_image_cli_export_validates_and_meets_the_tensorrt_matrix() {
    let dir = tempdir("cli");
    let out = dir.join("derain-whole.onnx");
    let adapter = shipped("derain.safetensors");
    let (code, o, e) = adaptir_cli(&[
        "export",
        "--adapter",
        adapter.to_str().unwrap(),
        "--whole-image",
        "--target",
        "tensorrt",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{o}{e}");
    assert!(o.contains("target tensorrt"), "{o}");
    let (code, o, e) = adaptir_cli(&["validate", out.to_str().unwrap(), "--adapter", adapter.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    assert!(o.contains("restore"), "the reference is the tiled restoration: {o}");
}

/// `restore --onnx WHOLE.onnx` runs a whole-image export directly (ONNX Runtime and tract), equal to the candle
/// engine up to 8-bit rounding; an image with more tiles than the file allows, or another overlap, is refused
/// with exit 2 before anything is written.
#[test]
fn restore_runs_whole_image_exports_and_refuses_images_beyond_their_bound() {
    let dir = tempdir("restore");
    let adapter = shipped("derain.safetensors");
    let a = adapter.to_str().unwrap();
    let img = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/images/metrics/baboon_clean.png");
    let img = img.to_str().unwrap();
    let whole = dir.join("whole.onnx");
    let small = dir.join("whole-max1.onnx");
    for (out, max) in [(&whole, "1024"), (&small, "1")] {
        let (code, o, e) =
            adaptir_cli(&["export", "--adapter", a, "--whole-image", "--max-tiles", max, "-o", out.to_str().unwrap()]);
        assert_eq!(code, 0, "{o}{e}");
    }
    let candle = dir.join("candle.png");
    let (code, o, e) =
        adaptir_cli(&["restore", "--adapter", a, img, "-o", candle.to_str().unwrap(), "--engine", "candle"]);
    assert_eq!(code, 0, "{o}{e}");
    let reference = image::open(&candle).unwrap().to_rgb8();
    for engine in ["onnx", "tract"] {
        let out = dir.join(format!("{engine}.png"));
        let (code, o, e) = adaptir_cli(&[
            "restore",
            "--adapter",
            a,
            img,
            "-o",
            out.to_str().unwrap(),
            "--engine",
            engine,
            "--onnx",
            whole.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{engine}: {o}{e}");
        let got = image::open(&out).unwrap().to_rgb8();
        assert_eq!(got.dimensions(), reference.dimensions());
        let worst = got.as_raw().iter().zip(reference.as_raw()).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
        assert!(worst <= 1, "{engine}: {worst} levels from the candle engine");
    }
    let refused = dir.join("refused.png");
    let (code, o, e) = adaptir_cli(&[
        "restore",
        "--adapter",
        a,
        img,
        "-o",
        refused.to_str().unwrap(),
        "--engine",
        "onnx",
        "--onnx",
        small.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{o}{e}");
    assert!(e.contains("4 tiles") && e.contains("at most 1") && e.contains("--max-tiles"), "{e}");
    let (code, _, e) = adaptir_cli(&[
        "restore",
        "--adapter",
        a,
        img,
        "-o",
        refused.to_str().unwrap(),
        "--engine",
        "onnx",
        "--onnx",
        whole.to_str().unwrap(),
        "--overlap",
        "16",
    ]);
    assert_eq!(code, 2, "{e}");
    assert!(e.contains("overlap 8"), "{e}");
    assert!(!refused.exists(), "nothing is written when the restore is refused");
}
