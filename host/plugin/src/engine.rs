//! The one wasmtime engine of the process: component model, async calls,
//! epoch interruption (wall-clock deadlines), the pooling instance allocator,
//! and a content-addressed cache of compiled components (memory and disk).
//! Input: the operator's runtime settings (trusted) and plugin bytes
//! (untrusted; only compiled, never executed here).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::{v01, v02};
use crate::state::PluginState;
use crate::stats::StatsRegistry;

/// Interval of the epoch ticker; deadlines are checked at this granularity.
pub const TICK: Duration = Duration::from_millis(1);

/// Engine-wide settings (restart to change them).
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Use the pooling allocator (fast instantiation) instead of on-demand.
    pub pooling: bool,
    /// Maximum number of plugin instances alive at once (pool size).
    pub max_instances: u32,
    /// Upper bound for any plugin's `max_memory` (bytes).
    pub max_memory_ceiling: usize,
    /// Maximum wasm stack per call (bytes).
    pub max_stack: usize,
    /// Where compiled components are cached; none disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Bytes of each pooled linear memory kept resident (reset in place)
    /// between instances.
    pub keep_resident: usize,
    /// Idle instances kept per plugin (and generation) for reuse by later
    /// sessions, for plugins that export `recycle`; 0 disables reuse.
    pub idle_instances: usize,
    /// An idle instance unused for this long is dropped (checked whenever a
    /// pool is used, and by [`Generation::expire_idle`]).
    ///
    /// [`Generation::expire_idle`]: crate::Generation::expire_idle
    pub idle_timeout: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            pooling: true,
            max_instances: 4096,
            max_memory_ceiling: 512 << 20,
            max_stack: 1 << 20,
            cache_dir: None,
            keep_resident: 4 << 20,
            idle_instances: 64,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<PluginState>,
    pub(crate) config: RuntimeConfig,
    compiled: Mutex<HashMap<String, Component>>,
    stop: Arc<AtomicBool>,
    pub(crate) stats: StatsRegistry,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn wasmtime_config(rc: &RuntimeConfig) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    c.max_wasm_stack(rc.max_stack);
    c.async_stack_size(rc.max_stack + (1 << 20));
    c.cranelift_opt_level(wasmtime::OptLevel::Speed);
    c.parallel_compilation(true);
    if rc.pooling {
        let n = rc.max_instances.max(16);
        let mut p = PoolingAllocationConfig::default();
        p.total_component_instances(n)
            .total_core_instances(n.saturating_mul(16))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .total_stacks(n)
            .max_memory_size(rc.max_memory_ceiling)
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20)
            .table_elements(100_000)
            // Reuse a slot for the same component (its memory image stays
            // mapped) and reset only the pages an instance dirtied, in place:
            // no madvise, no page faults and no TLB shoot-downs on the next
            // instantiation. Costs RSS: up to this much per warm slot.
            .max_unused_warm_slots(n.min(256))
            .linear_memory_keep_resident(rc.keep_resident)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(rc.max_stack + (1 << 20))
            .pagemap_scan(wasmtime::Enabled::Auto)
            .decommit_batch_size(16);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    c
}

impl Runtime {
    /// Build the engine, the linker with every host import, and start the
    /// epoch ticker thread.
    pub fn new(rc: RuntimeConfig) -> anyhow::Result<Arc<Runtime>> {
        let engine = Engine::new(&wasmtime_config(&rc))
            .map_err(|e| anyhow::anyhow!("cannot create the WebAssembly engine: {e}"))?;
        let mut linker: Linker<PluginState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
        v01::AllStages::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("linking postern:policy@0.1.0: {e}"))?;
        v02::AllStages::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("linking postern:policy@0.2.0: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("postern-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })?;
        }
        if let Some(dir) = &rc.cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("cannot create plugin cache dir {}: {e}", dir.display())
            })?;
        }
        Ok(Arc::new(Runtime {
            engine,
            linker,
            config: rc,
            compiled: Mutex::new(HashMap::new()),
            stop,
            stats: StatsRegistry::default(),
        }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn stats(&self) -> &StatsRegistry {
        &self.stats
    }

    fn cache_path(&self, dir: &Path, hash: &str) -> PathBuf {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        dir.join(format!("{hash}-{:016x}.cwasm", h.finish()))
    }

    /// Compile `bytes` (whose sha256 is `hash`), reusing an earlier
    /// compilation of the same content from memory or the disk cache.
    /// Returns the component and whether it was freshly compiled.
    pub(crate) fn compile(&self, hash: &str, bytes: &[u8]) -> wasmtime::Result<(Component, bool)> {
        if let Some(c) = self
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
        {
            return Ok((c.clone(), false));
        }
        let cached = self
            .config
            .cache_dir
            .as_ref()
            .map(|d| self.cache_path(d, hash));
        if let Some(path) = &cached
            && path.exists()
        {
            // SAFETY: the cache directory is private to this server and its
            // files are written by `precompile_component` below, keyed by the
            // source's sha256 and the engine's compatibility hash.
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(c) => {
                    self.remember(hash, &c);
                    return Ok((c, false));
                }
                Err(e) => tracing::warn!("ignoring unusable plugin cache {}: {e}", path.display()),
            }
        }
        let component = match &cached {
            Some(path) => {
                let artifact = self.engine.precompile_component(bytes)?;
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                if std::fs::write(&tmp, &artifact).is_ok() {
                    let _ = std::fs::rename(&tmp, path);
                }
                // SAFETY: `artifact` was produced by this engine just now.
                unsafe { Component::deserialize(&self.engine, &artifact)? }
            }
            None => Component::new(&self.engine, bytes)?,
        };
        self.remember(hash, &component);
        Ok((component, true))
    }

    fn remember(&self, hash: &str, c: &Component) {
        let mut map = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(hash.to_string(), c.clone());
    }

    /// Forget compiled components that the running generation does not use,
    /// so repeated reloads with changing plugins do not grow memory. Called
    /// only once a new generation is in service: a refused reload keeps the
    /// cache of the one still serving.
    pub fn retain_compiled(&self, keep: std::collections::HashSet<String>) {
        let mut map = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|k, _| keep.contains(k));
    }
}
