//! Session tests over in-memory streams: the real connection loop and
//! session, a real spool in a temporary directory, an empty plugin
//! generation, and a client speaking through `tokio::io::duplex`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use postern_plugin::{
    Generation, MemoryKv, NoDns, Runtime, RuntimeConfig, Services, SessionContext,
};
use postern_spool::{Spool, SpoolConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::config::{Config, Overrides};
use crate::server::conn::{self, End, Stream, Timeouts};
use crate::server::session::{Session, SessionEnv};

struct Harness {
    dir: PathBuf,
    spool: Arc<Spool>,
    generation: Arc<Generation>,
    config: Arc<Config>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn harness(extra: &str) -> Harness {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "postern-conn-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "[server]\nhostname = \"mx.test\"\nlisten = [\"127.0.0.1:25\"]\nlocal_domains = [\"example.test\"]\n{extra}"
    );
    let config = Config::parse(&dir.join("p.toml"), &text, &Overrides::default()).unwrap();
    let (spool, _) = Spool::open(SpoolConfig::new(dir.join("spool"))).unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        pooling: false,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let services = Services {
        dns: Arc::new(NoDns),
        kv: Arc::new(MemoryKv::default()),
        mail_auth: Arc::new(postern_plugin::NoMailAuth),
        av: Arc::new(postern_plugin::NoAv),
    };
    let generation = Generation::load(&runtime, 1, "test".into(), vec![], services)
        .await
        .unwrap();
    Harness {
        dir,
        spool: Arc::new(spool),
        generation: Arc::new(generation),
        config: Arc::new(config),
    }
}

/// Run a session on one end of a duplex pipe; return the client end.
fn connect(h: &Harness) -> (DuplexStream, tokio::task::JoinHandle<End>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let ctx = SessionContext::new(
        "s".into(),
        "192.0.2.9:4000".parse().unwrap(),
        "127.0.0.1:25".parse().unwrap(),
        "smtp".into(),
        "mx.test".into(),
    );
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let env = SessionEnv {
        config: h.config.clone(),
        spool: h.spool.clone(),
        listener: Arc::new(h.config.listeners[0].clone()),
        kv: Arc::new(MemoryKv::default()),
        tls_available: false,
        shutdown: stop.clone(),
    };
    let mut session = Session::new(env, h.generation.session("s".into()), ctx);
    let task = tokio::spawn(async move {
        let _keep = _tx;
        let timeouts = Timeouts {
            command: Duration::from_secs(5),
            data: Duration::from_secs(5),
            min_data_rate: 500,
            handshake: Duration::from_secs(5),
            connections: Arc::new(std::sync::atomic::AtomicUsize::new(1)),
        };
        let mut io = Stream::Plain(server);
        conn::run(&mut io, &mut session, &timeouts, None, stop).await
    });
    (client, task)
}

/// Read until `n` complete replies (final lines) arrived.
async fn replies(c: &mut DuplexStream, n: usize) -> Vec<String> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while out.len() < n {
        let mut chunk = [0u8; 4096];
        let k = tokio::time::timeout(Duration::from_secs(5), c.read(&mut chunk))
            .await
            .expect("reply timed out")
            .unwrap();
        assert!(k > 0, "connection closed after {out:?}");
        buf.extend_from_slice(&chunk[..k]);
        while let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
            let line: Vec<u8> = buf.drain(..p + 2).collect();
            let line = String::from_utf8(line[..p].to_vec()).unwrap();
            if line.as_bytes().get(3) == Some(&b' ') || line.len() == 3 {
                out.push(line);
            }
        }
    }
    out
}

fn codes(r: &[String]) -> Vec<&str> {
    r.iter().map(|l| &l[..3]).collect()
}

#[tokio::test]
async fn a_pipelined_transaction_is_answered_in_order_and_spooled() {
    let h = harness("").await;
    let (mut c, task) = connect(&h);
    assert_eq!(codes(&replies(&mut c, 1).await), ["220"]);
    c.write_all(
        b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<x@far.test>\r\nDATA\r\n",
    )
    .await
    .unwrap();
    assert_eq!(
        codes(&replies(&mut c, 5).await),
        ["250", "250", "250", "554", "354"]
    );
    c.write_all(b"Subject: t\r\n\r\nhi\r\n.\r\nQUIT\r\n")
        .await
        .unwrap();
    let r = replies(&mut c, 2).await;
    assert!(r[0].starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
    assert_eq!(codes(&r[1..]), ["221"]);
    assert_eq!(task.await.unwrap(), End::Quit);
    let ids = h.spool.list().unwrap();
    assert_eq!(ids.len(), 1);
    let (env, msg) = h.spool.read(&ids[0]).unwrap();
    assert_eq!(env.recipients.len(), 1);
    assert!(msg.starts_with(b"Received: from c.test (unknown [192.0.2.9])"));
}

#[tokio::test]
async fn smuggled_end_of_data_is_refused_and_nothing_spooled() {
    let h = harness("").await;
    let (mut c, _task) = connect(&h);
    replies(&mut c, 1).await;
    start_data(&mut c, "EHLO").await;
    // One byte at a time: the reader must not be fooled across chunks.
    for b in b"x\r\n\n.\nMAIL FROM:<e@c.test>\r\n\r\n.\r\nNOOP\r\n" {
        c.write_all(&[*b]).await.unwrap();
    }
    let r = replies(&mut c, 2).await;
    assert_eq!(codes(&r), ["554", "250"], "{r:?}");
    assert!(h.spool.list().unwrap().is_empty());
}

#[tokio::test]
async fn starttls_and_auth_are_not_offered_without_tls() {
    let h = harness("").await;
    let (mut c, _task) = connect(&h);
    replies(&mut c, 1).await;
    c.write_all(b"EHLO c.test\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let k = c.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..k]);
    assert!(
        !text.contains("STARTTLS") && !text.contains("AUTH"),
        "{text}"
    );
    c.write_all(b"STARTTLS\r\nAUTH PLAIN AGJvYgBwdw==\r\n")
        .await
        .unwrap();
    assert_eq!(codes(&replies(&mut c, 2).await), ["502", "538"]);
}

#[tokio::test]
async fn client_disappearing_mid_data_loses_nothing_accepted() {
    let h = harness("").await;
    let (mut c, task) = connect(&h);
    replies(&mut c, 1).await;
    c.write_all(
        b"HELO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\npartial",
    )
    .await
    .unwrap();
    replies(&mut c, 4).await;
    drop(c);
    assert_eq!(task.await.unwrap(), End::ClientGone);
    assert!(h.spool.list().unwrap().is_empty());
}

/// Open descriptors of this process into the harness's spill directory.
fn spill_fds(h: &Harness) -> usize {
    let spill = h.dir.join("spool").join("spill");
    std::fs::read_dir("/proc/self/fd")
        .map(|fds| {
            fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .filter(|target| target.starts_with(&spill))
                .count()
        })
        .unwrap_or(0)
}

/// A message of about `size` octets with `received` trace fields.
fn large_message(size: usize, received: usize) -> Vec<u8> {
    let mut m = b"Received: from relay.test\r\n".repeat(received);
    m.extend_from_slice(b"Subject: large\r\n\r\n");
    let mut n = 0;
    while m.len() < size {
        m.extend_from_slice(
            format!("line {n} of a large message .........................\r\n").as_bytes(),
        );
        n += 1;
    }
    m
}

/// Greet with `greeting` (HELO or EHLO), give one sender and one recipient and
/// send DATA, in one write; the four replies.
async fn start_data(c: &mut DuplexStream, greeting: &str) -> Vec<String> {
    let commands = format!(
        "{greeting} c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n"
    );
    c.write_all(commands.as_bytes()).await.unwrap();
    replies(c, 4).await
}

async fn send_data(c: &mut DuplexStream, message: &[u8]) -> Vec<String> {
    assert_eq!(
        codes(&start_data(c, "EHLO").await),
        ["250", "250", "250", "354"]
    );
    for piece in message.chunks(10_000) {
        c.write_all(piece).await.unwrap();
    }
    c.write_all(b".\r\n").await.unwrap();
    replies(c, 1).await
}

#[tokio::test]
async fn a_large_message_is_spooled_from_its_spill_file_intact() {
    let h = harness("").await;
    let (mut c, task) = connect(&h);
    replies(&mut c, 1).await;
    let message = large_message(3 * crate::server::incoming::SPILL_AT, 1);
    let r = send_data(&mut c, &message).await;
    assert!(r[0].starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
    c.write_all(b"QUIT\r\n").await.unwrap();
    replies(&mut c, 1).await;
    assert_eq!(task.await.unwrap(), End::Quit);
    let ids = h.spool.list().unwrap();
    let (_, stored) = h.spool.read(&ids[0]).unwrap();
    assert!(stored.starts_with(b"Received: from c.test (unknown [192.0.2.9])"));
    assert!(stored.ends_with(&message), "the message differs");
    assert_eq!(spill_fds(&h), 0, "spill file still open");
}

#[tokio::test]
async fn large_messages_refused_leave_no_spill_file() {
    // Too big (552), looping (554 5.4.6) and cut off: nothing spooled, nothing kept.
    let h = harness("max_message_size = 1000000\nmax_hops = 3").await;
    let (mut c, _task) = connect(&h);
    replies(&mut c, 1).await;
    let r = send_data(&mut c, &large_message(1_200_000, 0)).await;
    assert!(r[0].starts_with("552 5.3.4"), "{r:?}");
    let r = send_data(&mut c, &large_message(900_000, 3)).await;
    assert!(r[0].starts_with("554 5.4.6"), "{r:?}");
    let r = send_data(&mut c, &large_message(900_000, 2)).await;
    assert!(r[0].starts_with("250 "), "{r:?}");
    assert_eq!(h.spool.list().unwrap().len(), 1);

    let (mut c, task) = connect(&h);
    replies(&mut c, 1).await;
    start_data(&mut c, "HELO").await;
    c.write_all(&large_message(600_000, 0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(spill_fds(&h), 1, "the message in progress is spilled");
    drop(c);
    assert_eq!(task.await.unwrap(), End::ClientGone);
    assert_eq!(h.spool.list().unwrap().len(), 1);
    assert_eq!(spill_fds(&h), 0, "spill file still open");
}
