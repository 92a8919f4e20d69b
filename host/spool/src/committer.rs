//! Group commit of the `queue/` directory (RFC 5321 §6.1: a message is only accepted
//! once durable). After a commit renamed its file into `queue/` (or a remove unlinked
//! one), it asks for a directory fsync. A single committer thread takes every request
//! that arrived before it starts an fsync, runs one `fsync(queue/)` for all of them and
//! then wakes every waiter; requests that arrive during that fsync form the next batch.
//! So each waiter's rename precedes the fsync that answers it, and the fsync's own
//! duration is the batching window (no timer, no added latency when idle).
//! Trusts its callers to ask only after their rename/unlink returned.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::error::SpoolError;
use crate::stats::Counters;

type Reply = Result<(), io::Error>;

/// Makes completed renames and unlinks in one directory durable.
pub(crate) struct DirSyncer {
    path: PathBuf,
    mode: Mode,
}

enum Mode {
    /// Requests go to the committer thread, which batches them.
    Group(mpsc::Sender<oneshot::Sender<Reply>>),
    /// One fsync per request (kept to measure what group commit buys).
    Direct {
        dir: Arc<File>,
        counters: Arc<Counters>,
    },
}

impl DirSyncer {
    /// Open `path` and, with `group`, start its committer thread.
    pub fn start(
        path: &Path,
        group: bool,
        counters: Arc<Counters>,
    ) -> Result<DirSyncer, SpoolError> {
        let dir = crate::fsio::open_dir(path).map_err(|e| SpoolError::io(path, e))?;
        let mode = if group {
            let (tx, rx) = mpsc::channel();
            let thread_path = path.to_path_buf();
            std::thread::Builder::new()
                .name("postern-spool-commit".into())
                .spawn(move || run_committer(dir, thread_path, rx, counters))
                .map_err(|e| SpoolError::io(path, e))?;
            Mode::Group(tx)
        } else {
            Mode::Direct {
                dir: Arc::new(dir),
                counters,
            }
        };
        Ok(DirSyncer {
            path: path.to_path_buf(),
            mode,
        })
    }

    /// Return once an fsync of the directory that started after this call completed.
    pub async fn sync(&self) -> Result<(), SpoolError> {
        let reply = match &self.mode {
            Mode::Group(tx) => {
                let (reply_tx, reply_rx) = oneshot::channel();
                tx.send(reply_tx).map_err(|_| SpoolError::CommitterGone)?;
                reply_rx.await.map_err(|_| SpoolError::CommitterGone)?
            }
            Mode::Direct { dir, counters } => {
                let dir = Arc::clone(dir);
                let counters = Arc::clone(counters);
                tokio::task::spawn_blocking(move || {
                    let result = dir.sync_all();
                    counters.dir_fsynced();
                    result
                })
                .await
                .map_err(|e| SpoolError::Worker(e.to_string()))?
            }
        };
        reply.map_err(|e| SpoolError::io(&self.path, e))
    }
}

/// The committer thread: ends when the spool (the last sender) is dropped.
fn run_committer(
    dir: File,
    path: PathBuf,
    requests: mpsc::Receiver<oneshot::Sender<Reply>>,
    counters: Arc<Counters>,
) {
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        batch.extend(requests.try_iter());
        let result = dir.sync_all();
        counters.dir_fsynced();
        tracing::trace!(batch = batch.len(), "spool directory fsync");
        if let Err(e) = &result {
            tracing::error!(dir = %path.display(), error = %e, batch = batch.len(),
                "spool directory fsync failed; failing the batch");
        }
        for waiter in batch {
            let reply = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            // A waiter whose commit future was dropped no longer listens; that is fine.
            let _ = waiter.send(reply);
        }
    }
}
