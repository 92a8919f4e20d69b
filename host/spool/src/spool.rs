//! The spool API the SMTP server and the queue manager use. Trusts the session for the
//! envelope contents, but validates the queue id before it names a file. Implements the
//! RFC 5321 §6.1 contract: `commit` returns Ok only after the message file was
//! fdatasync'ed and its rename into `queue/` was made durable by a directory fsync.
//!
//! Beside each `queue/<id>` the queue manager keeps an append-only `queue/<id>.state`
//! journal (per-recipient delivery state, see `postern-delivery`). `list` returns
//! message files only, recovery keeps the journals of kept messages (and collects
//! orphans), and `remove` deletes the journal after the message file. `subscribe`
//! tells the queue manager about every message committed from then on.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::committer::DirSyncer;
use crate::envelope::Envelope;
use crate::error::SpoolError;
use crate::format;
use crate::fsio;
use crate::id::QueueId;
use crate::paths::SpoolPaths;
use crate::reader::{self, QueuedMessage};
use crate::recovery::{self, RecoveryReport};
use crate::stats::{Counters, SpoolStats};
use crate::writer::{self, RemoveOnDrop};

/// Messages at least this large are written under `block_in_place` so a long copy into
/// the page cache does not stall the runtime worker's other tasks.
const LARGE_WRITE: u64 = 1 << 20;

/// Where the spool lives and how it syncs.
#[derive(Clone, Debug)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Batch directory fsyncs across concurrent commits (default `true`).
    pub group_commit: bool,
}

impl SpoolConfig {
    /// A config for `dir` with group commit on.
    pub fn new(dir: impl Into<PathBuf>) -> SpoolConfig {
        SpoolConfig {
            dir: dir.into(),
            group_commit: true,
        }
    }
}

/// The durable message spool. Cheap to share behind an `Arc`.
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    paths: SpoolPaths,
    syncer: DirSyncer,
    counters: Arc<Counters>,
    /// Told the id of every message committed (see [`Spool::subscribe`]).
    subscriber: Mutex<Option<mpsc::UnboundedSender<QueueId>>>,
    /// Held (flock'ed) for the spool's lifetime so a second process cannot recover
    /// (delete) our in-flight temp files.
    _lock: std::fs::File,
}

impl Spool {
    /// Create the directories (0700) if missing, take the lock, recover the queue and
    /// start the group committer (a plain thread, so `open` itself needs no runtime;
    /// `commit` and `remove` must run inside a tokio runtime, either flavour). Recovery
    /// deletes `tmp/*`, verifies `queue/*` and quarantines damaged files to `corrupt/`.
    pub fn open(config: SpoolConfig) -> Result<(Spool, RecoveryReport), SpoolError> {
        let paths = SpoolPaths::new(&config.dir);
        create_dirs(&paths)?;
        let lock = fsio::lock_file(&paths.lock)
            .map_err(|e| SpoolError::io(&paths.lock, e))?
            .ok_or_else(|| SpoolError::Locked {
                path: paths.root.clone(),
            })?;
        let counters = Arc::new(Counters::default());
        let report = recovery::recover(&paths, &counters)?;
        let syncer = DirSyncer::start(&paths.queue, config.group_commit, Arc::clone(&counters))?;
        tracing::info!(dir = %paths.root.display(), kept = report.kept,
            removed_temp = report.removed_temp, quarantined = report.quarantined.len(),
            group_commit = config.group_commit, "spool opened");
        let inner = Inner {
            paths,
            syncer,
            counters,
            subscriber: Mutex::new(None),
            _lock: lock,
        };
        Ok((
            Spool {
                inner: Arc::new(inner),
            },
            report,
        ))
    }

    /// Durably store one message under `envelope.queue_id`; `message` is written in
    /// slice order. Ok means the message survives a crash or power loss.
    pub async fn commit(&self, envelope: &Envelope, message: &[&[u8]]) -> Result<(), SpoolError> {
        let id: QueueId = envelope.queue_id.parse()?;
        let json = serde_json::to_vec(envelope).map_err(|source| SpoolError::Encode {
            queue_id: id.to_string(),
            source,
        })?;
        let message_len: u64 = message.iter().map(|part| part.len() as u64).sum();
        let header = format::encode_header(json.len() as u64, message_len);
        let file_len = header.len() as u64 + json.len() as u64 + 1 + message_len;
        let temp_path = self.inner.paths.temp_file(&id);

        let mut parts: Vec<&[u8]> = Vec::with_capacity(message.len() + 3);
        parts.extend([header.as_slice(), json.as_slice(), b"\n".as_slice()]);
        parts.extend_from_slice(message);
        let (file, temp_guard) = in_place(message_len >= LARGE_WRITE, || {
            writer::write_temp(&temp_path, id.as_str(), &parts)
        })?;

        // From here on the commit runs in its own task: if the caller's future is
        // dropped, the file still ends up either removed or durably queued, and the
        // counters stay true.
        let inner = Arc::clone(&self.inner);
        let written = Written {
            id,
            file,
            temp_path,
            temp_guard,
            file_len,
        };
        tokio::spawn(async move { inner.publish(written).await })
            .await
            .map_err(|e| SpoolError::Worker(e.to_string()))?
    }

    /// Ids of queued messages in queue-id (creation) order.
    pub fn list(&self) -> Result<Vec<QueueId>, SpoolError> {
        let queue = &self.inner.paths.queue;
        let entries = std::fs::read_dir(queue).map_err(|e| SpoolError::io(queue, e))?;
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| SpoolError::io(queue, e))?;
            if let Some(id) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Read back one queued message: its envelope and the full message bytes.
    pub fn read(&self, id: &QueueId) -> Result<(Envelope, Vec<u8>), SpoolError> {
        let message = self.open_message(id)?;
        let bytes = message
            .read_message()
            .map_err(|e| SpoolError::io(self.path_of(id), e))?;
        Ok((message.envelope, bytes))
    }

    /// Read only the envelope (the message body is not loaded).
    pub fn read_envelope(&self, id: &QueueId) -> Result<Envelope, SpoolError> {
        Ok(self.open_message(id)?.envelope)
    }

    /// Open and verify one queued message for streaming: the envelope is decoded, the
    /// open file stays valid even if the message is removed meanwhile.
    pub fn open_message(&self, id: &QueueId) -> Result<QueuedMessage, SpoolError> {
        reader::open_message(&self.path_of(id), id.as_str())
    }

    /// Remove a delivered message and make the removal durable (batched like commits).
    /// Removing an unknown id is `Ok(false)`.
    pub async fn remove(&self, id: &QueueId) -> Result<bool, SpoolError> {
        let inner = Arc::clone(&self.inner);
        let id = *id;
        tokio::spawn(async move { inner.unqueue(id).await })
            .await
            .map_err(|e| SpoolError::Worker(e.to_string()))?
    }

    /// Path of the queue file, for delivery agents that stream it.
    pub fn path_of(&self, id: &QueueId) -> PathBuf {
        self.inner.paths.queue_file(id)
    }

    /// Path of the message's delivery-state journal (`queue/<id>.state`), owned by
    /// the queue manager; `remove` deletes it after the message file.
    pub fn state_path(&self, id: &QueueId) -> PathBuf {
        self.inner.paths.state_file(id)
    }

    /// The `queue/` directory (fsync it after creating a sidecar there).
    pub fn queue_dir(&self) -> &Path {
        &self.inner.paths.queue
    }

    /// From now on, send the id of every message whose commit succeeded (after it
    /// is durable) to the returned receiver. A new subscription replaces the old one.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<QueueId> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self
            .inner
            .subscriber
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    /// Current counters.
    pub fn stats(&self) -> SpoolStats {
        self.inner.counters.snapshot()
    }

    /// The spool's root directory.
    pub fn dir(&self) -> &Path {
        &self.inner.paths.root
    }
}

/// A temp file written but not yet synced or renamed.
struct Written {
    id: QueueId,
    file: std::fs::File,
    temp_path: PathBuf,
    temp_guard: RemoveOnDrop,
    file_len: u64,
}

impl Inner {
    /// fdatasync + rename on the blocking pool, then the (group) directory fsync.
    async fn publish(&self, written: Written) -> Result<(), SpoolError> {
        let Written {
            id,
            file,
            temp_path,
            mut temp_guard,
            file_len,
        } = written;
        let queue_path = self.paths.queue_file(&id);
        let target = queue_path.clone();
        tokio::task::spawn_blocking(move || {
            writer::sync_and_publish(file, &temp_path, &target, id.as_str())
        })
        .await
        .map_err(|e| SpoolError::Worker(e.to_string()))??;
        temp_guard.disarm();

        let mut queue_guard = RemoveOnDrop::new(queue_path);
        if let Err(e) = self.syncer.sync().await {
            // Not acknowledged: the client will retry, so do not deliver this copy.
            tracing::error!(queue_id = %id, error = %e, "spool commit failed at directory fsync");
            return Err(e);
        }
        queue_guard.disarm();
        self.counters.committed(file_len);
        if let Some(tx) = &*self.subscriber.lock().unwrap_or_else(|p| p.into_inner()) {
            // A closed receiver only means nobody delivers; the message stays queued.
            let _ = tx.send(id);
        }
        Ok(())
    }

    /// Unlink `queue/<id>`, then its state journal, then make the unlinks durable.
    /// (A crash between the two leaves an orphaned journal, collected at open.)
    async fn unqueue(&self, id: QueueId) -> Result<bool, SpoolError> {
        let path = self.paths.queue_file(&id);
        let state = self.paths.state_file(&id);
        let removed = tokio::task::spawn_blocking(move || {
            let removed = unlink_counting(&path)?;
            if removed.is_some() {
                unlink_counting(&state)?;
            }
            Ok::<_, SpoolError>(removed)
        })
        .await
        .map_err(|e| SpoolError::Worker(e.to_string()))??;
        let Some(bytes) = removed else {
            return Ok(false);
        };
        self.counters.removed(bytes);
        self.syncer.sync().await?;
        Ok(true)
    }
}

/// Unlink `path`; its size if it existed.
fn unlink_counting(path: &Path) -> Result<Option<u64>, SpoolError> {
    let bytes = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SpoolError::io(path, e)),
    };
    match std::fs::remove_file(path) {
        Ok(()) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SpoolError::io(path, e)),
    }
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

/// Create root, `tmp/`, `queue/`, `corrupt/` (0700) and fsync the parents of new ones.
fn create_dirs(paths: &SpoolPaths) -> Result<(), SpoolError> {
    let root = &paths.root;
    if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        std::fs::create_dir_all(parent).map_err(|e| SpoolError::io(parent, e))?;
    }
    let root_created = fsio::create_private_dir(root).map_err(|e| SpoolError::io(root, e))?;
    let mut sub_created = false;
    for dir in [&paths.tmp, &paths.queue, &paths.corrupt] {
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
