//! A generation: one complete, validated set of plugins built from one
//! configuration. Sessions hold an `Arc<Generation>` for their whole life, so
//! a reload never changes the policy under a running session; a generation
//! is freed when its last session ends. Input: trusted plugin specs (the
//! plugins themselves are checked by `load.rs`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use crate::Stage;
use crate::chain::SessionChain;
use crate::engine::Runtime;
use crate::hooks::Live;
use crate::load::{CallError, LoadError, LoadedPlugin, Mode, PluginSpec};
use crate::state::Services;

pub struct Generation {
    pub id: u64,
    pub loaded_at: SystemTime,
    /// Where the configuration came from (path), for `postern status`.
    pub source: String,
    pub(crate) plugins: Vec<LoadedPlugin>,
    pub(crate) milters: Vec<crate::milter::MilterSpec>,
    /// Each stage's chain: plugins and milters in configuration order.
    pub(crate) by_stage: [Vec<Member>; Stage::COUNT],
    pub(crate) services: Services,
    pub(crate) sessions: AtomicUsize,
    /// How its plugins fared, for canary comparison and automatic rollback.
    pub(crate) health: HealthCounters,
}

/// Counters of one generation's plugin calls (every plugin, every stage,
/// shadow plugins included).
#[derive(Default)]
pub(crate) struct HealthCounters {
    pub calls: AtomicU64,
    /// Calls that failed (trap, time-out, memory, invalid answer,
    /// instantiation) plus calls an open breaker skipped.
    pub failures: AtomicU64,
    /// Enforced verdicts other than `pass`, by kind (`VERDICT_KINDS`).
    pub verdicts: [AtomicU64; 6],
    pub sessions_started: AtomicU64,
}

/// A generation's health at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Health {
    pub sessions: u64,
    pub calls: u64,
    pub failures: u64,
    pub accepts: u64,
    pub rejects: u64,
    pub defers: u64,
    pub disconnects: u64,
}

impl Health {
    /// Failures per call (0 without calls).
    pub fn failure_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.failures as f64 / self.calls as f64
        }
    }
}

/// A member of a stage's chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Member {
    Plugin(usize),
    Milter(usize),
}

/// A summary of one loaded plugin, for status output.
#[derive(Clone, Debug)]
pub struct PluginInfo {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    pub stages: Vec<Stage>,
    pub mode: Mode,
    /// False when the compiled code came from the cache.
    pub compiled: bool,
    /// Shadow mode: verdicts other than `pass` so far (counted by plugin
    /// name since the server started).
    pub shadow_differed: u64,
    /// Capabilities (`dns`, `kv`, `mail-auth`) the component imports but
    /// was not granted: its calls there answer `denied`.
    pub ungranted: Vec<&'static str>,
    /// Its circuit breaker's state in this generation.
    pub breaker: crate::breaker::BreakerState,
}

impl Generation {
    /// Build a generation: load and check every plugin (compiling on the
    /// blocking pool), then instantiate each once and run its `init` with its
    /// configuration. Any failure refuses the whole generation.
    pub async fn load(
        runtime: &Arc<Runtime>,
        id: u64,
        source: String,
        specs: Vec<PluginSpec>,
        services: Services,
    ) -> Result<Generation, LoadError> {
        Self::load_with_milters(runtime, id, source, specs, Vec::new(), services).await
    }

    /// `load`, with milters placed among the plugins (`MilterSpec::position`).
    pub async fn load_with_milters(
        runtime: &Arc<Runtime>,
        id: u64,
        source: String,
        specs: Vec<PluginSpec>,
        milters: Vec<crate::milter::MilterSpec>,
        services: Services,
    ) -> Result<Generation, LoadError> {
        let mut seen = std::collections::HashSet::new();
        for s in &specs {
            if !seen.insert(s.name.clone()) {
                return Err(LoadError::Settings {
                    plugin: s.name.clone(),
                    message: "the name is used by more than one [[plugin]]".into(),
                });
            }
        }
        let mut plugins = Vec::with_capacity(specs.len());
        for spec in specs {
            let rt = runtime.clone();
            let name = spec.name.clone();
            let loaded = tokio::task::spawn_blocking(move || rt.load_plugin(spec))
                .await
                .map_err(|e| LoadError::Settings {
                    plugin: name,
                    message: format!("loader task failed: {e}"),
                })??;
            loaded.init_check(&services).await?;
            plugins.push(loaded);
        }
        // Plugins in file order, each milter before the plugin it preceded
        // in the file (`position`), the rest at the end.
        let mut by_stage: [Vec<Member>; Stage::COUNT] = Default::default();
        let push_milters = |by_stage: &mut [Vec<Member>; Stage::COUNT],
                            at: &dyn Fn(usize) -> bool| {
            for (j, _) in milters.iter().enumerate().filter(|(_, m)| at(m.position)) {
                for s in crate::milter::MILTER_STAGES {
                    by_stage[s as usize].push(Member::Milter(j));
                }
            }
        };
        for (i, p) in plugins.iter().enumerate() {
            push_milters(&mut by_stage, &|pos| pos == i);
            for s in &p.stages {
                by_stage[*s as usize].push(Member::Plugin(i));
            }
        }
        let n = plugins.len();
        push_milters(&mut by_stage, &|pos| pos >= n);
        Ok(Generation {
            id,
            loaded_at: SystemTime::now(),
            source,
            plugins,
            milters,
            by_stage,
            services,
            sessions: AtomicUsize::new(0),
            health: HealthCounters::default(),
        })
    }

    /// Content hashes of this generation's components: once it is the running
    /// generation, `Runtime::retain_compiled` keeps only these in the cache.
    pub fn component_hashes(&self) -> std::collections::HashSet<String> {
        self.plugins.iter().map(|p| p.hash.clone()).collect()
    }

    /// A chain for one new session (instances are created lazily).
    pub fn session(self: &Arc<Self>, session_id: Arc<str>) -> SessionChain {
        self.health.sessions_started.fetch_add(1, Ordering::Relaxed);
        self.question(session_id)
    }

    /// The chain for one delivery-side question (route, delivery result,
    /// bounce): it holds the generation like a session, but is not counted
    /// as an SMTP session in the generation's health.
    pub fn question(self: &Arc<Self>, id: Arc<str>) -> SessionChain {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        SessionChain::new(self.clone(), id)
    }

    /// Sessions currently running on this generation.
    pub fn active_sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Whether any plugin hooks `stage`.
    pub fn hooks(&self, stage: Stage) -> bool {
        !self.by_stage[stage as usize].is_empty()
    }

    pub fn plugins(&self) -> Vec<PluginInfo> {
        self.plugins
            .iter()
            .map(|p| PluginInfo {
                name: p.spec.name.clone(),
                path: p.spec.path.clone(),
                sha256: p.hash.clone(),
                stages: p.stages.clone(),
                mode: p.spec.mode,
                compiled: p.compiled,
                shadow_differed: p.stats.shadow_differed(),
                ungranted: p.ungranted.clone(),
                breaker: p.breaker.state(),
            })
            .collect()
    }

    /// An instance of plugin `i` for a session: pooled or fresh. Every
    /// plugin's idle instances hold slots of the one instance allocator, so
    /// when a fresh instance finds no free slot, the generation's idle
    /// instances (of any plugin) are dropped and the checkout is tried once
    /// more.
    pub(crate) async fn checkout(
        &self,
        i: usize,
        session_id: &Arc<str>,
    ) -> Result<Live, CallError> {
        let plugin = &self.plugins[i];
        match plugin.checkout(session_id, &self.services).await {
            Err(CallError::Instantiate(_)) if self.drop_idle() > 0 => {
                plugin.checkout(session_id, &self.services).await
            }
            r => r,
        }
    }

    /// Drop every plugin's idle instances; returns how many there were.
    fn drop_idle(&self) -> usize {
        self.plugins.iter().map(|p| p.drop_idle()).sum()
    }

    /// Drop every plugin's idle instances that have been unused for longer
    /// than the runtime's idle timeout; returns how many. The server calls
    /// it periodically: pools are otherwise only trimmed when used.
    pub fn expire_idle(&self) -> usize {
        self.plugins.iter().map(|p| p.expire_idle()).sum()
    }

    /// Idle instances each plugin keeps for reuse by later sessions.
    pub fn idle_instances(&self) -> Vec<(String, usize)> {
        self.plugins
            .iter()
            .map(|p| (p.spec.name.clone(), p.idle_instances()))
            .collect()
    }

    /// How its plugins fared since it was loaded.
    pub fn health(&self) -> Health {
        let h = &self.health;
        let v = |kind: &str| {
            crate::stats::VERDICT_KINDS
                .iter()
                .position(|k| *k == kind)
                .map_or(0, |i| h.verdicts[i].load(Ordering::Relaxed))
        };
        Health {
            sessions: h.sessions_started.load(Ordering::Relaxed),
            calls: h.calls.load(Ordering::Relaxed),
            failures: h.failures.load(Ordering::Relaxed),
            accepts: v("accept") + v("accept-with"),
            rejects: v("reject"),
            defers: v("defer"),
            disconnects: v("disconnect"),
        }
    }

    pub fn services(&self) -> &Services {
        &self.services
    }
}
