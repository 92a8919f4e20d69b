//! Group commit of the log (RFC 5321 §6.1: a message is only accepted once durable).
//! Callers build their record (the memcpy of the message and its checksum happen on
//! their own thread, in parallel) and send it here. One committer thread takes every
//! request that arrived before it starts a write, gives each record its LSN and
//! place, writes the whole batch with vectored writes, runs one `fdatasync` for all
//! of them, updates the index and then answers every waiter; requests that arrive
//! meanwhile form the next batch. So each acknowledged record was written before the
//! fdatasync that answers it, and the sync's own duration is the batching window (no
//! timer, no added latency when idle). Being the only writer, it keeps the log
//! contiguous: a crash can only leave a torn tail, never a hole before a synced
//! record. It also rotates to a new segment when the active one is full.
//! A record of a large message arrives as its head (built by
//! `format::build_record_head`) and a file whose bytes the committer copies in after
//! it (`copy_file_range`), so it is never whole in memory; being written before the
//! same fdatasync, it is acknowledged, torn or cut back exactly like any record.
//! Trusts its callers for the records' bodies (built by `format::build_record`).

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::envelope::Envelope;
use crate::error::SpoolError;
use crate::format::{self, Kind};
use crate::id::QueueId;
use crate::index::{Loc, MsgEntry};
use crate::segment::SegWriter;
use crate::spool::{Committed, Shared};

/// What a request asks the index to record once its record is durable.
#[derive(Debug)]
pub(crate) enum Op {
    Commit {
        id: QueueId,
        envelope_len: u32,
        message_len: u64,
        body_crc: u32,
        /// Handed to the subscriber once durable (so it need not read it back).
        envelope: Arc<Envelope>,
    },
    State {
        id: QueueId,
    },
    Remove {
        id: QueueId,
    },
    /// Compaction: a verbatim copy (keeping its LSN) of the record at `from`.
    Copy {
        kind: Kind,
        id: QueueId,
        lsn: u64,
        from: Loc,
    },
}

/// `Ok(true)`: done; `Ok(false)`: nothing to do (remove of an unknown id, copy of a
/// record no longer current).
pub(crate) type Reply = Result<bool, SpoolError>;

pub(crate) struct Request {
    /// The record, or its head when it has a `tail`.
    pub record: Vec<u8>,
    /// The record's last bytes, copied from a file (see `Spool::commit_file`).
    pub tail: Option<Tail>,
    pub op: Op,
    pub reply: Option<oneshot::Sender<Reply>>,
}

/// The first `len` bytes of `file`: the end of a record too large to build in memory.
pub(crate) struct Tail {
    pub file: Arc<File>,
    /// Where in `file` the tail starts.
    pub offset: u64,
    pub len: u64,
}

impl Request {
    /// Length of the whole record in the log.
    fn len(&self) -> u64 {
        self.record.len() as u64 + self.tail.as_ref().map_or(0, |t| t.len)
    }
}

pub(crate) struct Committer {
    pub shared: Arc<Shared>,
    pub writer: SegWriter,
    pub next_lsn: u64,
}

impl Committer {
    /// The thread body: ends when every sender is gone and the queue is drained.
    pub fn run(mut self, requests: mpsc::Receiver<Request>) {
        let group = self.shared.config.group_commit;
        while let Ok(first) = requests.recv() {
            let mut batch = vec![first];
            if group {
                batch.extend(requests.try_iter());
            }
            if self.writer.end >= self.shared.config.segment_size {
                self.rotate();
            }
            self.commit(batch);
        }
    }

    /// Answer `Ok(false)`, without writing them, the compaction copies that are
    /// no longer current: the janitor read the record, then the message was
    /// removed (in an earlier batch or earlier in this one) or its record moved.
    /// Written, such a copy would be a record of a removed message that no
    /// tombstone pins: once the tombstone was released, the next recovery would
    /// bring the message back. Only this thread changes the records the index
    /// tracks, so what is current now stays current until the batch is indexed.
    fn without_stale_copies(&self, batch: Vec<Request>) -> Vec<Request> {
        if !batch.iter().any(|r| matches!(r.op, Op::Copy { .. })) {
            return batch;
        }
        let index = self.shared.index();
        let mut removed_here = std::collections::HashSet::new();
        let mut kept = Vec::with_capacity(batch.len());
        for req in batch {
            match req.op {
                Op::Remove { id } => {
                    removed_here.insert(id);
                }
                Op::Copy {
                    kind,
                    id,
                    lsn,
                    from,
                } if removed_here.contains(&id) || !index.is_current(kind, id, lsn, from) => {
                    if let Some(reply) = req.reply {
                        let _ = reply.send(Ok(false));
                    }
                    continue;
                }
                _ => {}
            }
            kept.push(req);
        }
        kept
    }

    /// Write, sync, index and answer one batch.
    fn commit(&mut self, batch: Vec<Request>) {
        let mut batch = self.without_stale_copies(batch);
        if batch.is_empty() {
            return;
        }
        let start = self.writer.end;
        let mut places = Vec::with_capacity(batch.len());
        let mut offset = start;
        for req in &mut batch {
            let lsn = match req.op {
                Op::Copy { lsn, .. } => lsn,
                _ => {
                    let lsn = self.next_lsn;
                    self.next_lsn += 1;
                    format::seal(&mut req.record, lsn);
                    lsn
                }
            };
            let len = req.len();
            places.push((
                lsn,
                Loc {
                    seg: self.writer.seq,
                    offset,
                    len,
                },
            ));
            offset += len;
        }
        let written = self.write(&batch);
        let result = written.and_then(|_| {
            let synced = self.writer.sync();
            self.shared.counters.synced();
            synced
        });
        if let Err(e) = result {
            self.fail(batch, start, e);
            return;
        }
        tracing::trace!(
            batch = batch.len(),
            bytes = offset - start,
            "spool log fdatasync"
        );

        let mut replies = Vec::with_capacity(batch.len());
        let mut committed = Vec::new();
        {
            let mut index = self.shared.index();
            index.grew(self.writer.seq, self.writer.end);
            for (req, (lsn, loc)) in batch.into_iter().zip(places) {
                let reply = match req.op {
                    Op::Commit {
                        id,
                        envelope_len,
                        message_len,
                        body_crc,
                        envelope,
                    } => {
                        index.commit(
                            id,
                            MsgEntry {
                                lsn,
                                loc,
                                envelope_len,
                                message_len,
                                body_crc,
                                states: Vec::new(),
                                stale: Vec::new(),
                            },
                        );
                        committed.push(Committed {
                            id,
                            envelope,
                            message_len,
                        });
                        Ok(true)
                    }
                    Op::State { id } => {
                        if index.add_state(id, lsn, loc) {
                            Ok(true)
                        } else {
                            Err(SpoolError::NotFound(id.to_string()))
                        }
                    }
                    Op::Remove { id } => Ok(index.remove(id, lsn, loc).is_some()),
                    Op::Copy {
                        kind,
                        id,
                        lsn,
                        from,
                    } => Ok(index.moved(kind, id, lsn, from, loc)),
                };
                replies.push((req.reply, reply));
            }
        }
        self.shared.counters.committed(committed.len() as u64);
        if !committed.is_empty()
            && let Some(tx) = &*self
                .shared
                .subscriber
                .lock()
                .unwrap_or_else(|p| p.into_inner())
        {
            for c in committed {
                // A closed receiver only means nobody delivers; the message stays queued.
                let _ = tx.send(c);
            }
        }
        for (reply, result) in replies {
            if let Some(reply) = reply {
                // A waiter whose future was dropped no longer listens; that is fine.
                let _ = reply.send(result);
            }
        }
    }

    /// Append the batch's records in order: runs of in-memory records with vectored
    /// writes, each file tail copied after its record's head.
    fn write(&mut self, batch: &[Request]) -> io::Result<()> {
        let mut run: Vec<&[u8]> = Vec::with_capacity(batch.len());
        for req in batch {
            run.push(&req.record);
            if let Some(tail) = &req.tail {
                self.writer.append(&run)?;
                run.clear();
                self.writer.append_file(&tail.file, tail.offset, tail.len)?;
            }
        }
        if !run.is_empty() {
            self.writer.append(&run)?;
        }
        Ok(())
    }

    /// The batch could not be made durable: nobody in it is acknowledged. Cut the
    /// file back so no half-written batch stays in the log; if even that fails, move
    /// on to a new segment and tombstone the failed commits, so a copy that did reach
    /// the disk is not delivered after a restart (the client was told to retry).
    fn fail(&mut self, batch: Vec<Request>, start: u64, error: std::io::Error) {
        tracing::error!(segment = %self.writer.shared.path.display(), error = %error,
            batch = batch.len(), "spool log write or fdatasync failed; failing the batch");
        let cut = self.writer.discard_tail(start);
        let failed_commits: Vec<QueueId> = batch
            .iter()
            .filter_map(|r| match r.op {
                Op::Commit { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        {
            let mut index = self.shared.index();
            for req in &batch {
                match &req.op {
                    Op::Commit { id, .. } => {
                        index.pending.remove(id);
                    }
                    Op::Remove { id } => {
                        index.removing.remove(id);
                    }
                    _ => {}
                }
            }
        }
        if let Err(e) = cut {
            tracing::error!(segment = %self.writer.shared.path.display(), error = %e,
                "cannot cut the failed batch off the log; continuing in a new segment");
            self.writer.end = start;
            if self.rotate() && !failed_commits.is_empty() {
                let tombs: Vec<Vec<u8>> = failed_commits
                    .iter()
                    .map(|id| {
                        let mut r = format::build_record(Kind::Tombstone, id, b"", &[]);
                        format::seal(&mut r, self.next_lsn);
                        self.next_lsn += 1;
                        r
                    })
                    .collect();
                let refs: Vec<&[u8]> = tombs.iter().map(Vec::as_slice).collect();
                let start = self.writer.end;
                if self
                    .writer
                    .append(&refs)
                    .and_then(|_| self.writer.sync())
                    .is_err()
                {
                    let _ = self.writer.discard_tail(start);
                }
                self.shared.index().grew(self.writer.seq, self.writer.end);
            }
        }
        for req in batch {
            if let Some(reply) = req.reply {
                let e = std::io::Error::new(error.kind(), error.to_string());
                let _ = reply.send(Err(SpoolError::io(&self.writer.shared.path, e)));
            }
        }
    }

    /// Start a new segment after the active one (which is complete and synced).
    /// On failure, keep appending to the current one.
    fn rotate(&mut self) -> bool {
        let seq = self.writer.seq + 1;
        match SegWriter::create(&self.shared.paths, seq) {
            Ok(next) => {
                self.shared.counters.dir_fsynced();
                let old = std::mem::replace(&mut self.writer, next);
                let mut index = self.shared.index();
                index.add_segment(Arc::clone(&self.writer.shared), self.writer.end, None);
                index.grew(old.seq, old.end);
                index.seal(old.seq);
                tracing::debug!(segment = seq, "spool log rotated");
                true
            }
            Err(e) => {
                tracing::error!(segment = seq, error = %e,
                    "cannot create the next spool segment; the active one keeps growing");
                false
            }
        }
    }
}
