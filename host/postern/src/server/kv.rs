//! The host's key-value store as sessions and plugins use it: the store the
//! `[kv]` section names (see `postern_kv`), behind one guard that puts the
//! configured deadline on every call (a dead Redis costs a session at most
//! `kv.timeout` per call, answered `unavailable`, and the plugin decides),
//! counts calls and their latency for the metrics, tracks whether the store
//! answers, and logs an outage once per `outage_log_interval` instead of
//! once per call. Input: the validated configuration (trusted) and the
//! calls of sessions and plugins (keys bounded by the stores).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use postern_kv::{EmbeddedKv, KvBackend, KvFailure, KvFuture, MemoryKv, Record, RedisKv};

use crate::config::{KvSettings, KvStore};

pub struct Kv {
    store: Arc<dyn KvBackend>,
    pub settings: KvSettings,
    describe: String,
    up: AtomicBool,
    outage: Mutex<Outage>,
}

#[derive(Default)]
struct Outage {
    /// Start of the outage in progress.
    since: Option<Instant>,
    failures: u64,
    /// Whether this outage was logged (then its end is logged too).
    reported: bool,
    /// Last outage report, kept across outages so a flapping store is
    /// reported once per interval too.
    logged: Option<Instant>,
}

/// Embedded stores open in this process, by file: a reload that keeps (or
/// comes back to) a file gets the store that already holds it (redb locks
/// the file against a second opener).
static EMBEDDED: Mutex<Vec<(PathBuf, Weak<EmbeddedKv>)>> = Mutex::new(Vec::new());

fn embedded(path: &PathBuf, flush_interval: Duration) -> Result<Arc<EmbeddedKv>, KvFailure> {
    let mut open = EMBEDDED.lock().unwrap_or_else(|p| p.into_inner());
    open.retain(|(_, w)| w.strong_count() > 0);
    if let Some(kv) = open
        .iter()
        .find(|(p, _)| p == path)
        .and_then(|(_, w)| w.upgrade())
    {
        return Ok(kv);
    }
    let kv = Arc::new(EmbeddedKv::open(path, flush_interval)?);
    open.push((path.clone(), Arc::downgrade(&kv)));
    Ok(kv)
}

/// Open the store `settings` name. Redis is not connected here (the first
/// call connects), so a server that is down does not stop Postern starting.
pub fn open(settings: &KvSettings) -> Result<Arc<Kv>, String> {
    let (store, describe): (Arc<dyn KvBackend>, String) = match &settings.store {
        KvStore::Memory => (Arc::new(MemoryKv::default()), "memory".into()),
        KvStore::Embedded {
            path,
            flush_interval,
        } => (
            embedded(path, *flush_interval).map_err(|e| e.to_string())?,
            format!("embedded {}", path.display()),
        ),
        KvStore::Redis(r) => {
            let kv = RedisKv::new(r).map_err(|e| e.to_string())?;
            let describe = kv.describe().to_string();
            (Arc::new(kv), describe)
        }
    };
    Ok(Arc::new(Kv {
        store,
        settings: settings.clone(),
        describe,
        up: AtomicBool::new(true),
        outage: Mutex::new(Outage::default()),
    }))
}

/// What `postern check` says of the configured store: Redis must answer
/// PING within the deadline; an existing embedded file must open, or be
/// held by a running server (which is fine); a missing one is not created.
pub async fn check(settings: &KvSettings) -> Result<String, String> {
    if let KvStore::Embedded { path, .. } = &settings.store {
        if !path.exists() {
            return Ok(format!("embedded {} (created at start)", path.display()));
        }
        return match EmbeddedKv::open(path, Duration::from_secs(3600)) {
            Ok(kv) => Ok(format!("embedded {} ({} keys)", path.display(), kv.len())),
            Err(e) if e.to_string().contains("in use") => Ok(format!(
                "embedded {} (in use by a running server)",
                path.display()
            )),
            Err(e) => Err(e.to_string()),
        };
    }
    // The first call connects (TCP, TLS, AUTH): give it the connection
    // time-out on top of the call deadline.
    let mut patient = settings.clone();
    if let KvStore::Redis(r) = &settings.store {
        patient.timeout += r.connect_timeout;
    }
    let kv = open(&patient)?;
    kv.ping()
        .await
        .map_err(|e| format!("{}: {e}", kv.describe))?;
    Ok(kv.describe.clone())
}

impl Kv {
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Whether the last call found the store answering.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Run one call under the deadline, and account for it.
    async fn guard<T>(&self, op: &'static str, call: KvFuture<'_, T>) -> Result<T, KvFailure> {
        let start = Instant::now();
        let r = match tokio::time::timeout(self.settings.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(KvFailure::Unavailable(format!(
                "no answer within {:?}",
                self.settings.timeout
            ))),
        };
        let result = match &r {
            Ok(_) => "ok",
            Err(KvFailure::Invalid(_)) => "invalid",
            Err(KvFailure::Unavailable(_)) => "unavailable",
        };
        crate::server::metrics::events::kv_call(op, result, start.elapsed());
        match &r {
            Err(KvFailure::Unavailable(m)) => self.failed(m),
            _ if !self.is_up() => self.recovered(),
            _ => {}
        }
        r
    }

    fn failed(&self, why: &str) {
        self.up.store(false, Ordering::Relaxed);
        let now = Instant::now();
        let mut o = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        o.failures += 1;
        o.since.get_or_insert(now);
        let due = o
            .logged
            .is_none_or(|t| now.duration_since(t) >= self.settings.outage_log_interval);
        if due {
            tracing::warn!(
                target: "postern::kv",
                store = %self.describe,
                failed_calls = o.failures,
                "kv store unavailable: {why} (next report in {:?} at the earliest)",
                self.settings.outage_log_interval
            );
            o.logged = Some(now);
            o.reported = true;
        }
    }

    fn recovered(&self) {
        let mut o = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(since) = o.since.take()
            && o.reported
        {
            tracing::info!(
                target: "postern::kv",
                store = %self.describe,
                failed_calls = o.failures,
                "kv store answering again after {:.1?}",
                since.elapsed()
            );
        }
        o.failures = 0;
        o.reported = false;
        self.up.store(true, Ordering::Relaxed);
    }
}

impl KvBackend for Kv {
    fn get(&self, key: String) -> KvFuture<'_, Option<String>> {
        Box::pin(self.guard("get", self.store.get(key)))
    }

    fn set(&self, key: String, val: String, ttl: Option<Duration>) -> KvFuture<'_, ()> {
        Box::pin(self.guard("set", self.store.set(key, val, ttl)))
    }

    fn set_if_absent(&self, key: String, val: String, ttl: Option<Duration>) -> KvFuture<'_, bool> {
        Box::pin(self.guard("set_if_absent", self.store.set_if_absent(key, val, ttl)))
    }

    fn delete(&self, key: String) -> KvFuture<'_, bool> {
        Box::pin(self.guard("delete", self.store.delete(key)))
    }

    fn increment(&self, key: String, delta: i64, window: Duration) -> KvFuture<'_, i64> {
        Box::pin(self.guard("increment", self.store.increment(key, delta, window)))
    }

    fn export(&self) -> KvFuture<'_, Vec<Record>> {
        self.store.export()
    }

    fn ping(&self) -> KvFuture<'_, ()> {
        Box::pin(self.guard("ping", self.store.ping()))
    }

    fn flush(&self) -> Result<(), KvFailure> {
        self.store.flush()
    }

    fn kind(&self) -> &'static str {
        self.store.kind()
    }
}

/// `postern kv export|import`: move state between stores as JSON lines
/// (one `{"key", "value", "expires_at_ms"}` object per line, keys as the
/// store holds them: namespace, 0x1f, the plugin's key). An embedded store
/// can only be opened while no server holds it; Redis any time.
#[derive(clap::Subcommand)]
pub enum KvAction {
    /// Write every live entry of the configured store.
    Export {
        #[arg(short, long)]
        config: PathBuf,
        /// Output file (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Write entries into the configured store (an entry that expired in
    /// the meantime is skipped; the others keep what is left of their life).
    Import {
        #[arg(short, long)]
        config: PathBuf,
        /// Input file (default: standard input).
        #[arg(short, long)]
        input: Option<PathBuf>,
    },
}

pub fn command(action: KvAction, rt: &tokio::runtime::Runtime) -> std::process::ExitCode {
    use std::io::{BufRead, Write};
    let path = match &action {
        KvAction::Export { config, .. } | KvAction::Import { config, .. } => config.clone(),
    };
    let cfg = match crate::config::Config::load(&path, &Default::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("postern: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result: Result<String, String> = rt.block_on(async {
        let kv = open(&cfg.kv).map_err(|e| format!("[kv]: {e}"))?;
        match action {
            KvAction::Export { output, .. } => {
                let records = kv.export().await.map_err(|e| e.to_string())?;
                let mut out: Box<dyn Write> = match &output {
                    Some(p) => Box::new(std::io::BufWriter::new(
                        std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?,
                    )),
                    None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
                };
                for r in &records {
                    let line = serde_json::to_string(r).map_err(|e| e.to_string())?;
                    writeln!(out, "{line}").map_err(|e| e.to_string())?;
                }
                out.flush().map_err(|e| e.to_string())?;
                Ok(format!(
                    "exported {} entries from {}",
                    records.len(),
                    kv.describe()
                ))
            }
            KvAction::Import { input, .. } => {
                let name = input
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "<stdin>".into());
                let reader: Box<dyn BufRead> = match &input {
                    Some(p) => Box::new(std::io::BufReader::new(
                        std::fs::File::open(p).map_err(|e| format!("{name}: {e}"))?,
                    )),
                    None => Box::new(std::io::BufReader::new(std::io::stdin().lock())),
                };
                let mut records = Vec::new();
                for (n, line) in reader.lines().enumerate() {
                    let line = line.map_err(|e| format!("{name}: {e}"))?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let r: Record = serde_json::from_str(&line)
                        .map_err(|e| format!("{name}:{}: {e}", n + 1))?;
                    records.push(r);
                }
                let (written, skipped) = postern_kv::import(kv.store.as_ref(), records)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(format!(
                    "imported {written} entries into {} ({skipped} expired, skipped)",
                    kv.describe()
                ))
            }
        }
    });
    match result {
        Ok(msg) => {
            eprintln!("{msg}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("postern: {}: {e}", path.display());
            std::process::ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(store: KvStore) -> KvSettings {
        KvSettings {
            store,
            timeout: Duration::from_millis(100),
            outage_log_interval: Duration::from_secs(30),
        }
    }

    #[tokio::test]
    async fn a_dead_redis_costs_at_most_the_deadline() {
        // A listener that accepts and never answers.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let mut keep = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                keep.push(s);
            }
        });
        let kv = open(&settings(KvStore::Redis(postern_kv::RedisSettings {
            urls: vec![format!("redis://{addr}")],
            topology: postern_kv::RedisTopology::Standalone,
            username: None,
            password: None,
            prefix: "t:".into(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            connections: 1,
            tls_ca_file: None,
        })))
        .unwrap();
        let start = Instant::now();
        let e = kv.get("k".into()).await.unwrap_err();
        assert!(
            start.elapsed() < Duration::from_millis(600),
            "{:?}",
            start.elapsed()
        );
        assert!(matches!(e, KvFailure::Unavailable(_)), "{e}");
        assert!(!kv.is_up());
    }

    #[tokio::test]
    async fn reopening_an_embedded_file_shares_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(KvStore::Embedded {
            path: dir.path().join("kv.redb"),
            flush_interval: Duration::from_secs(1),
        });
        let a = open(&s).unwrap();
        a.set("k".into(), "v".into(), None).await.unwrap();
        let b = open(&s).unwrap();
        assert_eq!(b.get("k".into()).await.unwrap().as_deref(), Some("v"));
        assert!(check(&s).await.unwrap().contains("in use"));
    }
}
