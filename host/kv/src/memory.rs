//! The in-memory store: sharded maps with lazy expiry plus a sweep of a
//! shard every 1024 writes, so expired keys do not accumulate. With dirty
//! tracking on (the embedded store), every key a write touched is noted
//! in its shard for the next flush.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::{KvBackend, KvFuture, Record, check, now_ms};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub value: String,
    /// Unix milliseconds; none: never.
    pub expires_at_ms: Option<u64>,
}

impl Entry {
    fn live(&self, now: u64) -> bool {
        self.expires_at_ms.is_none_or(|e| e > now)
    }
}

const SHARDS: usize = 16;

pub struct MemoryKv {
    shards: Vec<Mutex<Shard>>,
    track: bool,
}

#[derive(Default)]
struct Shard {
    map: HashMap<String, Entry>,
    writes: u32,
    /// Keys changed since the last flush (only with tracking on).
    dirty: HashSet<String>,
}

impl Default for MemoryKv {
    fn default() -> Self {
        MemoryKv::new(false)
    }
}

/// What a flush writes for one key: its entry, or none to delete it.
pub(crate) type Change = (String, Option<Entry>);

impl MemoryKv {
    pub(crate) fn new(track: bool) -> Self {
        MemoryKv {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            track,
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let mut h: u32 = 2166136261;
        for b in key.bytes() {
            h = (h ^ b as u32).wrapping_mul(16777619);
        }
        let shard = &self.shards[h as usize % SHARDS];
        shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the map of `key`'s shard; `f` says whether it changed
    /// the key.
    fn write<R>(
        &self,
        key: &str,
        f: impl FnOnce(&mut HashMap<String, Entry>, u64) -> (R, bool),
    ) -> R {
        let now = now_ms();
        let mut s = self.shard(key);
        s.writes = s.writes.wrapping_add(1);
        if s.writes.is_multiple_of(1024) {
            let Shard { map, dirty, .. } = &mut *s;
            map.retain(|k, e| {
                let keep = e.live(now);
                if !keep && self.track {
                    dirty.insert(k.clone());
                }
                keep
            });
        }
        let (r, changed) = f(&mut s.map, now);
        if changed && self.track {
            s.dirty.insert(key.to_string());
        }
        r
    }

    /// Put an entry read back from disk (no dirty mark).
    pub(crate) fn load(&self, key: String, entry: Entry) {
        self.shard(&key).map.insert(key, entry);
    }

    /// The changes since the last call, shard by shard: each shard is
    /// locked only while its dirty keys are copied out.
    pub(crate) fn take_changes(&self) -> Vec<Change> {
        let now = now_ms();
        let mut out = Vec::new();
        for shard in &self.shards {
            let mut s = shard.lock().unwrap_or_else(|p| p.into_inner());
            let dirty = std::mem::take(&mut s.dirty);
            for k in dirty {
                let e = s.map.get(&k).filter(|e| e.live(now)).cloned();
                out.push((k, e));
            }
        }
        out
    }

    /// Mark keys dirty again after a flush that failed.
    pub(crate) fn requeue(&self, keys: impl IntoIterator<Item = String>) {
        for k in keys {
            self.shard(&k).dirty.insert(k);
        }
    }

    /// Number of live keys (for tests and metrics).
    pub fn len(&self) -> usize {
        let now = now_ms();
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|p| p.into_inner());
                s.map.values().filter(|e| e.live(now)).count()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn records(&self) -> Vec<Record> {
        let now = now_ms();
        let mut out = Vec::new();
        for shard in &self.shards {
            let s = shard.lock().unwrap_or_else(|p| p.into_inner());
            out.extend(
                s.map
                    .iter()
                    .filter(|(_, e)| e.live(now))
                    .map(|(k, e)| Record {
                        key: k.clone(),
                        value: e.value.clone(),
                        expires_at_ms: e.expires_at_ms,
                    }),
            );
        }
        out
    }
}

fn deadline(now: u64, ttl: Option<Duration>) -> Option<u64> {
    ttl.map(|t| now.saturating_add(crate::millis(t)))
}

/// Store `value` at `key`, living `ttl` from `now` (forever when none).
fn put(
    m: &mut HashMap<String, Entry>,
    key: String,
    value: String,
    now: u64,
    ttl: Option<Duration>,
) {
    let expires_at_ms = deadline(now, ttl);
    m.insert(
        key,
        Entry {
            value,
            expires_at_ms,
        },
    );
}

impl KvBackend for MemoryKv {
    fn get(&self, key: String) -> KvFuture<'_, Option<String>> {
        Box::pin(async move {
            check(&key, None)?;
            let now = now_ms();
            let s = self.shard(&key);
            Ok(s.map
                .get(&key)
                .filter(|e| e.live(now))
                .map(|e| e.value.clone()))
        })
    }

    fn set(&self, key: String, val: String, ttl: Option<Duration>) -> KvFuture<'_, ()> {
        Box::pin(async move {
            check(&key, Some(&val))?;
            self.write(&key.clone(), |m, now| {
                put(m, key, val, now, ttl);
                ((), true)
            });
            Ok(())
        })
    }

    fn set_if_absent(&self, key: String, val: String, ttl: Option<Duration>) -> KvFuture<'_, bool> {
        Box::pin(async move {
            check(&key, Some(&val))?;
            Ok(self.write(&key.clone(), |m, now| {
                if m.get(&key).is_some_and(|e| e.live(now)) {
                    return (false, false);
                }
                put(m, key, val, now, ttl);
                (true, true)
            }))
        })
    }

    fn delete(&self, key: String) -> KvFuture<'_, bool> {
        Box::pin(async move {
            check(&key, None)?;
            Ok(self.write(&key.clone(), |m, now| match m.remove(&key) {
                Some(e) => (e.live(now), true),
                None => (false, false),
            }))
        })
    }

    fn increment(&self, key: String, delta: i64, window: Duration) -> KvFuture<'_, i64> {
        Box::pin(async move {
            check(&key, None)?;
            Ok(self.write(&key.clone(), |m, now| {
                let current = m
                    .get(&key)
                    .filter(|e| e.live(now))
                    .map(|e| (e.value.parse::<i64>().unwrap_or(0), e.expires_at_ms));
                let (value, expires_at_ms) = match current {
                    Some((v, exp)) => (v.saturating_add(delta), exp),
                    None => (delta, deadline(now, Some(window))),
                };
                m.insert(
                    key,
                    Entry {
                        value: value.to_string(),
                        expires_at_ms,
                    },
                );
                (value, true)
            }))
        })
    }

    fn export(&self) -> KvFuture<'_, Vec<Record>> {
        Box::pin(async { Ok(self.records()) })
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    #[tokio::test]
    async fn conforms() {
        conformance::basics(&MemoryKv::default()).await;
        conformance::export_import(&MemoryKv::default(), &MemoryKv::default()).await;
    }

    #[tokio::test]
    async fn concurrent_increments_are_atomic() {
        let kv = std::sync::Arc::new(MemoryKv::default());
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let kv = kv.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..1000 {
                    kv.increment("n".into(), 1, Duration::from_secs(60))
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(kv.get("n".into()).await.unwrap().as_deref(), Some("8000"));
    }

    #[tokio::test]
    async fn tracking_notes_changed_keys_only() {
        let kv = MemoryKv::new(true);
        kv.set("a".into(), "1".into(), None).await.unwrap();
        assert!(
            !kv.set_if_absent("a".into(), "2".into(), None)
                .await
                .unwrap()
        );
        kv.get("a".into()).await.unwrap();
        assert!(!kv.delete("missing".into()).await.unwrap());
        let changes = kv.take_changes();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].0, "a");
        assert!(kv.take_changes().is_empty());
        kv.delete("a".into()).await.unwrap();
        assert_eq!(kv.take_changes(), vec![("a".to_string(), None)]);
    }
}
