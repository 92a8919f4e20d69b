//! The local admin channel: a Unix socket (mode 0600, under the data dir by
//! default) that answers one command per connection — `reload`, `status` or
//! `queue ...` — with one JSON document. Used by `postern reload`, `postern
//! status` and `postern queue`.
//! The channel reaches the server only through [`AdminView`]: one method
//! per command, implemented over the server's shared state in
//! `server::status` (and faked in this module's tests).
//! Input: commands from local users who can open the socket (file
//! permissions are the access control).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use postern_plugin::BoxFuture;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::config::Config;

/// What the admin channel may ask of the running server: the commands it
/// answers, and nothing else.
pub trait AdminView: Send + Sync {
    /// `reload [--canary N] [FILE]`: the reload report, or why it was refused.
    fn reload(
        &self,
        file: Option<PathBuf>,
        canary: Option<u8>,
    ) -> BoxFuture<'_, Result<Value, String>>;
    /// `promote`: make the canary the current generation.
    fn promote(&self) -> Result<String, String>;
    /// `rollback`: drop the canary.
    fn rollback(&self) -> Result<String, String>;
    /// `status`: the document `postern status` prints.
    fn status(&self) -> BoxFuture<'_, Value>;
    /// `queue ...`: the queue command's answer.
    fn queue<'a>(&'a self, line: &'a str) -> BoxFuture<'a, Value>;
}

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

pub fn start(view: Arc<dyn AdminView>, listener: UnixListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let view = view.clone();
                    tokio::spawn(async move { serve(stream, &*view).await });
                }
                Err(e) => {
                    tracing::warn!("admin accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    })
}

async fn serve(stream: UnixStream, view: &dyn AdminView) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take_limit();
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    let answer = answer(view, line.trim()).await;
    let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
}

/// The answer to one command line.
async fn answer(view: &dyn AdminView, line: &str) -> Value {
    let outcome = |r: Result<String, String>| match r {
        Ok(text) => json!({"ok": true, "message": text}),
        Err(e) => json!({"ok": false, "error": e}),
    };
    match line {
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
                        return json!({"ok": false, "error": e});
                    }
                }
                rest = tail.trim();
            }
            let file = (!rest.is_empty()).then(|| PathBuf::from(rest));
            match view.reload(file, canary).await {
                Ok(report) => json!({"ok": true, "reload": report}),
                Err(e) => json!({"ok": false, "error": e}),
            }
        }
        "promote" => outcome(view.promote()),
        "rollback" => outcome(view.rollback()),
        "status" => json!({"ok": true, "status": view.status().await}),
        queue if queue.starts_with("queue") => view.queue(queue).await,
        other => {
            json!({"ok": false, "error": format!("unknown command {other:?} (known: reload [--canary N] [FILE], promote, rollback, status, queue list|show ID|flush|delete ID)")})
        }
    }
}

trait TakeLimit: Sized {
    fn take_limit(self) -> tokio::io::Take<Self>;
}

impl<R: tokio::io::AsyncRead> TakeLimit for R {
    fn take_limit(self) -> tokio::io::Take<Self> {
        tokio::io::AsyncReadExt::take(self, 4096)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records what the channel asked for.
    #[derive(Default)]
    struct Fake {
        asked: Mutex<Vec<String>>,
    }

    impl AdminView for Fake {
        fn reload(
            &self,
            file: Option<PathBuf>,
            canary: Option<u8>,
        ) -> BoxFuture<'_, Result<Value, String>> {
            self.asked
                .lock()
                .unwrap()
                .push(format!("reload {file:?} {canary:?}"));
            Box::pin(async { Ok(json!({"generation": 2})) })
        }
        fn promote(&self) -> Result<String, String> {
            Err("no canary".into())
        }
        fn rollback(&self) -> Result<String, String> {
            Ok("rolled back".into())
        }
        fn status(&self) -> BoxFuture<'_, Value> {
            Box::pin(async { json!({"generation": 1}) })
        }
        fn queue<'a>(&'a self, line: &'a str) -> BoxFuture<'a, Value> {
            Box::pin(async move { json!({"ok": true, "line": line}) })
        }
    }

    #[tokio::test]
    async fn each_command_reaches_its_method() {
        let fake = Fake::default();
        let a = answer(&fake, "reload --canary 25 /etc/p.toml").await;
        assert_eq!(a, json!({"ok": true, "reload": {"generation": 2}}));
        let a = answer(&fake, "reload").await;
        assert_eq!(a["ok"], true);
        assert_eq!(
            *fake.asked.lock().unwrap(),
            ["reload Some(\"/etc/p.toml\") Some(25)", "reload None None"]
        );
        let a = answer(&fake, "reload --canary lots").await;
        assert_eq!(a["ok"], false);
        assert!(a["error"].as_str().unwrap().contains("1 to 99"), "{a}");
        assert_eq!(
            fake.asked.lock().unwrap().len(),
            2,
            "a bad share reloads nothing"
        );
        assert_eq!(
            answer(&fake, "promote").await,
            json!({"ok": false, "error": "no canary"})
        );
        assert_eq!(answer(&fake, "rollback").await["message"], "rolled back");
        assert_eq!(answer(&fake, "status").await["status"]["generation"], 1);
        assert_eq!(answer(&fake, "queue list").await["line"], "queue list");
        let a = answer(&fake, "shutdown").await;
        assert!(
            a["error"].as_str().unwrap().starts_with("unknown command"),
            "{a}"
        );
    }

    #[tokio::test]
    async fn serves_one_command_per_connection() {
        let (client, server) = UnixStream::pair().unwrap();
        let fake = Fake::default();
        let serving = serve(server, &fake);
        let asking = async move {
            let (read, mut write) = client.into_split();
            write.write_all(b"status\n").await.unwrap();
            let mut line = String::new();
            BufReader::new(read).read_line(&mut line).await.unwrap();
            line
        };
        let ((), line) = tokio::join!(serving, asking);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["status"]["generation"], 1);
    }
}
