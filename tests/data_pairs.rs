//! Paired folders, clean-folder datasets, seeded crops and the 8 dihedral transforms.

use std::path::{Path, PathBuf};

use adaptir::data::crops::{augment_pair, random_crop_pair, Dihedral};
use adaptir::data::io::{save_png, BitDepth};
use adaptir::data::pairs::{match_folders, CleanFolder, PairedFolder};
use adaptir::data::seed::rng_for;
use adaptir::data::{load_image, Image, Task};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(format!("{}/fixtures/images/{rel}", env!("CARGO_MANIFEST_DIR")))
}

fn scratch(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("data_pairs_{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn numbered(w: usize, h: usize) -> Image {
    let data = (0..w * h * 3).map(|i| (i % 251) as f32 / 255.0).collect();
    Image::new(w, h, 3, data).unwrap()
}

fn write(dir: &Path, name: &str, img: &Image) {
    std::fs::create_dir_all(dir).unwrap();
    save_png(dir.join(name), img, BitDepth::Eight).unwrap();
}

#[test]
fn dihedral_transforms_are_the_eight_distinct_group_elements() {
    let img = numbered(5, 3);
    let outs: Vec<Image> = Dihedral::ALL.iter().map(|t| t.apply(&img)).collect();
    for i in 0..8 {
        for j in 0..i {
            assert_ne!(outs[i], outs[j], "{i} and {j} coincide");
        }
        let t = Dihedral::ALL[i];
        assert_eq!(t.inverse().apply(&outs[i]), img, "inverse of {i}");
    }
    // Dihedral(5) is a clockwise quarter turn: the bottom-left pixel goes to the top-left.
    let r = Dihedral(5).apply(&img);
    assert_eq!((r.width, r.height), (3, 5));
    assert_eq!(r.data[..3], img.data[(2 * 5) * 3..(2 * 5) * 3 + 3]);
    // Four quarter turns are the identity.
    let mut x = img.clone();
    for _ in 0..4 {
        x = Dihedral(5).apply(&x);
    }
    assert_eq!(x, img);
}

#[test]
fn pair_crops_are_aligned_seeded_and_checked() {
    let hr = load_image(fixture("set5/butterfly.png")).unwrap();
    let lr = Task::Sr(4).apply(&hr, 0).unwrap();
    let (a, b) = random_crop_pair(&lr, &hr, 16, 4, &mut rng_for(11)).unwrap();
    assert_eq!((a.width, b.width), (16, 64));
    // The HR crop downscaled is the LR crop, away from the crop border (bicubic support).
    let (a2, b2) = random_crop_pair(&lr, &hr, 16, 4, &mut rng_for(11)).unwrap();
    assert_eq!((&a, &b), (&a2, &b2));
    let down = Task::Sr(4).apply(&b, 0).unwrap();
    assert_eq!(down.crop(2, 2, 12, 12).unwrap(), a.crop(2, 2, 12, 12).unwrap());
    let t = Dihedral(6);
    let (ta, tb) = augment_pair(&a, &b, t);
    assert_eq!((ta, tb), (t.apply(&a), t.apply(&b)));
    let e = random_crop_pair(&lr, &hr, 65, 4, &mut rng_for(1)).unwrap_err();
    assert!(e.to_string().contains("at least 65x65"), "{e}");
}

#[test]
fn paired_folders_match_by_stem_and_name_missing_partners() {
    let root = scratch("paired");
    let (noisy, clean) = (root.join("noisy"), root.join("clean"));
    for stem in ["a", "b"] {
        write(&noisy, &format!("{stem}.png"), &numbered(40, 30));
        write(&clean, &format!("{stem}.png"), &numbered(40, 30));
    }
    std::fs::write(noisy.join("readme.txt"), "ignored: not an image extension").unwrap();
    let ds = PairedFolder::open(&noisy, &clean, 1).unwrap();
    assert_eq!(ds.len(), 2);
    let s1 = ds.sample(1, 24, 42).unwrap();
    assert_eq!(s1.name, "b");
    assert_eq!((s1.input.width, s1.target.width), (24, 24));
    let s2 = ds.sample(1, 24, 42).unwrap();
    assert_eq!((s1.input, s1.target), (s2.input, s2.target));
    let e = ds.sample(0, 31, 0).unwrap_err().to_string();
    assert!(e.contains("a.png") && e.contains("31x31"), "{e}");

    write(&noisy, "c.png", &numbered(40, 30));
    let e = match_folders(&noisy, &clean).unwrap_err().to_string();
    assert!(e.contains("c.png") && e.contains("partner"), "{e}");
    let e = PairedFolder::open(&clean, &noisy, 1).unwrap_err().to_string();
    assert!(e.contains("c.png"), "{e}");
}

#[test]
fn paired_folder_checks_the_scale() {
    let root = scratch("scale");
    write(&root.join("lr"), "x.png", &numbered(10, 10));
    write(&root.join("hr"), "x.png", &numbered(30, 30));
    let ok = PairedFolder::open(&root.join("lr"), &root.join("hr"), 3).unwrap();
    let p = ok.sample(0, 8, 0).unwrap();
    assert_eq!((p.input.width, p.target.width), (8, 24));
    let bad = PairedFolder::open(&root.join("lr"), &root.join("hr"), 2).unwrap();
    assert!(bad.load(0).unwrap_err().to_string().contains("2 times"));
}

#[test]
fn clean_folder_synthesises_seeded_pairs() {
    let root = scratch("clean");
    write(&root, "one.png", &load_image(fixture("metrics/coffee_clean.png")).unwrap());
    let ds = CleanFolder::open(&root, Task::Sr(2)).unwrap();
    let a = ds.sample(0, 24, 5).unwrap();
    assert_eq!((a.input.width, a.target.width), (24, 48));
    let b = ds.sample(0, 24, 5).unwrap();
    assert_eq!((&a.input, &a.target), (&b.input, &b.target));
    let c = ds.sample(0, 24, 6).unwrap();
    assert_ne!(a.target, c.target);
    let e = ds.sample(0, 40, 5).unwrap_err().to_string();
    assert!(e.contains("one.png") && e.contains("80x80"), "{e}");
    let empty = scratch("empty");
    assert!(CleanFolder::open(&empty, Task::Sr(2)).is_err());
}
