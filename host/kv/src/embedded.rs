//! The embedded persistent store: [`MemoryKv`] in front, a redb file
//! behind. Every operation is answered from memory (the same latency as
//! the in-memory store, and atomic under the shard lock); a flusher thread
//! writes the keys changed since its last round to redb in one
//! `Durability::Immediate` transaction every `flush_interval`, and the file
//! is read back (expired entries dropped) when the store opens.
//!
//! Guarantee: an update is on disk at most `flush_interval` plus one flush
//! after it was made; a `kill -9` or power loss loses at most that much,
//! and never leaves a torn file (redb commits are atomic, and a file that
//! was open when the process died is repaired at the next open). A flush
//! that fails (disk full) keeps its keys for the next round and is logged.
//!
//! Only one process may open the file: redb locks it, and the error says
//! so (`postern kv export` against a running server's store).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::memory::{Entry, MemoryKv};
use crate::{KvBackend, KvFailure, KvFuture, Record, now_ms};

/// key -> (expires_at_ms, 0 for never; value)
const TABLE: TableDefinition<&str, (u64, &str)> = TableDefinition::new("kv");

struct Inner {
    mem: MemoryKv,
    db: Database,
    path: PathBuf,
    /// One flush at a time (the flusher thread, shutdown, import): two
    /// overlapping ones could commit an older copy of a key last.
    flushing: Mutex<()>,
}

pub struct EmbeddedKv {
    inner: Arc<Inner>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    flusher: Option<JoinHandle<()>>,
}

fn failure(path: &Path, what: &str, e: impl std::fmt::Display) -> KvFailure {
    KvFailure::Unavailable(format!("{}: {what}: {e}", path.display()))
}

impl EmbeddedKv {
    /// Open (or create) the store at `path` and start its flusher.
    pub fn open(path: &Path, flush_interval: Duration) -> Result<EmbeddedKv, KvFailure> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| failure(dir, "cannot create", e))?;
        }
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => failure(
                path,
                "cannot open",
                "the store is in use by another process (a running postern?)",
            ),
            e => failure(path, "cannot open", e),
        })?;
        let mem = MemoryKv::new(true);
        let expired = load(&db, &mem).map_err(|e| failure(path, "cannot read", e))?;
        mem.requeue(expired);
        let inner = Arc::new(Inner {
            mem,
            db,
            path: path.to_path_buf(),
            flushing: Mutex::new(()),
        });
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flusher = {
            let (inner, stop) = (inner.clone(), stop.clone());
            std::thread::Builder::new()
                .name("kv-flush".into())
                .spawn(move || flush_loop(&inner, &stop, flush_interval))
                .map_err(|e| failure(path, "cannot start the flusher", e))?
        };
        Ok(EmbeddedKv {
            inner,
            stop,
            flusher: Some(flusher),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.inner.mem.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Read every live entry into `mem`; returns the expired keys (deleted from
/// the file by the first flush).
fn load(db: &Database, mem: &MemoryKv) -> Result<Vec<String>, redb::Error> {
    let tx = db.begin_read()?;
    let table = match tx.open_table(TABLE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let now = now_ms();
    let mut expired = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        let (at, value) = v.value();
        let key = k.value().to_string();
        if at != 0 && at <= now {
            expired.push(key);
            continue;
        }
        mem.load(
            key,
            Entry {
                value: value.to_string(),
                expires_at_ms: (at != 0).then_some(at),
            },
        );
    }
    Ok(expired)
}

impl Inner {
    /// Write the changes since the last flush in one durable transaction.
    fn flush(&self) -> Result<usize, KvFailure> {
        let _one = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let changes = self.mem.take_changes();
        if changes.is_empty() {
            return Ok(0);
        }
        let n = changes.len();
        let write = || -> Result<(), String> {
            let e = |e: &dyn std::fmt::Display| e.to_string();
            let mut tx = self.db.begin_write().map_err(|x| e(&x))?;
            tx.set_durability(Durability::Immediate)
                .map_err(|x| e(&x))?;
            {
                let mut table = tx.open_table(TABLE).map_err(|x| e(&x))?;
                for (k, change) in &changes {
                    match change {
                        Some(entry) => {
                            table
                                .insert(
                                    k.as_str(),
                                    (entry.expires_at_ms.unwrap_or(0), entry.value.as_str()),
                                )
                                .map_err(|x| e(&x))?;
                        }
                        None => {
                            table.remove(k.as_str()).map_err(|x| e(&x))?;
                        }
                    }
                }
            }
            tx.commit().map_err(|x| e(&x))?;
            Ok(())
        };
        match write() {
            Ok(()) => Ok(n),
            Err(e) => {
                self.mem.requeue(changes.into_iter().map(|(k, _)| k));
                Err(failure(&self.path, "cannot write", e))
            }
        }
    }
}

fn flush_loop(inner: &Inner, stop: &(Mutex<bool>, Condvar), every: Duration) {
    let mut failing = false;
    loop {
        let stopping = {
            let g = stop.0.lock().unwrap_or_else(|p| p.into_inner());
            let (g, _) = stop
                .1
                .wait_timeout_while(g, every, |s| !*s)
                .unwrap_or_else(|p| p.into_inner());
            *g
        };
        match inner.flush() {
            Ok(_) if failing => {
                failing = false;
                tracing::info!(target: "postern::kv", path = %inner.path.display(), "kv store writable again");
            }
            Ok(_) => {}
            // Logged once per outage; the keys wait for the next round.
            Err(e) if !failing => {
                failing = true;
                tracing::error!(target: "postern::kv", "{e}; retrying every {every:?}");
            }
            Err(_) => {}
        }
        if stopping {
            return;
        }
    }
}

impl Drop for EmbeddedKv {
    fn drop(&mut self) {
        *self.stop.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.stop.1.notify_all();
        if let Some(t) = self.flusher.take() {
            let _ = t.join();
        }
    }
}

impl KvBackend for EmbeddedKv {
    fn get(&self, key: String) -> KvFuture<'_, Option<String>> {
        self.inner.mem.get(key)
    }

    fn set(&self, key: String, val: String, ttl: Option<Duration>) -> KvFuture<'_, ()> {
        self.inner.mem.set(key, val, ttl)
    }

    fn set_if_absent(&self, key: String, val: String, ttl: Option<Duration>) -> KvFuture<'_, bool> {
        self.inner.mem.set_if_absent(key, val, ttl)
    }

    fn delete(&self, key: String) -> KvFuture<'_, bool> {
        self.inner.mem.delete(key)
    }

    fn increment(&self, key: String, delta: i64, window: Duration) -> KvFuture<'_, i64> {
        self.inner.mem.increment(key, delta, window)
    }

    fn export(&self) -> KvFuture<'_, Vec<Record>> {
        Box::pin(async { Ok(self.inner.mem.records()) })
    }

    fn flush(&self) -> Result<(), KvFailure> {
        self.inner.flush().map(|_| ())
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    const SLOW: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn conforms() {
        let dir = tempfile::tempdir().unwrap();
        let a = EmbeddedKv::open(&dir.path().join("a.redb"), SLOW).unwrap();
        conformance::basics(&a).await;
        let b = EmbeddedKv::open(&dir.path().join("b.redb"), SLOW).unwrap();
        let c = EmbeddedKv::open(&dir.path().join("c.redb"), SLOW).unwrap();
        conformance::export_import(&b, &c).await;
    }

    #[tokio::test]
    async fn survives_reopen_and_drops_expired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        {
            let kv = EmbeddedKv::open(&path, SLOW).unwrap();
            kv.set("keep".into(), "v".into(), None).await.unwrap();
            kv.set("short".into(), "v".into(), Some(Duration::from_millis(50)))
                .await
                .unwrap();
            kv.increment("n".into(), 7, Duration::from_secs(60))
                .await
                .unwrap();
            kv.set("gone".into(), "v".into(), None).await.unwrap();
            kv.delete("gone".into()).await.unwrap();
            // Dropping flushes.
        }
        tokio::time::sleep(Duration::from_millis(80)).await;
        let kv = EmbeddedKv::open(&path, SLOW).unwrap();
        assert_eq!(kv.get("keep".into()).await.unwrap().as_deref(), Some("v"));
        assert_eq!(kv.get("short".into()).await.unwrap(), None);
        assert_eq!(kv.get("gone".into()).await.unwrap(), None);
        assert_eq!(
            kv.increment("n".into(), 1, Duration::from_secs(1))
                .await
                .unwrap(),
            8
        );
        assert_eq!(kv.len(), 2);
        // The expired row was deleted from the file by the flush.
        kv.flush().unwrap();
        let tx = kv.inner.db.begin_read().unwrap();
        let t = tx.open_table(TABLE).unwrap();
        assert!(t.get("short").unwrap().is_none());
    }

    #[tokio::test]
    async fn the_flusher_writes_without_a_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        let kv = EmbeddedKv::open(&path, Duration::from_millis(20)).unwrap();
        kv.set("a".into(), "1".into(), None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let tx = kv.inner.db.begin_read().unwrap();
        let t = tx.open_table(TABLE).unwrap();
        assert_eq!(t.get("a").unwrap().unwrap().value(), (0, "1"));
    }

    #[tokio::test]
    async fn overlapping_flushes_leave_the_newest_value_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        {
            // The flusher runs all the time while explicit flushes overlap it.
            let kv = EmbeddedKv::open(&path, Duration::from_millis(1)).unwrap();
            for i in 0..3000 {
                kv.set("k".into(), i.to_string(), None).await.unwrap();
                if i % 7 == 0 {
                    kv.flush().unwrap();
                }
            }
        }
        let kv = EmbeddedKv::open(&path, SLOW).unwrap();
        assert_eq!(kv.get("k".into()).await.unwrap().as_deref(), Some("2999"));
    }

    #[test]
    fn a_second_opener_is_told_the_store_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        let _a = EmbeddedKv::open(&path, SLOW).unwrap();
        let e = EmbeddedKv::open(&path, SLOW).err().unwrap();
        assert!(e.to_string().contains("in use"), "{e}");
    }
}
