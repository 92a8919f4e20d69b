//! `[record]`: the recorder. A sampled share of sessions is recorded by its
//! chain (`postern_plugin::record`); finished recordings, and the DNS
//! answers plugins got, go through a bounded channel to one writer thread
//! that appends them as JSON lines to rotating files
//! `<dir>/sessions-<unix ms>.jsonl` (mode 0600, the oldest deleted beyond
//! `keep`). A session never waits for the disk: when the writer falls behind,
//! recordings are dropped and counted. Privacy: recordings hold client
//! addresses, envelopes, AUTH user names (never passwords), header sections
//! and up to `max_body` bytes of each body; they are off by default. Input:
//! the chain's recordings (trusted) and the resolver's answers.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use postern_plugin::record::{RecordSink, SessionRecord};
use postern_plugin::{BoxFuture, DnsAnswer, DnsBackend, DnsFailure, DnsQuery};
use serde::{Deserialize, Serialize};

use crate::config::RecordSettings;

/// One line of a recording file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Line {
    Session(SessionRecord),
    Dns { dns: DnsLine },
}

/// A DNS answer a plugin got while recording.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnsLine {
    pub query: DnsQuery,
    pub result: Result<DnsAnswer, DnsFailure>,
}

/// Records dropped because the writer fell behind (or failed).
pub static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Sessions recorded.
pub static RECORDED: AtomicU64 = AtomicU64::new(0);

pub struct Recorder {
    pub settings: RecordSettings,
    tx: SyncSender<Line>,
}

impl Recorder {
    /// Start the writer when `[record]` is enabled.
    pub fn start(settings: &RecordSettings) -> anyhow::Result<Option<Arc<Recorder>>> {
        if !settings.enabled {
            return Ok(None);
        }
        std::fs::create_dir_all(&settings.dir)
            .map_err(|e| anyhow::anyhow!("[record] dir {}: {e}", settings.dir.display()))?;
        let (tx, rx) = sync_channel(4096);
        let s = settings.clone();
        std::thread::Builder::new()
            .name("postern-record".into())
            .spawn(move || writer(s, rx))?;
        tracing::info!(
            dir = %settings.dir.display(),
            sample = settings.sample,
            max_body = settings.max_body,
            "recording sessions for `postern replay`"
        );
        Ok(Some(Arc::new(Recorder {
            settings: settings.clone(),
            tx,
        })))
    }

    /// Whether the session `id` is one of the sampled ones (a hash of its
    /// random id, so the share holds without a shared counter).
    pub fn sample(&self, id: &str) -> bool {
        if self.settings.sample >= 1.0 {
            return true;
        }
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in id.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        (h % 1_000_000) < (self.settings.sample * 1_000_000.0) as u64
    }

    fn send(&self, line: Line) {
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl RecordSink for Recorder {
    fn write(&self, record: SessionRecord) {
        RECORDED.fetch_add(1, Ordering::Relaxed);
        self.send(Line::Session(record));
    }
}

/// The resolver lent to plugins while recording: answers as the inner one
/// does, and records each answer that differs from the last one recorded
/// for the same question.
pub struct RecordingDns {
    inner: Arc<dyn DnsBackend>,
    recorder: Arc<Recorder>,
    seen: Mutex<HashMap<DnsQuery, Result<DnsAnswer, DnsFailure>>>,
}

impl RecordingDns {
    pub fn wrap(
        inner: Arc<dyn DnsBackend>,
        recorder: Option<&Arc<Recorder>>,
    ) -> Arc<dyn DnsBackend> {
        match recorder {
            None => inner,
            Some(r) => Arc::new(RecordingDns {
                inner,
                recorder: r.clone(),
                seen: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl DnsBackend for RecordingDns {
    fn lookup(&self, query: DnsQuery) -> BoxFuture<'_, Result<DnsAnswer, DnsFailure>> {
        Box::pin(async move {
            let result = self.inner.lookup(query.clone()).await;
            let fresh = {
                let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                if seen.get(&query) == Some(&result) {
                    false
                } else {
                    if seen.len() >= 100_000 {
                        seen.clear();
                    }
                    seen.insert(query.clone(), result.clone());
                    true
                }
            };
            if fresh {
                self.recorder.send(Line::Dns {
                    dns: DnsLine {
                        query,
                        result: result.clone(),
                    },
                });
            }
            result
        })
    }
}

struct Output {
    dir: PathBuf,
    file: Option<(std::io::BufWriter<std::fs::File>, u64)>,
}

fn open_new(dir: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let mut n = 0;
    loop {
        let name = if n == 0 {
            format!("sessions-{ms}.jsonl")
        } else {
            format!("sessions-{ms}-{n}.jsonl")
        };
        match std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .open(dir.join(name))
        {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            r => return r,
        }
    }
}

/// The recording files in `dir`, oldest first.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("sessions-") && n.ends_with(".jsonl"))
        })
        .collect();
    v.sort_by_key(|p| {
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let mut parts = stem.trim_start_matches("sessions-").split('-');
        let ms = parts
            .next()
            .and_then(|m| m.parse::<u128>().ok())
            .unwrap_or(0);
        let n = parts
            .next()
            .and_then(|m| m.parse::<u64>().ok())
            .unwrap_or(0);
        (ms, n)
    });
    v
}

fn writer(s: RecordSettings, rx: Receiver<Line>) {
    let mut out = Output {
        dir: s.dir.clone(),
        file: None,
    };
    let mut failed_logged = false;
    while let Ok(first) = rx.recv() {
        let mut line = Some(first);
        // Everything already waiting, then one flush.
        while let Some(l) = line.take() {
            if let Err(e) = write_line(&mut out, &s, &l) {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                out.file = None;
                if !failed_logged {
                    tracing::error!(dir = %s.dir.display(), "recording failed, recordings are dropped: {e}");
                    failed_logged = true;
                }
            } else {
                failed_logged = false;
            }
            line = rx.try_recv().ok();
        }
        if let Some((f, _)) = &mut out.file {
            let _ = f.flush();
        }
    }
}

fn write_line(out: &mut Output, s: &RecordSettings, line: &Line) -> std::io::Result<()> {
    let mut text = serde_json::to_vec(line).map_err(std::io::Error::other)?;
    text.push(b'\n');
    if out.file.as_ref().is_some_and(|(_, n)| *n >= s.file_size)
        && let Some((mut f, _)) = out.file.take()
    {
        f.flush()?;
    }
    if out.file.is_none() {
        let f = open_new(&out.dir)?;
        out.file = Some((std::io::BufWriter::new(f), 0));
        let all = files(&out.dir);
        for old in all.iter().take(all.len().saturating_sub(s.keep)) {
            let _ = std::fs::remove_file(old);
        }
    }
    let (f, n) = out.file.as_mut().expect("opened above");
    f.write_all(&text)?;
    *n += text.len() as u64;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> SessionRecord {
        SessionRecord {
            v: postern_plugin::record::FORMAT,
            session: format!("s{i}"),
            started_unix_ms: 0,
            generation: 1,
            calls: Vec::new(),
        }
    }

    #[test]
    fn files_rotate_at_their_size_and_the_oldest_go() {
        let dir = std::env::temp_dir().join(format!("postern-record-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let settings = RecordSettings {
            enabled: true,
            dir: dir.clone(),
            sample: 1.0,
            max_body: 0,
            file_size: 4096,
            keep: 3,
        };
        let r = Recorder::start(&settings).unwrap().unwrap();
        for i in 0..400 {
            r.write(record(i));
            if i % 50 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        drop(r);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let last = loop {
            let all = files(&dir);
            let newest = all
                .last()
                .map(|f| std::fs::read_to_string(f).unwrap_or_default());
            if newest.as_deref().is_some_and(|t| t.contains("\"s399\""))
                || std::time::Instant::now() > deadline
            {
                break all;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(last.len(), 3, "{last:?}");
        for f in &last {
            let meta = std::fs::metadata(f).unwrap();
            assert!(meta.len() <= 4096 + 200, "{f:?} {}", meta.len());
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
            for line in std::fs::read_to_string(f).unwrap().lines() {
                assert!(matches!(
                    serde_json::from_str::<Line>(line),
                    Ok(Line::Session(_))
                ));
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        let sampled = RecordSettings {
            sample: 0.25,
            ..settings
        };
        let (tx, _rx) = sync_channel(1);
        let r = Recorder {
            settings: sampled,
            tx,
        };
        let n = (0..4000)
            .filter(|i| r.sample(&format!("0HOR{i:016}")))
            .count();
        assert!((800..1200).contains(&n), "{n}");
    }
}
