//! Spool counters for metrics. Trusts its callers: only `commit`, `remove`, the
//! committer and recovery update them, after the operation they count succeeded.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the spool counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Messages currently queued.
    pub messages: u64,
    /// Total size in bytes of their queue files (header and envelope included).
    pub bytes: u64,
    /// Successful commits since `open`.
    pub commits: u64,
    /// `fsync` calls on `queue/` since `open` (commits and removes; a batch counts once).
    pub dir_fsyncs: u64,
}

/// The live counters behind [`SpoolStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    messages: AtomicU64,
    bytes: AtomicU64,
    commits: AtomicU64,
    dir_fsyncs: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> SpoolStats {
        SpoolStats {
            messages: self.messages.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            dir_fsyncs: self.dir_fsyncs.load(Ordering::Relaxed),
        }
    }

    /// A message of `bytes` bytes was found at open.
    pub fn found(&self, bytes: u64) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A message of `bytes` bytes was committed.
    pub fn committed(&self, bytes: u64) {
        self.found(bytes);
        self.commits.fetch_add(1, Ordering::Relaxed);
    }

    /// A message of `bytes` bytes was removed.
    pub fn removed(&self, bytes: u64) {
        saturating_sub(&self.messages, 1);
        saturating_sub(&self.bytes, bytes);
    }

    pub fn dir_fsynced(&self) {
        self.dir_fsyncs.fetch_add(1, Ordering::Relaxed);
    }
}

fn saturating_sub(counter: &AtomicU64, amount: u64) {
    // The closure always returns Some, so this never fails.
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(amount))
    });
}
