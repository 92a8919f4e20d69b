//! Per-plugin, per-stage counters and latency histograms, kept by plugin
//! name so they survive reloads. Lock-free on the hot path (atomics); read
//! by the metrics endpoint and `postern status`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Stage;

/// Upper bounds (microseconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

pub const VERDICT_KINDS: [&str; 6] = [
    "pass",
    "accept",
    "accept-with",
    "reject",
    "defer",
    "disconnect",
];

pub const ERROR_KINDS: [&str; 6] = [
    "trap",
    "timeout",
    "memory",
    "invalid",
    "init",
    "instantiate",
];

#[derive(Default)]
pub struct Histogram {
    pub buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
    pub count: AtomicU64,
    pub sum_us: AtomicU64,
}

impl Histogram {
    /// Record one observation: one atomic add for its bucket (observations
    /// above the last bound are only in `count`).
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        if let Some(i) = LATENCY_BUCKETS_US.iter().position(|b| us <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Observations per bucket (not cumulative), plus those above the last
    /// bound.
    pub fn per_bucket(&self) -> ([u64; LATENCY_BUCKETS_US.len()], u64) {
        let mut out = [0u64; LATENCY_BUCKETS_US.len()];
        for (i, b) in self.buckets.iter().enumerate() {
            out[i] = b.load(Ordering::Relaxed);
        }
        let total = self.count.load(Ordering::Relaxed);
        let above = total.saturating_sub(out.iter().sum());
        (out, above)
    }

    /// Approximate quantile (upper bound of the bucket holding it), in µs.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let total = self.count.load(Ordering::Relaxed);
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil() as u64;
        let (per, _) = self.per_bucket();
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS_US.iter().enumerate() {
            cumulative += per[i];
            if cumulative >= want {
                return Some(*bound);
            }
        }
        Some(u64::MAX)
    }
}

#[derive(Default)]
pub struct StageStats {
    /// Indexed like `VERDICT_KINDS`.
    pub verdicts: [AtomicU64; 6],
    /// Verdicts of a shadow-mode plugin (logged, not enforced).
    pub shadow_verdicts: [AtomicU64; 6],
    /// Indexed like `ERROR_KINDS`.
    pub errors: [AtomicU64; 6],
    pub latency: Histogram,
}

#[derive(Default)]
pub struct PluginStats {
    pub stages: [StageStats; Stage::COUNT],
    pub instantiations: AtomicU64,
    pub instantiate_latency: Histogram,
    /// Sessions served by a recycled instance instead of a fresh one.
    pub reuses: AtomicU64,
    /// Pooled instances discarded because `recycle` said no, trapped or
    /// timed out.
    pub recycle_refusals: AtomicU64,
    /// The circuit breaker's last state (`BreakerState::gauge`), the times
    /// it opened and the calls it skipped (their `on_error` applied).
    pub breaker_state: std::sync::atomic::AtomicU8,
    pub breaker_opened: AtomicU64,
    pub breaker_skipped: AtomicU64,
}

impl PluginStats {
    pub fn verdict(&self, stage: Stage, kind: &str, shadow: bool) {
        if let Some(i) = VERDICT_KINDS.iter().position(|k| *k == kind) {
            let s = &self.stages[stage as usize];
            let arr = if shadow {
                &s.shadow_verdicts
            } else {
                &s.verdicts
            };
            arr[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Verdicts a shadow plugin gave that were not `pass` (that would have
    /// changed what the client was told), over every stage.
    pub fn shadow_differed(&self) -> u64 {
        let pass = VERDICT_KINDS.iter().position(|k| *k == "pass");
        self.stages
            .iter()
            .flat_map(|s| s.shadow_verdicts.iter().enumerate())
            .filter(|(i, _)| Some(*i) != pass)
            .map(|(_, n)| n.load(Ordering::Relaxed))
            .sum()
    }

    pub fn error(&self, stage: Stage, kind: &str) {
        if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
            self.stages[stage as usize].errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// All plugin stats by name.
#[derive(Default)]
pub struct StatsRegistry {
    map: Mutex<BTreeMap<String, Arc<PluginStats>>>,
}

impl StatsRegistry {
    pub fn for_plugin(&self, name: &str) -> Arc<PluginStats> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    pub fn snapshot(&self) -> Vec<(String, Arc<PluginStats>)> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let h = Histogram::default();
        assert_eq!(h.quantile_us(0.5), None);
        for _ in 0..90 {
            h.observe(Duration::from_micros(3));
        }
        for _ in 0..10 {
            h.observe(Duration::from_micros(700));
        }
        assert_eq!(h.quantile_us(0.5), Some(5));
        assert_eq!(h.quantile_us(0.99), Some(1_000));
    }
}
