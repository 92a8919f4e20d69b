//! Guest stdout/stderr: each line a plugin prints becomes a log event tagged
//! with the plugin's name, the stream and the session the instance serves.
//! Input: arbitrary guest bytes; lines are capped at 4 KiB and decoded
//! lossily. The unfinished line lives with the stream, not the writer, so
//! when a recycled instance moves to another session whatever the previous
//! session left unterminated is logged under that session's id first.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

const MAX_LINE: usize = 4096;

struct Inner {
    session: Arc<str>,
    buf: Vec<u8>,
}

/// One of a plugin instance's output streams. Clones share the session and
/// the unfinished line.
#[derive(Clone)]
pub struct LogOutput {
    plugin: Arc<str>,
    stream: &'static str,
    inner: Arc<Mutex<Inner>>,
}

impl LogOutput {
    pub fn new(plugin: Arc<str>, stream: &'static str, session: Arc<str>) -> Self {
        LogOutput {
            plugin,
            stream,
            inner: Arc::new(Mutex::new(Inner {
                session,
                buf: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tag what follows with `session`, after logging any unfinished line
    /// under the session that wrote it.
    pub fn set_session(&self, session: Arc<str>) {
        let mut inner = self.lock();
        self.flush_partial(&mut inner);
        inner.session = session;
    }

    fn flush_partial(&self, inner: &mut Inner) {
        if !inner.buf.is_empty() {
            let n = inner.buf.len();
            self.emit(inner, n);
        }
    }

    fn emit(&self, inner: &mut Inner, upto: usize) {
        let line: Vec<u8> = inner.buf.drain(..upto).collect();
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        tracing::info!(
            target: "postern::plugin",
            plugin = %self.plugin,
            session = %inner.session,
            stream = self.stream,
            "{text}"
        );
    }

    fn write(&self, data: &[u8]) {
        let mut inner = self.lock();
        inner.buf.extend_from_slice(data);
        while let Some(pos) = inner.buf.iter().position(|&b| b == b'\n') {
            self.emit(&mut inner, pos + 1);
        }
        if inner.buf.len() > MAX_LINE {
            let n = inner.buf.len();
            self.emit(&mut inner, n);
        }
    }
}

impl IsTerminal for LogOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter(self.clone()))
    }
}

struct LineWriter(LogOutput);

impl AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.write(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.0.lock();
        self.0.flush_partial(&mut inner);
        Poll::Ready(Ok(()))
    }
}

impl Drop for LogOutput {
    fn drop(&mut self) {
        // The last handle of the stream: log what is left unterminated.
        if Arc::strong_count(&self.inner) == 1 {
            let mut inner = self.lock();
            self.flush_partial(&mut inner);
        }
    }
}
