//! ipt-base equals the official model: the same state-dict keys, shapes and dtypes as `KEYS.md` lists
//! (built from the official constructors), and the parameter counts of issue 2.
mod common;

use std::collections::BTreeMap;

use adaptir::backbone::{Ipt, IptConfig};
use adaptir::params::{count_parameters, ShapeOnly};
use adaptir::peft::adaptir::AdaptIrMethod;
use adaptir::peft::{AdaptIrConfig, Layout, Method, MethodModules};
use candle_core::DType;
use common::fixture;

/// Section 1 of KEYS.md, with `{i}` (layer) and `{t}` (task) expanded.
fn official_ipt_keys() -> BTreeMap<String, (Vec<usize>, String)> {
    let text = std::fs::read_to_string(fixture("parity/KEYS.md")).unwrap();
    let section = &text[text.find("## 1.").unwrap()..text.find("## 2.").unwrap()];
    // The main table only: the sub-tables after it ("### ...") repeat keys without their prefix.
    let section = section.split("\n### ").next().unwrap();
    let mut out = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        let pattern = cols[1].trim_matches('`');
        let shape: Vec<usize> = cols[2]
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse().unwrap())
            .collect();
        let count: usize = cols[4].parse().unwrap();
        let expanded: Vec<String> = if pattern.contains("{i}") {
            (0..12).map(|i| pattern.replace("{i}", &i.to_string())).collect()
        } else if pattern.contains("{t}") {
            (0..6).map(|t| pattern.replace("{t}", &t.to_string())).collect()
        } else {
            vec![pattern.to_string()]
        };
        assert_eq!(expanded.len(), count, "{pattern}");
        for k in expanded {
            out.insert(k, (shape.clone(), cols[3].to_string()));
        }
    }
    out
}

fn ours(adapter: Option<AdaptIrConfig>) -> BTreeMap<String, (Vec<usize>, String)> {
    let rec = ShapeOnly::default();
    let config = IptConfig::preset("ipt-base").unwrap();
    let host = config.host_dims();
    let modules = match adapter {
        Some(a) => AdaptIrMethod::with_sizes(a).build(rec.var_builder(), &host).unwrap(),
        None => MethodModules::none(&host),
    };
    Ipt::new(rec.var_builder(), &config, modules).unwrap();
    rec.entries()
        .into_iter()
        .map(|(k, (s, d))| (k, (s, if d == DType::I64 { "int64" } else { "float32" }.to_string())))
        .collect()
}

#[test]
fn ipt_base_with_adaptir_has_the_official_keys_shapes_and_dtypes() {
    let official = official_ipt_keys();
    assert_eq!(official.len(), 1029);
    let ours = ours(Some(AdaptIrConfig::official(576, Layout::Ipt)));
    let missing: Vec<_> = official.keys().filter(|k| !ours.contains_key(*k)).collect();
    let extra: Vec<_> = ours.keys().filter(|k| !official.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}\nextra {extra:?}");
    for (k, v) in &official {
        assert_eq!(&ours[k], v, "{k}");
    }
}

#[test]
fn ipt_base_parameter_counts() {
    let with = ours(Some(AdaptIrConfig::official(576, Layout::Ipt)));
    let count = |m: &BTreeMap<String, (Vec<usize>, String)>, f: &dyn Fn(&str) -> bool| {
        count_parameters(m.iter().filter(|(k, _)| f(k)).map(|(k, (s, _))| (k, s.as_slice())))
    };
    assert_eq!(count(&with, &|_| true), 119_590_050);
    assert_eq!(count(&with, &|k| k.contains(".adaptir.")), 697_656);
    let without = ours(None);
    assert_eq!(count(&without, &|_| true), 119_590_050 - 697_656);
    let body = count(&without, &|k| k.starts_with("body."));
    eprintln!("ipt-base body without adapters: {body}");
    assert_eq!(body, 115_636_608);
}
