//! Queue commands without a running server (`postern queue ...` when the admin
//! socket does not answer): the caller opens the spool itself — which takes its
//! lock, so this never races a server (read-only for list and show) — and reads or
//! changes it here. Flush appends a "retry now" record to every journal, applied
//! when a server next starts. Input: the spool (verified by the spool on open).

use std::sync::Arc;

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

/// Make every queued message due now; returns how many. The appends run a few
/// hundred at a time, so they share the spool's group commits.
pub async fn flush(spool: &Arc<Spool>) -> Result<usize, SpoolError> {
    let ids = spool.list()?;
    let mut running = tokio::task::JoinSet::new();
    for &id in &ids {
        if running.len() >= 256
            && let Some(done) = running.join_next().await
        {
            done.map_err(|e| SpoolError::Worker(e.to_string()))??;
        }
        let spool = Arc::clone(spool);
        running.spawn(async move {
            match journal::append(&spool, &id, &[Record::Rescheduled { next_ms: 0 }]).await {
                // Removed meanwhile: nothing to flush.
                Err(SpoolError::NotFound(_)) => Ok(()),
                other => other,
            }
        });
    }
    while let Some(done) = running.join_next().await {
        done.map_err(|e| SpoolError::Worker(e.to_string()))??;
    }
    Ok(ids.len())
}

/// Remove a message (no bounce); whether it existed.
pub async fn delete(spool: &Spool, id: &QueueId) -> Result<bool, SpoolError> {
    spool.remove(id).await
}

/// Release a quarantined message: the release is journaled (durable before
/// this returns) and a server delivers the message when it next starts.
/// `Ok(false)` when no such message is held.
pub async fn release(spool: &Spool, id: &QueueId) -> Result<bool, SpoolError> {
    match MessageState::load(spool, id) {
        Ok(state) if state.is_held() => {}
        Ok(_) | Err(SpoolError::NotFound(_)) => return Ok(false),
        Err(e) => return Err(e),
    }
    let at_ms = crate::now_ms();
    journal::append(spool, id, &[Record::Released { at_ms }]).await?;
    Ok(true)
}
