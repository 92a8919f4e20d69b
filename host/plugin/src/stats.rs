//! Per-plugin, per-stage counters and latency histograms, kept by plugin
//! name so they survive reloads. Lock-free on the hot path (atomics); read
//! by the metrics endpoint and `postern status`.
//!
//! A call is measured twice: its wall time (what the session waited,
//! including time its task spent descheduled on a busy machine) and the CPU
//! time the calling thread spent on it (the guest's code, the host imports
//! it called and the lowering of its arguments; not what a host import hands
//! to another thread, such as a DNS query or an fsync).

use std::collections::BTreeMap;
use std::future::Future;
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
    /// The sum of the observations in nanoseconds (a per-call figure of a
    /// few microseconds would lose up to a microsecond each in µs).
    pub sum_ns: AtomicU64,
}

impl Histogram {
    /// Record one observation: one atomic add for its bucket (observations
    /// above the last bound are only in `count`).
    pub fn observe(&self, d: Duration) {
        let ns = d.as_nanos().min(u64::MAX as u128) as u64;
        let us = ns.div_ceil(1000);
        if let Some(i) = LATENCY_BUCKETS_US.iter().position(|b| us <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The sum of the observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
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
    /// Wall time per call.
    pub latency: Histogram,
    /// CPU time of the calling thread per call (see the module docs).
    pub cpu: Histogram,
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

/// The CPU time this thread has used so far (`CLOCK_THREAD_CPUTIME_ID`; a
/// system call, about a quarter of a microsecond).
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime writes only
    // it, and this clock exists on every Linux since 2.6.12.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Run `f` and add up the CPU time each of its polls took on the thread
/// that polled it: a call that yields (an epoch tick, an async host import)
/// may resume on another worker thread, and time spent waiting is not CPU.
pub async fn cpu_timed<F: Future>(f: F) -> (F::Output, Duration) {
    let mut f = std::pin::pin!(f);
    let mut spent = Duration::ZERO;
    let out = std::future::poll_fn(|cx| {
        let t0 = thread_cpu();
        let r = f.as_mut().poll(cx);
        spent += thread_cpu().saturating_sub(t0);
        r
    })
    .await;
    (out, spent)
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

    #[test]
    fn sums_keep_nanoseconds() {
        let h = Histogram::default();
        for _ in 0..4 {
            h.observe(Duration::from_nanos(2_500));
        }
        assert_eq!(h.sum_ns.load(Ordering::Relaxed), 10_000);
        assert!((h.sum_seconds() - 10e-6).abs() < 1e-12);
        // 2.5 µs is above the 1 µs mark: it lands in the 5 µs bucket.
        assert_eq!(h.per_bucket().0[0], 4);
    }

    #[tokio::test]
    async fn cpu_timed_counts_work_not_waiting() {
        let ((), waited) = cpu_timed(tokio::time::sleep(Duration::from_millis(60))).await;
        assert!(
            waited < Duration::from_millis(20),
            "sleeping cost {waited:?} of CPU"
        );
        let (n, worked) = cpu_timed(async {
            let t0 = thread_cpu();
            let mut n = 0u64;
            while thread_cpu() - t0 < Duration::from_millis(30) {
                n = std::hint::black_box(n.wrapping_add(1));
            }
            n
        })
        .await;
        assert!(n > 0);
        assert!(
            worked >= Duration::from_millis(30),
            "30 ms of work measured as {worked:?}"
        );
        assert!(worked < Duration::from_millis(500), "{worked:?}");
    }
}
