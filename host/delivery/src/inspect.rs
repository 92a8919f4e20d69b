//! Queue commands without a running server (`postern queue ...` when the admin
//! socket does not answer): the caller opens the spool itself — which takes its
//! lock, so this never races a server — and reads or changes it here. Flush appends
//! a "retry now" record to every journal, applied when a server next starts.
//! Input: the spool directory (files verified by the spool on open).

use postern_spool::{QueueId, Spool, SpoolError};

use crate::journal::{self, Record};
use crate::state::MessageState;
use crate::view::{self, QueueDetail, QueueEntry};

/// Every queued message, oldest first. Unreadable ones are skipped with a warning.
pub fn list(spool: &Spool) -> Result<Vec<QueueEntry>, SpoolError> {
    let mut out = Vec::new();
    for id in spool.list()? {
        match MessageState::load(spool, &id) {
            Ok(state) => out.push(view::entry(&state, view::resting_phase(&state, true))),
            Err(SpoolError::NotFound(_)) => {}
            Err(e) => tracing::warn!(queue_id = %id, error = %e, "cannot read queued message"),
        }
    }
    Ok(out)
}

/// One message in detail; `Ok(None)` if it is not queued.
pub fn show(spool: &Spool, id: &QueueId) -> Result<Option<QueueDetail>, SpoolError> {
    let state = match MessageState::load(spool, id) {
        Ok(s) => s,
        Err(SpoolError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let headers = crate::dsn::original_headers(spool, id)?;
    Ok(Some(view::detail(
        &state,
        view::resting_phase(&state, true),
        &headers,
    )))
}

/// Make every queued message due now; returns how many.
pub fn flush(spool: &Spool) -> Result<usize, SpoolError> {
    let ids = spool.list()?;
    for id in &ids {
        let path = spool.state_path(id);
        journal::append(
            &path,
            spool.queue_dir(),
            &[Record::Rescheduled { next_ms: 0 }],
        )
        .map_err(|e| SpoolError::Io { path, source: e })?;
    }
    Ok(ids.len())
}

/// Remove a message (no bounce); whether it existed.
pub async fn delete(spool: &Spool, id: &QueueId) -> Result<bool, SpoolError> {
    spool.remove(id).await
}
