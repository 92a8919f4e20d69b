//! The Redis (or Valkey) store, for state shared by a fleet: standalone
//! servers through redis-rs's `ConnectionManager` (multiplexed, pipelined,
//! reconnecting on its own; `connections` of them used in turn), or a
//! Cluster through its cluster connection (connected on first use and again
//! after it failed to connect).
//!
//! Every key is `prefix` + the host's namespaced key, so several Postern
//! deployments can share one Redis. Expiry is the server's (`PX`);
//! `increment` is one Lua script (`INCRBY`, then `PEXPIRE` only when the
//! counter has no expiry yet), so a counter is atomic across nodes and its
//! window starts at its first increment as in the other stores.
//!
//! Input: the host's keys and values (bounded before they get here), and
//! the server's answers (only typed replies are accepted). Time-outs: the
//! connection and response time-outs below bound each step; the host also
//! puts its own deadline around every call.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Value};

use crate::{KvBackend, KvFailure, KvFuture, Record, check, millis, now_ms};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisTopology {
    Standalone,
    Cluster,
    /// `urls` are Sentinels; they name the master of this service.
    Sentinel {
        master: String,
    },
}

/// `[kv] backend = "redis"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://`, `rediss://` (TLS) or `redis+unix://` addresses: one for a
    /// standalone server, the seed nodes for a cluster.
    pub urls: Vec<String>,
    pub topology: RedisTopology,
    /// ACL user and password (override those of the URLs).
    pub username: Option<String>,
    pub password: Option<String>,
    /// Prepended to every key.
    pub prefix: String,
    pub connect_timeout: Duration,
    /// Bound on one command's answer.
    pub timeout: Duration,
    /// Multiplexed connections per standalone server.
    pub connections: usize,
    /// PEM CA bundle for `rediss://` (none: the system's roots).
    pub tls_ca_file: Option<PathBuf>,
}

/// `INCRBY`, and start the window when the counter has none.
const INCREMENT: &str = r"
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return v
";

pub struct RedisKv {
    conn: Conn,
    prefix: String,
    increment: redis::Script,
    describe: String,
}

enum Conn {
    Standalone {
        managers: Vec<ConnectionManager>,
        next: AtomicUsize,
    },
    Cluster {
        client: Box<ClusterClient>,
        conn: tokio::sync::Mutex<Option<ClusterConnection>>,
    },
    /// The master the Sentinels name, asked again whenever the connection
    /// to it failed or it answered as a replica (after a failover).
    Sentinel {
        sentinels: Box<tokio::sync::Mutex<SentinelClient>>,
        conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
        config: redis::AsyncConnectionConfig,
    },
}

/// One connection of any kind, for redis-rs's typed commands.
#[derive(Clone)]
enum Handle {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(MultiplexedConnection),
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Handle::Standalone(c) => c.req_packed_command(cmd),
            Handle::Cluster(c) => c.req_packed_command(cmd),
            Handle::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Handle::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Handle::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Handle::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Handle::Standalone(c) => c.get_db(),
            Handle::Cluster(c) => c.get_db(),
            Handle::Sentinel(c) => c.get_db(),
        }
    }
}

fn unavailable(e: RedisError) -> KvFailure {
    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) {
        // A wrong type or a non-integer counter: the request, not the store.
        return KvFailure::Invalid(e.to_string());
    }
    KvFailure::Unavailable(e.to_string())
}

impl RedisKv {
    /// Build the store. No connection is made here: the first call
    /// connects, so a server that is down at start costs failed calls
    /// (which the plugins answer as configured), not a refusal to start.
    pub fn new(s: &RedisSettings) -> Result<RedisKv, KvFailure> {
        let bad = |e: String| KvFailure::Invalid(format!("kv.redis: {e}"));
        if s.urls.is_empty() {
            return Err(bad("no url".into()));
        }
        let certs = match &s.tls_ca_file {
            Some(p) => Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(
                    std::fs::read(p).map_err(|e| bad(format!("{}: {e}", p.display())))?,
                ),
            }),
            None => None,
        };
        let mut infos = Vec::new();
        for url in &s.urls {
            let info = url
                .as_str()
                .into_connection_info()
                .map_err(|e| bad(format!("{url:?}: {e}")))?;
            let mut r = info.redis_settings().clone();
            if let Some(u) = &s.username {
                r = r.set_username(u);
            }
            if let Some(p) = &s.password {
                r = r.set_password(p);
            }
            infos.push(info.set_redis_settings(r));
        }
        let conn = match &s.topology {
            RedisTopology::Standalone => {
                if infos.len() != 1 {
                    return Err(bad(
                        "a standalone server has one url (several are a cluster's seeds: topology = \"cluster\")".into(),
                    ));
                }
                let info = infos.remove(0);
                let client = match &certs {
                    Some(c) => redis::Client::build_with_tls(info, c.clone()),
                    None => redis::Client::open(info),
                }
                .map_err(|e| bad(e.to_string()))?;
                // Few retries: the host's deadline bounds a call anyway,
                // and the next call starts a fresh reconnect.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(s.connect_timeout))
                    .set_response_timeout(Some(s.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(200));
                let managers = (0..s.connections.max(1))
                    .map(|_| {
                        ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                    })
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(e.to_string()))?;
                Conn::Standalone {
                    managers,
                    next: AtomicUsize::new(0),
                }
            }
            RedisTopology::Cluster => {
                let mut b = ClusterClient::builder(infos)
                    .connection_timeout(s.connect_timeout)
                    .response_timeout(s.timeout)
                    .retries(1);
                if let Some(c) = certs {
                    b = b.certs(c);
                }
                Conn::Cluster {
                    client: Box::new(b.build().map_err(|e| bad(e.to_string()))?),
                    conn: tokio::sync::Mutex::new(None),
                }
            }
            RedisTopology::Sentinel { master } => {
                // The user, password and database are the master's; the
                // Sentinels are reached as their URLs say.
                let mut node = SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(infos[0].redis_settings().clone());
                if s.urls[0].starts_with("rediss://") {
                    node = node.set_tls_mode(redis::TlsMode::Secure);
                }
                let sentinel_infos: Vec<_> = s
                    .urls
                    .iter()
                    .map(|u| u.as_str().into_connection_info())
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(e.to_string()))?;
                let client = SentinelClient::build(
                    sentinel_infos,
                    master.clone(),
                    Some(node),
                    SentinelServerType::Master,
                )
                .map_err(|e| bad(e.to_string()))?;
                Conn::Sentinel {
                    sentinels: Box::new(tokio::sync::Mutex::new(client)),
                    conn: tokio::sync::Mutex::new(None),
                    config: redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(s.connect_timeout))
                        .set_response_timeout(Some(s.timeout)),
                }
            }
        };
        let urls = || {
            s.urls
                .iter()
                .map(|u| redact(u))
                .collect::<Vec<_>>()
                .join(",")
        };
        let describe = match &s.topology {
            RedisTopology::Standalone => format!("redis {}", redact(&s.urls[0])),
            RedisTopology::Cluster => format!("redis cluster {}", urls()),
            RedisTopology::Sentinel { master } => {
                format!("redis sentinel {} master {master}", urls())
            }
        };
        Ok(RedisKv {
            conn,
            prefix: s.prefix.clone(),
            increment: redis::Script::new(INCREMENT),
            describe,
        })
    }

    /// The server(s), without passwords, for logs and `postern status`.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    async fn handle(&self) -> Result<Handle, KvFailure> {
        match &self.conn {
            Conn::Standalone { managers, next } => {
                let i = next.fetch_add(1, Ordering::Relaxed) % managers.len();
                Ok(Handle::Standalone(managers[i].clone()))
            }
            Conn::Cluster { client, conn } => {
                let mut slot = conn.lock().await;
                if let Some(c) = &*slot {
                    return Ok(Handle::Cluster(c.clone()));
                }
                let c = client.get_async_connection().await.map_err(unavailable)?;
                *slot = Some(c.clone());
                Ok(Handle::Cluster(c))
            }
            Conn::Sentinel {
                sentinels,
                conn,
                config,
            } => {
                let mut slot = conn.lock().await;
                if let Some(c) = &*slot {
                    return Ok(Handle::Sentinel(c.clone()));
                }
                let master = sentinels
                    .lock()
                    .await
                    .async_get_client()
                    .await
                    .map_err(unavailable)?;
                let c = master
                    .get_multiplexed_async_connection_with_config(config)
                    .await
                    .map_err(unavailable)?;
                *slot = Some(c.clone());
                Ok(Handle::Sentinel(c))
            }
        }
    }

    /// After a failed call: a Sentinel master that is gone or was demoted
    /// is looked up again at the next call.
    async fn after<T>(&self, r: redis::RedisResult<T>) -> Result<T, KvFailure> {
        if let (Err(e), Conn::Sentinel { conn, .. }) = (&r, &self.conn)
            && (e.is_io_error()
                || e.is_connection_dropped()
                || e.is_timeout()
                || e.is_unrecoverable_error()
                || e.code() == Some("READONLY"))
        {
            *conn.lock().await = None;
        }
        r.map_err(unavailable)
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: Cmd) -> Result<T, KvFailure> {
        let mut h = self.handle().await?;
        let r = cmd.query_async(&mut h).await;
        self.after(r).await
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

/// `redis://user:secret@host` -> `redis://user:***@host`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            match cred.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &cred[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn set_cmd(key: String, value: String, ttl: Option<Duration>, nx: bool) -> Cmd {
    let mut c = redis::cmd("SET");
    c.arg(key).arg(value);
    if nx {
        c.arg("NX");
    }
    if let Some(t) = ttl {
        c.arg("PX").arg(millis(t));
    }
    c
}

/// `*`, `?`, `[` and `\` taken literally in a SCAN pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl KvBackend for RedisKv {
    fn get(&self, key: String) -> KvFuture<'_, Option<String>> {
        Box::pin(async move {
            check(&key, None)?;
            let mut c = redis::cmd("GET");
            c.arg(self.key(&key));
            self.query(c).await
        })
    }

    fn set(&self, key: String, val: String, ttl: Option<Duration>) -> KvFuture<'_, ()> {
        Box::pin(async move {
            check(&key, Some(&val))?;
            let _: Value = self.query(set_cmd(self.key(&key), val, ttl, false)).await?;
            Ok(())
        })
    }

    fn set_if_absent(&self, key: String, val: String, ttl: Option<Duration>) -> KvFuture<'_, bool> {
        Box::pin(async move {
            check(&key, Some(&val))?;
            let r: Option<String> = self.query(set_cmd(self.key(&key), val, ttl, true)).await?;
            Ok(r.is_some())
        })
    }

    fn delete(&self, key: String) -> KvFuture<'_, bool> {
        Box::pin(async move {
            check(&key, None)?;
            let mut c = redis::cmd("DEL");
            c.arg(self.key(&key));
            let n: i64 = self.query(c).await?;
            Ok(n > 0)
        })
    }

    fn increment(&self, key: String, delta: i64, window: Duration) -> KvFuture<'_, i64> {
        Box::pin(async move {
            check(&key, None)?;
            let mut h = self.handle().await?;
            let r = self
                .increment
                .key(self.key(&key))
                .arg(delta)
                .arg(millis(window))
                .invoke_async(&mut h)
                .await;
            self.after(r).await
        })
    }

    fn export(&self) -> KvFuture<'_, Vec<Record>> {
        Box::pin(async move {
            if matches!(self.conn, Conn::Cluster { .. }) {
                return Err(KvFailure::Invalid(
                    "export from a Redis Cluster is not supported: export each node's keys with redis-cli --scan".into(),
                ));
            }
            let pattern = format!("{}*", glob_escape(&self.prefix));
            let mut h = self.handle().await?;
            let mut cursor: u64 = 0;
            let mut out = Vec::new();
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut h)
                    .await
                    .map_err(unavailable)?;
                if !keys.is_empty() {
                    let mut p = redis::pipe();
                    for k in &keys {
                        p.cmd("GET").arg(k).cmd("PTTL").arg(k);
                    }
                    let answers: Vec<(Option<String>, i64)> = {
                        let flat: Vec<Value> = p.query_async(&mut h).await.map_err(unavailable)?;
                        flat.chunks(2)
                            .map(|pair| {
                                let v: Option<String> =
                                    redis::from_redis_value(pair[0].clone()).unwrap_or(None);
                                let t: i64 = redis::from_redis_value(pair[1].clone()).unwrap_or(-2);
                                (v, t)
                            })
                            .collect()
                    };
                    let now = now_ms();
                    for (k, (v, pttl)) in keys.into_iter().zip(answers) {
                        // Gone since SCAN saw it (-2), or not a string.
                        let Some(value) = v else { continue };
                        if pttl == -2 {
                            continue;
                        }
                        out.push(Record {
                            key: k[self.prefix.len()..].to_string(),
                            value,
                            expires_at_ms: (pttl >= 0).then(|| now + pttl as u64),
                        });
                    }
                }
                if next == 0 {
                    return Ok(out);
                }
                cursor = next;
            }
        })
    }

    fn ping(&self) -> KvFuture<'_, ()> {
        Box::pin(async move {
            let _: String = self.query(redis::cmd("PING")).await?;
            Ok(())
        })
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact("redis://u:pw@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://:pw@h"), "redis://:***@h");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn scan_patterns_are_literal() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn settings_are_checked() {
        let mut s = RedisSettings {
            urls: vec!["redis://127.0.0.1:1".into(), "redis://127.0.0.1:2".into()],
            topology: RedisTopology::Standalone,
            username: None,
            password: None,
            prefix: "p:".into(),
            connect_timeout: Duration::from_millis(100),
            timeout: Duration::from_millis(100),
            connections: 1,
            tls_ca_file: None,
        };
        let e = RedisKv::new(&s).err().unwrap();
        assert!(e.to_string().contains("cluster"), "{e}");
        s.urls = vec!["http://x".into()];
        assert!(RedisKv::new(&s).is_err());
    }

    /// A redis-server of its own on a unix socket (Debian's package; `make
    /// test` installs it), or the one POSTERN_TEST_REDIS names.
    struct TestRedis {
        url: String,
        child: Option<std::process::Child>,
        _dir: tempfile::TempDir,
    }

    impl TestRedis {
        fn start() -> TestRedis {
            let dir = tempfile::tempdir().unwrap();
            if let Ok(url) = std::env::var("POSTERN_TEST_REDIS") {
                return TestRedis {
                    url,
                    child: None,
                    _dir: dir,
                };
            }
            let sock = dir.path().join("redis.sock");
            let child = std::process::Command::new("redis-server")
                .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocket"])
                .arg(&sock)
                .arg("--dir")
                .arg(dir.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is needed (Debian package redis-server; make test-deps installs it)");
            for _ in 0..200 {
                if sock.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            TestRedis {
                url: format!("redis+unix://{}", sock.display()),
                child: Some(child),
                _dir: dir,
            }
        }
    }

    impl Drop for TestRedis {
        fn drop(&mut self) {
            if let Some(c) = &mut self.child {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    #[tokio::test]
    async fn conforms_against_a_real_server() {
        let server = TestRedis::start();
        let url = server.url.clone();
        let settings = |prefix: &str| RedisSettings {
            urls: vec![url.clone()],
            topology: RedisTopology::Standalone,
            username: None,
            password: None,
            prefix: format!("{prefix}:{}:", now_ms()),
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            connections: 2,
            tls_ca_file: None,
        };
        let a = RedisKv::new(&settings("unit-a")).unwrap();
        a.ping().await.unwrap();
        crate::conformance::basics(&a).await;
        let b = RedisKv::new(&settings("unit-b")).unwrap();
        let c = RedisKv::new(&settings("unit-c")).unwrap();
        crate::conformance::export_import(&b, &c).await;
    }
}
