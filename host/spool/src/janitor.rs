//! Space reclamation of the log, run periodically on its own thread (and on demand
//! by `Spool::maintain`). Deletes every sealed segment without a live record, and
//! compacts: a sealed segment older than `compact_min_age` whose live bytes fell under
//! `compact_live_ratio` of its size has its live records (messages, their state
//! records, still-needed tombstones) copied verbatim into the active segment through
//! the committer — so the copies are durable before the index points at them — and
//! is then deleted, so a few long-deferred messages do not pin whole segments.
//! A deletion is made durable (directory fsync) before any tombstone it made
//! unnecessary is released. Trusts the index; verifies every record it copies.

use std::sync::Arc;
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::committer::{Op, Request};
use crate::error::SpoolError;
use crate::format::{self, RECORD_HEADER_LEN};
use crate::index::LiveRecord;
use crate::segment::SegFile;
use crate::spool::Shared;

/// Segments compacted at most per round (each is at most a segment's worth of copies).
const COMPACTIONS_PER_ROUND: usize = 4;
/// Bytes of copies in flight at once during compaction.
const COPY_CHUNK: u64 = 8 << 20;

/// What one maintenance round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Segments deleted (empty, or emptied by compaction).
    pub segments_deleted: usize,
    /// Segments compacted.
    pub segments_compacted: usize,
    /// Records copied by compaction.
    pub records_copied: usize,
}

/// One round: delete dead segments, compact a few, deleting what they emptied.
pub(crate) fn maintain(
    shared: &Shared,
    tx: &mpsc::Sender<Request>,
) -> Result<Maintenance, SpoolError> {
    let _turn = shared.maintaining.lock().unwrap_or_else(|p| p.into_inner());
    let mut done = Maintenance {
        segments_deleted: collect(shared)?,
        ..Maintenance::default()
    };
    for _ in 0..COMPACTIONS_PER_ROUND {
        let candidate = shared.index().compaction_candidate(
            shared.config.compact_min_age,
            shared.config.compact_live_ratio,
        );
        let Some(seq) = candidate else {
            break;
        };
        done.records_copied += compact(shared, tx, seq)?;
        done.segments_compacted += 1;
        done.segments_deleted += collect(shared)?;
    }
    Ok(done)
}

/// Delete sealed segments with no live record, until none is left.
fn collect(shared: &Shared) -> Result<usize, SpoolError> {
    let mut deleted = 0;
    loop {
        let dead = shared.index().take_deletable();
        if dead.is_empty() {
            return Ok(deleted);
        }
        let mut gone = Vec::new();
        let mut kept = Vec::new();
        for seg in dead {
            match std::fs::remove_file(&seg.file.path) {
                Ok(()) => gone.push(seg),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => gone.push(seg),
                Err(e) => {
                    tracing::warn!(segment = %seg.file.path.display(), error = %e, "cannot delete a spool segment");
                    kept.push(seg);
                }
            }
        }
        let synced = crate::fsio::sync_dir(&shared.paths.log);
        shared.counters.dir_fsynced();
        let mut index = shared.index();
        for seg in kept {
            index.segments.insert(seg.file.seq, seg);
        }
        if let Err(e) = synced {
            // Not known to be gone: keep every tombstone they pin.
            return Err(SpoolError::io(&shared.paths.log, e));
        }
        let released: Vec<(u64, Vec<_>)> = gone
            .into_iter()
            .map(|seg| (seg.file.seq, seg.refs))
            .collect();
        index.released(&released);
        drop(index);
        for (seq, _) in &released {
            tracing::debug!(segment = seq, "spool segment deleted");
        }
        deleted += released.len();
        shared.counters.segments_deleted(released.len() as u64);
        if released.is_empty() {
            return Ok(deleted);
        }
    }
}

/// Copy the live records of segment `seq` into the active segment.
fn compact(shared: &Shared, tx: &mpsc::Sender<Request>, seq: u64) -> Result<usize, SpoolError> {
    let (file, records) = {
        let index = shared.index();
        (index.file(seq), index.live_records(seq))
    };
    let Some(file) = file else {
        return Ok(0);
    };
    tracing::info!(
        segment = seq,
        records = records.len(),
        "compacting spool segment"
    );
    let mut copied = 0;
    let mut waiting = Vec::new();
    let mut in_flight = 0u64;
    for record in records {
        let bytes = match read_verified(&file, &record) {
            Ok(bytes) => bytes,
            Err(reason) => {
                tracing::error!(segment = seq, offset = record.loc.offset, %reason,
                    "unreadable record in a sealed spool segment; leaving the segment to recovery");
                if let Some(s) = shared.index().segments.get_mut(&seq) {
                    s.damaged = true;
                }
                break;
            }
        };
        in_flight += bytes.len() as u64;
        let (reply, rx) = oneshot::channel();
        let request = Request {
            record: bytes,
            tail: None,
            op: Op::Copy {
                kind: record.kind,
                id: record.id,
                lsn: record.lsn,
                from: record.loc,
            },
            reply: Some(reply),
        };
        tx.send(request).map_err(|_| SpoolError::CommitterGone)?;
        waiting.push(rx);
        if in_flight >= COPY_CHUNK {
            copied += wait(&mut waiting)?;
            in_flight = 0;
        }
    }
    copied += wait(&mut waiting)?;
    shared.counters.compacted(copied as u64);
    Ok(copied)
}

fn wait(
    waiting: &mut Vec<oneshot::Receiver<crate::committer::Reply>>,
) -> Result<usize, SpoolError> {
    let mut moved = 0;
    for rx in waiting.drain(..) {
        if rx
            .blocking_recv()
            .map_err(|_| SpoolError::CommitterGone)??
        {
            moved += 1;
        }
    }
    Ok(moved)
}

/// Read a whole record and check it is the one the index describes.
fn read_verified(file: &Arc<SegFile>, record: &LiveRecord) -> Result<Vec<u8>, String> {
    let len = usize::try_from(record.loc.len).map_err(|_| "record too large".to_string())?;
    if len < RECORD_HEADER_LEN {
        return Err("record shorter than its header".into());
    }
    let mut bytes = vec![0u8; len];
    file.read_at(&mut bytes, record.loc.offset)
        .map_err(|e| e.to_string())?;
    let header = format::decode_record(&bytes).map_err(|e| e.to_string())?;
    if header.kind != record.kind || header.id != record.id || header.lsn != record.lsn {
        return Err("record does not match the index".into());
    }
    Ok(bytes)
}
