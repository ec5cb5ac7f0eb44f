//! `adaptir restore`: both engines give the same image within the f32 tolerance before quantisation (compiled in
//! memory and from an exported file); any size; 8/16-bit PNG, JPEG, grayscale in and out; alpha passed through;
//! SR output scale times larger; bad input exits 2 and writes nothing. Needs ONNX Runtime (scripts/setup-ort.sh).
mod common;

use std::path::{Path, PathBuf};

use adaptir::data::Image;
use adaptir::restore::{tile_count, Tiling};
use adaptir::runtime::restorer::{Engine, Restorer, RestorerArgs};
use adaptir::runtime::{compare, RunOptions, Tolerance};
use candle_core::{Device, Tensor};
use common::*;

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("adaptir-restore-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// (backbone, derain adapter, sr2 adapter).
fn files() -> (PathBuf, PathBuf, PathBuf) {
    static ONCE: std::sync::OnceLock<(PathBuf, PathBuf, PathBuf)> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let (w, _) = small_backbone_files(&dir());
        let (a, sr) = (dir().join("derain.safetensors"), dir().join("sr2.safetensors"));
        write_adapter("adaptir", "derain", &w, &a);
        write_adapter("adaptir", "sr2", &w, &sr);
        (w, a, sr)
    })
    .clone()
}

/// A smooth test picture with some texture, `w x h`, RGB in [0, 1].
fn picture(w: usize, h: usize) -> Image {
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
            let t = ((x * 7 + y * 3) % 11) as f32 / 40.0;
            data.extend_from_slice(&[0.2 + 0.6 * u, 0.3 + 0.5 * v * u + t * 0.5, 0.8 - 0.5 * v + t * 0.3]);
        }
    }
    Image::new(w, h, 3, data).unwrap()
}

fn as_tensor(img: &Image) -> Tensor {
    Tensor::from_vec(img.data.clone(), (img.height, img.width, 3), &Device::Cpu).unwrap()
}

fn restorer(adapter: &Path, backbone: &Path, engine: Engine, onnx: Option<&Path>) -> Restorer {
    Restorer::new(&RestorerArgs {
        adapter,
        backbone: Some(backbone),
        engine,
        onnx,
        run: RunOptions { threads: Some(1), ..Default::default() },
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn both_engines_agree_within_the_f32_tolerance() {
    let (w, a, sr) = files();
    let exported = dir().join("derain.onnx");
    let (code, _, err) = adaptir_cli(&["export", "--adapter", s(&a), "--backbone", s(&w), "-o", s(&exported)]);
    assert_eq!(code, 0, "{err}");
    let tiling = Tiling { overlap: 8, batch: 4 };
    for (adapter, size, scale) in [(&a, (101, 67), 1), (&sr, (53, 50), 2)] {
        let img = picture(size.0, size.1);
        let mut tiles = 0;
        let candle = restorer(adapter, &w, Engine::Candle, None).restore(&img, tiling, &mut |n| tiles = n).unwrap();
        assert_eq!(tiles, tile_count(size.0, size.1, 48, 8), "progress counts every tile");
        let onnx = restorer(adapter, &w, Engine::Onnx, None).restore(&img, tiling, &mut |_| {}).unwrap();
        assert_eq!((candle.width, candle.height), (size.0 * scale, size.1 * scale));
        let c = compare("restored image", &as_tensor(&onnx), &as_tensor(&candle), Tolerance::F32).unwrap();
        eprintln!("{} {}x{}: onnx vs candle {c}", adapter.display(), size.0, size.1);
        assert!(c.passed, "{c}");
        if scale == 1 {
            let file = restorer(adapter, &w, Engine::Onnx, Some(&exported)).restore(&img, tiling, &mut |_| {}).unwrap();
            let c = compare("restored image", &as_tensor(&file), &as_tensor(&candle), Tolerance::F32).unwrap();
            eprintln!("exported file vs candle {c}");
            assert!(c.passed, "{c}");
        }
    }
}

fn write_png(path: &Path, w: u32, h: u32, color: image::ExtendedColorType, bytes: &[u8]) {
    use image::ImageEncoder;
    let f = std::fs::File::create(path).unwrap();
    image::codecs::png::PngEncoder::new(f).write_image(bytes, w, h, color).unwrap();
}

#[test]
fn formats_alpha_gray_and_sr_through_the_cli() {
    let (w, a, sr) = files();
    let d = dir();
    let (iw, ih) = (70u32, 45u32);
    let pic = picture(iw as usize, ih as usize);
    // 16-bit RGBA with a varying alpha.
    let alpha16: Vec<u16> = (0..iw * ih).map(|i| ((i * 997) % 65536) as u16).collect();
    let rgba16: Vec<u8> = pic
        .data
        .chunks_exact(3)
        .zip(&alpha16)
        .flat_map(|(p, &al)| {
            let mut v: Vec<u16> = p.iter().map(|&x| (x * 65535.0).round() as u16).collect();
            v.push(al);
            v.into_iter().flat_map(|x| x.to_ne_bytes())
        })
        .collect();
    let in16 = d.join("rgba16.png");
    write_png(&in16, iw, ih, image::ExtendedColorType::Rgba16, &rgba16);
    // 8-bit grayscale and a JPEG.
    let gray: Vec<u8> = pic.data.chunks_exact(3).map(|p| (p[1] * 255.0).round() as u8).collect();
    let in_gray = d.join("gray.png");
    write_png(&in_gray, iw, ih, image::ExtendedColorType::L8, &gray);
    let in_jpg = d.join("photo.jpg");
    image::RgbImage::from_raw(iw, ih, pic.to_u8()).unwrap().save(&in_jpg).unwrap();

    let run = |input: &Path, adapter: &Path, out: &Path, engine: &str| {
        let (code, text, err) = adaptir_cli(&[
            "restore",
            "--adapter",
            s(adapter),
            "--backbone",
            s(&w),
            s(input),
            "-o",
            s(out),
            "--engine",
            engine,
        ]);
        assert_eq!(code, 0, "{text}\n{err}");
        eprintln!("{}", text.trim());
        image::open(out).unwrap()
    };
    for engine in ["candle", "onnx"] {
        let out = run(&in16, &a, &d.join(format!("rgba16-{engine}.png")), engine);
        assert_eq!(out.color(), image::ColorType::Rgba16);
        assert_eq!((out.width(), out.height()), (iw, ih));
        let kept: Vec<u16> = out.to_rgba16().into_raw().chunks_exact(4).map(|p| p[3]).collect();
        assert_eq!(kept, alpha16, "alpha passed through unchanged");

        let out = run(&in_gray, &a, &d.join(format!("gray-{engine}.png")), engine);
        assert_eq!(out.color(), image::ColorType::L8);

        let out = run(&in_jpg, &a, &d.join(format!("jpg-{engine}.png")), engine);
        assert_eq!(out.color(), image::ColorType::Rgb8);
    }
    // SR: scale times larger, alpha resized with it.
    let out = run(&in16, &sr, &d.join("rgba16-sr2.png"), "onnx");
    assert_eq!((out.width(), out.height()), (2 * iw, 2 * ih));
    assert_eq!(out.color(), image::ColorType::Rgba16);
    // The default output path: <stem>_<task>.png beside the input.
    let (code, _, err) = adaptir_cli(&["restore", "--adapter", s(&a), "--backbone", s(&w), s(&in_jpg), "--quiet"]);
    assert_eq!(code, 0, "{err}");
    assert!(d.join("photo_derain.png").is_file());
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let (w, a, _) = files();
    let d = dir().join("bad");
    std::fs::create_dir_all(&d).unwrap();
    let not_image = d.join("notes.png");
    std::fs::write(&not_image, "not a picture").unwrap();
    let good = d.join("good.png");
    adaptir::data::save_png(&good, &picture(20, 20), adaptir::data::BitDepth::Eight).unwrap();
    let out = d.join("out.png");
    let bomb = fixture("images/io/bomb_100000x100000.png");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![s(&not_image)], "not a supported image"),
        (vec![s(&bomb)], "pixels"),
        (vec!["/nonexistent/photo.png"], "nonexistent"),
        (vec![s(&good), "--tile", "32"], "--tile 32"),
        (vec![s(&good), "--overlap", "7"], "--overlap"),
        (vec![s(&good), "--overlap", "48"], "--overlap 48"),
        (vec![s(&good), "--engine", "tensorrt"], "--engine"),
        (vec![s(&good), "--onnx", s(&not_image), "--engine", "onnx"], "ONNX"),
        (vec![s(&good), "--onnx", s(&not_image)], "--onnx needs --engine onnx"),
        (vec![s(&good), "--ep", "cuda"], "--engine onnx --ep cuda"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["restore", "--adapter", s(&a), "--backbone", s(&w), "-o", s(&out), "--quiet"];
        args.extend(extra);
        let (code, _, err) = adaptir_cli(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: `{needle}` not in {err}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
    let jpg_out = d.join("out.jpg");
    let (code, _, err) =
        adaptir_cli(&["restore", "--adapter", s(&a), "--backbone", s(&w), s(&good), "-o", s(&jpg_out)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(".png"), "{err}");
    let (code, _, err) = adaptir_cli(&["restore", "--adapter", s(&w), s(&good), "-o", s(&out)]);
    assert_eq!(code, 2, "{err}");
    let lonely = d.join("lonely-adapter.safetensors");
    std::fs::copy(&a, &lonely).unwrap();
    let (code, _, err) = adaptir_cli(&["restore", "--adapter", s(&lonely), s(&good), "-o", s(&out)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--backbone"), "{err}");
    assert!(!out.exists() && !jpg_out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 3, "only the inputs remain: {leftovers:?}");
}

#[test]
fn any_size_from_one_pixel_to_a_thin_strip() {
    let (w, a, sr) = files();
    let tiling = Tiling { overlap: 8, batch: 16 };
    for (adapter, scale) in [(&a, 1), (&sr, 2)] {
        let mut r = restorer(adapter, &w, Engine::Onnx, None);
        for (iw, ih) in [(1, 1), (300, 1), (2, 49), (48, 48)] {
            let out = r.restore(&picture(iw, ih), tiling, &mut |_| {}).unwrap();
            assert_eq!((out.width, out.height), (iw * scale, ih * scale));
            assert!(out.data.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
        }
    }
}
