//! The synthetic rain presets against the three real Rain100L pairs, by simple statistics (`rain_stats`; the
//! table in docs/data.md, "Rain model").
//!
//! The Rain100L images are for academic use only, so they are not copied into the project: their statistics
//! are, in `fixtures/rain/rain100l_stats.json`, written only by the explicit command
//! `cargo test --release --test data_rain_real -- --ignored regenerate_rain100l_stats` (reads
//! `../shared/data/paired/Rain100L_sample3`). The check that runs in CI adds the presets to clean fixture images
//! of permissive licence (chelsea, CC0; coffee crop, CC0; the Set5 butterfly is academic and not used) and holds
//! `rain-light` to the range of the three real pairs, and `rain-heavy` above it.
use std::path::PathBuf;

use adaptir::data::degrade::{add_rain, rain_stats, RainParams, RainStats};
use adaptir::data::load_image;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel)
}

const STATS: &str = "rain/rain100l_stats.json";

fn show(label: &str, s: &RainStats) {
    println!(
        "{label:<28} hp_std {:6.2}  coverage {:.3}  |angle| {:5.1} deg  coherence {:.2}",
        s.hp_std,
        s.coverage,
        s.angle_deg.abs(),
        s.coherence
    );
}

fn to_json(s: &RainStats) -> serde_json::Value {
    serde_json::json!({"hp_std": s.hp_std, "coverage": s.coverage, "angle_deg": s.angle_deg, "coherence": s.coherence})
}

fn from_json(v: &serde_json::Value) -> RainStats {
    let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{STATS}: `{k}` missing in {v}"));
    RainStats { hp_std: f("hp_std"), coverage: f("coverage"), angle_deg: f("angle_deg"), coherence: f("coherence") }
}

#[test]
#[ignore = "regenerates fixtures/rain/rain100l_stats.json from ../shared/data (Rain100L sample); explicit only"]
fn regenerate_rain100l_stats() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/paired/Rain100L_sample3");
    let mut pairs = Vec::new();
    for i in 1..=3 {
        let rainy = load_image(dir.join(format!("rainy/{i}.png"))).unwrap();
        let clean = load_image(dir.join(format!("clean/{i}.png"))).unwrap();
        let s = rain_stats(&rainy, &clean).unwrap();
        show(&format!("Rain100L {i}"), &s);
        pairs.push(serde_json::json!({"pair": i, "size": [rainy.width, rainy.height], "stats": to_json(&s)}));
    }
    let doc = serde_json::json!({
        "what": "rain_stats of the three Rain100L test pairs in ../shared/data/paired/Rain100L_sample3 (MFDNet repo, academic use; the images are not copied here)",
        "command": "cargo test --release --test data_rain_real -- --ignored regenerate_rain100l_stats",
        "pairs": pairs,
    });
    let path = fixture(STATS);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    adaptir::fsutil::write_atomic(&path, (serde_json::to_string_pretty(&doc).unwrap() + "\n").as_bytes()).unwrap();
}

#[test]
fn light_preset_is_in_the_range_of_rain100l() {
    let text = std::fs::read_to_string(fixture(STATS)).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let real: Vec<RainStats> = doc["pairs"].as_array().unwrap().iter().map(|p| from_json(&p["stats"])).collect();
    assert_eq!(real.len(), 3);
    for (i, r) in real.iter().enumerate() {
        show(&format!("Rain100L {} (stored)", i + 1), r);
    }
    let (mut synth, mut heavy) = (Vec::new(), Vec::new());
    for name in ["images/jpeg/chelsea_256.png", "images/metrics/coffee_clean.png"] {
        let clean = load_image(fixture(name)).unwrap();
        for seed in 0..3u64 {
            let s = rain_stats(&add_rain(&clean, &RainParams::LIGHT, seed).unwrap(), &clean).unwrap();
            show(&format!("  {name} rain-light {seed}"), &s);
            synth.push(s);
            let h = rain_stats(&add_rain(&clean, &RainParams::HEAVY, seed).unwrap(), &clean).unwrap();
            show(&format!("  {name} rain-heavy {seed}"), &h);
            heavy.push(h);
        }
    }
    let mean = |v: &[RainStats], f: fn(&RainStats) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
    let lo = |f: fn(&RainStats) -> f64| real.iter().map(f).fold(f64::INFINITY, f64::min);
    let hi = |f: fn(&RainStats) -> f64| real.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
    for (name, f) in
        [("hp_std", (|s: &RainStats| s.hp_std) as fn(&RainStats) -> f64), ("coverage", |s: &RainStats| s.coverage)]
    {
        let m = mean(&synth, f);
        println!(
            "rain-light mean {name} {m:.3}, Rain100L range [{:.3}, {:.3}], rain-heavy mean {:.3}",
            lo(f),
            hi(f),
            mean(&heavy, f)
        );
        assert!(m >= lo(f) && m <= hi(f), "rain-light mean {name} {m} outside the Rain100L range");
        assert!(mean(&heavy, f) > m, "rain-heavy {name} not above rain-light");
    }
    // Reported, not asserted: real pairs also differ by compression and colour, which lowers
    // their coherence below that of a pure streak layer.
    let coh = |s: &RainStats| s.coherence;
    println!(
        "rain-light mean coherence {:.3}, Rain100L range [{:.3}, {:.3}], rain-heavy mean {:.3}",
        mean(&synth, coh),
        lo(coh),
        hi(coh),
        mean(&heavy, coh)
    );
}
