//! Host capabilities offered to plugins (DNS, key-value store) as pluggable
//! backends. Input: keys, names and values chosen by untrusted plugins, so
//! every backend bounds sizes and never panics.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a plugin was granted in the configuration (`capabilities = [...]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    pub dns: bool,
    pub kv: bool,
    pub mail_auth: bool,
}

impl Grants {
    /// Parse capability names; unknown names are an error naming them.
    pub fn parse(names: &[String]) -> Result<Grants, String> {
        let mut g = Grants::default();
        for n in names {
            match n.as_str() {
                "dns" => g.dns = true,
                "kv" => g.kv = true,
                "mail-auth" => g.mail_auth = true,
                "log" | "clock" => {}
                other => {
                    return Err(format!(
                        "unknown capability {other:?} (known: \"dns\", \"kv\", \"mail-auth\", \"log\", \"clock\")"
                    ));
                }
            }
        }
        Ok(g)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsQuery {
    A(String),
    Aaaa(String),
    Mx(String),
    Txt(String),
    Ptr(IpAddr),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsAnswer {
    Addrs(Vec<IpAddr>),
    Mx(Vec<(u16, String)>),
    Txt(Vec<String>),
    Names(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsFailure {
    #[error("name does not exist")]
    NxDomain,
    #[error("no records of that type")]
    NoRecords,
    #[error("temporary DNS failure: {0}")]
    Temporary(String),
    #[error("invalid query: {0}")]
    Invalid(String),
}

/// A DNS resolver the host lends to plugins (and uses itself).
pub trait DnsBackend: Send + Sync {
    fn lookup(&self, query: DnsQuery) -> BoxFuture<'_, Result<DnsAnswer, DnsFailure>>;
}

/// Used when no resolver is configured: every look-up is a temporary failure.
pub struct NoDns;

impl DnsBackend for NoDns {
    fn lookup(&self, _query: DnsQuery) -> BoxFuture<'_, Result<DnsAnswer, DnsFailure>> {
        Box::pin(async { Err(DnsFailure::Temporary("no resolver configured".into())) })
    }
}

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
    fn get(&self, key: String) -> BoxFuture<'_, Result<Option<String>, KvFailure>>;
    fn set(
        &self,
        key: String,
        value: String,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<(), KvFailure>>;
    fn set_if_absent(
        &self,
        key: String,
        value: String,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<bool, KvFailure>>;
    fn delete(&self, key: String) -> BoxFuture<'_, Result<bool, KvFailure>>;
    fn increment(
        &self,
        key: String,
        delta: i64,
        window: Duration,
    ) -> BoxFuture<'_, Result<i64, KvFailure>>;
}

struct Entry {
    value: String,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

const SHARDS: usize = 16;

/// The embedded in-memory store: sharded maps, lazy expiry plus a sweep of
/// a shard every 1024 writes so expired keys do not accumulate.
pub struct MemoryKv {
    shards: Vec<Mutex<Shard>>,
}

#[derive(Default)]
struct Shard {
    map: HashMap<String, Entry>,
    writes: u32,
}

impl Default for MemoryKv {
    fn default() -> Self {
        MemoryKv {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }
}

impl MemoryKv {
    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let mut h: u32 = 2166136261;
        for b in key.bytes() {
            h = (h ^ b as u32).wrapping_mul(16777619);
        }
        let shard = &self.shards[h as usize % SHARDS];
        shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write<R>(&self, key: &str, f: impl FnOnce(&mut HashMap<String, Entry>, Instant) -> R) -> R {
        let now = Instant::now();
        let mut s = self.shard(key);
        s.writes = s.writes.wrapping_add(1);
        if s.writes.is_multiple_of(1024) {
            s.map.retain(|_, e| e.live(now));
        }
        f(&mut s.map, now)
    }

    /// Number of live keys (for tests and metrics).
    pub fn len(&self) -> usize {
        let now = Instant::now();
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
}

fn check(key: &str, value: Option<&str>) -> Result<(), KvFailure> {
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

impl KvBackend for MemoryKv {
    fn get(&self, key: String) -> BoxFuture<'_, Result<Option<String>, KvFailure>> {
        Box::pin(async move {
            check(&key, None)?;
            let now = Instant::now();
            let s = self.shard(&key);
            Ok(s.map
                .get(&key)
                .filter(|e| e.live(now))
                .map(|e| e.value.clone()))
        })
    }

    fn set(
        &self,
        key: String,
        value: String,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<(), KvFailure>> {
        Box::pin(async move {
            check(&key, Some(&value))?;
            self.write(&key.clone(), |m, now| {
                m.insert(
                    key,
                    Entry {
                        value,
                        expires: ttl.map(|t| now + t),
                    },
                );
            });
            Ok(())
        })
    }

    fn set_if_absent(
        &self,
        key: String,
        value: String,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<bool, KvFailure>> {
        Box::pin(async move {
            check(&key, Some(&value))?;
            Ok(self.write(&key.clone(), |m, now| {
                if m.get(&key).is_some_and(|e| e.live(now)) {
                    return false;
                }
                m.insert(
                    key,
                    Entry {
                        value,
                        expires: ttl.map(|t| now + t),
                    },
                );
                true
            }))
        })
    }

    fn delete(&self, key: String) -> BoxFuture<'_, Result<bool, KvFailure>> {
        Box::pin(async move {
            check(&key, None)?;
            Ok(self.write(&key.clone(), |m, now| {
                m.remove(&key).is_some_and(|e| e.live(now))
            }))
        })
    }

    fn increment(
        &self,
        key: String,
        delta: i64,
        window: Duration,
    ) -> BoxFuture<'_, Result<i64, KvFailure>> {
        Box::pin(async move {
            check(&key, None)?;
            Ok(self.write(&key.clone(), |m, now| {
                let current = m
                    .get(&key)
                    .filter(|e| e.live(now))
                    .map(|e| (e.value.parse::<i64>().unwrap_or(0), e.expires));
                let (value, expires) = match current {
                    Some((v, exp)) => (v.saturating_add(delta), exp),
                    None => (delta, Some(now + window)),
                };
                m.insert(
                    key,
                    Entry {
                        value: value.to_string(),
                        expires,
                    },
                );
                value
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn kv_basics_and_ttl() {
        block(async {
            let kv = MemoryKv::default();
            assert_eq!(kv.get("a".into()).await.unwrap(), None);
            kv.set("a".into(), "1".into(), None).await.unwrap();
            assert_eq!(kv.get("a".into()).await.unwrap().as_deref(), Some("1"));
            assert!(
                !kv.set_if_absent("a".into(), "2".into(), None)
                    .await
                    .unwrap()
            );
            kv.set("t".into(), "x".into(), Some(Duration::from_millis(20)))
                .await
                .unwrap();
            assert!(kv.get("t".into()).await.unwrap().is_some());
            tokio::time::sleep(Duration::from_millis(40)).await;
            assert!(kv.get("t".into()).await.unwrap().is_none());
            assert!(
                kv.set_if_absent("t".into(), "y".into(), None)
                    .await
                    .unwrap()
            );
            assert!(kv.delete("a".into()).await.unwrap());
            assert!(!kv.delete("a".into()).await.unwrap());
        });
    }

    #[test]
    fn counters_use_fixed_windows() {
        block(async {
            let kv = MemoryKv::default();
            let w = Duration::from_millis(30);
            assert_eq!(kv.increment("c".into(), 1, w).await.unwrap(), 1);
            assert_eq!(kv.increment("c".into(), 2, w).await.unwrap(), 3);
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(kv.increment("c".into(), 1, w).await.unwrap(), 1);
        });
    }

    #[test]
    fn limits_are_enforced() {
        block(async {
            let kv = MemoryKv::default();
            assert!(kv.get(String::new()).await.is_err());
            assert!(kv.get("k".repeat(MAX_KEY + 1)).await.is_err());
            assert!(
                kv.set("k".into(), "v".repeat(MAX_VALUE + 1), None)
                    .await
                    .is_err()
            );
        });
    }

    #[test]
    fn grants_parse() {
        assert_eq!(
            Grants::parse(&["dns".into(), "kv".into()]).unwrap(),
            Grants {
                dns: true,
                kv: true,
                mail_auth: false
            }
        );
        assert!(Grants::parse(&["mail-auth".into()]).unwrap().mail_auth);
        assert!(Grants::parse(&["network".into()]).is_err());
    }
}
