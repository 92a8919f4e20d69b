//! Spool counters for metrics. Trusts its callers: only the committer, the janitor
//! and recovery update them, after the operation they count succeeded.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the spool counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Messages currently queued.
    pub messages: u64,
    /// Total size in bytes of their message records (header and envelope included).
    pub bytes: u64,
    /// Successful commits since `open`.
    pub commits: u64,
    /// `fdatasync` calls on the log since `open`: one per group-commit batch (of
    /// commits, removes, state records and compaction copies).
    pub syncs: u64,
    /// Directory fsyncs since `open` (a segment created, deleted or quarantined).
    pub dir_fsyncs: u64,
    /// Segment files in the log.
    pub segments: u64,
    /// Bytes in those segment files.
    pub log_bytes: u64,
    /// Segments deleted since `open` (nothing live left, or compacted away).
    pub segments_deleted: u64,
    /// Records copied by compaction since `open`.
    pub records_compacted: u64,
}

/// The live counters behind [`SpoolStats`] (the queue's size comes from the index).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    commits: AtomicU64,
    syncs: AtomicU64,
    dir_fsyncs: AtomicU64,
    segments_deleted: AtomicU64,
    records_compacted: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Counters {
    /// Fill the counter fields of `stats`.
    pub fn fill(&self, stats: &mut SpoolStats) {
        stats.commits = self.commits.load(Ordering::Relaxed);
        stats.syncs = self.syncs.load(Ordering::Relaxed);
        stats.dir_fsyncs = self.dir_fsyncs.load(Ordering::Relaxed);
        stats.segments_deleted = self.segments_deleted.load(Ordering::Relaxed);
        stats.records_compacted = self.records_compacted.load(Ordering::Relaxed);
    }

    pub fn committed(&self, n: u64) {
        bump(&self.commits, n);
    }

    pub fn synced(&self) {
        bump(&self.syncs, 1);
    }

    pub fn dir_fsynced(&self) {
        bump(&self.dir_fsyncs, 1);
    }

    pub fn segments_deleted(&self, n: u64) {
        bump(&self.segments_deleted, n);
    }

    pub fn compacted(&self, n: u64) {
        bump(&self.records_compacted, n);
    }
}
