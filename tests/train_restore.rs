//! Tiled inference: any size, no seams (an identity and a nearest-neighbour x2 tile function come back exact),
//! and `adaptir eval` on whole images with JSON and side-by-side images.
mod train_util;

use adaptir::restore::{restore_with, Tiling};
use adaptir::tolerance::F32_REL;
use candle_core::{Device, Tensor};
use train_util::{backbone, cli, dir, photo, photos, s};

fn max_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max)
}

#[test]
fn identity_tiles_give_back_the_image_at_any_size() {
    for (w, h) in [(48, 48), (50, 37), (20, 9), (131, 97), (1, 1)] {
        let img = photo(w, h, 3);
        let out = restore_with(48, 1, &img, Tiling::default(), &Device::Cpu, &mut |x| Ok(x.clone())).unwrap();
        assert_eq!((out.width, out.height), (w, h));
        let d = max_diff(&out.data, &img.data);
        assert!(d <= F32_REL, "{w}x{h}: max diff {d}");
    }
}

#[test]
fn upscaling_tiles_blend_without_seams() {
    // Nearest-neighbour x2 per tile: blended, the whole image must be the nearest-neighbour x2 image.
    let img = photo(100, 71, 5);
    let up = |x: &Tensor| -> adaptir::Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let y = x.unsqueeze(3)?.unsqueeze(5)?.broadcast_as((n, c, h, 2, w, 2))?.contiguous()?;
        Ok(y.reshape((n, c, 2 * h, 2 * w))?)
    };
    let out = restore_with(48, 2, &img, Tiling { overlap: 12, batch: 5 }, &Device::Cpu, &mut |x| up(x)).unwrap();
    assert_eq!((out.width, out.height), (200, 142));
    let mut want = vec![0f32; 200 * 142 * 3];
    for y in 0..142 {
        for x in 0..200 {
            for c in 0..3 {
                want[(y * 200 + x) * 3 + c] = img.get(x / 2, y / 2, c);
            }
        }
    }
    let d = max_diff(&out.data, &want);
    assert!(d <= F32_REL, "max diff {d}");
}

#[test]
fn eval_reports_json_and_writes_side_by_side_images() {
    let root = dir("eval");
    backbone(&root.join("bb.safetensors"));
    photos(&root.join("p"), 2, 70, 52);
    let (code, out, err) = cli(&[
        "eval",
        "--backbone",
        s(&root.join("bb.safetensors")),
        "--method",
        "pretrain",
        "--task",
        "sr2",
        "--data",
        s(&root.join("p")),
        "--json",
        "--save-images",
        s(&root.join("shots")),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["task"], "sr2");
    assert!(v["psnr"].is_f64() && v["ssim"].is_f64() && v["baseline_psnr"].is_f64());
    assert_eq!(v["images"].as_array().unwrap().len(), 2);
    let shot = adaptir::data::load_image(root.join("shots/img0.png")).unwrap();
    assert_eq!((shot.width, shot.height), (3 * 70, 52));
}
