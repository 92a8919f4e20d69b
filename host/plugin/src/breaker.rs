//! A circuit breaker per plugin of a generation: when the plugin's failures
//! (traps, time-outs, memory overruns, invalid answers, failed
//! instantiations) reach `failure_rate` of at least `min_calls` calls within
//! one `window`, the breaker opens: for `cool_down` the chain does not call
//! the plugin and applies its `on_error` directly (what a failing call would
//! have cost, without the wait or the instance). Then one call is let
//! through as a probe: a success closes the breaker, a failure opens it for
//! another cool-down. Each change of state is logged and counted. Input: the
//! outcomes of the chain's own calls (trusted).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `[breaker]` of the configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerSettings {
    pub enabled: bool,
    pub window: Duration,
    pub min_calls: u32,
    pub failure_rate: f64,
    pub cool_down: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            enabled: true,
            window: Duration::from_secs(10),
            min_calls: 20,
            failure_rate: 0.5,
            cool_down: Duration::from_secs(30),
        }
    }
}

/// The breaker's state, as `postern status` and the metrics show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
    /// The gauge value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// What the chain does with a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Call the plugin.
    Call,
    /// Call it as the half-open probe: its outcome decides the state.
    Probe,
    /// Do not call it: apply its `on_error`.
    Skip,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    /// A probe is out since `since` (another is let through if it never
    /// reports, e.g. its session went away mid-call).
    HalfOpen {
        since: Instant,
    },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    window_start: Instant,
    calls: u32,
    failures: u32,
}

/// A change of state, for the log line and the metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub to: BreakerState,
    pub calls: u32,
    pub failures: u32,
}

#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Breaker {
        Breaker {
            settings,
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                window_start: Instant::now(),
                calls: 0,
                failures: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        match self.lock().phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether to call the plugin now. An open breaker whose cool-down is
    /// over lets exactly one probe through (and says so: `Some` transition).
    pub fn admit(&self, now: Instant) -> (Admit, Option<Transition>) {
        if !self.settings.enabled {
            return (Admit::Call, None);
        }
        let mut s = self.lock();
        match s.phase {
            Phase::Closed => (Admit::Call, None),
            Phase::Open { until } if now >= until => {
                s.phase = Phase::HalfOpen { since: now };
                let t = Transition {
                    to: BreakerState::HalfOpen,
                    calls: s.calls,
                    failures: s.failures,
                };
                (Admit::Probe, Some(t))
            }
            Phase::Open { .. } => (Admit::Skip, None),
            Phase::HalfOpen { since } if now.duration_since(since) >= self.settings.cool_down => {
                s.phase = Phase::HalfOpen { since: now };
                (Admit::Probe, None)
            }
            Phase::HalfOpen { .. } => (Admit::Skip, None),
        }
    }

    /// Record a call's outcome; returns the change of state it caused.
    pub fn record(&self, admit: Admit, ok: bool, now: Instant) -> Option<Transition> {
        if !self.settings.enabled || admit == Admit::Skip {
            return None;
        }
        let mut s = self.lock();
        if admit == Admit::Probe {
            if !matches!(s.phase, Phase::HalfOpen { .. }) {
                return None;
            }
            s.window_start = now;
            s.calls = 0;
            s.failures = 0;
            return Some(if ok {
                s.phase = Phase::Closed;
                Transition {
                    to: BreakerState::Closed,
                    calls: 1,
                    failures: 0,
                }
            } else {
                s.phase = Phase::Open {
                    until: now + self.settings.cool_down,
                };
                Transition {
                    to: BreakerState::Open,
                    calls: 1,
                    failures: 1,
                }
            });
        }
        if !matches!(s.phase, Phase::Closed) {
            // A call admitted before the breaker opened: already counted.
            return None;
        }
        if now.duration_since(s.window_start) >= self.settings.window {
            s.window_start = now;
            s.calls = 0;
            s.failures = 0;
        }
        s.calls += 1;
        s.failures += u32::from(!ok);
        if s.calls >= self.settings.min_calls
            && f64::from(s.failures) >= self.settings.failure_rate * f64::from(s.calls)
            && s.failures > 0
        {
            s.phase = Phase::Open {
                until: now + self.settings.cool_down,
            };
            let t = Transition {
                to: BreakerState::Open,
                calls: s.calls,
                failures: s.failures,
            };
            s.calls = 0;
            s.failures = 0;
            return Some(t);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            enabled: true,
            window: Duration::from_secs(10),
            min_calls: 4,
            failure_rate: 0.5,
            cool_down: Duration::from_secs(30),
        }
    }

    #[test]
    fn opens_at_the_rate_then_probes_after_the_cool_down() {
        let b = Breaker::new(settings());
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(b.record(Admit::Call, true, t0), None);
        assert_eq!(b.record(Admit::Call, false, t0), None);
        assert_eq!(b.record(Admit::Call, true, t0), None);
        let opened = b.record(Admit::Call, false, t0).unwrap();
        assert_eq!(
            (opened.to, opened.calls, opened.failures),
            (BreakerState::Open, 4, 2)
        );
        assert_eq!(b.admit(at(29)).0, Admit::Skip);
        let (admit, t) = b.admit(at(30));
        assert_eq!(
            (admit, t.unwrap().to),
            (Admit::Probe, BreakerState::HalfOpen)
        );
        // Only one probe at a time.
        assert_eq!(b.admit(at(31)).0, Admit::Skip);
        let reopened = b.record(Admit::Probe, false, at(31)).unwrap();
        assert_eq!(reopened.to, BreakerState::Open);
        assert_eq!(b.admit(at(60)).0, Admit::Skip);
        assert_eq!(b.admit(at(61)).0, Admit::Probe);
        let closed = b.record(Admit::Probe, true, at(61)).unwrap();
        assert_eq!(closed.to, BreakerState::Closed);
        assert_eq!(b.admit(at(62)).0, Admit::Call);
    }

    #[test]
    fn failures_below_the_rate_or_the_minimum_or_in_old_windows_do_not_open() {
        let b = Breaker::new(settings());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.record(Admit::Call, false, t0), None); // under min_calls
        }
        // A new window starts the count again.
        let t1 = t0 + Duration::from_secs(10);
        for ok in [true, true, false, true, true] {
            assert_eq!(b.record(Admit::Call, ok, t1), None); // 1 in 5
        }
        assert_eq!(b.state(), BreakerState::Closed);
        let off = Breaker::new(BreakerSettings {
            enabled: false,
            ..settings()
        });
        for _ in 0..10 {
            assert_eq!(off.record(Admit::Call, false, t0), None);
        }
        assert_eq!(off.admit(t0).0, Admit::Call);
    }

    #[test]
    fn a_probe_that_never_reports_is_replaced_after_a_cool_down() {
        let b = Breaker::new(settings());
        let t0 = Instant::now();
        for _ in 0..4 {
            b.record(Admit::Call, false, t0);
        }
        assert_eq!(b.admit(t0 + Duration::from_secs(30)).0, Admit::Probe);
        assert_eq!(b.admit(t0 + Duration::from_secs(59)).0, Admit::Skip);
        assert_eq!(b.admit(t0 + Duration::from_secs(60)).0, Admit::Probe);
    }
}
