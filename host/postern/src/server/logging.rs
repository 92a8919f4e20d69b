//! Log set-up: `tracing` to stderr, as text or JSON lines, level from the
//! config, overridable with `RUST_LOG`. Lines are appended to a shared
//! buffer and written out by a flusher thread every few milliseconds (or at
//! once when the buffer is large), so a session neither makes a write(2) nor
//! wakes another thread per log line; nothing is dropped. Input: trusted
//! settings.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// How often buffered lines are written out.
const FLUSH_EVERY: Duration = Duration::from_millis(5);
/// A buffer this large is handed to the flusher at once; twice this makes
/// loggers wait (back-pressure instead of unbounded memory).
const HIGH_WATER: usize = 256 * 1024;

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    closed: bool,
}

#[derive(Clone, Default)]
struct Shared {
    buf: Arc<(Mutex<Buffer>, Condvar)>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buf.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn append(&self, line: &[u8]) {
        let mut b = self.lock();
        while b.bytes.len() > 2 * HIGH_WATER && !b.closed {
            b = self.buf.1.wait(b).unwrap_or_else(|p| p.into_inner());
        }
        b.bytes.extend_from_slice(line);
        if b.bytes.len() > HIGH_WATER {
            self.buf.1.notify_all();
        }
    }

    /// Take what is buffered (waiting at most `FLUSH_EVERY` for something).
    fn take(&self) -> (Vec<u8>, bool) {
        let mut b = self.lock();
        if b.bytes.len() <= HIGH_WATER && !b.closed {
            b = self
                .buf
                .1
                .wait_timeout(b, FLUSH_EVERY)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        let out = std::mem::take(&mut b.bytes);
        let closed = b.closed;
        drop(b);
        self.buf.1.notify_all();
        (out, closed)
    }
}

/// The per-event writer: tracing formats one event, then writes it here.
pub struct LineWriter(Shared);

impl Write for LineWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.append(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Shared {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(self.clone())
    }
}

/// Keeps the flusher alive; dropping it writes out everything buffered.
pub struct Guard {
    shared: Shared,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.buf.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn flusher(shared: Shared) {
    let mut stderr = std::io::stderr();
    loop {
        let (bytes, closed) = shared.take();
        if !bytes.is_empty() {
            let _ = stderr.write_all(&bytes);
            let _ = stderr.flush();
        }
        if closed && shared.lock().bytes.is_empty() {
            return;
        }
    }
}

pub fn init(format: LogFormat, level: Option<&str>) -> Guard {
    let shared = Shared::default();
    let thread = {
        let shared = shared.clone();
        Some(
            std::thread::Builder::new()
                .name("postern-log".into())
                .spawn(move || flusher(shared))
                .expect("cannot start the log thread"),
        )
    };
    let default = level.unwrap_or("info");
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(shared.clone());
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
    Guard { shared, thread }
}
