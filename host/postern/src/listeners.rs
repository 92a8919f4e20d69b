//! Listening sockets and connection admission. A reload may add or remove
//! listen addresses: new sockets are bound before anything changes (a bind
//! failure refuses the reload), removed ones stop accepting while their
//! sessions finish. Each accepted connection is admitted under the global and
//! per-client limits, pinned to the current configuration and plugin
//! generation, and served in its own task and tracing span. Input: TCP
//! connections from untrusted clients.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use postern_plugin::SessionContext;
use postern_spool::QueueId;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::Config;
use crate::conn::{self, Timeouts};
use crate::server::Shared;
use crate::session::{Session, replies};

struct Running {
    actual: SocketAddr,
    task: JoinHandle<()>,
}

#[derive(Default)]
pub struct Listeners {
    running: HashMap<SocketAddr, Running>,
}

impl Listeners {
    /// Make the running set match `config.listen`. Returns a description of
    /// what changed, or an error (and changes nothing) if a bind fails.
    pub async fn apply(
        &mut self,
        config: &Config,
        shared: &Arc<Shared>,
    ) -> Result<Vec<String>, String> {
        let mut bound = Vec::new();
        for addr in &config.listen {
            if self.running.contains_key(addr) {
                continue;
            }
            match TcpListener::bind(addr).await {
                Ok(l) => bound.push((*addr, l)),
                Err(e) => return Err(format!("cannot listen on {addr}: {e}")),
            }
        }
        let mut changes = Vec::new();
        for (addr, l) in bound {
            let actual = l.local_addr().map_err(|e| e.to_string())?;
            tracing::info!(address = %actual, "listening");
            changes.push(format!("listening on {actual}"));
            let task = tokio::spawn(accept_loop(l, shared.clone()));
            self.running.insert(addr, Running { actual, task });
        }
        let gone: Vec<SocketAddr> = self
            .running
            .keys()
            .filter(|a| !config.listen.contains(a))
            .copied()
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

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
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
        tokio::spawn(async move {
            handle(stream, peer, shared).await;
        });
    }
}

/// Holds one connection's place in the limits; released on drop.
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

fn admit(shared: &Arc<Shared>, config: &Config, ip: IpAddr) -> Option<Slot> {
    let mut map = shared.per_ip.lock().unwrap_or_else(|p| p.into_inner());
    if shared.active.load(Ordering::Acquire) >= config.max_connections {
        return None;
    }
    let n = map.entry(ip).or_insert(0);
    if *n >= config.max_connections_per_ip {
        return None;
    }
    *n += 1;
    shared.active.fetch_add(1, Ordering::AcqRel);
    Some(Slot {
        shared: shared.clone(),
        ip,
    })
}

async fn handle(mut stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; policy,
    // logs and kv keys always see the plain IPv4 address.
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    let _ = stream.set_nodelay(true);
    // Pin this session to the configuration and generation of this moment.
    let config = shared.current_config();
    let generation = shared.current_generation();
    let Some(_slot) = admit(&shared, &config, peer.ip()) else {
        tracing::info!(client = %peer, "connection refused: too many connections");
        let _ = stream
            .write_all(&replies::too_many_connections(&config.hostname).to_bytes())
            .await;
        return;
    };
    let local = stream
        .local_addr()
        .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let id: Arc<str> = QueueId::generate().to_string().into();
    let span = tracing::info_span!("session", id = %id, client = %peer.ip());
    async move {
        let chain = generation.session(id.clone());
        let ctx = SessionContext::new(
            id.clone(),
            peer,
            local,
            "smtp".into(),
            config.hostname.as_str().into(),
        );
        tracing::info!(port = peer.port(), local = %local, generation = generation.id, "connect");
        let timeouts = Timeouts {
            command: config.command_timeout,
            data: config.data_timeout,
        };
        let mut session = Session::new(config, shared.spool.clone(), chain, ctx);
        let end = conn::run(&mut stream, &mut session, &timeouts, shared.stop.clone()).await;
        session.finish().await;
        tracing::info!(end = ?end, messages = session.context().messages_accepted, "disconnect");
    }
    .instrument(span)
    .await;
}
