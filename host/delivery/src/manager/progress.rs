//! Progress of one attempt: jobs of a message finish one by one, possibly minutes
//! apart (one destination answers at once, another is slow). Each job's outcomes
//! that are not the message's last are written to its journal right away
//! (group-committed with everything else the spool writes), so a crash after
//! one destination took the message does not make it deliver there again. The
//! last job's outcomes go to `finalize`, which either removes the message (no
//! journal write at all) or journals them with the attempt record.
//! Input: outcomes from workers (trusted: built by this crate).

use postern_spool::QueueId;

use super::{Event, Manager, Phase};
use crate::journal::{self, Record};
use crate::now_ms;
use crate::outcome::RcptOutcome;

impl Manager {
    /// A job of message `id` ended with `results`.
    pub(super) fn job_finished(&mut self, id: QueueId, results: Vec<(usize, RcptOutcome)>) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let delete = entry.delete;
        let Phase::Running {
            outstanding,
            writing,
            fresh,
            ..
        } = &mut entry.phase
        else {
            return;
        };
        let at = now_ms();
        let records = Record::of_outcomes(results, at);
        *outstanding = outstanding.saturating_sub(1);
        if *outstanding == 0 || records.is_empty() || delete {
            fresh.extend(records);
            self.finish_if_done(id);
            return;
        }
        *writing += 1;
        let spool = self.spool.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let error = journal::append(&spool, &id, &records)
                .await
                .err()
                .map(|e| e.to_string());
            let _ = events.send(Event::Recorded { id, records, error });
        });
    }

    /// A per-job journal write ended; `error` if the records are not durable (they
    /// are then written with the rest of the attempt).
    pub(super) fn recorded(&mut self, id: QueueId, records: Vec<Record>, error: Option<String>) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let Phase::Running {
            writing,
            fresh,
            written,
            ..
        } = &mut entry.phase
        else {
            return;
        };
        *writing = writing.saturating_sub(1);
        match error {
            None => written.extend(records),
            Some(error) => {
                tracing::warn!(queue_id = %id, %error,
                    "cannot journal a finished job now; will write it when the attempt ends");
                fresh.extend(records);
            }
        }
        self.finish_if_done(id);
    }

    /// Finalize message `id` when no job runs and no journal write is in flight.
    pub(super) fn finish_if_done(&mut self, id: QueueId) {
        let done = self.entries.get(&id).is_some_and(|e| {
            matches!(
                e.phase,
                Phase::Running {
                    outstanding: 0,
                    writing: 0,
                    ..
                }
            )
        });
        if done {
            self.finalize(id);
        }
    }
}
