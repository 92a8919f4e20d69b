//! One connection's I/O loop: frames input into command lines or DATA
//! content (strict CRLF), feeds the session, and writes replies. Replies to
//! pipelined commands are queued and written in one batch when the input
//! buffer runs dry (RFC 2920 §3), so they are always in order and never
//! wait on a read. Enforces the read timeouts of RFC 5321 §4.5.3.2 and the
//! shutdown notice. Input: raw bytes from an untrusted client.

use std::time::Duration;

use postern_protocol::{DataReader, LineEvent, LineFramer, MAX_COMMAND_LINE};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::session::{Session, Step, step_reply};

/// A bidirectional byte stream (TCP, later TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct Timeouts {
    pub command: Duration,
    pub data: Duration,
}

enum Mode {
    Command,
    Data { reader: DataReader, body: Vec<u8> },
}

/// How a connection ended (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Quit,
    ClosedByServer,
    ClientGone,
    Timeout,
    Shutdown,
    IoError,
}

const READ_CHUNK: usize = 16 * 1024;

pub async fn run<S: Io>(
    io: &mut S,
    session: &mut Session,
    timeouts: &Timeouts,
    mut shutdown: watch::Receiver<bool>,
) -> End {
    let mut inbuf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut start = 0usize;
    let mut out: Vec<u8> = Vec::with_capacity(512);
    let mut framer = LineFramer::new(MAX_COMMAND_LINE);
    let mut mode = Mode::Command;

    let greeting = session.greet().await;
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
                        Some(session.command(line).await)
                    }
                    Some(LineEvent::Error(e)) => Some(session.line_error(e).await),
                    None => None,
                }
            }
            Mode::Data { reader, body } => {
                let p = reader.feed(&inbuf[start..], body);
                start += p.consumed;
                if p.done {
                    let outcome = reader.outcome();
                    let body = std::mem::take(body);
                    mode = Mode::Command;
                    Some(session.data_done(body, outcome).await)
                } else {
                    None
                }
            }
        };
        if let Some(step) = step {
            if let Some(end) = apply(step, &mut out, &mut mode, session) {
                let _ = io.write_all(&out).await;
                let _ = io.flush().await;
                return end;
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
        inbuf.drain(..start);
        start = 0;
        if inbuf.capacity() - inbuf.len() < READ_CHUNK / 2 {
            inbuf.reserve(READ_CHUNK);
        }
        let in_data = matches!(mode, Mode::Data { .. });
        let limit = if in_data {
            timeouts.data
        } else {
            timeouts.command
        };
        let wake = tokio::select! {
            biased;
            r = tokio::time::timeout(limit, io.read_buf(&mut inbuf)) => Wake::Read(r),
            _ = shutdown_signalled(&mut shutdown), if !in_data => Wake::Shutdown,
        };
        match wake {
            Wake::Read(Ok(Ok(0))) => return End::ClientGone,
            Wake::Read(Ok(Ok(_))) => {}
            Wake::Read(Ok(Err(_))) => return End::IoError,
            Wake::Read(Err(_)) => {
                let step = session.timed_out();
                let _ = io.write_all(&step_reply(&step).to_bytes()).await;
                return End::Timeout;
            }
            Wake::Shutdown => {
                let step = session.shutdown();
                let _ = io.write_all(&step_reply(&step).to_bytes()).await;
                return End::Shutdown;
            }
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

/// Queue the step's reply; switch mode; tell the caller when to close.
fn apply(step: Step, out: &mut Vec<u8>, mode: &mut Mode, session: &Session) -> Option<End> {
    step_reply(&step).write_to(out);
    match step {
        Step::Reply(_) => None,
        Step::Data(_) => {
            *mode = Mode::Data {
                reader: DataReader::new(session.data_limit()),
                body: Vec::with_capacity(8 * 1024),
            };
            None
        }
        Step::Close(r) if r.code == 221 => Some(End::Quit),
        Step::Close(_) => Some(End::ClosedByServer),
    }
}
