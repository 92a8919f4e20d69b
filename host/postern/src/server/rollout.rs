//! Safe rollout around hot swap: canary generations, promotion, manual and
//! automatic rollback. A reload installs a new generation and keeps the one
//! it replaced for `[rollback] watch`: if the new one's plugin calls fail at
//! `failure_rate` or more (after `min_calls`), the previous generation comes
//! back by itself. `postern reload --canary N` instead gives the new
//! generation to N% of new sessions; `postern promote` makes it current,
//! `postern rollback` drops it (or, without a canary, goes back to the
//! previous generation while it is kept); a canary that fails as above is
//! dropped by itself. Sessions always finish on the generation they started
//! with, so nothing here drops a session. Every change is logged, counted
//! (`postern_rollbacks_total`, `postern_promotions_total`) and shown by
//! `postern status`. Input: admin commands (local, trusted) and the
//! generations' own counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use postern_plugin::{Generation, Stage};

use crate::server::{Shared, Snapshot};

/// A generation a share of new sessions get.
struct Canary {
    snapshot: Arc<Snapshot>,
    percent: u8,
    started: Instant,
}

/// The generation the current one replaced, kept while the current one is
/// watched.
struct Previous {
    snapshot: Arc<Snapshot>,
    since: Instant,
}

#[derive(Default)]
struct Rollout {
    canary: Option<Canary>,
    previous: Option<Previous>,
    /// The last promotion or rollback, for `postern status`.
    last_event: Option<(SystemTime, String)>,
}

/// The plugin generations of a running server: the snapshot new sessions
/// get, the canary, the generation kept for rollback, and the earlier ones
/// still finishing sessions. Reloads install into it; sessions, delivery
/// questions, metrics and `postern status` read it.
pub struct Generations {
    /// The snapshot new sessions start with (sessions keep theirs).
    current: RwLock<Arc<Snapshot>>,
    /// Earlier generations, kept weakly to count their remaining sessions.
    retired: Mutex<Vec<Weak<Generation>>>,
    rollout: Mutex<Rollout>,
    /// Sessions started, for the canary's share.
    session_seq: AtomicU64,
}

impl Generations {
    pub fn new(first: Arc<Snapshot>) -> Generations {
        Generations {
            current: RwLock::new(first),
            retired: Mutex::new(Vec::new()),
            rollout: Mutex::new(Rollout::default()),
            session_seq: AtomicU64::new(0),
        }
    }

    fn rollout(&self) -> std::sync::MutexGuard<'_, Rollout> {
        self.rollout.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configuration, generation and TLS settings new sessions get
    /// (outside the canary's share).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn current_generation(&self) -> Arc<Generation> {
        self.snapshot().generation.clone()
    }

    /// Earlier generations still running sessions (the one kept for
    /// rollback is listed only while it has some): (id, sessions).
    pub fn retired_in_use(&self) -> Vec<(u64, usize)> {
        let kept = self.kept_for_rollback();
        let mut list = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.iter()
            .filter_map(|w| w.upgrade())
            .map(|g| (g.id, g.active_sessions()))
            .filter(|(id, sessions)| Some(*id) != kept || *sessions > 0)
            .collect()
    }

    /// The snapshot a new session starts with: the canary's for `percent`
    /// of sessions (every session whose number modulo 100 is below it, so
    /// the share is exact), the current one otherwise.
    pub fn session_snapshot(&self) -> Arc<Snapshot> {
        let n = self.session_seq.fetch_add(1, Ordering::Relaxed);
        {
            let r = self.rollout();
            if let Some(c) = &r.canary
                && (n % 100) < u64::from(c.percent)
            {
                return c.snapshot.clone();
            }
        }
        self.snapshot()
    }

    /// The generation a delivery question about message `queue_id` goes
    /// to: the canary's for `percent` of messages, by a stable hash of the
    /// id (every question about one message meets the same generation), the
    /// current one otherwise.
    pub fn delivery_generation(&self, queue_id: &str) -> Arc<Generation> {
        {
            let r = self.rollout();
            if let Some(c) = &r.canary
                && canary_share(queue_id) < u64::from(c.percent)
            {
                return c.snapshot.generation.clone();
            }
        }
        self.current_generation()
    }

    /// Whether a delivery question may meet a generation with a plugin on
    /// `stage` (the current one or the canary's).
    pub fn delivery_hooks(&self, stage: Stage) -> bool {
        let canary = self
            .rollout()
            .canary
            .as_ref()
            .is_some_and(|c| c.snapshot.generation.hooks(stage));
        canary || self.current_generation().hooks(stage)
    }

    /// The generation kept for rollback, if one is.
    pub fn kept_for_rollback(&self) -> Option<u64> {
        self.rollout()
            .previous
            .as_ref()
            .map(|p| p.snapshot.generation.id)
    }

    /// Whether a canary runs (a reload must wait for promote or rollback).
    pub fn canary_running(&self) -> Option<u64> {
        self.rollout()
            .canary
            .as_ref()
            .map(|c| c.snapshot.generation.id)
    }
}

/// A message's place in 0..100 for the canary's share: a hash of its id
/// (queue ids are random, so the share of messages is close to `percent`).
fn canary_share(queue_id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    queue_id.hash(&mut h);
    h.finish() % 100
}

fn retire(g: &Generations, old: &Arc<Snapshot>) {
    let mut retired = g.retired.lock().unwrap_or_else(|p| p.into_inner());
    retired.retain(|w| w.strong_count() > 0);
    retired.push(Arc::downgrade(&old.generation));
}

fn event(r: &mut Rollout, text: String) {
    r.last_event = Some((SystemTime::now(), text));
}

/// Install `next` as the current snapshot (a reload or a promotion): the
/// one it replaces is kept for rollback while `next` is watched.
pub fn install(g: &Generations, next: Arc<Snapshot>) {
    let watch = next.config.rollback.enabled;
    let old = std::mem::replace(
        &mut *g.current.write().unwrap_or_else(|p| p.into_inner()),
        next,
    );
    retire(g, &old);
    let mut r = g.rollout();
    r.previous = watch.then(|| Previous {
        snapshot: old,
        since: Instant::now(),
    });
}

/// Start a canary (the reload checked that none runs).
pub fn start_canary(g: &Generations, snapshot: Arc<Snapshot>, percent: u8) {
    let id = snapshot.generation.id;
    let mut r = g.rollout();
    r.canary = Some(Canary {
        snapshot,
        percent,
        started: Instant::now(),
    });
    tracing::info!(
        generation = id,
        percent,
        "canary started: {percent}% of new sessions get generation {id}"
    );
}

/// `postern promote`: the canary becomes the current generation.
pub fn promote(g: &Generations) -> Result<String, String> {
    let canary = g
        .rollout()
        .canary
        .take()
        .ok_or("no canary is running (start one with `postern reload --canary N`)")?;
    let id = canary.snapshot.generation.id;
    let from = g.current_generation().id;
    install(g, canary.snapshot);
    let text =
        format!("generation {id} promoted from canary to current (replacing generation {from})");
    event(&mut g.rollout(), text.clone());
    crate::server::metrics::events::promotion();
    tracing::info!(generation = id, replaced = from, "{text}");
    Ok(text)
}

/// `postern rollback` (and the automatic one): drop the canary, or go back
/// to the previous generation while it is kept.
pub fn rollback(g: &Generations, why: &str, trigger: &str) -> Result<String, String> {
    let mut r = g.rollout();
    if let Some(c) = r.canary.take() {
        let id = c.snapshot.generation.id;
        retire(g, &c.snapshot);
        let text = format!("canary generation {id} rolled back ({trigger}): {why}");
        event(&mut r, text.clone());
        drop(r);
        crate::server::metrics::events::rollback("canary", trigger);
        tracing::warn!(generation = id, trigger, "{text}");
        return Ok(text);
    }
    let Some(prev) = r.previous.take() else {
        return Err(
            "nothing to roll back to: no canary runs and the previous generation is no longer kept \
             ([rollback] watch after a reload)"
                .into(),
        );
    };
    let back = prev.snapshot.generation.id;
    let old = std::mem::replace(
        &mut *g.current.write().unwrap_or_else(|p| p.into_inner()),
        prev.snapshot,
    );
    let from = old.generation.id;
    retire(g, &old);
    let text = format!("generation {from} rolled back to generation {back} ({trigger}): {why}");
    event(&mut r, text.clone());
    drop(r);
    crate::server::metrics::events::rollback("generation", trigger);
    tracing::warn!(generation = back, rolled_back = from, trigger, "{text}");
    Ok(text)
}

/// Why a watched generation should go, if it should.
fn verdict(h: postern_plugin::Health, s: &crate::config::RollbackSettings) -> Option<String> {
    (s.enabled && h.calls >= s.min_calls && h.failure_rate() >= s.failure_rate).then(|| {
        format!(
            "{} of {} plugin calls failed ({:.0}% >= [rollback] failure_rate {:.0}%)",
            h.failures,
            h.calls,
            h.failure_rate() * 100.0,
            s.failure_rate * 100.0
        )
    })
}

/// Watch the canary and a newly installed generation; roll back by itself
/// when one fails too often; forget the previous generation once the watch
/// is over.
pub async fn monitor(shared: Arc<Shared>) {
    let g = &shared.generations;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let (canary, watched) = {
            let mut r = g.rollout();
            let canary = r.canary.as_ref().map(|c| c.snapshot.clone());
            let current = g.snapshot();
            let watch = current.config.rollback.watch;
            if r.previous
                .as_ref()
                .is_some_and(|p| p.since.elapsed() >= watch)
            {
                r.previous = None;
                tracing::info!(
                    generation = current.generation.id,
                    "rollback watch over: the previous generation is no longer kept"
                );
            }
            (canary, r.previous.is_some().then_some(current))
        };
        if let Some(c) = canary
            && let Some(why) = verdict(c.generation.health(), &c.config.rollback)
        {
            let _ = rollback(g, &why, "automatic");
            continue;
        }
        if let Some(cur) = watched
            && let Some(why) = verdict(cur.generation.health(), &cur.config.rollback)
        {
            let _ = rollback(g, &why, "automatic");
        }
    }
}

/// The rollout part of `postern status`.
pub fn status(g: &Generations) -> serde_json::Value {
    let r = g.rollout();
    let current = g.snapshot();
    let health = |s: &Snapshot| {
        let h = s.generation.health();
        json!({
            "generation": s.generation.id,
            "sessions": h.sessions,
            "calls": h.calls,
            "failures": h.failures,
            "failure_rate": h.failure_rate(),
            "accepts": h.accepts,
            "rejects": h.rejects,
            "defers": h.defers,
            "disconnects": h.disconnects,
        })
    };
    json!({
        "current": health(&current),
        "canary": r.canary.as_ref().map(|c| {
            let mut v = health(&c.snapshot);
            v["percent"] = json!(c.percent);
            v["running_s"] = json!(c.started.elapsed().as_secs());
            v
        }),
        "previous": r.previous.as_ref().map(|p| json!({
            "generation": p.snapshot.generation.id,
            "kept_for_s": current.config.rollback.watch.saturating_sub(p.since.elapsed()).as_secs(),
        })),
        "last_event": r.last_event.as_ref().map(|(at, text)| json!({
            "at_unix_ms": at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
            "text": text,
        })),
    })
}
