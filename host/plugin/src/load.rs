//! Loading one plugin: read the file, identify it (component vs core module
//! vs garbage), compile (content-hash cached), check the WIT version of its
//! imports and exports, pre-instantiate against the host's linker and find
//! its stage exports. Input: untrusted `.wasm` bytes; every failure is a
//! precise `LoadError` naming the plugin and file.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::Store;
use wasmtime::component::{Component, InstancePre};

use crate::capability::Grants;
use crate::engine::Runtime;
use crate::hooks::{Contract, HookIndices, Live};
use crate::state::{PluginMeta, PluginState, Services};
use crate::stats::PluginStats;
use crate::{Stage, WIT_PACKAGE};

/// What to do when a plugin fails (trap, timeout, memory, invalid reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnError {
    /// Answer `451 4.3.0` (the default): the client retries later.
    #[default]
    Tempfail,
    /// Treat the failure as `pass`.
    FailOpen,
    /// Answer `554 5.7.0`.
    FailClosed,
}

impl OnError {
    pub fn parse(s: &str) -> Option<OnError> {
        match s {
            "tempfail" => Some(OnError::Tempfail),
            "fail-open" => Some(OnError::FailOpen),
            "fail-closed" => Some(OnError::FailClosed),
            _ => None,
        }
    }
}

/// Whether a plugin's verdicts are enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Enforce,
    /// Run on live traffic, log and count verdicts, never enforce them.
    Shadow,
}

impl Mode {
    /// As the configuration spells it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

/// One `[[plugin]]` entry of the configuration.
#[derive(Clone, Debug)]
pub struct PluginSpec {
    pub name: String,
    pub path: PathBuf,
    /// The `[plugin.config]` table as a JSON object.
    pub config_json: String,
    pub on_error: OnError,
    pub timeout: Duration,
    pub max_memory: usize,
    pub capabilities: Vec<String>,
    /// Key-value namespace; defaults to the plugin's name.
    pub kv_namespace: Option<String>,
    pub mode: Mode,
    /// Hand instances on to later sessions when the plugin exports
    /// `recycle` (`reuse = false` gives every session a fresh instance).
    pub reuse: bool,
    /// Directories the plugin may read (`files = [...]`), each visible in
    /// the sandbox read-only at the same path; nothing else is.
    pub files: Vec<PathBuf>,
    /// Its circuit breaker (`[breaker]`).
    pub breaker: crate::breaker::BreakerSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin {plugin:?}: cannot read {path}: {source}")]
    Read {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin {plugin:?}: {path} is not a WebAssembly file")]
    NotWasm { plugin: String, path: PathBuf },
    #[error(
        "plugin {plugin:?}: {path} is a core WebAssembly module, not a component \
         (build it for wasm32-wasip2, or wrap it with `wasm-tools component new`)"
    )]
    CoreModule { plugin: String, path: PathBuf },
    #[error("plugin {plugin:?}: {path} does not compile: {message}")]
    Compile {
        plugin: String,
        path: PathBuf,
        message: String,
    },
    #[error(
        "plugin {plugin:?}: {path} uses {interface} but this Postern implements \
         {WIT_PACKAGE}@0.1.0 and {WIT_PACKAGE}@0.2.0"
    )]
    Version {
        plugin: String,
        path: PathBuf,
        interface: String,
    },
    #[error(
        "plugin {plugin:?}: {path} mixes contract versions: {first} and {second} \
         (a component is built against one {WIT_PACKAGE} version)"
    )]
    MixedVersions {
        plugin: String,
        path: PathBuf,
        first: String,
        second: String,
    },
    #[error(
        "plugin {plugin:?}: {path} exports no Postern stage (expected at least one of \
         {WIT_PACKAGE}/{{connect,helo,auth,mail-from,rcpt-to,data,vrfy,expn,outcome}}-hook@0.2.0 \
         or @0.1.0)"
    )]
    NoStages { plugin: String, path: PathBuf },
    #[error("plugin {plugin:?}: {path} cannot be linked: {message}")]
    Link {
        plugin: String,
        path: PathBuf,
        message: String,
    },
    #[error("plugin {plugin:?}: failed to start: {message}")]
    Instantiate { plugin: String, message: String },
    #[error("plugin {plugin:?} refused its configuration: {message}")]
    InitRefused { plugin: String, message: String },
    #[error("plugin {plugin:?}: init failed: {message}")]
    InitFailed { plugin: String, message: String },
    #[error("plugin {plugin:?}: {message}")]
    Settings { plugin: String, message: String },
    #[error(
        "plugin {plugin:?}: {path} does not match postern:policy@{version} although it names that version (built from a changed or stale copy of the WIT?): {message}"
    )]
    Contract {
        plugin: String,
        path: PathBuf,
        version: &'static str,
        message: String,
    },
}

/// A compiled, checked plugin: instantiated on demand, with a pool of idle
/// instances when the plugin exports `recycle`.
pub(crate) struct LoadedPlugin {
    pub spec: PluginSpec,
    pub meta: Arc<PluginMeta>,
    /// sha256 of the .wasm file, hex.
    pub hash: String,
    pub pre: InstancePre<PluginState>,
    pub idx: HookIndices,
    pub stats: Arc<PluginStats>,
    pub stages: Vec<Stage>,
    /// Instances that served a session and may serve another (only for
    /// plugins that export `recycle` and allow reuse), at most `idle_cap`,
    /// oldest first, each with the time it went idle.
    pool: Mutex<Vec<(Live, Instant)>>,
    idle_cap: usize,
    /// An idle instance unused for this long is dropped.
    idle_ttl: Duration,
    /// Whether this load compiled the component (false: cache hit).
    pub compiled: bool,
    /// Capabilities the component imports but was not granted.
    pub ungranted: Vec<&'static str>,
    /// Stops calling the plugin for a while when it keeps failing.
    pub breaker: crate::breaker::Breaker,
}

/// Why a call into a plugin failed.
#[derive(Debug)]
pub(crate) enum CallError {
    Trap(String),
    Timeout,
    Memory(String),
    Invalid(String),
    InitRefused(String),
    Instantiate(String),
    /// Not called: its circuit breaker is open.
    BreakerOpen,
}

impl CallError {
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Trap(_) => "trap",
            CallError::Timeout => "timeout",
            CallError::Memory(_) => "memory",
            CallError::Invalid(_) => "invalid",
            CallError::InitRefused(_) => "init",
            CallError::Instantiate(_) => "instantiate",
            CallError::BreakerOpen => "breaker-open",
        }
    }

    pub fn classify(e: wasmtime::Error) -> CallError {
        if let Some(trap) = e.downcast_ref::<wasmtime::Trap>()
            && *trap == wasmtime::Trap::Interrupt
        {
            return CallError::Timeout;
        }
        let text = format!("{e:#}");
        if text.contains("growing memory") || text.contains("memory") && text.contains("limit") {
            CallError::Memory(text)
        } else {
            CallError::Trap(text)
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Trap(m) => write!(f, "trapped: {m}"),
            CallError::Timeout => write!(f, "exceeded its time limit"),
            CallError::Memory(m) => write!(f, "exceeded its memory limit: {m}"),
            CallError::Invalid(m) => write!(f, "returned an invalid reply: {m}"),
            CallError::InitRefused(m) => write!(f, "refused its configuration: {m}"),
            CallError::Instantiate(m) => write!(f, "failed to instantiate: {m}"),
            CallError::BreakerOpen => write!(f, "not called: its circuit breaker is open"),
        }
    }
}

const WASM_MAGIC: &[u8; 4] = b"\0asm";

fn versioned(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
    Some(rest.split_once('@').unwrap_or((rest, "")))
}

impl Runtime {
    /// Load and check one plugin. Does not run `init` (see `init_check`).
    pub(crate) fn load_plugin(&self, spec: PluginSpec) -> Result<LoadedPlugin, LoadError> {
        let plugin = spec.name.clone();
        let path = spec.path.clone();
        let grants = Grants::parse(&spec.capabilities).map_err(|message| LoadError::Settings {
            plugin: plugin.clone(),
            message,
        })?;
        if spec.max_memory > self.config.max_memory_ceiling {
            return Err(LoadError::Settings {
                plugin,
                message: format!(
                    "max_memory {} exceeds the runtime ceiling {} ([runtime] max_memory)",
                    spec.max_memory, self.config.max_memory_ceiling
                ),
            });
        }
        let bytes = std::fs::read(&path).map_err(|source| LoadError::Read {
            plugin: plugin.clone(),
            path: path.clone(),
            source,
        })?;
        if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
            return Err(LoadError::NotWasm { plugin, path });
        }
        if bytes[4..8] == [1, 0, 0, 0] {
            return Err(LoadError::CoreModule { plugin, path });
        }
        let hash = hex(&Sha256::digest(&bytes));
        let (component, compiled) =
            self.compile(&hash, &bytes)
                .map_err(|e| LoadError::Compile {
                    plugin: plugin.clone(),
                    path: path.clone(),
                    message: format!("{e:#}"),
                })?;
        let contract = self.check_versions(&component, &plugin, &path)?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            let message = format!("{e:#}");
            // An import of the contract with another shape (a stale or edited
            // WIT under the same version) is a contract mismatch, named as one.
            if message.contains(&format!("{WIT_PACKAGE}/")) {
                LoadError::Contract {
                    plugin: plugin.clone(),
                    path: path.clone(),
                    version: contract.version(),
                    message: format!("import: {message}"),
                }
            } else {
                LoadError::Link {
                    plugin: plugin.clone(),
                    path: path.clone(),
                    message,
                }
            }
        })?;
        let idx = HookIndices::detect(&pre, contract).map_err(|message| LoadError::Contract {
            plugin: plugin.clone(),
            path: path.clone(),
            version: contract.version(),
            message,
        })?;
        let ungranted = {
            let ty = component.component_type();
            let imports: Vec<String> = ty
                .imports(&self.engine)
                .map(|(n, _)| n.to_string())
                .collect();
            grants.missing(imports.iter().map(String::as_str))
        };
        let stages: Vec<Stage> = Stage::ALL.into_iter().filter(|s| idx.exports(*s)).collect();
        if stages.is_empty() {
            return Err(LoadError::NoStages { plugin, path });
        }
        let namespace = spec
            .kv_namespace
            .clone()
            .unwrap_or_else(|| spec.name.clone());
        let meta = Arc::new(PluginMeta {
            name: spec.name.as_str().into(),
            grants,
            kv_prefix: format!("{namespace}\u{1f}"),
            max_memory: spec.max_memory,
            files: spec.files.clone(),
        });
        let spec_breaker = spec.breaker;
        let idle_cap = if spec.reuse && idx.recyclable() {
            self.config.idle_instances
        } else {
            0
        };
        Ok(LoadedPlugin {
            idle_cap,
            idle_ttl: self.config.idle_timeout,
            stats: self.stats.for_plugin(&spec.name),
            spec,
            meta,
            hash,
            pre,
            pool: Mutex::new(Vec::new()),
            idx,
            stages,
            compiled,
            ungranted,
            breaker: crate::breaker::Breaker::new(spec_breaker),
        })
    }

    /// The contract version the component was built against: every
    /// `postern:policy` interface it imports or exports must name the same
    /// version, one this host serves. A component that names none (it uses
    /// no Postern interface) counts as 0.2 and is refused later for
    /// exporting no stage.
    fn check_versions(
        &self,
        component: &Component,
        plugin: &str,
        path: &std::path::Path,
    ) -> Result<Contract, LoadError> {
        let ty = component.component_type();
        let names = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .chain(ty.exports(&self.engine).map(|(n, _)| n.to_string()));
        let mut found: Option<(Contract, String)> = None;
        for name in names {
            let Some((_, version)) = versioned(&name) else {
                continue;
            };
            let Some(contract) = Contract::from_version(version) else {
                return Err(LoadError::Version {
                    plugin: plugin.to_string(),
                    path: path.to_path_buf(),
                    interface: name,
                });
            };
            match &found {
                None => found = Some((contract, name)),
                Some((c, first)) if *c != contract => {
                    return Err(LoadError::MixedVersions {
                        plugin: plugin.to_string(),
                        path: path.to_path_buf(),
                        first: first.clone(),
                        second: name,
                    });
                }
                Some(_) => {}
            }
        }
        Ok(found.map_or(Contract::V02, |(c, _)| c))
    }
}

impl LoadedPlugin {
    /// A fresh instance for one session, with `init` already run.
    pub(crate) async fn instantiate(
        &self,
        session_id: Arc<str>,
        services: &Services,
    ) -> Result<Live, CallError> {
        let started = Instant::now();
        let state = PluginState::new(self.meta.clone(), session_id, services.clone());
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        arm_deadline(&mut store, self.spec.timeout);
        let fut = async {
            let instance = self
                .pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
            let mut live = Live::new(store, instance, &self.idx);
            match crate::hooks::run_init(&mut live, &self.idx, &self.spec.config_json).await {
                Ok(Ok(())) => Ok(live),
                Ok(Err(msg)) => Err(CallError::InitRefused(msg)),
                Err(e) => Err(CallError::classify(e)),
            }
        };
        let result = match tokio::time::timeout(self.spec.timeout + WALL_GRACE, fut).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout),
        };
        self.stats.instantiations.fetch_add(1, Ordering::Relaxed);
        self.stats.instantiate_latency.observe(started.elapsed());
        result
    }

    /// An instance for `session_id`: a pooled one that agrees to be recycled
    /// (at most [`RECYCLE_TRIES`] are asked), or a fresh one.
    pub(crate) async fn checkout(
        &self,
        session_id: &Arc<str>,
        services: &Services,
    ) -> Result<Live, CallError> {
        for _ in 0..RECYCLE_TRIES {
            let Some(mut live) = self.take_idle() else {
                break;
            };
            set_deadline(&mut live.store, self.spec.timeout);
            live.busy = true;
            let asked = tokio::time::timeout(
                self.spec.timeout + WALL_GRACE,
                crate::hooks::run_recycle(&mut live, &self.idx),
            )
            .await;
            let failure = match asked {
                Ok(Ok(true)) => {
                    live.busy = false;
                    live.sessions += 1;
                    live.store.data_mut().set_session(session_id.clone());
                    self.stats.reuses.fetch_add(1, Ordering::Relaxed);
                    return Ok(live);
                }
                Ok(Ok(false)) => None,
                Ok(Err(e)) => Some(CallError::classify(e)),
                Err(_) => Some(CallError::Timeout),
            };
            // Refused, trapped or timed out: the instance is discarded and
            // the session is not charged for it (it gets another instance).
            self.stats.recycle_refusals.fetch_add(1, Ordering::Relaxed);
            if let Some(e) = failure {
                tracing::warn!(
                    plugin = %self.meta.name,
                    session = %session_id,
                    error_kind = e.kind(),
                    "plugin recycle {e}; the instance is discarded"
                );
            }
        }
        self.instantiate(session_id.clone(), services).await
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Vec<(Live, Instant)>> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle instance, if any (instances idle for
    /// longer than the idle timeout are dropped on the way, outside the
    /// lock).
    fn take_idle(&self) -> Option<Live> {
        if self.idle_cap == 0 {
            return None;
        }
        let (live, _stale) = {
            let mut pool = self.lock_pool();
            let stale = expire(&mut pool, self.idle_ttl);
            (pool.pop().map(|(l, _)| l), stale)
        };
        live
    }

    /// Take back an instance a session is done with. It is kept for a later
    /// session only if the plugin allows reuse, its last call finished
    /// normally, it has not served too many sessions and the pool has room;
    /// otherwise it is dropped.
    pub(crate) fn give_back(&self, live: Live) {
        if self.idle_cap == 0 || live.busy || live.sessions >= MAX_SESSIONS_PER_INSTANCE {
            return;
        }
        let _stale = {
            let mut pool = self.lock_pool();
            let stale = expire(&mut pool, self.idle_ttl);
            if pool.len() < self.idle_cap {
                pool.push((live, Instant::now()));
            }
            stale
        };
    }

    /// Drop every idle instance (frees their allocator slots); returns how
    /// many there were.
    pub(crate) fn drop_idle(&self) -> usize {
        let all = std::mem::take(&mut *self.lock_pool());
        all.len()
    }

    /// Drop the idle instances unused for longer than the idle timeout
    /// (outside the lock); returns how many. Called by the periodic sweep,
    /// so instances of a plugin nobody calls any more do not stay.
    pub(crate) fn expire_idle(&self) -> usize {
        let stale = expire(&mut self.lock_pool(), self.idle_ttl);
        stale.len()
    }

    /// Idle instances held for reuse.
    pub(crate) fn idle_instances(&self) -> usize {
        self.lock_pool().len()
    }

    /// Instantiate once and run `init` to validate the configuration (the
    /// instance then waits in the pool for the first session, if reusable).
    pub(crate) async fn init_check(&self, services: &Services) -> Result<(), LoadError> {
        match self.instantiate("check".into(), services).await {
            Ok(mut live) => {
                // Every export against the host's types, by structure, now
                // rather than at the first call of each.
                self.idx
                    .typecheck(&mut live)
                    .map_err(|message| LoadError::Contract {
                        plugin: self.spec.name.clone(),
                        path: self.spec.path.clone(),
                        version: self.idx.contract().version(),
                        message,
                    })?;
                self.give_back(live);
                Ok(())
            }
            Err(CallError::InitRefused(message)) => Err(LoadError::InitRefused {
                plugin: self.spec.name.clone(),
                message,
            }),
            Err(CallError::Instantiate(message)) => Err(LoadError::Instantiate {
                plugin: self.spec.name.clone(),
                message,
            }),
            Err(e) => Err(LoadError::InitFailed {
                plugin: self.spec.name.clone(),
                message: e.to_string(),
            }),
        }
    }
}

/// Pooled instances asked to `recycle` for one session before it gets a
/// fresh instance (bounds what a plugin whose `recycle` fails can cost).
const RECYCLE_TRIES: usize = 2;

/// Removes (and returns, to be dropped outside the lock) the instances at the
/// front of `pool` (the least recently used) that have been idle for longer
/// than `ttl`, so a burst does not pin its instances' memory for good.
fn expire(pool: &mut Vec<(Live, Instant)>, ttl: Duration) -> Vec<(Live, Instant)> {
    let now = Instant::now();
    let n = pool
        .iter()
        .take_while(|(_, since)| now.duration_since(*since) > ttl)
        .count();
    pool.drain(..n).collect()
}

/// Sessions one instance may serve before it is replaced by a fresh one
/// (bounds whatever a long-lived instance accumulates: heap fragmentation,
/// resource-table growth).
pub(crate) const MAX_SESSIONS_PER_INSTANCE: u32 = 10_000;

/// Extra wall time allowed beyond `timeout` before the host abandons a call
/// whose plugin is blocked in an async host call rather than running code.
pub(crate) const WALL_GRACE: Duration = Duration::from_millis(50);

/// Arm the epoch deadline for a call of at most `timeout`: every tick the
/// plugin yields to the executor (so a busy plugin cannot starve other
/// sessions) and once the wall-clock deadline passes it is interrupted.
pub(crate) fn arm_deadline(store: &mut Store<PluginState>, timeout: Duration) {
    set_deadline(store, timeout);
    store.epoch_deadline_callback(|ctx| {
        if Instant::now() >= ctx.data().deadline {
            Ok(wasmtime::UpdateDeadline::Interrupt)
        } else {
            Ok(wasmtime::UpdateDeadline::Yield(1))
        }
    });
}

/// Reset the deadline of an armed store for the next call.
pub(crate) fn set_deadline(store: &mut Store<PluginState>, timeout: Duration) {
    store.data_mut().deadline = Instant::now() + timeout;
    store.set_epoch_deadline(1);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            versioned("postern:policy/rcpt-to-hook@0.1.0"),
            Some(("rcpt-to-hook", "0.1.0"))
        );
        assert_eq!(
            versioned("postern:policy/log@0.2.0"),
            Some(("log", "0.2.0"))
        );
        assert_eq!(versioned("wasi:cli/stdout@0.2.0"), None);
        assert_eq!(OnError::parse("fail-open"), Some(OnError::FailOpen));
        assert_eq!(OnError::parse("open"), None);
    }
}
