//! The running server: opens the spool, reads the certificates and binds
//! every socket, switches to `[server] user` when started as root, then
//! builds the first plugin generation, starts accepting and tells the
//! service manager it is ready; reloads on SIGHUP / `postern reload` / file
//! changes, and shuts down gracefully: stop accepting, tell idle sessions
//! 421, let transfers finish up to `shutdown_timeout`. Input: the validated
//! configuration (trusted).
//!
//! Its parts: sessions (`listeners` accept, `conn` runs the I/O of one
//! connection, `session` decides every reply), `reload` and `rollout` (plugin
//! generations), `admin` and `queue_admin` (the admin socket), `metrics`,
//! `notify` (systemd), `privilege` (dropping root), `record` (session
//! recordings), the host services plugins call (`dns`, `kv`, `mail_auth`,
//! `av`) and `delivery_policy` (the plugins' say on the delivery side).

pub mod admin;
pub mod av;
pub mod conn;
#[cfg(test)]
mod conn_tests;
pub mod delivery_policy;
pub mod dns;
pub mod dnssec;
pub mod incoming;
pub mod kv;
pub mod listeners;
pub mod logging;
pub mod mail_auth;
pub mod metrics;
pub mod notify;
pub mod privilege;
pub mod queue_admin;
pub mod received;
pub mod record;
pub mod reload;
pub mod rollout;
pub mod session;
pub mod status;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context as _;
use postern_plugin::{DnsBackend, Generation, KvBackend, NoDns, Runtime, Services};
use postern_spool::{Spool, SpoolConfig};
use tokio::sync::watch;

use crate::config::{Config, Overrides};
use crate::server::dns::HickoryDns;
use crate::server::listeners::Listeners;
use privilege::Plan;

/// What a new session starts with: configuration, plugin generation and TLS
/// settings of one load, swapped together by a reload so that no session
/// ever sees the plugins of one load with the settings of another.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub generation: Arc<Generation>,
    /// Server TLS configuration (certificates are re-read on reload).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The key-value store of `[kv]` (the same one across reloads unless
    /// the section changed).
    pub kv: Arc<crate::server::kv::Kv>,
}

/// State shared by every connection.
pub struct Shared {
    /// The plugin generations: current, canary, kept and retired ones.
    pub generations: crate::server::rollout::Generations,
    pub overrides: Overrides,
    pub spool: Arc<Spool>,
    pub runtime: Arc<Runtime>,
    pub next_generation: AtomicU64,
    /// Open connections, overall and per client, against the limits.
    pub admission: Arc<crate::server::listeners::Admission>,
    pub stop: watch::Receiver<bool>,
    /// Serialises reloads.
    pub reloading: tokio::sync::Mutex<()>,
    pub listeners: tokio::sync::Mutex<Listeners>,
    /// The queue manager (delivery); it learns of new messages from the spool.
    pub queue: postern_delivery::QueueHandle,
    /// `[record]`: the session recorder, when enabled (fixed until restart).
    pub recorder: Option<Arc<crate::server::record::Recorder>>,
}

impl Shared {
    pub fn active_connections(&self) -> usize {
        self.admission.active()
    }

    /// The configuration, generation and TLS settings new sessions get.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.generations.snapshot()
    }

    pub fn current_generation(&self) -> Arc<Generation> {
        self.snapshot().generation.clone()
    }

    pub fn current_config(&self) -> Arc<Config> {
        self.snapshot().config.clone()
    }
}

/// The DNS resolver lent to plugins (and used by delivery).
pub fn resolver(config: &Config) -> Arc<dyn DnsBackend> {
    match HickoryDns::new(&config.dns.nameservers, config.dns.timeout) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            tracing::warn!("DNS unavailable, plugins will see temporary failures: {e:#}");
            Arc::new(NoDns)
        }
    }
}

/// Services for a new generation: the resolver of its configuration (shared
/// with delivery), the key-value store of `[kv]` (state outlives
/// generations) and mail authentication on the configuration's `[dns]`.
pub fn services(
    config: &Config,
    dns: Arc<dyn DnsBackend>,
    kv: Arc<dyn KvBackend>,
    recorder: Option<&Arc<crate::server::record::Recorder>>,
) -> Services {
    // While recording, the answers plugins get are recorded for replay.
    let dns = crate::server::record::RecordingDns::wrap(dns, recorder);
    let mail_auth: Arc<dyn postern_plugin::MailAuthBackend> =
        match crate::server::mail_auth::MailAuth::new(
            &config.dns.nameservers,
            config.dns.timeout,
            &config.hostname,
        ) {
            Ok(m) => Arc::new(m),
            Err(e) => {
                tracing::warn!("mail authentication unavailable, checks will be temperror: {e:#}");
                Arc::new(postern_plugin::NoMailAuth)
            }
        };
    Services {
        dns,
        kv,
        mail_auth,
        av: crate::server::av::backend(&config.av),
    }
}

/// Load the TLS certificate and key named by the configuration.
/// Errors name the configuration line that set the failing file.
pub fn load_tls(config: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    let Some(t) = config.tls.as_ref() else {
        return Ok(None);
    };
    crate::server::tls::server_config(&t.cert, &t.key, t.client_ca.as_deref())
        .map(Some)
        .map_err(|e| {
            let at = match e.key {
                crate::server::tls::TlsKey::Cert => &t.cert_at,
                crate::server::tls::TlsKey::Key => &t.key_at,
                crate::server::tls::TlsKey::ClientCa => &t.client_ca_at,
            };
            format!("{at}: {e}")
        })
}

/// Build a generation from a configuration (also used by `postern check`).
pub async fn load_generation(
    runtime: &Arc<Runtime>,
    config: &Config,
    id: u64,
    services: Services,
) -> anyhow::Result<Generation> {
    Generation::load_with_milters(
        runtime,
        id,
        config.path.display().to_string(),
        config.plugins.clone(),
        config.milters.clone(),
        services,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}: {e}", config.path.display()))
}

pub fn log_plugins(generation: &Generation) {
    for p in generation.plugins() {
        tracing::info!(
            generation = generation.id,
            plugin = %p.name,
            sha256 = %&p.sha256[..16],
            stages = ?p.stages.iter().map(|s| s.name()).collect::<Vec<_>>(),
            mode = ?p.mode,
            compiled = p.compiled,
            "plugin loaded"
        );
        if let Some(w) = ungranted_warning(&p) {
            tracing::warn!(generation = generation.id, plugin = %p.name, "{w}");
        }
    }
}

/// What `check` and the log say of a plugin that imports a capability it was
/// not granted (a missing grant found before its first call, not after).
pub fn ungranted_warning(p: &postern_plugin::PluginInfo) -> Option<String> {
    if p.ungranted.is_empty() {
        return None;
    }
    let imports: Vec<String> = p
        .ungranted
        .iter()
        .map(|c| format!("postern:policy/{c}"))
        .collect();
    let names: Vec<String> = p.ungranted.iter().map(|c| format!("\"{c}\"")).collect();
    Some(format!(
        "plugin {} imports {} without the capability: those calls will answer `denied` \
         (add {} to capabilities in its [[plugin]] entry, or build it against a world \
         that does not import {})",
        p.name,
        imports.join(", "),
        names.join(", "),
        if imports.len() == 1 { "it" } else { "them" },
    ))
}

pub async fn serve(config: Config, overrides: Overrides, plan: Plan) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let run_as = plan.run_as();
    match run_as {
        Some(r) => privilege::prepare(&config, r)?,
        None => std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?,
    }
    let (spool, report) = Spool::open(SpoolConfig {
        group_commit: config.spool.group_commit,
        ..SpoolConfig::new(&config.spool.dir)
    })
    .with_context(|| format!("cannot open spool {}", config.spool.dir.display()))?;
    if let Some(r) = run_as {
        privilege::adopt_spool(&config, r)?;
    }
    tracing::info!(
        dir = %config.spool.dir.display(),
        kept = report.kept,
        segments = report.segments,
        truncated_bytes = report.truncated_bytes,
        skipped = report.skipped.len(),
        salvaged = report.salvaged,
        imported = report.imported,
        quarantined = report.quarantined.len(),
        "spool recovered"
    );
    for (at, reason) in &report.skipped {
        tracing::error!(at = %at, reason = %reason, "damaged spool records skipped");
    }
    for (file, reason) in &report.quarantined {
        tracing::error!(file = %file, reason = %reason, "spool file quarantined");
    }
    let tls = load_tls(&config).map_err(|e| anyhow::anyhow!(e))?;
    // Every socket is bound while ports below 1024 may still be bound, after
    // the spool lock (which keeps a second server off this admin socket).
    let listeners = Listeners::prebind(&config).map_err(|e| anyhow::anyhow!(e))?;
    let (admin_socket, _unlink_admin_socket) =
        crate::server::admin::bind(&config, run_as.map(|r| (r.uid, r.gid)))?;
    let metrics_socket = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?,
        ),
        None => None,
    };
    // Nothing below runs as root: no delivery, no plugin, no SMTP session.
    match run_as {
        Some(r) => {
            privilege::switch(r)?;
            tracing::info!(
                user = %r.user,
                uid = r.uid,
                group = %r.group,
                gid = r.gid,
                "switched to the unprivileged account"
            );
            privilege::check_readable(&config, r)?;
        }
        None if nix::unistd::geteuid().is_root() => {
            tracing::warn!("serving as root: server.allow_root = true and no server.user");
        }
        None => {}
    }
    let spool = Arc::new(spool);
    // Started before the listeners, so it sees every commit (and resumes the queue).
    let dns = resolver(&config);
    // It starts no delivery before the plugins are loaded (`policy.install`).
    let policy = Arc::new(crate::server::delivery_policy::ChainPolicy::default());
    let queue = postern_delivery::QueueManager::start(
        spool.clone(),
        dns.clone(),
        config.delivery.clone(),
        policy.clone(),
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", config.path.display()))?;
    let runtime = Runtime::new(config.runtime.clone())?;
    let kv = crate::server::kv::open(&config.kv).map_err(|e| anyhow::anyhow!("[kv]: {e}"))?;
    tracing::info!(store = %kv.describe(), timeout = ?config.kv.timeout, "kv store");
    let recorder = crate::server::record::Recorder::start(&config.record)?;
    let generation = load_generation(
        &runtime,
        &config,
        1,
        services(&config, dns, kv.clone(), recorder.as_ref()),
    )
    .await?;
    log_plugins(&generation);
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        generations: crate::server::rollout::Generations::new(Arc::new(Snapshot {
            config: config.clone(),
            generation: Arc::new(generation),
            tls,
            kv,
        })),
        overrides,
        spool,
        runtime,
        next_generation: AtomicU64::new(2),
        admission: Arc::default(),
        stop: stop_rx,
        reloading: tokio::sync::Mutex::new(()),
        listeners: tokio::sync::Mutex::new(listeners),
        queue,
        recorder,
    });
    policy.install(&shared);
    shared.queue.wake();
    shared
        .listeners
        .lock()
        .await
        .apply(&config, &shared)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let admin = crate::server::admin::start(Arc::new(shared.clone()), admin_socket);
    let metrics = match metrics_socket {
        Some(l) => {
            tracing::info!(address = %l.local_addr()?, "metrics listening");
            let view: Arc<dyn crate::server::metrics::ServerView> = shared.clone();
            Some(tokio::spawn(crate::server::metrics::serve(
                l,
                Arc::downgrade(&view),
            )))
        }
        None => None,
    };
    let watcher = tokio::spawn(crate::server::reload::watch(shared.clone()));
    let rollout_monitor = tokio::spawn(crate::server::rollout::monitor(shared.clone()));
    let sweeper = tokio::spawn(sweep_idle_instances(shared.clone()));
    crate::server::notify::ready(&format!(
        "serving generation 1 on {} listeners",
        shared.listeners.lock().await.addresses().len()
    ));

    wait_for_shutdown(&shared).await;
    crate::server::notify::stopping();
    tracing::info!(
        active = shared.active_connections(),
        "shutting down: no new connections, finishing sessions"
    );
    let _ = stop_tx.send(true);
    // The running configuration's value (a reload may have changed it).
    let shutdown_timeout = shared.current_config().timeouts.shutdown;
    shared.listeners.lock().await.stop_all();
    // No new deliveries from now on; those in flight may finish until the deadline
    // (one cut off is simply retried after the restart).
    let deliveries = {
        let queue = shared.queue.clone();
        let limit = shutdown_timeout;
        tokio::spawn(async move { queue.shutdown(limit).await })
    };
    admin.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    watcher.abort();
    rollout_monitor.abort();
    sweeper.abort();
    let _ = std::fs::remove_file(crate::server::admin::socket_path(&config));
    let deadline = tokio::time::sleep(shutdown_timeout);
    tokio::pin!(deadline);
    tokio::select! {
        _ = shared.admission.idle() => {}
        _ = &mut deadline => {
            tracing::warn!(
                active = shared.active_connections(),
                "shutdown deadline reached; closing remaining sessions (none had an unanswered accepted message)"
            );
        }
    }
    if !matches!(deliveries.await, Ok(true)) {
        tracing::warn!(
            "deliveries still in progress at the shutdown deadline; they are retried after restart"
        );
    }
    if let Err(e) = shared.snapshot().kv.flush() {
        tracing::error!("kv store not flushed at shutdown: {e}");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Drop the plugin instances that have idled in the current generation's
/// pools for longer than `[runtime] idle_timeout`, at half that interval
/// (between 100 ms and 30 s): pools are otherwise only trimmed when a
/// session uses them, so after a burst a quiet server would keep them. Older
/// generations' pools go with the generation.
async fn sweep_idle_instances(shared: Arc<Shared>) {
    let every = (shared.current_config().runtime.idle_timeout / 2)
        .clamp(Duration::from_millis(100), Duration::from_secs(30));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let dropped = shared.current_generation().expire_idle();
        if dropped > 0 {
            tracing::debug!(dropped, "idle plugin instances expired");
        }
    }
}

/// Wait for SIGTERM or Ctrl-C; reload on SIGHUP meanwhile.
async fn wait_for_shutdown(shared: &Arc<Shared>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading");
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = crate::server::reload::reload(&shared, "SIGHUP", None, None).await;
                });
            }
        }
    }
}
