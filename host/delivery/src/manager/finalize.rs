//! The end of a delivery attempt: record the outcomes durably, expire recipients
//! queued longer than `max_age`, send a bounce for new permanent failures, and
//! either remove the message (nothing owed any more) or schedule its next attempt.
//! Ordering is what makes crashes safe: journal records are durable in the spool's
//! log before the bounce is committed, the bounce is committed before it is marked
//! sent, and the message is removed only when every recipient is final and reported. A crash
//! anywhere repeats work (at-least-once), never loses it. When every recipient was
//! delivered in this attempt the message is simply removed, without a journal write.
//! Outcomes of jobs that finished before the message's last one were journaled
//! then (see `progress`); they are counted and applied here, not written again.

use std::sync::Arc;

use postern_protocol::EnhancedCode;
use postern_spool::{QueueId, Spool, SpoolError};

use crate::counters::{self, COUNTERS};
use crate::dsn::{self, Report};
use crate::journal::{self, Record};
use crate::now_ms;
use crate::outcome::Diagnostic;
use crate::policy::{BounceChoice, BounceFacts, DeliveryPolicy};
use crate::settings::Settings;
use crate::state::MessageState;

/// The report is still owed: try again with the next attempt, or soon when
/// no recipient is pending.
fn report_owed(mut state: MessageState, settings: &Settings, now: u64) -> Finalized {
    if state.pending().is_empty() {
        state.next_ms = now + settings.retry.delay_after(1).as_millis() as u64;
    }
    Finalized::Requeue(Box::new(state))
}

/// The log line of a queued report, by what it reports.
fn kind(report: &Report) -> &'static str {
    if !report.failed.is_empty() {
        "bounce queued"
    } else if !report.delayed.is_empty() {
        "delay notice queued"
    } else {
        "success notice queued"
    }
}

/// How an attempt ended.
pub(crate) enum Finalized {
    /// The message left the queue.
    Removed,
    /// Wait for the next attempt (`state.next_ms`).
    Requeue(Box<MessageState>),
    /// The outcome could not be made durable; retry later from this state.
    Failed(Box<MessageState>, String),
}

fn expired(last: Option<&Diagnostic>, settings: &Settings) -> Diagnostic {
    let age = settings.retry.max_age.as_secs();
    let age = if age.is_multiple_of(86_400) {
        format!("{} days", age / 86_400)
    } else {
        format!("{age} seconds")
    };
    let mut d = Diagnostic::local(
        EnhancedCode::new(4, 4, 7),
        match last {
            Some(l) => format!("delivery time expired after {age} in the queue; last error: {l}"),
            None => format!("delivery time expired after {age} in the queue"),
        },
    );
    d.remote_mta = last.and_then(|l| l.remote_mta.clone());
    d
}

async fn append(
    spool: &Arc<Spool>,
    state: &MessageState,
    records: Vec<Record>,
) -> Result<(), String> {
    journal::append(spool, &state.id, &records)
        .await
        .map_err(|e| format!("cannot write the delivery journal: {e}"))
}

/// What became of a bounce.
enum Bounce {
    /// Committed, with its queue id.
    Queued(QueueId),
    /// A delivery-side plugin refused it (`bounce-hook`): not sent.
    Refused(String),
    /// A delivery-side plugin held it: asked again at the next attempt.
    Held(String),
}

/// Build the report, let the delivery policy screen it, and commit it
/// unless refused. `Err` leaves it owed (the spool failed, or a plugin held
/// it).
async fn bounce(
    spool: &Arc<Spool>,
    settings: &Settings,
    policy: &dyn DeliveryPolicy,
    state: &MessageState,
    report: &Report,
    now: u64,
) -> Result<Bounce, String> {
    let s = spool.clone();
    let id = state.id;
    let full = report.returns_full(state);
    let original = tokio::task::spawn_blocking(move || dsn::original(&s, &id, full))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e: SpoolError| e.to_string())?;
    let (envelope, bytes) = dsn::build(state, report, &original, settings, now);
    if policy.screens_bounces() {
        let addresses = |list: &[usize]| -> Vec<String> {
            list.iter()
                .map(|&i| state.rcpts[i].address.clone())
                .collect()
        };
        let facts = BounceFacts {
            queue_id: state.id.to_string(),
            recipient: state.envelope.mail_from.clone(),
            failed: addresses(&report.failed),
            delayed: addresses(&report.delayed),
            delivered: addresses(&report.delivered),
        };
        match policy.bounce(&facts, &bytes).await {
            BounceChoice::Send => {}
            BounceChoice::Refuse(why) => return Ok(Bounce::Refused(why)),
            // Held no longer than the message's queue lifetime: then sent.
            BounceChoice::Hold(why) if !settings.retry.expired(state.arrival_ms(), now) => {
                return Ok(Bounce::Held(why));
            }
            BounceChoice::Hold(why) => {
                tracing::info!(queue_id = %state.id, reason = %why,
                    "bounce held past the queue lifetime; sending it");
            }
        }
    }
    spool
        .commit(&envelope, &[&bytes])
        .await
        .map_err(|e| e.to_string())?;
    Ok(Bounce::Queued(envelope.queue_id))
}

async fn remove(spool: &Arc<Spool>, mut state: MessageState) -> Finalized {
    match spool.remove(&state.id).await {
        Ok(_) => Finalized::Removed,
        Err(e) => {
            state.next_ms = now_ms() + 60_000;
            Finalized::Failed(
                Box::new(state),
                format!("cannot remove the delivered message: {e}"),
            )
        }
    }
}

/// Finish an attempt of `state`. `written` are outcomes of this attempt already in
/// the journal (jobs that finished while others of the message still ran);
/// `fresh` are the rest, written here unless the message can simply be removed.
pub(crate) async fn run(
    spool: Arc<Spool>,
    settings: Arc<Settings>,
    policy: &dyn DeliveryPolicy,
    mut state: MessageState,
    fresh: Vec<Record>,
    written: Vec<Record>,
    delete: bool,
) -> Finalized {
    if delete {
        tracing::info!(queue_id = %state.id, "removed by queue delete");
        return remove(&spool, state).await;
    }
    let now = now_ms();
    let mut records = fresh;
    if !records.is_empty() || !written.is_empty() {
        state.attempts += 1;
        counters::add(&COUNTERS.attempts, 1);
        if state.attempts > 1 {
            counters::add(&COUNTERS.retries, 1);
        }
        for r in written.iter().chain(&records) {
            match r {
                Record::Delivered { .. } => counters::add(&COUNTERS.delivered, 1),
                Record::Failed { .. } => counters::add(&COUNTERS.failed, 1),
                Record::Deferred { .. } => counters::add(&COUNTERS.deferred, 1),
                _ => {}
            }
        }
    }
    for r in &written {
        state.apply(r);
    }
    for r in &records {
        state.apply(r);
    }
    if !state.pending().is_empty() && settings.retry.expired(state.arrival_ms(), now) {
        for i in state.pending() {
            let diag = expired(state.rcpts[i].last.as_ref(), &settings);
            counters::add(&COUNTERS.expired, 1);
            tracing::info!(queue_id = %state.id, to = %state.rcpts[i].address, reason = %diag, "expired");
            let r = Record::Failed {
                rcpt: i,
                at_ms: now,
                diag,
            };
            state.apply(&r);
            records.push(r);
        }
    }
    let report = Report {
        failed: state.unreported_failures(),
        delayed: state.due_delay_notices(settings.retry.delay_warning, now),
        delivered: state.unreported_successes(),
    };
    if state.pending().is_empty() && report.is_empty() {
        return remove(&spool, state).await;
    }
    if !state.pending().is_empty() {
        state.next_ms = settings
            .retry
            .next_attempt(state.attempts.max(1), now, state.arrival_ms());
        records.push(Record::Attempted {
            attempts: state.attempts,
            next_ms: state.next_ms,
        });
    }
    if let Err(e) = append(&spool, &state, records).await {
        state.next_ms = now + settings.retry.delay_after(1).as_millis() as u64;
        return Finalized::Failed(Box::new(state), e);
    }
    if !report.is_empty() {
        let final_rcpts: Vec<usize> = report
            .failed
            .iter()
            .chain(&report.delivered)
            .copied()
            .collect();
        let dsn = match bounce(&spool, &settings, policy, &state, &report, now).await {
            Ok(Bounce::Queued(dsn_id)) => {
                counters::add(&COUNTERS.bounces, 1);
                tracing::info!(queue_id = %state.id, dsn = %dsn_id, to = %state.envelope.mail_from,
                    failed = report.failed.len(), delayed = report.delayed.len(),
                    delivered = report.delivered.len(), "{}", kind(&report));
                Some(dsn_id.to_string())
            }
            Ok(Bounce::Refused(why)) => {
                tracing::info!(queue_id = %state.id, to = %state.envelope.mail_from,
                    recipients = final_rcpts.len() + report.delayed.len(), reason = %why,
                    "bounce refused by plugin; not sent");
                None
            }
            Ok(Bounce::Held(why)) => {
                tracing::info!(queue_id = %state.id, reason = %why,
                    "bounce held by plugin; asked again at the next attempt");
                return report_owed(state, &settings, now);
            }
            Err(e) => {
                tracing::error!(queue_id = %state.id, error = %e, "cannot queue the bounce; will retry");
                return report_owed(state, &settings, now);
            }
        };
        let mut done = Vec::new();
        if !final_rcpts.is_empty() {
            done.push(Record::Bounced {
                dsn: dsn.clone(),
                rcpts: final_rcpts,
            });
        }
        if !report.delayed.is_empty() {
            done.push(Record::Warned {
                dsn,
                rcpts: report.delayed.clone(),
            });
        }
        if let Err(e) = append(&spool, &state, done.clone()).await {
            // The report is queued; at worst it is sent twice after a crash.
            tracing::warn!(queue_id = %state.id, error = %e, "cannot record the report");
        }
        for r in &done {
            state.apply(r);
        }
    }
    if state.is_finished() {
        return remove(&spool, state).await;
    }
    Finalized::Requeue(Box::new(state))
}
