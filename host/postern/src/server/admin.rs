//! The local admin channel: a Unix socket (mode 0600, under the data dir by
//! default) that answers one command per connection — `reload`, `status` or
//! `queue ...` — with one JSON document. Used by `postern reload`, `postern
//! status` and `postern queue`.
//! Input: commands from local users who can open the socket (file
//! permissions are the access control).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::server::Shared;

pub fn socket_path(config: &Config) -> PathBuf {
    config
        .admin_socket
        .clone()
        .unwrap_or_else(|| config.data_dir.join("postern.sock"))
}

/// The socket path read leniently from a configuration file that does not
/// parse: only `admin_socket = "..."` and `data_dir = "..."` lines are used.
pub fn socket_path_lenient(
    config: &std::path::Path,
    data_dir: Option<&std::path::Path>,
) -> PathBuf {
    let text = std::fs::read_to_string(config).unwrap_or_default();
    let base = config.parent().unwrap_or(std::path::Path::new("."));
    let value = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
    };
    if let Some(s) = value("admin_socket") {
        return base.join(s);
    }
    let dir = match data_dir {
        Some(d) => d.to_path_buf(),
        None => base.join(value("data_dir").unwrap_or_else(|| "data".into())),
    };
    dir.join("postern.sock")
}

/// Removes the socket file when dropped: when start-up fails after binding
/// it (the server binds it before loading its plugins), and at the end.
pub struct Unlink(PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Create the socket (mode 0600), owned by `owner` (uid, gid) when the
/// server is about to switch to that account, so that it can still be used
/// by that account as well as by root.
pub fn bind(config: &Config, owner: Option<(u32, u32)>) -> anyhow::Result<(UnixListener, Unlink)> {
    let path = socket_path(config);
    if path.exists() {
        // A stale socket from a previous run (the spool lock guarantees no
        // other server uses this data dir).
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path)
        .map_err(|e| anyhow::anyhow!("cannot create admin socket {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(|e| {
            anyhow::anyhow!("cannot hand admin socket {} over: {e}", path.display())
        })?;
    }
    tracing::info!(socket = %path.display(), "admin socket ready");
    Ok((listener, Unlink(path)))
}

pub fn start(shared: Arc<Shared>, listener: UnixListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move { serve(stream, shared).await });
                }
                Err(e) => {
                    tracing::warn!("admin accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    })
}

async fn serve(stream: UnixStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take_limit();
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    let answer = match line.trim() {
        reload if reload == "reload" || reload.starts_with("reload ") => {
            // `reload [--canary N] [<file>]`: the share `postern reload
            // --canary` asked for, the file `postern reload --config` named.
            let mut rest = reload.strip_prefix("reload").unwrap_or("").trim();
            let mut canary = None;
            if let Some(after) = rest.strip_prefix("--canary ") {
                let (n, tail) = after
                    .trim_start()
                    .split_once(' ')
                    .unwrap_or((after.trim(), ""));
                match n.parse::<u8>() {
                    Ok(p) => canary = Some(p),
                    Err(_) => {
                        let e = format!("--canary {n:?}: a percentage from 1 to 99");
                        let _ = write
                            .write_all(format!("{}\n", json!({"ok": false, "error": e})).as_bytes())
                            .await;
                        return;
                    }
                }
                rest = tail.trim();
            }
            let file = (!rest.is_empty()).then(|| PathBuf::from(rest));
            match crate::server::reload::reload(&shared, "admin", file, canary).await {
                Ok(report) => json!({"ok": true, "reload": report}),
                Err(e) => json!({"ok": false, "error": e}),
            }
        }
        "promote" => match crate::server::rollout::promote(&shared.generations) {
            Ok(text) => json!({"ok": true, "message": text}),
            Err(e) => json!({"ok": false, "error": e}),
        },
        "rollback" => {
            match crate::server::rollout::rollback(
                &shared.generations,
                "asked for by `postern rollback`",
                "manual",
            ) {
                Ok(text) => json!({"ok": true, "message": text}),
                Err(e) => json!({"ok": false, "error": e}),
            }
        }
        "status" => json!({"ok": true, "status": status(&shared).await}),
        queue if queue.starts_with("queue") => {
            crate::server::queue_admin::serve(&shared.queue, queue).await
        }
        other => {
            json!({"ok": false, "error": format!("unknown command {other:?} (known: reload [--canary N] [FILE], promote, rollback, status, queue list|show ID|flush|delete ID)")})
        }
    };
    let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
}

trait TakeLimit: Sized {
    fn take_limit(self) -> tokio::io::Take<Self>;
}

impl<R: tokio::io::AsyncRead> TakeLimit for R {
    fn take_limit(self) -> tokio::io::Take<Self> {
        tokio::io::AsyncReadExt::take(self, 4096)
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
