//! Guest stdout/stderr: each line a plugin prints becomes a log event tagged
//! with the plugin's name and session id. Input: arbitrary guest bytes; lines
//! are capped at 4 KiB and decoded lossily.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

const MAX_LINE: usize = 4096;

/// Clones share the session cell, so a reused instance's output is tagged
/// with the session it currently serves.
#[derive(Clone)]
pub struct LogOutput {
    plugin: Arc<str>,
    session: Arc<Mutex<Arc<str>>>,
}

impl LogOutput {
    pub fn new(plugin: Arc<str>, session: Arc<str>) -> Self {
        LogOutput {
            plugin,
            session: Arc::new(Mutex::new(session)),
        }
    }

    pub fn set_session(&self, session: Arc<str>) {
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = session;
    }

    fn session(&self) -> Arc<str> {
        self.session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl IsTerminal for LogOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            out: self.clone(),
            buf: Vec::new(),
        })
    }
}

struct LineWriter {
    out: LogOutput,
    buf: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self, upto: usize) {
        let line: Vec<u8> = self.buf.drain(..upto).collect();
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        tracing::info!(
            target: "postern::plugin",
            plugin = %self.out.plugin,
            session = %self.out.session(),
            stream = "stdout",
            "{text}"
        );
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.buf.extend_from_slice(data);
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            self.emit(pos + 1);
        }
        if self.buf.len() > MAX_LINE {
            let n = self.buf.len();
            self.emit(n);
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.buf.is_empty() {
            let n = self.buf.len();
            self.emit(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let n = self.buf.len();
            self.emit(n);
        }
    }
}
