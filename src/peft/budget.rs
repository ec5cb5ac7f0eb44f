//! Matched trainable-parameter budgets (issue 14's fair Table 1): size each method through its width knob
//! ([`Method::width_knob`]) so that its trainable count, counted as `adaptir methods` counts it
//! ([`super::trainable_params`]), is the closest to a budget. A method without a knob (SSF) keeps its fixed
//! size and is reported as matched only if that size happens to fall within the band.
use serde_json::Value;

use super::{trainable_params, HostDims, Method, METHODS};
use crate::error::{Error, Result};

/// A method is "matched" to a budget when its trainable count is within this fraction of it (issue 14: within
/// 10 %).
pub const BUDGET_BAND: f64 = 0.10;

/// The widest knob value tried; far above any sensible width (ipt-base's budgets need widths below 100).
pub const MAX_WIDTH: usize = 4096;

/// A method sized for a budget.
#[derive(Clone, Debug, PartialEq)]
pub struct Sized {
    pub method: &'static str,
    /// The knob's name and chosen value; `None` for a method without width.
    pub knob: Option<(&'static str, usize)>,
    /// The configuration to train with (as `--method-config` takes it and adapter files record it).
    pub config: Value,
    /// Trainable parameters of `config` on the host.
    pub params: usize,
    /// Whether `params` is within [`BUDGET_BAND`] of the budget.
    pub matched: bool,
}

impl Sized {
    /// Signed relative distance to the budget: `params / budget - 1`.
    pub fn deviation(&self, budget: usize) -> f64 {
        self.params as f64 / budget.max(1) as f64 - 1.0
    }
}

/// Whether `params` lies within [`BUDGET_BAND`] of `budget`.
pub fn within_band(params: usize, budget: usize) -> bool {
    (params as f64 - budget as f64).abs() <= BUDGET_BAND * budget as f64
}

fn count(m: &dyn Method, host: &HostDims) -> Result<usize> {
    // Full fine-tuning is refused before this, so the backbone's count is never needed.
    Ok(trainable_params(m, host, 0)?)
}

/// `name`'s configuration whose trainable count on `host` is the closest to `budget` (ties: the smaller width),
/// scanning its width knob from 1 up to the first width at or above the budget. Widths the method refuses
/// (AdaptIR needs `hidden` >= 8 for its gate) are skipped. Errors: an unknown method, full fine-tuning (its
/// budget is the backbone), a zero budget.
pub fn config_for_budget(name: &str, budget: usize, host: &HostDims) -> Result<Sized> {
    if budget == 0 {
        return Err(Error::invalid("the budget must be at least 1 trainable parameter"));
    }
    let entry = METHODS
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| Error::invalid(format!("unknown method `{name}`: expected one of {}", super::method_names())))?;
    let default = entry.build(&Value::Null, host).map_err(|m| Error::invalid(format!("method {m}")))?;
    if default.trains_backbone() {
        return Err(Error::invalid(format!("method `{name}` trains the whole backbone: it has no budget to match")));
    }
    let Some(knob) = default.width_knob() else {
        let params = count(default.as_ref(), host)?;
        return Ok(Sized {
            method: entry.name,
            knob: None,
            config: default.config(),
            params,
            matched: within_band(params, budget),
        });
    };
    let mut best: Option<Sized> = None;
    for width in 1..=MAX_WIDTH {
        let Some(config) = default.with_width(width) else { break };
        let Ok(m) = entry.build(&config, host) else { continue };
        let params = count(m.as_ref(), host)?;
        let closer = best.as_ref().is_none_or(|b| params.abs_diff(budget) < b.params.abs_diff(budget));
        if closer {
            let matched = within_band(params, budget);
            best = Some(Sized { method: entry.name, knob: Some((knob, width)), config: m.config(), params, matched });
        }
        if params >= budget {
            break;
        }
    }
    best.ok_or_else(|| {
        Error::invalid(format!("method `{name}`: no {knob} from 1 to {MAX_WIDTH} builds on this backbone"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::IptConfig;

    fn host(preset: &str) -> HostDims {
        IptConfig::preset(preset).map(|c| c.host_dims()).unwrap_or_else(|e| panic!("{preset}: {e}"))
    }

    /// Every method with a knob lands within the band, its configuration builds and counts what it reports, and
    /// the method without width (SSF) keeps its fixed size and says whether it is matched.
    fn check(preset: &str, budget: usize) {
        let host = host(preset);
        for entry in METHODS {
            let default = entry.build(&Value::Null, &host).unwrap_or_else(|e| panic!("{e}"));
            if default.trains_backbone() {
                assert!(config_for_budget(entry.name, budget, &host).is_err(), "{}: full has no budget", entry.name);
                continue;
            }
            let s = config_for_budget(entry.name, budget, &host).unwrap_or_else(|e| panic!("{}: {e}", entry.name));
            let rebuilt = entry.build(&s.config, &host).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(count(rebuilt.as_ref(), &host).ok(), Some(s.params), "{} on {preset}", entry.name);
            assert_eq!(s.matched, within_band(s.params, budget));
            match (default.width_knob(), s.knob) {
                (Some(k), Some((knob, _))) => {
                    assert_eq!(k, knob);
                    assert!(s.matched, "{preset}, budget {budget}: {} gives {} ({:?})", entry.name, s.params, s.knob);
                }
                (None, None) => assert_eq!(s.config, default.config()),
                other => panic!("{}: knob {other:?}", entry.name),
            }
        }
    }

    #[test]
    fn every_method_with_a_width_matches_budgets_on_ipt_tiny() {
        for budget in [15_000, 21_000, 30_000] {
            check("ipt-tiny", budget);
        }
    }

    #[test]
    fn every_method_with_a_width_matches_budgets_on_ipt_base() {
        for budget in [700_000, 900_000] {
            check("ipt-base", budget);
        }
    }

    #[test]
    fn ssf_has_no_width_and_is_reported_unmatched_at_the_default_budget() {
        let s = config_for_budget("ssf", 21_000, &host("ipt-tiny")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.knob, None);
        assert!(!s.matched, "ssf: {} parameters", s.params);
    }

    #[test]
    fn the_default_budget_on_ipt_tiny_keeps_the_defaults_that_already_match_and_scales_lora_alpha() {
        let host = host("ipt-tiny");
        let get = |m: &str| config_for_budget(m, 21_000, &host).unwrap_or_else(|e| panic!("{e}"));
        for m in ["adapter", "adaptformer", "moe"] {
            let default = crate::peft::method(m, &Value::Null, &host).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(get(m).config, default.config(), "{m}");
        }
        let lora = get("lora");
        assert_eq!(lora.config["alpha"].as_f64(), lora.config["rank"].as_f64(), "LoRA keeps alpha / rank = 1");
        assert!(get("adaptir").knob.is_some_and(|(_, h)| h > 9), "AdaptIR is wider than its official h = 9");
    }

    #[test]
    fn bad_requests_are_errors() {
        let host = host("ipt-tiny");
        assert!(config_for_budget("nope", 21_000, &host).is_err());
        assert!(config_for_budget("lora", 0, &host).is_err());
        assert!(config_for_budget("full", 21_000, &host).is_err());
    }
}
