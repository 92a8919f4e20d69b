//! Hot reload: build a complete new generation off the connection-serving
//! path (parse the configuration, compile only changed components — the
//! runtime caches by content hash —, pre-instantiate, run every `init`), and
//! only when all of it is valid swap it in atomically. Sessions keep the
//! generation and configuration they started with; a refused reload leaves
//! everything as it was and says why. Also the optional file watcher.
//! Input: the operator's (possibly broken) new configuration and plugins.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::config::Config;
use crate::server::{Shared, Snapshot, load_generation, log_plugins, resolver, services};

#[derive(Debug, Serialize)]
pub struct ReloadReport {
    pub generation: u64,
    /// The file this generation came from (the server's file from now on).
    pub config: String,
    /// The file the server ran before, when the reload switched files.
    pub switched_from: Option<String>,
    pub trigger: String,
    pub plugins: Vec<String>,
    pub compiled: usize,
    pub cached: usize,
    pub listener_changes: Vec<String>,
    /// Settings that changed in the file but need a restart; the running
    /// values stay in force.
    pub restart_required: Vec<String>,
    /// `--canary N`: the share of new sessions the new generation gets (the
    /// others keep the current one until `postern promote`).
    pub canary_percent: Option<u8>,
    pub took_ms: u128,
}

/// Settings that cannot change while running. Their old values are kept.
fn keep_fixed(old: &Config, new: &mut Config) -> Vec<String> {
    let mut out = Vec::new();
    macro_rules! fixed {
        ($name:literal, $($field:tt)+) => {
            if old.$($field)+ != new.$($field)+ {
                out.push(format!(
                    "{} ({:?} -> {:?})",
                    $name, old.$($field)+, new.$($field)+
                ));
                new.$($field)+ = old.$($field)+.clone();
            }
        };
    }
    fixed!("server.data_dir", data_dir);
    fixed!("spool.dir", spool.dir);
    fixed!("spool.group_commit", spool.group_commit);
    fixed!("runtime.pooling", runtime.pooling);
    fixed!("runtime.max_instances", runtime.max_instances);
    fixed!("runtime.max_memory", runtime.max_memory_ceiling);
    fixed!("runtime.cache_dir", runtime.cache_dir);
    fixed!("runtime.keep_resident", runtime.keep_resident);
    fixed!("runtime.idle_instances", runtime.idle_instances);
    fixed!("runtime.idle_timeout", runtime.idle_timeout);
    fixed!("log.format", log.format);
    fixed!("log.level", log.level);
    fixed!("server.admin_socket", admin_socket);
    fixed!("metrics.listen", metrics_listen);
    // The process switched accounts at start-up; it cannot switch again.
    fixed!("server.user / server.group", run_as);
    fixed!("server.allow_root", allow_root);
    fixed!("[record]", record);
    out
}

/// Reload now, from `file` when given (the server switches to it; SIGHUP
/// and the watcher follow it from then on), else from the server's file.
/// Errors are also logged; the old generation keeps serving.
pub async fn reload(
    shared: &Arc<Shared>,
    trigger: &str,
    file: Option<PathBuf>,
    canary: Option<u8>,
) -> Result<ReloadReport, String> {
    crate::server::notify::reloading();
    let result = try_reload(shared, trigger, file, canary).await;
    crate::server::notify::reloaded(&match &result {
        Ok(r) => format!("serving generation {}", r.generation),
        Err(_) => "reload refused; the previous generation keeps serving".to_string(),
    });
    crate::server::metrics::events::reload(result.is_ok());
    match &result {
        Ok(r) => tracing::info!(
            generation = r.generation,
            trigger = trigger,
            compiled = r.compiled,
            cached = r.cached,
            restart_required = ?r.restart_required,
            took_ms = r.took_ms as u64,
            "reloaded"
        ),
        Err(e) => tracing::error!(
            trigger = trigger,
            "reload refused, previous generation keeps serving: {e}"
        ),
    }
    result
}

/// Whether two paths name the same file (as far as the file system says).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

async fn try_reload(
    shared: &Arc<Shared>,
    trigger: &str,
    file: Option<PathBuf>,
    canary: Option<u8>,
) -> Result<ReloadReport, String> {
    let _one_at_a_time = shared.reloading.lock().await;
    let started = Instant::now();
    if let Some(id) = shared.generations.canary_running() {
        return Err(format!(
            "canary generation {id} is running: `postern promote` or `postern rollback` first"
        ));
    }
    if canary.is_some_and(|p| p == 0 || p >= 100) {
        return Err("--canary takes a share of sessions from 1 to 99 (percent)".into());
    }
    let old = shared.current_config();
    let (path, switched_from) = match file {
        Some(f) if !same_file(&f, &old.path) => (f, Some(old.path.display().to_string())),
        _ => (old.path.clone(), None),
    };
    let mut new = Config::load(&path, &shared.overrides).map_err(|e| e.to_string())?;
    let restart_required = keep_fixed(&old, &mut new);
    if canary.is_some() {
        // A canary changes policy for some sessions; what every session
        // shares changes with a full reload (or at promotion, not at all).
        let mut shared_parts = Vec::new();
        if format!("{:?}", new.listeners) != format!("{:?}", old.listeners) {
            shared_parts.push("listeners");
        }
        if new.delivery != old.delivery {
            shared_parts.push("[delivery]");
        }
        if new.kv != old.kv {
            shared_parts.push("[kv]");
        }
        if !shared_parts.is_empty() {
            return Err(format!(
                "a canary cannot change {}: they are shared by every session; reload without --canary",
                shared_parts.join(", ")
            ));
        }
    }
    // Everything that can fail is prepared before anything changes.
    let tls = crate::server::load_tls(&new)?;
    let dns = resolver(&new);
    let delivery = shared
        .queue
        .prepare(new.delivery.clone(), dns.clone())
        .map_err(|e| format!("{}: [delivery]: {e}", new.path.display()))?;
    // The same store unless `[kv]` changed (sessions of the old generation
    // keep the store they started with).
    let kv = if new.kv == old.kv {
        shared.snapshot().kv.clone()
    } else {
        let kv = crate::server::kv::open(&new.kv)
            .map_err(|e| format!("{}: [kv]: {e}", new.path.display()))?;
        tracing::info!(store = %kv.describe(), "kv store switched");
        kv
    };
    // Taken for good only when the reload succeeds (reloads are serialised
    // by `reloading`), so refused reloads use up no generation numbers.
    let id = shared
        .next_generation
        .load(std::sync::atomic::Ordering::Relaxed);
    let generation = load_generation(
        &shared.runtime,
        &new,
        id,
        services(&new, dns, kv.clone(), shared.recorder.as_ref()),
    )
    .await
    .map_err(|e| format!("{e:#}"))?;
    // Binding new listen addresses is the last step that may fail; when it
    // does, nothing has been changed (the listener set is updated only when
    // every new address is bound). A canary changes no listener.
    let listener_changes = if canary.is_none() {
        shared.listeners.lock().await.apply(&new, shared).await?
    } else {
        Vec::new()
    };
    shared
        .next_generation
        .store(id + 1, std::sync::atomic::Ordering::Relaxed);
    let generation = Arc::new(generation);
    let infos = generation.plugins();
    log_plugins(&generation);
    let snapshot = Arc::new(Snapshot {
        config: Arc::new(new),
        generation: generation.clone(),
        tls,
        kv,
    });
    match canary {
        Some(percent) => {
            crate::server::rollout::start_canary(&shared.generations, snapshot, percent)
        }
        None => {
            crate::server::rollout::install(&shared.generations, snapshot);
            shared
                .runtime
                .retain_compiled(generation.component_hashes());
            // Delivery settings apply to attempts started from now on.
            shared.queue.apply(delivery);
        }
    }
    if let Some(from) = &switched_from {
        tracing::info!(from = %from, to = %path.display(), "the server now runs another configuration file");
    }
    Ok(ReloadReport {
        generation: id,
        config: path.display().to_string(),
        switched_from,
        trigger: trigger.to_string(),
        compiled: infos.iter().filter(|p| p.compiled).count(),
        cached: infos.iter().filter(|p| !p.compiled).count(),
        plugins: infos
            .iter()
            .map(|p| format!("{} {} {}", p.name, &p.sha256[..16], p.mode.name()))
            .collect(),
        listener_changes,
        restart_required,
        canary_percent: canary,
        took_ms: started.elapsed().as_millis(),
    })
}

/// (path, modification time, length) of the config file and every plugin.
fn signature(config: &Config) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    std::iter::once(config.path.clone())
        .chain(config.plugins.iter().map(|p| p.path.clone()))
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let mtime = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map(|m| m.len()).unwrap_or(0);
            (p, mtime, len)
        })
        .collect()
}

/// `[server] watch = true`: poll the config and plugin files; reload when
/// they changed and then stayed unchanged for a moment (debounce), so a
/// half-copied file is not loaded. The task always runs and follows the
/// running configuration, so a reload can switch watching on or off.
pub async fn watch(shared: Arc<Shared>) {
    const POLL: Duration = Duration::from_millis(500);
    let mut seen: Option<Vec<_>> = None;
    loop {
        tokio::time::sleep(POLL).await;
        let config = shared.current_config();
        if !config.watch {
            seen = None;
            continue;
        }
        let now = signature(&config);
        let Some(before) = &seen else {
            // Watching starts now: changes from here on count.
            seen = Some(now);
            continue;
        };
        if &now == before {
            continue;
        }
        tokio::time::sleep(POLL).await;
        let settled = signature(&shared.current_config());
        if settled != now {
            continue;
        }
        tracing::info!("configuration or plugin files changed: reloading");
        let _ = reload(&shared, "watch", None, None).await;
        // Whatever the outcome, do not retry until the files change again.
        seen = Some(signature(&shared.current_config()));
    }
}
