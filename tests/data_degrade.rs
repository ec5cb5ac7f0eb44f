//! Degradations: Gaussian noise (both conventions), JPEG vs PIL, hybrids, rain, low light, tasks.

use adaptir::data::degrade::{
    add_rain, bicubic_downscale, encode_jpeg, gaussian_noise, jpeg_compress, low_light, rain_layer, LowLightParams,
    NoiseConvention, RainParams,
};
use adaptir::data::seed::mix64;
use adaptir::data::tolerances::{JPEG_MAX_SIZE_REL_DIFF, JPEG_MIN_PSNR_VS_REFERENCE_DB, NOISE_STAT_REL};
use adaptir::data::{load_image, Image, Task};
use adaptir::metrics::{psnr, MetricOptions};

fn fixture(rel: &str) -> String {
    format!("{}/fixtures/images/{rel}", env!("CARGO_MANIFEST_DIR"))
}

fn constant(level: u8, w: usize, h: usize) -> Image {
    Image::new(w, h, 3, vec![level as f32 / 255.0; w * h * 3]).unwrap()
}

/// Mean and standard deviation of `noisy - level` on the 0-255 scale.
fn residual_stats(img: &Image, level: u8) -> (f64, f64) {
    let r: Vec<f64> = img.to_u8().iter().map(|&v| v as f64 - level as f64).collect();
    let n = r.len() as f64;
    let mean = r.iter().sum::<f64>() / n;
    let var = r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn gaussian_noise_has_the_requested_sigma_in_both_conventions() {
    let img = constant(128, 256, 256);
    for sigma in [15.0, 30.0, 50.0] {
        let round = gaussian_noise(&img, sigma, NoiseConvention::ClipRound, 7).unwrap();
        let trunc = gaussian_noise(&img, sigma, NoiseConvention::ClipTruncate, 7).unwrap();
        let (m_r, s_r) = residual_stats(&round, 128);
        let (m_t, s_t) = residual_stats(&trunc, 128);
        // Clipping at 0 / 255 (2.56 sigma from 128 at sigma 50) lowers the std by about 1%.
        assert!(m_r.abs() <= NOISE_STAT_REL * sigma, "sigma {sigma}: mean {m_r}");
        assert!((s_r / sigma - 1.0).abs() <= NOISE_STAT_REL, "sigma {sigma}: std {s_r}");
        // Truncation lowers the mean by half a level and leaves the spread.
        assert!(((m_r - m_t) - 0.5).abs() <= NOISE_STAT_REL * sigma, "{m_r} vs {m_t}");
        assert!((s_t / s_r - 1.0).abs() <= NOISE_STAT_REL, "{s_t} vs {s_r}");
        // Same seed, same noise; the two conventions differ only by rounding.
        for (a, b) in round.to_u8().iter().zip(trunc.to_u8()) {
            assert!(*a == b || *a == b + 1);
        }
    }
}

#[test]
fn noise_is_seeded_and_reproducible() {
    let img = load_image(fixture("metrics/coffee_clean.png")).unwrap();
    let a = gaussian_noise(&img, 25.0, NoiseConvention::ClipRound, 1).unwrap();
    let b = gaussian_noise(&img, 25.0, NoiseConvention::ClipRound, 1).unwrap();
    let c = gaussian_noise(&img, 25.0, NoiseConvention::ClipRound, 2).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a, a.quantized_u8());
    assert!(gaussian_noise(&img, f64::NAN, NoiseConvention::ClipRound, 1).is_err());
}

#[test]
fn jpeg_matches_pil_at_the_same_quality() {
    // fixtures/images/jpeg/chelsea_256_q{q}_pil.jpg: PIL 13.0.0 `Image.save(path, quality=q,
    // subsampling="4:2:0", optimize=False)` of chelsea_256.png (see fixtures/README.md).
    let src = load_image(fixture("jpeg/chelsea_256.png")).unwrap();
    for q in [10u8, 20, 30, 40] {
        let ref_path = fixture(&format!("jpeg/chelsea_256_q{q}_pil.jpg"));
        let ref_bytes = std::fs::read(&ref_path).unwrap();
        let reference = load_image(&ref_path).unwrap();
        let ours_bytes = encode_jpeg(&src, q).unwrap();
        let ours = jpeg_compress(&src, q).unwrap();
        let p = psnr(&ours, &reference, &MetricOptions::default()).unwrap();
        let rel = (ours_bytes.len() as f64 - ref_bytes.len() as f64).abs() / ref_bytes.len() as f64;
        println!(
            "q{q}: PSNR(ours, PIL) {p:.2} dB, size {} vs PIL {} bytes ({:+.2}%)",
            ours_bytes.len(),
            ref_bytes.len(),
            100.0 * (ours_bytes.len() as f64 / ref_bytes.len() as f64 - 1.0)
        );
        assert!(p >= JPEG_MIN_PSNR_VS_REFERENCE_DB, "q{q}: PSNR {p}");
        assert!(rel <= JPEG_MAX_SIZE_REL_DIFF, "q{q}: size differs by {rel}");
    }
    assert!(encode_jpeg(&src, 0).is_err());
}

#[test]
fn hybrids_are_downscale_then_second_degradation() {
    let hr = load_image(fixture("set5/butterfly.png")).unwrap();
    let lr = bicubic_downscale(&hr, 4).unwrap();
    let n = Task::Lr4Noise30.apply(&hr, 5).unwrap();
    assert_eq!((n.width, n.height), (64, 64));
    assert_eq!(n, gaussian_noise(&lr, 30.0, NoiseConvention::ClipTruncate, mix64(5)).unwrap());
    let j = Task::Lr4Jpeg30.apply(&hr, 5).unwrap();
    assert_eq!(j, jpeg_compress(&lr, 30).unwrap());
    assert_eq!(Task::Lr4Jpeg30.target(&hr).unwrap().width, 256);
    // The x2 hybrid: the same noise after a x2 downscale.
    let n2 = Task::Lr2Noise30.apply(&hr, 5).unwrap();
    let lr2 = bicubic_downscale(&hr, 2).unwrap();
    assert_eq!(n2, gaussian_noise(&lr2, 30.0, NoiseConvention::ClipTruncate, mix64(5)).unwrap());
    assert_eq!((Task::Lr2Noise30.scale(), Task::parse("lr2-noise30").unwrap().name()), (2, "lr2-noise30".to_string()));
}

#[test]
fn rain_only_adds_light_and_heavy_is_heavier() {
    let img = load_image(fixture("jpeg/chelsea_256.png")).unwrap();
    let light = add_rain(&img, &RainParams::LIGHT, 3).unwrap();
    let heavy = add_rain(&img, &RainParams::HEAVY, 3).unwrap();
    assert_eq!(light, add_rain(&img, &RainParams::LIGHT, 3).unwrap());
    assert_ne!(light, add_rain(&img, &RainParams::LIGHT, 4).unwrap());
    for (o, b) in light.to_u8().iter().zip(img.to_u8()) {
        assert!(*o >= b, "screen blend never darkens");
    }
    let cover = |p: &RainParams| {
        let l = rain_layer(256, 256, p, 3).unwrap();
        l.iter().filter(|&&v| v > 0.05).count()
    };
    assert!(cover(&RainParams::HEAVY) > cover(&RainParams::LIGHT));
    let gain = |o: &Image| o.data.iter().zip(&img.data).map(|(a, b)| (a - b) as f64).sum::<f64>();
    assert!(gain(&heavy) > gain(&light));
    let mut bad = RainParams::LIGHT;
    bad.width = 0.0;
    assert!(add_rain(&img, &bad, 0).is_err());
}

#[test]
fn low_light_darkens_with_poisson_gaussian_noise() {
    let p = LowLightParams::DEFAULT;
    let img = constant(255, 256, 256);
    let out = low_light(&img, &p, 9).unwrap();
    let y = p.exposure; // 1.0^gamma * exposure
    let expected_mean = 255.0 * y;
    // Var on the 0-255 scale: shot noise 255^2 y / peak, read noise, rounding 1/12.
    let expected_std = (255.0f64.powi(2) * y / p.peak + p.read_sigma.powi(2) + 1.0 / 12.0).sqrt();
    let (m, s) = residual_stats(&out, 0);
    assert!((m / expected_mean - 1.0).abs() <= NOISE_STAT_REL, "mean {m} vs {expected_mean}");
    assert!((s / expected_std - 1.0).abs() <= NOISE_STAT_REL, "std {s} vs {expected_std}");
    // A darker input gets darker still and relatively noisier.
    let mid = low_light(&constant(128, 256, 256), &p, 9).unwrap();
    let (m2, s2) = residual_stats(&mid, 0);
    assert!(m2 < m && s2 / m2 > s / m);
    assert_eq!(out, low_light(&img, &p, 9).unwrap());
}

#[test]
fn every_task_parses_and_runs() {
    let img = load_image(fixture("metrics/coffee_clean.png")).unwrap();
    for name in Task::NAMES {
        let t = Task::parse(name).unwrap();
        assert_eq!(&t.name(), name);
        let out = t.apply(&img, 1).unwrap();
        let target = t.target(&img).unwrap();
        assert_eq!(out.width * t.scale(), target.width, "{name}");
        assert_eq!(out.height * t.scale(), target.height, "{name}");
        assert_eq!(out, out.quantized_u8(), "{name}: outputs are 8-bit levels");
    }
    let e = Task::parse("sr5").unwrap_err().to_string();
    assert!(e.contains("--task") && e.contains("lr4-jpeg30") && e.contains("sr5"), "{e}");
}

#[test]
fn rain_stats_angle_sign_follows_the_documented_convention() {
    // Stripes whose direction leans right at the top (20 degrees from vertical) give a positive
    // angle; the mirror image gives a negative one.
    let (w, h) = (96usize, 96usize);
    let stripes = |tilt_deg: f64| {
        let t = tilt_deg.to_radians();
        let mut d = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let phase = (t.cos() * x as f64 + t.sin() * y as f64) / 6.0;
                let v = 0.5 + 0.2 * (2.0 * std::f64::consts::PI * phase).sin();
                d.extend([v as f32; 3]);
            }
        }
        Image::new(w, h, 3, d).unwrap()
    };
    let flat = constant(128, w, h);
    let right = adaptir::data::degrade::rain_stats(&stripes(20.0), &flat).unwrap();
    let left = adaptir::data::degrade::rain_stats(&stripes(-20.0), &flat).unwrap();
    assert!(right.angle_deg > 0.0 && left.angle_deg < 0.0, "{right:?} {left:?}");
}
