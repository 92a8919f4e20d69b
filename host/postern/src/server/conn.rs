//! One connection's I/O loop: frames input into command lines or DATA
//! content (strict CRLF; a large message goes to a spill file as it arrives,
//! see `incoming`), feeds the session, and writes replies. Replies to
//! pipelined commands are queued and written in one batch when the input
//! buffer runs dry (RFC 2920 §3), so they are always in order and never
//! wait on a read. Performs the STARTTLS upgrade, discarding anything the
//! client pipelined before the handshake (RFC 3207 §4.2, CVE-2011-0411).
//! Enforces the time-outs of RFC 5321 §4.5.3.2 as deadlines a slow client
//! cannot stretch (see [`Deadline`]), and the shutdown notice.
//! Input: raw bytes from an untrusted client.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use postern_protocol::{
    DataReader, LineError, LineEvent, LineFramer, MAX_AUTH_LINE, MAX_COMMAND_LINE,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::server::incoming::Incoming;
use crate::server::session::{Session, Step, step_reply};

/// A bidirectional byte stream (TCP, or anything in tests).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The connection's stream: plain until STARTTLS (or implicit TLS).
pub enum Stream<S> {
    Plain(S),
    Tls(Box<tokio_rustls::server::TlsStream<S>>),
    /// Transient state during the handshake.
    Gone,
}

impl<S: Io> AsyncRead for Stream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => {
                let read = Pin::new(s.as_mut()).poll_read(cx, buf);
                // Reading can make rustls queue a record of its own, such as
                // the no_renegotiation alert answering a TLS 1.2
                // renegotiation request (RFC 5246 §7.2.2, RFC 5746): send it
                // now, as the session may be waiting for input only and the
                // client for that answer.
                if s.get_ref().1.wants_write() {
                    let _ = Pin::new(s.as_mut()).poll_flush(cx);
                }
                read
            }
            Stream::Gone => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
}

impl<S: Io> AsyncWrite for Stream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

pub struct Timeouts {
    /// A whole command line must arrive within this of the server starting to
    /// wait for it (after its previous reply).
    pub command: Duration,
    /// DATA must end within this of its start, extended by `min_data_rate`.
    pub data: Duration,
    /// Bytes per second: each chunk of DATA read moves the deadline on by its
    /// size at this rate (never beyond `data` from now); 0: no extension.
    pub min_data_rate: u64,
    /// Time allowed for a TLS handshake.
    pub handshake: Duration,
    /// Open connections right now (the instance-release policy reads it).
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Timeouts {
    /// How long a session waiting for its client keeps its plugin
    /// instances: a short grace keeps them through the quick back-and-forth
    /// of an active session; with many connections open they are given back
    /// at once, so the instance pool and resident memory track the sessions
    /// that are working, not the ones that are waiting.
    fn release_grace(&self) -> Duration {
        if self.connections.load(std::sync::atomic::Ordering::Relaxed) > BUSY_CONNECTIONS {
            Duration::ZERO
        } else {
            RELEASE_GRACE
        }
    }
}

/// When the client must have sent what the server waits for, whatever its
/// pace: a byte now and then does not restart the clock (slowloris). A
/// command line gets `command` from the moment the server waits for it; DATA
/// gets `data` from its start, and every chunk read moves that on by its size
/// at `min_data_rate` bytes per second (as Postfix's `smtpd_min_data_rate`),
/// never further than `data` from now, so a long message at a reasonable
/// rate finishes and a trickle is cut off at about `data`.
struct Deadline {
    at: Instant,
}

impl Deadline {
    fn command(t: &Timeouts) -> Deadline {
        Deadline {
            at: Instant::now() + t.command,
        }
    }

    fn data(t: &Timeouts) -> Deadline {
        Deadline {
            at: Instant::now() + t.data,
        }
    }

    /// `n` bytes of DATA arrived.
    fn received(&mut self, t: &Timeouts, n: usize) {
        if t.min_data_rate == 0 || n == 0 {
            return;
        }
        let credit = Duration::from_secs_f64(n as f64 / t.min_data_rate as f64);
        self.at = (self.at + credit).min(Instant::now() + t.data);
    }

    fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }
}

enum Mode {
    Command,
    Data {
        reader: DataReader,
        body: Incoming,
    },
    /// Reading the octets of one BDAT chunk.
    Chunk {
        size: u64,
        remaining: u64,
        last: bool,
        refusal: Option<postern_protocol::Reply>,
    },
}

/// A message arriving in BDAT chunks: the checker and the content so far,
/// kept from one BDAT command to the next while the session's transaction
/// is chunking.
type Chunks = Option<(DataReader, Incoming)>;

/// How a connection ended (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Quit,
    ClosedByServer,
    ClientGone,
    Timeout,
    Shutdown,
    IoError,
    TlsFailed,
}

/// Read granularity: small, because idle sessions keep their buffer.
const READ_CHUNK: usize = 4 * 1024;

const RELEASE_GRACE: Duration = Duration::from_millis(25);
const BUSY_CONNECTIONS: usize = 256;

pub async fn run<S: Io>(
    io: &mut Stream<S>,
    session: &mut Session,
    timeouts: &Timeouts,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut shutdown: watch::Receiver<bool>,
) -> End {
    let mut inbuf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut start = 0usize;
    let mut out: Vec<u8> = Vec::with_capacity(512);
    let mut framer = LineFramer::new(MAX_AUTH_LINE);
    let mut mode = Mode::Command;
    let mut chunks: Chunks = None;
    let mut deadline = Deadline::command(timeouts);

    // The heavy calls are boxed: a connection waiting for input then keeps
    // only this loop's small state, not the largest plugin-call future.
    let greeting = Box::pin(session.greet()).await;
    if let Some(end) = apply(greeting, &mut out, &mut mode, session) {
        let _ = io.write_all(&out).await;
        return end;
    }
    loop {
        // Work through what is already buffered.
        let step = match &mut mode {
            Mode::Command => {
                let (used, event) = framer.next(&inbuf[start..]);
                let line_start = start;
                start += used;
                match event {
                    Some(LineEvent::Line(r)) => {
                        let line = &inbuf[line_start + r.start..line_start + r.end];
                        if line.len() + 2 > MAX_COMMAND_LINE && !session.accepts_long_line(line) {
                            Some(Box::pin(session.line_error(LineError::TooLong)).await)
                        } else {
                            Some(Box::pin(session.command(line)).await)
                        }
                    }
                    Some(LineEvent::Error(e)) => Some(Box::pin(session.line_error(e)).await),
                    None => None,
                }
            }
            Mode::Data { reader, body } => {
                let p = reader.feed(&inbuf[start..], body.buf());
                start += p.consumed;
                body.settle();
                if p.done {
                    let outcome = reader.outcome();
                    match std::mem::replace(&mut mode, Mode::Command) {
                        Mode::Data { body, .. } => {
                            Some(Box::pin(session.data_done(body, outcome)).await)
                        }
                        _ => None,
                    }
                } else {
                    None
                }
            }
            Mode::Chunk {
                remaining, refusal, ..
            } => {
                let n = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(inbuf.len() - start);
                if refusal.is_none() {
                    let (reader, body) = chunks.get_or_insert_with(|| {
                        (
                            DataReader::chunked(session.data_limit()),
                            session.incoming(),
                        )
                    });
                    reader.feed(&inbuf[start..start + n], body.buf());
                    body.settle();
                }
                start += n;
                *remaining -= n as u64;
                if *remaining == 0 {
                    match std::mem::replace(&mut mode, Mode::Command) {
                        Mode::Chunk {
                            size,
                            last,
                            refusal,
                            ..
                        } => Some(
                            Box::pin(chunk_read(session, &mut chunks, size, last, refusal)).await,
                        ),
                        _ => None,
                    }
                } else {
                    None
                }
            }
        };
        if let Some(step) = step {
            if !session.chunking() {
                // The transaction ended (LAST, RSET, a new MAIL...): so did
                // its chunks.
                chunks = None;
            }
            let starttls = matches!(step, Step::StartTls(_));
            deadline = if matches!(step, Step::Data(_) | Step::Chunk { .. }) {
                Deadline::data(timeouts)
            } else {
                Deadline::command(timeouts)
            };
            if let Some(end) = apply(step, &mut out, &mut mode, session) {
                let _ = io.write_all(&out).await;
                let _ = io.flush().await;
                return end;
            }
            if starttls {
                if io.write_all(&out).await.is_err() || io.flush().await.is_err() {
                    return End::IoError;
                }
                out.clear();
                // RFC 3207 §4.2: nothing the client sent before the handshake
                // may be acted on after it.
                let pipelined = inbuf.len() - start;
                if pipelined > 0 {
                    tracing::warn!(
                        bytes = pipelined,
                        "discarded input pipelined after STARTTLS"
                    );
                }
                inbuf.clear();
                start = 0;
                framer = LineFramer::new(MAX_AUTH_LINE);
                let Some(config) = tls.clone() else {
                    return End::TlsFailed;
                };
                match Box::pin(upgrade(io, config, timeouts.handshake)).await {
                    Ok(info) => {
                        session.tls_started(info);
                        deadline = Deadline::command(timeouts);
                    }
                    Err(e) => {
                        tracing::info!("STARTTLS handshake failed: {e}");
                        return End::TlsFailed;
                    }
                }
            }
            continue;
        }
        // Input exhausted: send the batched replies, then read more.
        if !out.is_empty() {
            if io.write_all(&out).await.is_err() || io.flush().await.is_err() {
                return End::IoError;
            }
            out.clear();
        }
        // Observers get a finished transaction's outcomes only now, after
        // its replies went out: they never delay a reply.
        if session.outcomes_ready() {
            Box::pin(session.deliver_outcomes()).await;
        }
        inbuf.drain(..start);
        start = 0;
        if inbuf.capacity() - inbuf.len() < READ_CHUNK / 2 {
            inbuf.reserve(READ_CHUNK);
        }
        let in_data = matches!(mode, Mode::Data { .. } | Mode::Chunk { .. });
        let before = inbuf.len();
        // About to wait for the client: if nothing arrives within a short
        // grace period, give the plugin instances back first (to their
        // plugin's idle pool, or dropped), so a connection that waits on the
        // network holds no WebAssembly instance (its next command takes
        // pooled or fresh ones). The grace keeps them through the quick
        // back-and-forth of an active session.
        let mut ready = None;
        if session.holds_instances() || session.outcomes_pending() {
            let grace = timeouts.release_grace().min(deadline.remaining());
            ready = match tokio::time::timeout(grace, io.read_buf(&mut inbuf)).await {
                Ok(r) => Some(r),
                Err(_) => {
                    // The client went quiet: observers get what they have
                    // not seen yet (an idle session's outcomes are not held
                    // back until it ends), then the instances go back.
                    if session.outcomes_pending() {
                        Box::pin(session.deliver_outcomes()).await;
                    }
                    session.release_instances();
                    if inbuf.is_empty() && inbuf.capacity() > 256 {
                        inbuf = Vec::with_capacity(256);
                    }
                    None
                }
            };
        }
        let wake = match ready {
            Some(r) => Wake::Read(Ok(r)),
            None => tokio::select! {
                biased;
                r = tokio::time::timeout(deadline.remaining(), io.read_buf(&mut inbuf)) => Wake::Read(r),
                _ = shutdown_signalled(&mut shutdown), if !in_data => Wake::Shutdown,
            },
        };
        if let Some(end) = handle_wake(wake, io, session).await {
            return end;
        }
        if in_data {
            deadline.received(timeouts, inbuf.len() - before);
        }
    }
}

/// Act on what woke the connection; `Some` ends it.
async fn handle_wake<S: Io>(wake: Wake, io: &mut Stream<S>, session: &mut Session) -> Option<End> {
    match wake {
        Wake::Read(Ok(Ok(0))) => Some(End::ClientGone),
        Wake::Read(Ok(Ok(_))) => None,
        Wake::Read(Ok(Err(_))) => Some(End::IoError),
        Wake::Read(Err(_)) => {
            let step = session.timed_out();
            crate::server::metrics::events::reply(step_reply(&step).code);
            let _ = io.write_all(&step_reply(&step).to_bytes()).await;
            Some(End::Timeout)
        }
        Wake::Shutdown => {
            let step = session.shutdown();
            crate::server::metrics::events::reply(step_reply(&step).code);
            let _ = io.write_all(&step_reply(&step).to_bytes()).await;
            Some(End::Shutdown)
        }
    }
}

enum Wake {
    Read(Result<std::io::Result<usize>, tokio::time::error::Elapsed>),
    Shutdown,
}

/// Resolves once the shutdown flag is (or becomes) set.
async fn shutdown_signalled(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Replace the plain stream by a TLS one (server side handshake).
async fn upgrade<S: Io>(
    io: &mut Stream<S>,
    config: Arc<rustls::ServerConfig>,
    limit: Duration,
) -> Result<postern_plugin::TlsInfo, String> {
    let Stream::Plain(plain) = std::mem::replace(io, Stream::Gone) else {
        return Err("TLS is already active".into());
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    match tokio::time::timeout(limit, acceptor.accept(plain)).await {
        Ok(Ok(tls)) => {
            crate::server::metrics::events::tls_handshake(true);
            let info = crate::server::tls::info(tls.get_ref().1);
            *io = Stream::Tls(Box::new(tls));
            Ok(info)
        }
        Ok(Err(e)) => {
            crate::server::metrics::events::tls_handshake(false);
            Err(e.to_string())
        }
        Err(_) => {
            crate::server::metrics::events::tls_handshake(false);
            Err("handshake timed out".into())
        }
    }
}

/// Implicit TLS: handshake before the greeting.
pub async fn accept_tls<S: Io>(
    plain: S,
    config: Arc<rustls::ServerConfig>,
    limit: Duration,
) -> Result<(Stream<S>, postern_plugin::TlsInfo), String> {
    let mut io = Stream::Plain(plain);
    let info = upgrade(&mut io, config, limit).await?;
    Ok((io, info))
}

/// A BDAT chunk's octets were all read: its answer.
async fn chunk_read(
    session: &mut Session,
    chunks: &mut Chunks,
    size: u64,
    last: bool,
    refusal: Option<postern_protocol::Reply>,
) -> Step {
    if let Some(r) = refusal {
        return Step::Reply(r);
    }
    let (mut reader, mut body) = chunks.take().unwrap_or_else(|| {
        (
            DataReader::chunked(session.data_limit()),
            session.incoming(),
        )
    });
    if last {
        let outcome = reader.finish_chunks(body.buf());
        body.settle();
        return session.data_done(body, outcome).await;
    }
    let (step, kept) = session.chunk_done(size, body, reader.outcome()).await;
    *chunks = kept.map(|body| (reader, body));
    step
}

/// Queue the step's reply; switch mode; tell the caller when to close.
fn apply(step: Step, out: &mut Vec<u8>, mode: &mut Mode, session: &Session) -> Option<End> {
    if let Step::Chunk {
        size,
        last,
        refusal,
    } = step
    {
        // The answer comes once the chunk's octets are read.
        *mode = Mode::Chunk {
            size,
            remaining: size,
            last,
            refusal,
        };
        return None;
    }
    step_reply(&step).write_to(out);
    crate::server::metrics::events::reply(step_reply(&step).code);
    match step {
        Step::Reply(_) | Step::StartTls(_) => None,
        Step::Data(_) => {
            *mode = Mode::Data {
                reader: DataReader::new(session.data_limit()),
                body: session.incoming(),
            };
            None
        }
        Step::Close(r) if r.code == 221 => Some(End::Quit),
        Step::Close(_) => Some(End::ClosedByServer),
        Step::Chunk { .. } => None,
    }
}
