//! Listening sockets and connection admission. A reload may add or remove
//! listen addresses: new sockets are bound before anything changes (a bind
//! failure refuses the reload), removed ones stop accepting while their
//! sessions finish. Each accepted connection is admitted under the global and
//! per-client limits, pinned to the current configuration and plugin
//! generation, and served in its own task and tracing span. Input: TCP
//! connections from untrusted clients.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use postern_plugin::SessionContext;
use postern_spool::QueueId;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::{Config, ListenerSpec, TlsMode};
use crate::server::Shared;
use crate::server::conn::{self, Stream, Timeouts};
use crate::server::session::{Session, SessionEnv, replies};

struct Running {
    actual: SocketAddr,
    task: JoinHandle<()>,
    spec: watch::Sender<Arc<ListenerSpec>>,
}

/// Listeners are identified by (name, configured address): a reload that
/// keeps both keeps the socket.
type Key = (String, SocketAddr);

fn key(spec: &ListenerSpec) -> Key {
    (spec.name.clone(), spec.address)
}

#[derive(Default)]
pub struct Listeners {
    running: HashMap<Key, Running>,
    /// Sockets bound at start-up before the privilege switch, not yet
    /// accepting; the first `apply` starts them.
    prebound: HashMap<Key, TcpListener>,
}

impl Listeners {
    /// Bind every listener of `config` without accepting yet (start-up binds
    /// while it may still use ports below 1024, and accepts only once it runs
    /// as the configured account).
    pub fn prebind(config: &Config) -> Result<Listeners, String> {
        let mut prebound = HashMap::new();
        for spec in &config.listeners {
            let l = bind(spec.address).map_err(|e| bind_error(spec.address, e))?;
            prebound.insert(key(spec), l);
        }
        Ok(Listeners {
            running: HashMap::new(),
            prebound,
        })
    }

    /// Make the running set match `config.listen`. Returns a description of
    /// what changed, or an error (and changes nothing) if a bind fails.
    pub async fn apply(
        &mut self,
        config: &Config,
        shared: &Arc<Shared>,
    ) -> Result<Vec<String>, String> {
        let mut bound = Vec::new();
        for spec in &config.listeners {
            if self.running.contains_key(&key(spec)) {
                continue;
            }
            if let Some(l) = self.prebound.remove(&key(spec)) {
                bound.push((spec.clone(), l));
                continue;
            }
            match bind(spec.address) {
                Ok(l) => bound.push((spec.clone(), l)),
                Err(e) => return Err(bind_error(spec.address, e)),
            }
        }
        let mut changes = Vec::new();
        // Listeners that stay: hand them their (possibly changed) settings.
        for spec in &config.listeners {
            if let Some(r) = self.running.get(&key(spec))
                && **r.spec.borrow() != *spec
            {
                changes.push(format!("listener {} on {} updated", spec.name, r.actual));
                let _ = r.spec.send(Arc::new(spec.clone()));
            }
        }
        for (spec, l) in bound {
            let actual = l.local_addr().map_err(|e| e.to_string())?;
            tracing::info!(address = %actual, listener = %spec.name, tls = ?spec.tls, "listening");
            changes.push(format!("listening on {actual}"));
            let k = key(&spec);
            let (tx, rx) = watch::channel(Arc::new(spec));
            let task = tokio::spawn(accept_loop(l, rx, shared.clone()));
            self.running.insert(
                k,
                Running {
                    actual,
                    task,
                    spec: tx,
                },
            );
        }
        let gone: Vec<Key> = self
            .running
            .keys()
            .filter(|k| !config.listeners.iter().any(|l| key(l) == **k))
            .cloned()
            .collect();
        for addr in gone {
            if let Some(r) = self.running.remove(&addr) {
                r.task.abort();
                tracing::info!(address = %r.actual, "stopped listening");
                changes.push(format!("stopped listening on {}", r.actual));
            }
        }
        Ok(changes)
    }

    pub fn addresses(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.running.values().map(|r| r.actual).collect();
        v.sort();
        v
    }

    pub fn stop_all(&mut self) {
        for (_, r) in self.running.drain() {
            r.task.abort();
        }
    }
}

fn bind_error(addr: SocketAddr, e: std::io::Error) -> String {
    let hint = if e.kind() == std::io::ErrorKind::PermissionDenied && addr.port() < 1024 {
        " (ports below 1024 need root or CAP_NET_BIND_SERVICE; a server that switched to \
         [server] user at start-up binds new ones only after a restart)"
    } else {
        ""
    };
    format!("cannot listen on {addr}: {e}{hint}")
}

/// A listening socket with a deep accept backlog (bursts of thousands of
/// connections must wait in the queue, not be dropped).
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

async fn accept_loop(
    listener: TcpListener,
    spec: watch::Receiver<Arc<ListenerSpec>>,
    shared: Arc<Shared>,
) {
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
        let spec = spec.borrow().clone();
        tokio::spawn(async move {
            handle(stream, peer, spec, shared).await;
        });
    }
}

/// Connection admission: the count of open connections, overall and per
/// client address (or /64), against `max_connections` and
/// `max_connections_per_ip`; notifies waiters when the last one closes.
#[derive(Default)]
pub struct Admission {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    active: Arc<AtomicUsize>,
    idle: Notify,
}

impl Admission {
    /// Open connections.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// The live count itself (sessions read it for their own limits).
    pub fn counter(&self) -> Arc<AtomicUsize> {
        self.active.clone()
    }

    /// Wait until no connection is open (checked again after each close).
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.active() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// A place for a connection from `ip`, or none when a limit is reached.
    fn admit(self: &Arc<Self>, config: &Config, ip: IpAddr) -> Option<Slot> {
        let ip = crate::server::session::enumeration::limit_key(ip);
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if self.active() >= config.limits.max_connections {
            return None;
        }
        let n = map.entry(ip).or_insert(0);
        if *n >= config.limits.max_connections_per_ip {
            return None;
        }
        *n += 1;
        self.active.fetch_add(1, Ordering::AcqRel);
        Some(Slot {
            admission: self.clone(),
            ip,
        })
    }
}

/// Holds one connection's place in the limits; released on drop.
struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let a = &self.admission;
        let mut map = a.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        drop(map);
        if a.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            a.idle.notify_waiters();
        }
    }
}

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<ListenerSpec>,
    shared: Arc<Shared>,
) {
    // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; policy,
    // logs and kv keys always see the plain IPv4 address.
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    let _ = stream.set_nodelay(true);
    // Pin this session to the configuration and generation of this moment
    // (a canary's for its share of sessions).
    let snapshot = shared.generations.session_snapshot();
    let config = snapshot.config.clone();
    let generation = snapshot.generation.clone();
    let tls = snapshot.tls.clone();
    let kv: Arc<dyn postern_plugin::KvBackend> = snapshot.kv.clone();
    drop(snapshot);
    let Some(_slot) = shared.admission.admit(&config, peer.ip()) else {
        tracing::info!(client = %peer, "connection refused: too many connections");
        let mut stream = stream;
        if listener.tls != TlsMode::Implicit {
            let _ = stream
                .write_all(&replies::too_many_connections(&config.hostname).to_bytes())
                .await;
        }
        return;
    };
    let local = stream
        .local_addr()
        .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let id: Arc<str> = QueueId::generate().to_string().into();
    let span = tracing::info_span!("session", id = %id, client = %peer.ip());
    async move {
        let timeouts = Timeouts {
            command: config.timeouts.command,
            data: config.timeouts.data,
            min_data_rate: config.timeouts.min_data_rate,
            handshake: config
                .timeouts
                .command
                .min(std::time::Duration::from_secs(60)),
            connections: shared.admission.counter(),
        };
        let mut ctx = SessionContext::new(
            id.clone(),
            peer,
            local,
            listener.name.as_str().into(),
            config.hostname.as_str().into(),
        );
        let mut io = if listener.tls == TlsMode::Implicit {
            let Some(tls) = tls.clone() else {
                tracing::error!("implicit TLS listener without a TLS configuration");
                return;
            };
            match conn::accept_tls(stream, tls, timeouts.handshake).await {
                Ok((io, info)) => {
                    ctx.tls = Some(info);
                    io
                }
                Err(e) => {
                    tracing::info!(listener = %listener.name, "TLS handshake failed: {e}");
                    return;
                }
            }
        } else {
            Stream::Plain(stream)
        };
        let mut chain = generation.session(id.clone());
        if let Some(r) = &shared.recorder
            && r.sample(&id)
        {
            chain.record(r.clone(), r.settings.max_body);
        }
        crate::server::metrics::events::get().sessions.inc();
        tracing::info!(
            port = peer.port(),
            local = %local,
            listener = %listener.name,
            generation = generation.id,
            "connect"
        );
        let env = SessionEnv {
            config,
            spool: shared.spool.clone(),
            listener,
            kv,
            tls_available: tls.is_some(),
            shutdown: shared.stop.clone(),
        };
        let mut session = Session::new(env, chain, ctx);
        let end = conn::run(&mut io, &mut session, &timeouts, tls, shared.stop.clone()).await;
        session.finish().await;
        tracing::info!(end = ?end, messages = session.context().messages_accepted, "disconnect");
    }
    .instrument(span)
    .await;
}

#[cfg(test)]
mod tests {
    use crate::server::session::enumeration::limit_key;
    use std::net::IpAddr;

    #[test]
    fn per_ip_limit_counts_ipv4_addresses_and_ipv6_slash_64s() {
        let k = |s: &str| limit_key(s.parse::<IpAddr>().unwrap()).to_string();
        assert_eq!(k("192.0.2.7"), "192.0.2.7");
        assert_eq!(k("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(k("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::");
        assert_ne!(k("2001:db8:1:3::1"), k("2001:db8:1:2::1"));
        assert_eq!(k("::1"), "::");
    }
}
