//! PSNR / SSIM against scikit-image on fixture pairs.
//!
//! Reference values: `python fixtures/images/reference_metrics.py` with scikit-image 0.26.0,
//! numpy 2.4.6, pillow 13.0.0, i.e.
//! `skimage.metrics.peak_signal_noise_ratio(a, b, data_range=255)` and
//! `skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
//! use_sample_covariance=False, data_range=255, channel_axis=2)` (`channel_axis=None` on Y), on
//! float64 arrays; Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 on 0-255 RGB; the crop is
//! `a[c:-c, c:-c]`.

use adaptir::data::load_image;
use adaptir::data::tolerances::{PSNR_VS_REFERENCE_DB, SSIM_VS_REFERENCE};
use adaptir::data::Image;
use adaptir::metrics::{evaluate, psnr, ssim, MetricOptions};

fn fixture(name: &str) -> Image {
    let path = format!("{}/fixtures/images/metrics/{name}.png", env!("CARGO_MANIFEST_DIR"));
    load_image(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// (a, b, y_channel, crop, PSNR, SSIM) from scikit-image (see the module comment).
const REFERENCE: &[(&str, &str, bool, usize, f64, f64)] = &[
    ("astronaut_clean", "astronaut_noisy15", false, 0, 24.7989329736, 0.6096044676),
    ("astronaut_clean", "astronaut_noisy15", false, 4, 24.7884541312, 0.5978606509),
    ("astronaut_clean", "astronaut_noisy15", true, 0, 29.5887567703, 0.7642907508),
    ("astronaut_clean", "astronaut_noisy15", true, 4, 29.5934937923, 0.7550941680),
    ("coffee_clean", "coffee_blur", false, 0, 32.5258811467, 0.9111732401),
    ("coffee_clean", "coffee_blur", false, 4, 32.4241701711, 0.9060896769),
    ("coffee_clean", "coffee_blur", true, 0, 34.4573147198, 0.9374368581),
    ("coffee_clean", "coffee_blur", true, 4, 34.3751435384, 0.9328403318),
    ("baboon_clean", "baboon_jpeg20", false, 0, 24.5961639246, 0.6117578909),
    ("baboon_clean", "baboon_jpeg20", false, 4, 24.4139063756, 0.5899416229),
    ("baboon_clean", "baboon_jpeg20", true, 0, 31.8971038966, 0.8051307974),
    ("baboon_clean", "baboon_jpeg20", true, 4, 31.7969572789, 0.8034604825),
];

#[test]
fn psnr_and_ssim_match_scikit_image() {
    let (mut worst_psnr, mut worst_ssim) = (0.0f64, 0.0f64);
    for &(a, b, y, crop, ref_psnr, ref_ssim) in REFERENCE {
        let (ia, ib) = (fixture(a), fixture(b));
        let opts = MetricOptions { y_channel: y, crop_border: crop };
        let s = evaluate(&ia, &ib, &opts).unwrap();
        assert!(
            (s.psnr - ref_psnr).abs() <= PSNR_VS_REFERENCE_DB,
            "{a} vs {b} y={y} crop={crop}: PSNR {} vs scikit-image {ref_psnr}",
            s.psnr
        );
        assert!(
            (s.ssim - ref_ssim).abs() <= SSIM_VS_REFERENCE,
            "{a} vs {b} y={y} crop={crop}: SSIM {} vs scikit-image {ref_ssim}",
            s.ssim
        );
        assert_eq!(psnr(&ia, &ib, &opts).unwrap(), s.psnr);
        assert_eq!(ssim(&ia, &ib, &opts).unwrap(), s.ssim);
        worst_psnr = worst_psnr.max((s.psnr - ref_psnr).abs());
        worst_ssim = worst_ssim.max((s.ssim - ref_ssim).abs());
    }
    println!(
        "{} cases: max |PSNR - scikit-image| {worst_psnr:.2e} dB, max |SSIM - scikit-image| {worst_ssim:.2e}",
        REFERENCE.len()
    );
}

#[test]
fn identical_images_give_infinite_psnr_and_unit_ssim() {
    let a = fixture("coffee_clean");
    let s = evaluate(&a, &a, &MetricOptions::default()).unwrap();
    assert!(s.psnr.is_infinite() && s.psnr > 0.0);
    assert_eq!(s.ssim, 1.0);
}

#[test]
fn metrics_are_symmetric_and_round_to_uint8_first() {
    let a = fixture("astronaut_clean");
    let b = fixture("astronaut_noisy15");
    let opts = MetricOptions { y_channel: true, crop_border: 2 };
    let ab = evaluate(&a, &b, &opts).unwrap();
    let ba = evaluate(&b, &a, &opts).unwrap();
    assert_eq!(ab.psnr, ba.psnr);
    assert_eq!(ab.ssim, ba.ssim);
    // A perturbation below half an 8-bit level changes nothing.
    let nudged = a.with_data(a.data.iter().map(|v| v + 0.4 / 255.0).collect());
    let s = evaluate(&nudged, &b, &opts).unwrap();
    let same = evaluate(&a.quantized_u8(), &b, &opts).unwrap();
    assert_eq!(s.psnr, same.psnr);
    assert_eq!(s.ssim, same.ssim);
}

#[test]
fn mismatched_or_too_small_inputs_are_errors() {
    let a = fixture("coffee_clean");
    let b = fixture("astronaut_clean");
    let e = evaluate(&a, &b, &MetricOptions::default()).unwrap_err();
    assert!(e.to_string().contains("expected the same size"), "{e}");
    let opts = MetricOptions { y_channel: false, crop_border: 40 };
    let e = evaluate(&a, &a, &opts).unwrap_err();
    assert!(e.to_string().contains("border crop of 40"), "{e}");
    let tiny = Image::zeros(8, 8, 3);
    let e = ssim(&tiny, &tiny, &MetricOptions::default()).unwrap_err();
    assert!(e.to_string().contains("at least 11x11"), "{e}");
}
