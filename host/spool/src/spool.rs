//! The spool API the SMTP server and the queue manager use. Trusts the session for
//! the envelope contents, but validates the queue id before it goes into a record.
//! Implements the RFC 5321 §6.1 contract: `commit` returns Ok only after the
//! message's record was written to the log and fdatasync'ed (group commit).
//!
//! Besides messages, the log keeps the queue manager's per-message delivery state
//! (`append_state` / `state_records`: opaque records, durable when `append_state`
//! returns, dropped with the message) and tombstones (`remove`). `subscribe` tells
//! the queue manager about every message committed from then on.
//!
//! A message too large to hold in memory is received into a spill file
//! (`spill_file`) and committed with `commit_file`, whose record the committer
//! copies from that file: the same record, the same guarantees, no whole copy in
//! memory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::time::Duration;

use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use crate::committer::{Committer, Op, Request, Tail};
use crate::envelope::Envelope;
use crate::error::SpoolError;
use crate::format::{self, Kind, RECORD_HEADER_LEN};
use crate::fsio;
use crate::id::QueueId;
use crate::index::Index;
use crate::janitor::{self, Maintenance};
use crate::paths::SpoolPaths;
use crate::reader::QueuedMessage;
use crate::recovery::{self, RecoveryReport};
use crate::spill;
use crate::stats::{Counters, SpoolStats};

/// Records at least this large are built under `block_in_place` so a long copy does
/// not stall the runtime worker's other tasks.
const LARGE_RECORD: usize = 1 << 20;

/// Read buffer of the checksum pass over a file-backed message.
const CHECKSUM_BUFFER: usize = 256 << 10;

/// Where the spool lives and how it syncs.
#[derive(Clone, Debug)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Batch fdatasyncs across concurrent commits (default `true`); `false` syncs
    /// once per record (kept to measure what group commit buys).
    pub group_commit: bool,
    /// Open without the exclusive lock, repairing nothing; every write is refused.
    pub read_only: bool,
    /// The active segment is rotated once it reaches this size (default 64 MiB).
    pub segment_size: u64,
    /// A sealed segment is compacted only when it is at least this old (default 5 min)…
    pub compact_min_age: Duration,
    /// …and its live bytes are under this fraction of its size (default 0.25).
    pub compact_live_ratio: f64,
    /// How often the janitor deletes and compacts segments (default 5 s).
    pub maintenance_interval: Duration,
}

impl SpoolConfig {
    /// A config for `dir` with the defaults above.
    pub fn new(dir: impl Into<PathBuf>) -> SpoolConfig {
        SpoolConfig {
            dir: dir.into(),
            group_commit: true,
            read_only: false,
            segment_size: 64 << 20,
            compact_min_age: Duration::from_secs(300),
            compact_live_ratio: 0.25,
            maintenance_interval: Duration::from_secs(5),
        }
    }
}

/// The durable message spool. Cheap to share behind an `Arc`.
/// A message that has just become durable (see [`Spool::subscribe`]).
#[derive(Debug, Clone)]
pub struct Committed {
    pub id: QueueId,
    pub envelope: Arc<Envelope>,
    /// Length of the stored message (headers and body).
    pub message_len: u64,
}

pub struct Spool {
    shared: Arc<Shared>,
    /// To the committer (`None` when read-only).
    tx: Option<mpsc::Sender<Request>>,
    committer: Option<std::thread::JoinHandle<()>>,
    janitor: Option<std::thread::JoinHandle<()>>,
    /// Held (flock'ed) for the spool's lifetime: exclusive, or shared when read-only.
    /// Released last, by `drop`.
    lock: Option<std::fs::File>,
}

/// What the committer, the janitor and the API share.
pub(crate) struct Shared {
    pub paths: SpoolPaths,
    pub config: SpoolConfig,
    index: Mutex<Index>,
    pub counters: Counters,
    /// Told the id of every message committed (see [`Spool::subscribe`]).
    pub subscriber: Mutex<Option<tokio_mpsc::UnboundedSender<Committed>>>,
    /// Set when the spool closes; wakes the janitor.
    stop: Mutex<bool>,
    stopped: Condvar,
    /// Held through a maintenance round, so the janitor and `maintain` take turns.
    pub maintaining: Mutex<()>,
}

impl Shared {
    pub fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Spool {
    /// Returns only when both threads have ended and the lock is released, so the
    /// next `open` of the same directory (this process or another) never sees it
    /// locked. Nothing else holds the threads' handles, a sender that outlives this
    /// drop, or the lock: the janitor has a sender clone of its own and is joined
    /// first; an in-flight `maintain` task holds a clone too, and the committer join
    /// waits for it to finish its round.
    fn drop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.shared.stopped.notify_all();
        if let Some(h) = self.janitor.take() {
            let _ = h.join();
        }
        // The committer drains what was sent, then ends when the last sender is
        // gone; joining it means the log is quiet before the lock is released.
        drop(self.tx.take());
        if let Some(h) = self.committer.take() {
            let _ = h.join();
        }
        drop(self.lock.take());
    }
}

impl Spool {
    /// Create the directories (0700) if missing, take the lock, recover the log (see
    /// `recovery`) and start the committer and janitor threads (plain threads, so
    /// `open` itself needs no runtime; the async methods run in any tokio runtime).
    pub fn open(config: SpoolConfig) -> Result<(Spool, RecoveryReport), SpoolError> {
        let paths = SpoolPaths::new(&config.dir);
        if config.read_only {
            if !paths.log.is_dir() {
                return Err(SpoolError::io(
                    &paths.log,
                    std::io::ErrorKind::NotFound.into(),
                ));
            }
        } else {
            create_dirs(&paths)?;
        }
        let lock = fsio::lock_file(&paths.lock, config.read_only)
            .map_err(|e| SpoolError::io(&paths.lock, e))?
            .ok_or_else(|| SpoolError::Locked {
                path: paths.root.clone(),
            })?;
        let recovered = recovery::recover(&paths, config.read_only, config.segment_size)?;
        if !config.read_only {
            let stale =
                spill::prepare(&paths.spill).map_err(|e| SpoolError::io(&paths.spill, e))?;
            if stale > 0 {
                tracing::info!(removed = stale, "removed stale spill files");
            }
        }
        let report = recovered.report;
        tracing::info!(dir = %paths.root.display(), segments = report.segments,
            kept = report.kept, truncated_bytes = report.truncated_bytes,
            quarantined = report.quarantined.len(), read_only = config.read_only,
            group_commit = config.group_commit, "spool opened");
        let shared = Arc::new(Shared {
            paths,
            config,
            index: Mutex::new(recovered.index),
            counters: Counters::default(),
            subscriber: Mutex::new(None),
            stop: Mutex::new(false),
            stopped: Condvar::new(),
            maintaining: Mutex::new(()),
        });
        let mut tx = None;
        let mut committer = None;
        if let Some(writer) = recovered.writer {
            let (sender, rx) = mpsc::channel();
            let body = Committer {
                shared: Arc::clone(&shared),
                writer,
                next_lsn: recovered.next_lsn,
            };
            committer = Some(
                std::thread::Builder::new()
                    .name("postern-spool-commit".into())
                    .spawn(move || body.run(rx))
                    .map_err(|e| SpoolError::io(&shared.paths.log, e))?,
            );
            tx = Some(sender);
        }
        let mut spool = Spool {
            shared: Arc::clone(&shared),
            tx,
            committer,
            janitor: None,
            lock: Some(lock),
        };
        if let Some(tx) = spool.tx.clone() {
            let shared = Arc::clone(&shared);
            // On error, dropping `spool` stops and joins the committer.
            spool.janitor = Some(
                std::thread::Builder::new()
                    .name("postern-spool-janitor".into())
                    .spawn(move || run_janitor(shared, tx))
                    .map_err(|e| SpoolError::io(&spool.shared.paths.log, e))?,
            );
        }
        Ok((spool, report))
    }

    fn shared(&self) -> &Shared {
        &self.shared
    }

    fn sender(&self) -> Result<&mpsc::Sender<Request>, SpoolError> {
        self.tx.as_ref().ok_or(SpoolError::ReadOnly)
    }

    /// Send a request to the committer and wait for its answer.
    async fn submit(&self, record: Vec<u8>, op: Op) -> Result<bool, SpoolError> {
        self.submit_with_tail(record, None, op).await
    }

    async fn submit_with_tail(
        &self,
        record: Vec<u8>,
        tail: Option<Tail>,
        op: Op,
    ) -> Result<bool, SpoolError> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            record,
            tail,
            op,
            reply: Some(reply),
        };
        self.sender()?
            .send(request)
            .map_err(|_| SpoolError::CommitterGone)?;
        answer.await.map_err(|_| SpoolError::CommitterGone)?
    }

    /// Durably store one message under `envelope.queue_id`; `message` is stored in
    /// slice order. Ok means the message survives a crash or power loss. Once the
    /// record is handed to the committer, dropping this future does not stop it.
    pub async fn commit(&self, envelope: &Envelope, message: &[&[u8]]) -> Result<(), SpoolError> {
        self.commit_parts(envelope, message, None).await
    }

    /// Like [`Spool::commit`] for a message too large to hold in memory: the stored
    /// message is `head` (in slice order: the `Received:` field, added headers)
    /// followed by the first `len` bytes of `file` (typically a [`Spool::spill_file`]
    /// holding what the client sent). The file is read once here for the record's
    /// checksum and copied into the log by the committer (`copy_file_range`, or a
    /// bounded buffer), so memory use does not depend on `len`; the record is the
    /// same as `commit` would write, with the same durability. The file must not
    /// change until this returns.
    pub async fn commit_file(
        &self,
        envelope: &Envelope,
        head: &[&[u8]],
        file: Arc<File>,
        len: u64,
    ) -> Result<(), SpoolError> {
        self.commit_file_range(envelope, head, file, 0, len).await
    }

    /// Like [`Spool::commit_file`] with the `len` bytes of `file` that start
    /// at `offset` (e.g. the body of a spilled message whose header section
    /// was rewritten into `head`).
    pub async fn commit_file_range(
        &self,
        envelope: &Envelope,
        head: &[&[u8]],
        file: Arc<File>,
        offset: u64,
        len: u64,
    ) -> Result<(), SpoolError> {
        self.commit_parts(envelope, head, Some(Tail { file, offset, len }))
            .await
    }

    async fn commit_parts(
        &self,
        envelope: &Envelope,
        message: &[&[u8]],
        tail: Option<Tail>,
    ) -> Result<(), SpoolError> {
        let id = envelope.queue_id;
        self.sender()?;
        let json = serde_json::to_vec(envelope).map_err(|source| SpoolError::Encode {
            queue_id: id.to_string(),
            source,
        })?;
        if json.len() as u64 > format::MAX_ENVELOPE_LEN {
            return Err(SpoolError::TooLarge(id.to_string()));
        }
        let head_len: usize = message.iter().map(|part| part.len()).sum();
        let record = match &tail {
            None => in_place(json.len() + head_len >= LARGE_RECORD, || {
                format::build_record(Kind::Message, &id, &json, message)
            }),
            Some(tail) => in_place(true, || {
                let mut crc = crc32fast::Hasher::new();
                crc.update(&json);
                message.iter().for_each(|part| crc.update(part));
                checksum_file(&mut crc, &tail.file, tail.offset, tail.len)
                    .map_err(|e| SpoolError::io(&self.shared().paths.spill, e))?;
                Ok::<_, SpoolError>(format::build_record_head(
                    Kind::Message,
                    &id,
                    &json,
                    message,
                    tail.len,
                    crc.finalize(),
                ))
            })?,
        };
        let message_len = head_len as u64 + tail.as_ref().map_or(0, |t| t.len);
        let body_crc = format::unsealed_body_crc(&record);
        {
            let mut index = self.shared().index();
            if index.messages.contains_key(&id) || !index.pending.insert(id) {
                return Err(SpoolError::IdInUse(id.to_string()));
            }
        }
        let op = Op::Commit {
            id,
            envelope_len: json.len() as u32,
            message_len,
            body_crc,
            envelope: Arc::new(envelope.clone()),
        };
        match self.submit_with_tail(record, tail, op).await {
            Ok(_) => Ok(()),
            Err(e) => {
                if matches!(e, SpoolError::ReadOnly | SpoolError::CommitterGone) {
                    self.shared().index().pending.remove(&id);
                }
                tracing::error!(queue_id = %id, error = %e, "spool commit failed");
                Err(e)
            }
        }
    }

    /// A new spill file: unnamed (`O_TMPFILE`) in `<dir>/spill/`, mode 0600, open
    /// for reading and writing, gone when the last handle is closed. For a message
    /// being received that is too large to keep in memory, until
    /// [`Spool::commit_file`] copies it into the log.
    pub fn spill_file(&self) -> Result<File, SpoolError> {
        self.sender()?;
        let dir = &self.shared().paths.spill;
        spill::create(dir).map_err(|e| SpoolError::io(dir, e))
    }

    /// Ids of queued messages in queue-id (creation) order.
    pub fn list(&self) -> Result<Vec<QueueId>, SpoolError> {
        Ok(self.shared().index().messages.keys().copied().collect())
    }

    /// Read back one queued message: its envelope and the full message bytes
    /// (checksum verified).
    pub fn read(&self, id: &QueueId) -> Result<(Envelope, Vec<u8>), SpoolError> {
        let message = self.open_message(id)?;
        let bytes = message.read_message().map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                SpoolError::Corrupt {
                    path: message.segment_path().to_path_buf(),
                    reason: format!("message {id}: {e}"),
                }
            } else {
                SpoolError::io(message.segment_path(), e)
            }
        })?;
        Ok((message.envelope, bytes))
    }

    /// Read only the envelope (the message body is not loaded).
    pub fn read_envelope(&self, id: &QueueId) -> Result<Envelope, SpoolError> {
        Ok(self.open_message(id)?.envelope)
    }

    /// Look one queued message up for streaming: the envelope is read and decoded;
    /// the message stays readable even if it is removed or moved meanwhile.
    pub fn open_message(&self, id: &QueueId) -> Result<QueuedMessage, SpoolError> {
        let (entry, file) = {
            let index = self.shared().index();
            let entry = index
                .messages
                .get(id)
                .ok_or_else(|| SpoolError::NotFound(id.to_string()))?;
            let file = index
                .file(entry.loc.seg)
                .ok_or_else(|| SpoolError::NotFound(id.to_string()))?;
            (
                (
                    entry.loc,
                    entry.envelope_len,
                    entry.message_len,
                    entry.body_crc,
                ),
                file,
            )
        };
        let (loc, envelope_len, message_len, body_crc) = entry;
        let envelope_offset = loc.offset + RECORD_HEADER_LEN as u64;
        let mut json = vec![0u8; envelope_len as usize];
        file.read_at(&mut json, envelope_offset)
            .map_err(|e| SpoolError::io(&file.path, e))?;
        let corrupt = |reason: String| SpoolError::Corrupt {
            path: file.path.clone(),
            reason: format!("message {id} at offset {}: {reason}", loc.offset),
        };
        let envelope: Envelope = serde_json::from_slice(&json)
            .map_err(|e| corrupt(format!("envelope is not valid JSON: {e}")))?;
        if envelope.queue_id != *id {
            return Err(corrupt(format!("envelope names {}", envelope.queue_id)));
        }
        let message_offset = envelope_offset + u64::from(envelope_len);
        Ok(QueuedMessage::new(
            envelope,
            json,
            message_len,
            Arc::clone(&file),
            message_offset,
            body_crc,
        ))
    }

    /// Remove a delivered message (and its state records) durably: a tombstone,
    /// group-committed like a commit. Removing an unknown id is `Ok(false)`.
    pub async fn remove(&self, id: &QueueId) -> Result<bool, SpoolError> {
        self.sender()?;
        {
            let mut index = self.shared().index();
            if !index.messages.contains_key(id) || !index.removing.insert(*id) {
                return Ok(false);
            }
        }
        let record = format::build_record(Kind::Tombstone, id, b"", &[]);
        let result = self.submit(record, Op::Remove { id: *id }).await;
        if matches!(
            result,
            Err(SpoolError::ReadOnly | SpoolError::CommitterGone)
        ) {
            self.shared().index().removing.remove(id);
        }
        result
    }

    /// Durably append a delivery-state record to a queued message (group-committed;
    /// durable when this returns Ok). `NotFound` if the message is not queued.
    pub async fn append_state(&self, id: &QueueId, bytes: &[u8]) -> Result<(), SpoolError> {
        self.sender()?;
        {
            let index = self.shared().index();
            if !index.messages.contains_key(id) || index.removing.contains(id) {
                return Err(SpoolError::NotFound(id.to_string()));
            }
        }
        let record = format::build_record(Kind::State, id, b"", &[bytes]);
        self.submit(record, Op::State { id: *id }).await.map(|_| ())
    }

    /// The delivery-state records of a queued message, oldest first (checksums
    /// verified). `NotFound` if the message is not queued.
    pub fn state_records(&self, id: &QueueId) -> Result<Vec<Vec<u8>>, SpoolError> {
        let locs = {
            let index = self.shared().index();
            let entry = index
                .messages
                .get(id)
                .ok_or_else(|| SpoolError::NotFound(id.to_string()))?;
            entry
                .states
                .iter()
                .map(|(_, loc)| (*loc, index.file(loc.seg)))
                .collect::<Vec<_>>()
        };
        let mut out = Vec::with_capacity(locs.len());
        for (loc, file) in locs {
            let Some(file) = file else {
                return Err(SpoolError::NotFound(id.to_string()));
            };
            let mut bytes = vec![0u8; loc.len as usize];
            file.read_at(&mut bytes, loc.offset)
                .map_err(|e| SpoolError::io(&file.path, e))?;
            let header = format::decode_record(&bytes).map_err(|e| SpoolError::Corrupt {
                path: file.path.clone(),
                reason: format!("state record of {id} at offset {}: {e}", loc.offset),
            })?;
            if header.id != *id || header.kind != Kind::State {
                return Err(SpoolError::Corrupt {
                    path: file.path.clone(),
                    reason: format!(
                        "record at offset {} is not a state record of {id}",
                        loc.offset
                    ),
                });
            }
            bytes.drain(..RECORD_HEADER_LEN);
            out.push(bytes);
        }
        Ok(out)
    }

    /// From now on, send every message whose commit succeeded (after it is
    /// durable) to the returned receiver, with its envelope, so the receiver need
    /// not read it back. A new subscription replaces the old one.
    pub fn subscribe(&self) -> tokio_mpsc::UnboundedReceiver<Committed> {
        let (tx, rx) = tokio_mpsc::unbounded_channel();
        *self
            .shared()
            .subscriber
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    /// Run one maintenance round now (what the janitor does every
    /// `maintenance_interval`): delete dead segments, compact a few if worthwhile.
    pub async fn maintain(&self) -> Result<Maintenance, SpoolError> {
        let tx = self.sender()?.clone();
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || janitor::maintain(&shared, &tx))
            .await
            .map_err(|e| SpoolError::Worker(e.to_string()))?
    }

    /// Current counters.
    pub fn stats(&self) -> SpoolStats {
        let mut stats = {
            let index = self.shared().index();
            SpoolStats {
                messages: index.messages.len() as u64,
                bytes: index.bytes,
                segments: index.segments.len() as u64,
                log_bytes: index.segments.values().map(|s| s.size).sum(),
                ..SpoolStats::default()
            }
        };
        self.shared().counters.fill(&mut stats);
        stats
    }

    /// The spool's root directory.
    pub fn dir(&self) -> &Path {
        &self.shared().paths.root
    }

    /// Whether this spool was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.tx.is_none()
    }
}

/// The janitor thread: a maintenance round every interval until the spool closes.
fn run_janitor(shared: Arc<Shared>, tx: mpsc::Sender<Request>) {
    let interval = shared.config.maintenance_interval;
    loop {
        {
            let stop = shared.stop.lock().unwrap_or_else(|p| p.into_inner());
            let (stop, _) = shared
                .stopped
                .wait_timeout_while(stop, interval, |stop| !*stop)
                .unwrap_or_else(|p| p.into_inner());
            if *stop {
                return;
            }
        }
        if let Err(e) = janitor::maintain(&shared, &tx) {
            tracing::warn!(error = %e, "spool maintenance failed; will retry");
        }
    }
}

/// Feed the first `len` bytes of `file` to `crc`, reading a bounded buffer at a time.
fn checksum_file(
    crc: &mut crc32fast::Hasher,
    file: &File,
    offset: u64,
    len: u64,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; CHECKSUM_BUFFER.min(usize::try_from(len).unwrap_or(CHECKSUM_BUFFER))];
    let mut at = 0u64;
    while at < len {
        let n = buf
            .len()
            .min(usize::try_from(len - at).unwrap_or(usize::MAX));
        file.read_exact_at(&mut buf[..n], offset + at)?;
        crc.update(&buf[..n]);
        at += n as u64;
    }
    Ok(())
}

/// Run `f` under `block_in_place` when it is `heavy` and the runtime allows it.
fn in_place<R>(heavy: bool, f: impl FnOnce() -> R) -> R {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if heavy && multi_thread {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// Create root, `log/`, `corrupt/` (0700) and fsync the parents of new ones.
fn create_dirs(paths: &SpoolPaths) -> Result<(), SpoolError> {
    let root = &paths.root;
    if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        std::fs::create_dir_all(parent).map_err(|e| SpoolError::io(parent, e))?;
    }
    let root_created = fsio::create_private_dir(root).map_err(|e| SpoolError::io(root, e))?;
    let mut sub_created = false;
    for dir in [&paths.log, &paths.corrupt] {
        sub_created |= fsio::create_private_dir(dir).map_err(|e| SpoolError::io(dir, e))?;
    }
    if sub_created {
        fsio::sync_dir(root).map_err(|e| SpoolError::io(root, e))?;
    }
    if root_created && let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
        fsio::sync_dir(parent).map_err(|e| SpoolError::io(parent, e))?;
    }
    Ok(())
}
