//! Typed errors of the spool. Trusts nothing; every failure carries the path or id it
//! concerns so the caller can log it and answer the client `451 4.3.0` (RFC 5321 §4.2.5).

use std::path::PathBuf;

/// Everything that can go wrong in the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// An operating-system call on `path` failed.
    #[error("spool I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A record or file does not follow the on-disk format (see `format`).
    #[error("corrupt spool data in {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// A string that is not a valid queue id (20 characters of `[0-9A-Z]`).
    #[error("invalid queue id {0:?}")]
    BadId(String),
    /// No queued message has this id.
    #[error("no queued message {0}")]
    NotFound(String),
    /// A message with this id is already queued (or being written); nothing was overwritten.
    #[error("queue id {0} is already in use")]
    IdInUse(String),
    /// The envelope could not be encoded as JSON.
    #[error("cannot encode envelope of {queue_id}: {source}")]
    Encode {
        queue_id: String,
        #[source]
        source: serde_json::Error,
    },
    /// Another process holds the spool's lock file.
    #[error("spool {} is locked by another process", path.display())]
    Locked { path: PathBuf },
    /// The spool was opened read-only.
    #[error("spool is open read-only")]
    ReadOnly,
    /// A record too large for the format (an envelope over 16 MiB).
    #[error("spool record of {0} is too large")]
    TooLarge(String),
    /// The group-commit thread is gone, so durability can no longer be confirmed.
    #[error("spool group-commit thread stopped")]
    CommitterGone,
    /// A blocking task of the spool panicked or was cancelled.
    #[error("spool worker task failed: {0}")]
    Worker(String),
}

impl SpoolError {
    /// Wrap an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SpoolError::Io {
            path: path.into(),
            source,
        }
    }
}
