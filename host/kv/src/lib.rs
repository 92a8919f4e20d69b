//! The key-value stores behind the plugins' `kv` capability and the host's
//! own counters (AUTH failures, recent AUTH, unknown recipients): one
//! [`KvBackend`] trait and three stores.
//!
//! - [`MemoryKv`]: process memory; forgets everything at exit (tests, or an
//!   operator who wants exactly that).
//! - [`EmbeddedKv`] (the default): the same maps, written behind to a redb
//!   file under the data directory every `flush_interval` in one durable
//!   transaction, and read back at start. State survives restarts; a
//!   `kill -9` loses at most the updates of the last interval.
//! - [`RedisKv`]: Redis or Valkey (standalone or Cluster), shared by every
//!   node of a fleet, with server-side expiry and atomic operations.
//!
//! Input: keys and values chosen by untrusted plugins (already namespaced
//! by the host), so every store bounds their sizes and none panics on them.
//! The stores do not time out on their own: the host wraps them with its
//! deadline, metrics and outage log (`postern::kv`).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

mod embedded;
mod memory;
mod redis_store;

pub use embedded::EmbeddedKv;
pub use memory::MemoryKv;
pub use redis_store::{RedisKv, RedisSettings, RedisTopology};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What every store operation returns: a boxed future of the answer or a
/// [`KvFailure`].
pub type KvFuture<'a, T> = BoxFuture<'a, Result<T, KvFailure>>;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvFailure {
    #[error("key-value store unavailable: {0}")]
    Unavailable(String),
    #[error("invalid key-value request: {0}")]
    Invalid(String),
}

pub const MAX_KEY: usize = 1024;
pub const MAX_VALUE: usize = 64 * 1024;

/// A key-value store with TTLs and windowed counters. Keys arrive already
/// namespaced by the host.
pub trait KvBackend: Send + Sync {
    fn get(&self, key: String) -> KvFuture<'_, Option<String>>;
    fn set(&self, key: String, val: String, ttl: Option<Duration>) -> KvFuture<'_, ()>;
    fn set_if_absent(&self, key: String, val: String, ttl: Option<Duration>) -> KvFuture<'_, bool>;
    fn delete(&self, key: String) -> KvFuture<'_, bool>;
    /// Add `delta` to the counter at `key`; a counter that does not exist
    /// starts at 0 and expires `window` after that first increment.
    fn increment(&self, key: String, delta: i64, window: Duration) -> KvFuture<'_, i64>;

    /// Every live entry (for `postern kv export`).
    fn export(&self) -> KvFuture<'_, Vec<Record>> {
        Box::pin(async { Err(KvFailure::Invalid("this store cannot be exported".into())) })
    }

    /// Whether the store answers (`postern check`, the health metric).
    fn ping(&self) -> KvFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    /// Make every update so far durable (graceful shutdown, after import).
    fn flush(&self) -> Result<(), KvFailure> {
        Ok(())
    }

    /// One word for logs, metrics and `postern status`.
    fn kind(&self) -> &'static str;
}

/// One entry as `postern kv export` writes it and `import` reads it (a JSON
/// object per line). `expires_at_ms`: Unix time in milliseconds, none for
/// an entry that never expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub key: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

/// What is left of a record's life at some moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remaining {
    Forever,
    For(Duration),
    Expired,
}

impl Record {
    /// The time left to live at `now_ms`.
    pub fn remaining(&self, now_ms: u64) -> Remaining {
        match self.expires_at_ms {
            None => Remaining::Forever,
            Some(at) if at > now_ms => Remaining::For(Duration::from_millis(at - now_ms)),
            Some(_) => Remaining::Expired,
        }
    }
}

/// Write `records` into `kv`, keeping what is left of each entry's life;
/// entries already expired are skipped. Returns (written, skipped).
pub async fn import(kv: &dyn KvBackend, records: Vec<Record>) -> Result<(usize, usize), KvFailure> {
    let now = now_ms();
    let (mut written, mut skipped) = (0, 0);
    for r in records {
        let ttl = match r.remaining(now) {
            Remaining::Forever => None,
            Remaining::For(d) => Some(d),
            Remaining::Expired => {
                skipped += 1;
                continue;
            }
        };
        kv.set(r.key, r.value, ttl).await?;
        written += 1;
    }
    kv.flush()?;
    Ok((written, skipped))
}

/// Unix time in milliseconds (entries expire by the wall clock, as in Redis,
/// so that an expiry means the same thing after a restart).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn check(key: &str, value: Option<&str>) -> Result<(), KvFailure> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(KvFailure::Invalid(format!(
            "key length {} not in 1..={MAX_KEY}",
            key.len()
        )));
    }
    if let Some(v) = value
        && v.len() > MAX_VALUE
    {
        return Err(KvFailure::Invalid(format!(
            "value length {} exceeds {MAX_VALUE}",
            v.len()
        )));
    }
    Ok(())
}

/// A duration in whole milliseconds, at least 1 (a zero TTL would mean
/// "never" to some stores and "already gone" to others).
pub(crate) fn millis(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

#[cfg(test)]
pub(crate) mod conformance {
    //! The behaviour every store must show, run against each of them.

    use super::*;

    pub async fn basics(kv: &dyn KvBackend) {
        assert_eq!(kv.get("a".into()).await.unwrap(), None);
        kv.set("a".into(), "1".into(), None).await.unwrap();
        assert_eq!(kv.get("a".into()).await.unwrap().as_deref(), Some("1"));
        assert!(
            !kv.set_if_absent("a".into(), "2".into(), None)
                .await
                .unwrap()
        );
        kv.set("t".into(), "x".into(), Some(Duration::from_millis(40)))
            .await
            .unwrap();
        assert!(kv.get("t".into()).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(kv.get("t".into()).await.unwrap().is_none());
        assert!(
            kv.set_if_absent("t".into(), "y".into(), None)
                .await
                .unwrap()
        );
        assert!(kv.delete("a".into()).await.unwrap());
        assert!(!kv.delete("a".into()).await.unwrap());
        let w = Duration::from_millis(60);
        assert_eq!(kv.increment("c".into(), 1, w).await.unwrap(), 1);
        assert_eq!(kv.increment("c".into(), 2, w).await.unwrap(), 3);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(kv.increment("c".into(), 1, w).await.unwrap(), 1);
        let long = "k".repeat(MAX_KEY + 1);
        assert!(matches!(kv.get(long).await, Err(KvFailure::Invalid(_))));
        assert!(matches!(
            kv.set("v".into(), "x".repeat(MAX_VALUE + 1), None).await,
            Err(KvFailure::Invalid(_))
        ));
    }

    pub async fn export_import(from: &dyn KvBackend, to: &dyn KvBackend) {
        from.set("keep".into(), "1".into(), None).await.unwrap();
        from.set("ttl".into(), "2".into(), Some(Duration::from_secs(60)))
            .await
            .unwrap();
        from.increment("n".into(), 5, Duration::from_secs(60))
            .await
            .unwrap();
        let mut got = from.export().await.unwrap();
        got.sort_by(|a, b| a.key.cmp(&b.key));
        let keys: Vec<_> = got.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["keep", "n", "ttl"]);
        assert_eq!(got[0].expires_at_ms, None);
        let left = got[2].expires_at_ms.unwrap() - now_ms();
        assert!((55_000..=60_000).contains(&left), "{left}");
        let mut expired = got[0].clone();
        expired.key = "gone".into();
        expired.expires_at_ms = Some(1);
        got.push(expired);
        assert_eq!(import(to, got).await.unwrap(), (3, 1));
        assert_eq!(to.get("n".into()).await.unwrap().as_deref(), Some("5"));
        assert_eq!(to.get("gone".into()).await.unwrap(), None);
        assert_eq!(
            to.increment("n".into(), 1, Duration::from_secs(1))
                .await
                .unwrap(),
            6
        );
    }
}
