//! The running server: opens the spool, builds the plugin generation, binds
//! the listeners, accepts connections under global and per-client limits,
//! spawns one task (and one tracing span) per session, and shuts down
//! gracefully: stop accepting, tell idle sessions 421, let transfers finish
//! up to `shutdown_timeout`. Input: the validated configuration (trusted) and
//! TCP connections (untrusted).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context as _;
use postern_plugin::{Generation, MemoryKv, NoDns, Runtime, Services, SessionContext};
use postern_spool::{QueueId, Spool, SpoolConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tracing::Instrument;

use crate::config::Config;
use crate::conn::{self, Timeouts};
use crate::dns::HickoryDns;
use crate::session::{Session, replies};

/// State shared by every connection.
pub struct Shared {
    pub config: Arc<Config>,
    pub spool: Arc<Spool>,
    pub generation: RwLock<Arc<Generation>>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    active: AtomicUsize,
    idle: Notify,
}

/// Holds one connection's slot in the limits; released on drop.
struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.shared.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        drop(map);
        if self.shared.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.idle.notify_waiters();
        }
    }
}

impl Shared {
    fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if self.active.load(Ordering::Acquire) >= self.config.max_connections {
            return None;
        }
        let n = map.entry(ip).or_insert(0);
        if *n >= self.config.max_connections_per_ip {
            return None;
        }
        *n += 1;
        self.active.fetch_add(1, Ordering::AcqRel);
        Some(Slot {
            shared: self.clone(),
            ip,
        })
    }

    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    pub fn current_generation(&self) -> Arc<Generation> {
        self.generation
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Services lent to plugins: the host resolver and the embedded kv store.
pub fn services(config: &Config) -> anyhow::Result<Services> {
    let dns: Arc<dyn postern_plugin::DnsBackend> =
        match HickoryDns::new(&config.nameservers, config.dns_timeout) {
            Ok(d) => Arc::new(d),
            Err(e) => {
                tracing::warn!("DNS unavailable, plugins will see temporary failures: {e:#}");
                Arc::new(NoDns)
            }
        };
    Ok(Services {
        dns,
        kv: Arc::new(MemoryKv::default()),
    })
}

/// Build the first generation (also used by `postern check`).
pub async fn load_generation(
    runtime: &Arc<Runtime>,
    config: &Config,
    id: u64,
    services: Services,
) -> anyhow::Result<Generation> {
    Generation::load(
        runtime,
        id,
        config.path.display().to_string(),
        config.plugins.clone(),
        services,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}: {e}", config.path.display()))
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let (spool, report) = Spool::open(SpoolConfig {
        dir: config.spool_dir.clone(),
        group_commit: config.group_commit,
    })
    .with_context(|| format!("cannot open spool {}", config.spool_dir.display()))?;
    tracing::info!(
        dir = %config.spool_dir.display(),
        kept = report.kept,
        removed_temp = report.removed_temp,
        quarantined = report.quarantined.len(),
        "spool recovered"
    );
    for (file, reason) in &report.quarantined {
        tracing::error!(file = %file, reason = %reason, "spool file quarantined");
    }
    let runtime = Runtime::new(config.runtime.clone())?;
    let generation = load_generation(&runtime, &config, 1, services(&config)?).await?;
    for p in generation.plugins() {
        tracing::info!(
            plugin = %p.name,
            sha256 = %&p.sha256[..16],
            stages = ?p.stages.iter().map(|s| s.name()).collect::<Vec<_>>(),
            mode = ?p.mode,
            "plugin loaded"
        );
    }
    let shared = Arc::new(Shared {
        config: config.clone(),
        spool: Arc::new(spool),
        generation: RwLock::new(Arc::new(generation)),
        per_ip: Mutex::new(HashMap::new()),
        active: AtomicUsize::new(0),
        idle: Notify::new(),
    });

    let mut listeners = Vec::new();
    for addr in &config.listen {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = l.local_addr()?;
        tracing::info!(address = %local, "listening");
        listeners.push(l);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut accept_tasks = Vec::new();
    for l in listeners {
        accept_tasks.push(tokio::spawn(accept_loop(
            l,
            shared.clone(),
            stop_rx.clone(),
        )));
    }

    wait_for_signal().await;
    tracing::info!(
        active = shared.active_connections(),
        "shutting down: no new connections, finishing sessions"
    );
    let _ = stop_tx.send(true);
    for t in accept_tasks {
        t.abort();
    }
    let deadline = tokio::time::sleep(config.shutdown_timeout);
    tokio::pin!(deadline);
    loop {
        let notified = shared.idle.notified();
        if shared.active_connections() == 0 {
            break;
        }
        tokio::select! {
            _ = notified => {}
            _ = &mut deadline => {
                tracing::warn!(
                    active = shared.active_connections(),
                    "shutdown deadline reached; closing remaining sessions (none had an unanswered accepted message)"
                );
                break;
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install SIGTERM handler: {e}");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            handle(stream, peer, shared, stop).await;
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; policy,
    // logs and kv keys always see the plain IPv4 address.
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    let _ = stream.set_nodelay(true);
    let Some(_slot) = shared.try_admit(peer.ip()) else {
        tracing::info!(client = %peer, "connection refused: too many connections");
        let _ = stream
            .write_all(&replies::too_many_connections(&shared.config.hostname).to_bytes())
            .await;
        return;
    };
    let local = stream
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let id: Arc<str> = QueueId::generate().to_string().into();
    let span = tracing::info_span!("session", id = %id, client = %peer.ip());
    async move {
        let generation = shared.current_generation();
        let chain = generation.session(id.clone());
        let ctx = SessionContext::new(
            id.clone(),
            peer,
            local,
            "smtp".into(),
            shared.config.hostname.as_str().into(),
        );
        tracing::info!(port = peer.port(), local = %local, generation = generation.id, "connect");
        let mut session = Session::new(shared.config.clone(), shared.spool.clone(), chain, ctx);
        let timeouts = Timeouts {
            command: shared.config.command_timeout,
            data: shared.config.data_timeout,
        };
        let end = conn::run(&mut stream, &mut session, &timeouts, stop).await;
        session.finish().await;
        tracing::info!(end = ?end, messages = session.context().messages_accepted, "disconnect");
    }
    .instrument(span)
    .await;
}
