//! The server's side of the admin channel: [`AdminView`] over the shared
//! state, and the document `postern status` prints. Reads live state only;
//! the commands it runs (reload, promote, rollback, queue) are the modules'
//! own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use postern_plugin::BoxFuture;
use serde_json::{Value, json};

use crate::server::Shared;
use crate::server::admin::AdminView;

impl AdminView for Arc<Shared> {
    fn reload(
        &self,
        file: Option<PathBuf>,
        canary: Option<u8>,
    ) -> BoxFuture<'_, Result<Value, String>> {
        Box::pin(async move {
            let report = crate::server::reload::reload(self, "admin", file, canary).await?;
            serde_json::to_value(report).map_err(|e| e.to_string())
        })
    }

    fn promote(&self) -> Result<String, String> {
        crate::server::rollout::promote(&self.generations)
    }

    fn rollback(&self) -> Result<String, String> {
        crate::server::rollout::rollback(
            &self.generations,
            "asked for by `postern rollback`",
            "manual",
        )
    }

    fn status(&self) -> BoxFuture<'_, Value> {
        Box::pin(status(self))
    }

    fn queue<'a>(&'a self, line: &'a str) -> BoxFuture<'a, Value> {
        Box::pin(crate::server::queue_admin::serve(&self.queue, line))
    }
}

pub async fn status(shared: &Arc<Shared>) -> serde_json::Value {
    let snapshot = shared.snapshot();
    let (generation, config) = (snapshot.generation.clone(), snapshot.config.clone());
    let kv = snapshot.kv.clone();
    drop(snapshot);
    let loaded_at = generation.loaded_at;
    let spool = shared.spool.stats();
    let older: Vec<serde_json::Value> = shared
        .generations
        .retired_in_use()
        .into_iter()
        .map(|(id, sessions)| json!({"generation": id, "sessions": sessions}))
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "generation": generation.id,
        "loaded_at_unix_ms": loaded_at.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
        "config": config.path.display().to_string(),
        "plugins": generation.plugins().iter().map(|p| json!({
            "name": p.name,
            "path": p.path.display().to_string(),
            "sha256": p.sha256,
            "stages": p.stages.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "mode": p.mode.name(),
            "shadow_differed": p.shadow_differed,
            "breaker": p.breaker.name(),
        })).collect::<Vec<_>>(),
        "rollout": crate::server::rollout::status(&shared.generations),
        "av": config.av.clamd.as_ref().map(|a| {
            let s = &*crate::server::av::STATS;
            let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            json!({
                "clamd": format!("{a:?}"),
                "clean": n(&s.clean),
                "infected": n(&s.infected),
                "errors": n(&s.errors),
            })
        }),
        "milters": config.milters.iter().map(|m| {
            let s = postern_plugin::milter_stats().into_iter().find(|(n, _)| *n == m.name).map(|(_, s)| s);
            let n = |f: fn(&postern_plugin::MilterStats) -> u64| s.as_deref().map_or(0, f);
            json!({
                "name": m.name,
                "address": m.address.to_string(),
                "on_error": format!("{:?}", m.on_error),
                "calls": n(|s| s.calls.load(std::sync::atomic::Ordering::Relaxed)),
                "failures": n(|s| s.failures.load(std::sync::atomic::Ordering::Relaxed)),
            })
        }).collect::<Vec<_>>(),
        "sessions": generation.active_sessions(),
        "sessions_on_older_generations": older.iter().map(|o| o["sessions"].as_u64().unwrap_or(0)).sum::<u64>(),
        "older_generations": older,
        "connections": shared.active_connections(),
        "listeners": shared.listeners.lock().await.addresses().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "spool": {"messages": spool.messages, "bytes": spool.bytes},
        "kv": {"store": kv.describe(), "up": kv.is_up(), "timeout_ms": kv.settings.timeout.as_millis() as u64},
        "queue": shared.queue.stats().await.ok(),
    })
}
