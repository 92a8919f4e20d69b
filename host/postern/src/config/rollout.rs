//! `[breaker]` (every plugin's circuit breaker) and `[rollback]` (watching a
//! newly loaded generation, and canaries, for failures). Input: the
//! operator's file; errors name the file and line.

use std::time::Duration;

use postern_plugin::BreakerSettings;
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Ctx};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BreakerSection {
    enabled: Option<bool>,
    window: Option<Spanned<String>>,
    min_calls: Option<Spanned<u32>>,
    failure_rate: Option<Spanned<f64>>,
    cool_down: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RollbackSection {
    enabled: Option<bool>,
    watch: Option<Spanned<String>>,
    min_calls: Option<Spanned<u64>>,
    failure_rate: Option<Spanned<f64>>,
}

/// `[rollback]`: a generation loaded by a reload (or a canary) is watched
/// for `watch`; when at least `min_calls` plugin calls were made and
/// `failure_rate` of them failed (breaker skips included), Postern goes back
/// to the previous generation (drops the canary) by itself.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RollbackSettings {
    pub enabled: bool,
    pub watch: Duration,
    pub min_calls: u64,
    pub failure_rate: f64,
}

impl Default for RollbackSettings {
    fn default() -> Self {
        RollbackSettings {
            enabled: true,
            watch: Duration::from_secs(300),
            min_calls: 50,
            failure_rate: 0.5,
        }
    }
}

fn rate(cx: &Ctx, v: &Option<Spanned<f64>>, key: &str, default: f64) -> Result<f64, ConfigError> {
    match v {
        None => Ok(default),
        Some(r) if *r.get_ref() > 0.0 && *r.get_ref() <= 1.0 => Ok(*r.get_ref()),
        Some(r) => Err(cx.at(
            r,
            format!("{key} must be a fraction in (0, 1], not {}", r.get_ref()),
        )),
    }
}

pub(super) fn breaker(cx: &Ctx, s: &BreakerSection) -> Result<BreakerSettings, ConfigError> {
    let d = BreakerSettings::default();
    let min_calls = cx.at_least_one(&s.min_calls, "breaker.min_calls", d.min_calls)?;
    Ok(BreakerSettings {
        enabled: s.enabled.unwrap_or(d.enabled),
        window: cx.positive_duration(&s.window, "breaker.window", d.window)?,
        min_calls,
        failure_rate: rate(cx, &s.failure_rate, "breaker.failure_rate", d.failure_rate)?,
        cool_down: cx.positive_duration(&s.cool_down, "breaker.cool_down", d.cool_down)?,
    })
}

pub(super) fn rollback(cx: &Ctx, s: &RollbackSection) -> Result<RollbackSettings, ConfigError> {
    let d = RollbackSettings::default();
    let min_calls = cx.at_least_one(&s.min_calls, "rollback.min_calls", d.min_calls)?;
    Ok(RollbackSettings {
        enabled: s.enabled.unwrap_or(d.enabled),
        watch: cx.positive_duration(&s.watch, "rollback.watch", d.watch)?,
        min_calls,
        failure_rate: rate(cx, &s.failure_rate, "rollback.failure_rate", d.failure_rate)?,
    })
}
