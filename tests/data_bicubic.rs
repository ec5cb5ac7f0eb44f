//! MATLAB-compatible bicubic downscaling against the Set5 `LR_bicubic` references (made with
//! MATLAB `imresize(img, 1/s, 'bicubic')`; copied to fixtures/images/set5, see fixtures/README.md).

use adaptir::data::degrade::{bicubic_downscale, imresize};
use adaptir::data::tolerances::{BICUBIC_MAX_LEVEL_DIFF, BICUBIC_MIN_EQUAL_FRACTION};
use adaptir::data::{load_image, Image, Task};

fn set5(name: &str) -> Image {
    let path = format!("{}/fixtures/images/set5/{name}.png", env!("CARGO_MANIFEST_DIR"));
    load_image(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn downscale_matches_matlab_imresize_on_set5() {
    for name in ["butterfly", "woman"] {
        let hr = set5(name);
        for s in [2usize, 3, 4] {
            let reference = set5(&format!("{name}x{s}"));
            let ours = bicubic_downscale(&hr, s).unwrap();
            assert_eq!((ours.width, ours.height), (reference.width, reference.height), "{name} x{s}: size");
            let (a, b) = (ours.to_u8(), reference.to_u8());
            let equal = a.iter().zip(&b).filter(|(x, y)| x == y).count();
            let max = a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0);
            let frac = equal as f64 / a.len() as f64;
            assert!(frac >= BICUBIC_MIN_EQUAL_FRACTION, "{name} x{s}: {frac} of samples equal");
            assert!(max <= BICUBIC_MAX_LEVEL_DIFF, "{name} x{s}: max diff {max}");
        }
    }
}

#[test]
fn sr_task_mod_crops_first() {
    // woman is 228x344: x3 keeps 228x342.
    let hr = set5("woman");
    let t = Task::Sr(3);
    assert_eq!(t.target(&hr).unwrap().height, 342);
    let lr = t.apply(&hr, 0).unwrap();
    assert_eq!((lr.width, lr.height), (76, 114));
}

#[test]
fn constant_image_stays_constant_and_upscaling_works() {
    let img = Image::new(10, 7, 3, vec![100.0 / 255.0; 210]).unwrap();
    let down = bicubic_downscale(&img, 2).unwrap();
    assert!(down.to_u8().iter().all(|&v| v == 100));
    let up = imresize(&img, 23, 9).unwrap();
    assert_eq!((up.width, up.height), (23, 9));
    assert!(up.to_u8().iter().all(|&v| v == 100));
}
