//! Per-message, per-recipient delivery state: the spooled envelope plus the journal
//! replayed on top of it. Shared by the queue manager (live) and the offline queue
//! commands. Trusts the spool's verified envelope; journal records naming recipients
//! that do not exist are ignored. RFC 3461 §4.1: `NOTIFY` decides whether a failed
//! recipient is reported; the null reverse-path is never bounced (RFC 5321 §4.5.5).

use std::sync::Arc;

use postern_spool::{Envelope, QueueId, Spool, SpoolError};

use crate::journal::{self, Record};
use crate::outcome::{Diagnostic, Handover};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RcptStatus {
    /// Still owed a delivery.
    Pending,
    Delivered,
    /// Failed permanently (or expired).
    Failed,
}

impl RcptStatus {
    pub fn name(self) -> &'static str {
        match self {
            RcptStatus::Pending => "pending",
            RcptStatus::Delivered => "delivered",
            RcptStatus::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug)]
pub struct RcptState {
    pub address: String,
    pub params: Vec<String>,
    pub status: RcptStatus,
    /// The latest failure (deferral or final).
    pub last: Option<Diagnostic>,
    /// Where it was delivered, and how it was handed over.
    pub detail: Option<String>,
    pub handover: Option<Handover>,
    /// When the status or `last` was set (unix ms; 0 = never tried).
    pub at_ms: u64,
    /// A report covering this final state (failure, or success asked for
    /// with `NOTIFY=SUCCESS`) was committed, or none is to be sent.
    pub reported: bool,
    /// A delay notice was committed for it.
    pub delay_reported: bool,
}

/// Everything known about one queued message.
#[derive(Clone, Debug)]
pub struct MessageState {
    pub id: QueueId,
    pub envelope: Arc<Envelope>,
    /// Message size in bytes.
    pub size: u64,
    pub rcpts: Vec<RcptState>,
    /// Attempts finished so far.
    pub attempts: u32,
    /// Next attempt (unix ms); 0 = as soon as possible.
    pub next_ms: u64,
    /// Bounces committed for this message.
    pub dsns: Vec<String>,
    /// When an operator released it from quarantine (unix ms); its queue
    /// lifetime counts from then.
    pub released_ms: Option<u64>,
}

/// The value of ESMTP parameter `key` (case-insensitive) in raw `KEY=VALUE` params.
pub fn param<'a>(params: &'a [String], key: &str) -> Option<&'a str> {
    params.iter().find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p.as_str(), ""));
        k.eq_ignore_ascii_case(key).then_some(v)
    })
}

impl MessageState {
    pub fn new(id: QueueId, envelope: Arc<Envelope>, size: u64) -> MessageState {
        let rcpts = envelope
            .recipients
            .iter()
            .map(|r| RcptState {
                address: r.address.clone(),
                params: r.params.clone(),
                status: RcptStatus::Pending,
                last: None,
                detail: None,
                handover: None,
                at_ms: 0,
                reported: false,
                delay_reported: false,
            })
            .collect();
        MessageState {
            id,
            envelope,
            size,
            rcpts,
            attempts: 0,
            next_ms: 0,
            dsns: Vec::new(),
            released_ms: None,
        }
    }

    /// Read the envelope and replay the journal (blocking reads of the spool's log).
    pub fn load(spool: &Spool, id: &QueueId) -> Result<MessageState, SpoolError> {
        let message = spool.open_message(id)?;
        let mut state = MessageState::new(*id, Arc::new(message.envelope), message.message_len);
        for r in &journal::read(spool, id)? {
            state.apply(r);
        }
        Ok(state)
    }

    /// Apply one journal record.
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Delivered {
                rcpt,
                at_ms,
                to,
                detail,
            } => {
                if let Some(r) = self.rcpts.get_mut(*rcpt) {
                    r.status = RcptStatus::Delivered;
                    r.detail = Some(detail.clone());
                    r.handover = Some(*to);
                    r.at_ms = *at_ms;
                }
            }
            Record::Failed { rcpt, at_ms, diag } => {
                if let Some(r) = self.rcpts.get_mut(*rcpt) {
                    r.status = RcptStatus::Failed;
                    r.last = Some(diag.clone());
                    r.at_ms = *at_ms;
                }
            }
            Record::Deferred { rcpt, at_ms, diag } => {
                if let Some(r) = self.rcpts.get_mut(*rcpt)
                    && r.status == RcptStatus::Pending
                {
                    r.last = Some(diag.clone());
                    r.at_ms = *at_ms;
                }
            }
            Record::Attempted { attempts, next_ms } => {
                self.attempts = *attempts;
                self.next_ms = *next_ms;
            }
            Record::Bounced { dsn, rcpts } => {
                for i in rcpts {
                    if let Some(r) = self.rcpts.get_mut(*i) {
                        r.reported = true;
                    }
                }
                self.dsns.extend(dsn.clone());
            }
            Record::Warned { dsn, rcpts } => {
                for i in rcpts {
                    if let Some(r) = self.rcpts.get_mut(*i) {
                        r.delay_reported = true;
                    }
                }
                self.dsns.extend(dsn.clone());
            }
            Record::Rescheduled { next_ms } => self.next_ms = *next_ms,
            Record::Released { at_ms } => {
                self.released_ms = Some(*at_ms);
                self.next_ms = 0;
            }
        }
    }

    /// When the queue lifetime started: arrival, or release from
    /// quarantine.
    pub fn arrival_ms(&self) -> u64 {
        self.released_ms
            .unwrap_or(self.envelope.received_at_unix_ms)
    }

    /// Held in quarantine: never attempted, never expired, until released.
    pub fn is_held(&self) -> bool {
        self.envelope.quarantine.is_some() && self.released_ms.is_none()
    }

    /// Indexes of recipients still owed a delivery.
    pub fn pending(&self) -> Vec<usize> {
        self.indexes(|r| r.status == RcptStatus::Pending)
    }

    /// Whether a failure of recipient `i` is to be reported to the sender: never for
    /// the null sender; with `NOTIFY=`, only if it lists `FAILURE` (RFC 3461 §4.1).
    pub fn wants_failure_report(&self, i: usize) -> bool {
        self.notifies(i, "FAILURE", true)
    }

    /// Whether the sender asked for `kind` notices (`SUCCESS`, `DELAY`,
    /// `FAILURE`) for recipient `i`; `default` without a `NOTIFY` parameter.
    /// Never for the null sender (a report is never reported on).
    pub fn notifies(&self, i: usize, kind: &str, default: bool) -> bool {
        if self.envelope.mail_from.is_empty() {
            return false;
        }
        match self.rcpts.get(i).and_then(|r| param(&r.params, "NOTIFY")) {
            None => default,
            Some(v) => v.split(',').any(|n| n.trim().eq_ignore_ascii_case(kind)),
        }
    }

    /// Delivered recipients owed a success notice (`NOTIFY=SUCCESS`), unless
    /// the next hop took the request over (it offered DSN: RFC 3461 §5.2.2).
    pub fn unreported_successes(&self) -> Vec<usize> {
        self.indexes(|r| {
            r.status == RcptStatus::Delivered
                && !r.reported
                && r.handover != Some(Handover::DsnHandedOn)
        })
        .into_iter()
        .filter(|&i| self.notifies(i, "SUCCESS", false))
        .collect()
    }

    /// Pending recipients owed a delay notice at `now_ms` (`NOTIFY=DELAY`,
    /// queued longer than `warning`; one notice each).
    pub fn due_delay_notices(&self, warning: std::time::Duration, now_ms: u64) -> Vec<usize> {
        if warning.is_zero() || now_ms < self.arrival_ms() + warning.as_millis() as u64 {
            return Vec::new();
        }
        self.indexes(|r| r.status == RcptStatus::Pending && !r.delay_reported)
            .into_iter()
            .filter(|&i| self.notifies(i, "DELAY", false))
            .collect()
    }

    /// Failed recipients whose bounce is still owed.
    pub fn unreported_failures(&self) -> Vec<usize> {
        self.indexes(|r| r.status == RcptStatus::Failed && !r.reported)
            .into_iter()
            .filter(|&i| self.wants_failure_report(i))
            .collect()
    }

    /// Nothing owed any more: the message may leave the queue.
    pub fn is_finished(&self) -> bool {
        self.pending().is_empty()
            && self.unreported_failures().is_empty()
            && self.unreported_successes().is_empty()
    }

    /// The most recent failure of a pending recipient (what `queue list` shows).
    pub fn last_error(&self) -> Option<&Diagnostic> {
        self.rcpts
            .iter()
            .filter(|r| r.status == RcptStatus::Pending)
            .filter_map(|r| r.last.as_ref().map(|d| (r.at_ms, d)))
            .max_by_key(|(at, _)| *at)
            .map(|(_, d)| d)
    }

    fn indexes(&self, pred: impl Fn(&RcptState) -> bool) -> Vec<usize> {
        self.rcpts
            .iter()
            .enumerate()
            .filter(|(_, r)| pred(r))
            .map(|(i, _)| i)
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::outcome::Diagnostic;
    use postern_protocol::EnhancedCode;
    use postern_spool::Recipient;

    pub fn envelope(sender: &str, rcpts: &[(&str, &[&str])]) -> Envelope {
        Envelope {
            queue_id: "0000000000000000000A".parse().unwrap(),
            received_at_unix_ms: 1000,
            client: postern_spool::Client::at("127.0.0.1", 1),
            mail_from: sender.into(),
            mail_params: vec![],
            recipients: rcpts
                .iter()
                .map(|(a, p)| Recipient {
                    address: a.to_string(),
                    params: p.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
            session_id: "s".into(),
            quarantine: None,
        }
    }

    fn state(sender: &str, rcpts: &[(&str, &[&str])]) -> MessageState {
        let env = envelope(sender, rcpts);
        MessageState::new(env.queue_id, Arc::new(env), 10)
    }

    fn failed(i: usize) -> Record {
        Record::Failed {
            rcpt: i,
            at_ms: 5,
            diag: Diagnostic::local(EnhancedCode::new(5, 1, 1), "no"),
        }
    }

    #[test]
    fn replay_tracks_recipients_and_bounces() {
        let mut s = state(
            "a@x.test",
            &[("b@y.test", &[]), ("c@y.test", &[]), ("d@y.test", &[])],
        );
        assert_eq!(s.pending(), vec![0, 1, 2]);
        s.apply(&Record::Delivered {
            rcpt: 0,
            at_ms: 4,
            to: Handover::Relayed,
            detail: "x".into(),
        });
        s.apply(&failed(1));
        s.apply(&failed(99)); // unknown recipient: ignored
        s.apply(&Record::Attempted {
            attempts: 1,
            next_ms: 60_000,
        });
        assert_eq!(s.pending(), vec![2]);
        assert_eq!(s.unreported_failures(), vec![1]);
        assert!(!s.is_finished());
        s.apply(&Record::Bounced {
            dsn: Some("D".into()),
            rcpts: vec![1],
        });
        s.apply(&Record::Delivered {
            rcpt: 2,
            at_ms: 9,
            to: Handover::Mailbox,
            detail: "x".into(),
        });
        assert!(s.is_finished());
        assert_eq!(
            (s.attempts, s.next_ms, s.dsns.clone()),
            (1, 60_000, vec!["D".to_string()])
        );
    }

    #[test]
    fn notify_and_null_sender_decide_reports() {
        let s = state(
            "a@x.test",
            &[
                ("b@y.test", &[]),
                ("c@y.test", &["NOTIFY=NEVER"]),
                ("d@y.test", &["notify=SUCCESS,FAILURE"]),
                ("e@y.test", &["NOTIFY=DELAY"]),
            ],
        );
        let wants: Vec<bool> = (0..4).map(|i| s.wants_failure_report(i)).collect();
        assert_eq!(wants, vec![true, false, true, false]);
        let null = state("", &[("b@y.test", &[])]);
        assert!(!null.wants_failure_report(0));
        let mut null = null;
        null.apply(&failed(0));
        assert!(null.is_finished());
    }

    #[test]
    fn success_notices_are_owed_unless_the_next_hop_took_them_over() {
        let mut s = state(
            "a@x.test",
            &[
                ("b@y.test", &["NOTIFY=SUCCESS"]),
                ("c@y.test", &["NOTIFY=SUCCESS"]),
                ("d@y.test", &["NOTIFY=SUCCESS"]),
                ("e@y.test", &[]),
            ],
        );
        for (rcpt, to) in [
            (0, Handover::Relayed),
            (1, Handover::DsnHandedOn),
            (2, Handover::Mailbox),
            (3, Handover::Relayed),
        ] {
            s.apply(&Record::Delivered {
                rcpt,
                at_ms: 1,
                to,
                detail: "x".into(),
            });
        }
        assert_eq!(s.unreported_successes(), vec![0, 2]);
    }
}
