//! The per-message delivery journal: append-only text, one record per line,
//! recording what delivery attempts established — recipients delivered or failed for
//! good, attempts made, the next attempt time, bounces sent. Each append is one state
//! record in the spool's log (`Spool::append_state`: checksummed, group-committed,
//! durable before the caller acts on it, dropped with the message). Trusts nothing
//! it reads: malformed lines are ignored.
//!
//! ```text
//! D <rcpt> <unix_ms> <where>                               delivered
//! F <rcpt> <unix_ms> <status> <remote|-> <type> <text>     failed permanently
//! T <rcpt> <unix_ms> <status> <remote|-> <type> <text>     deferred (last error)
//! A <attempts> <next_ms>                                   attempt finished
//! B <dsn-queue-id|-> <rcpt,rcpt,...>                       bounce committed for these
//! N <next_ms>                                              rescheduled (queue flush)
//! R <unix_ms>                                              released from quarantine
//! ```
//! `<rcpt>` indexes the envelope's recipient list (immutable once spooled).

use postern_protocol::EnhancedCode;
use postern_spool::{QueueId, Spool, SpoolError};

use crate::outcome::{DiagKind, Diagnostic, Handover, RcptOutcome, sanitize};

/// One journal line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Delivered {
        rcpt: usize,
        at_ms: u64,
        to: Handover,
        detail: String,
    },
    Failed {
        rcpt: usize,
        at_ms: u64,
        diag: Diagnostic,
    },
    Deferred {
        rcpt: usize,
        at_ms: u64,
        diag: Diagnostic,
    },
    Attempted {
        attempts: u32,
        next_ms: u64,
    },
    /// A report (failure, or success) was queued as `dsn` for `rcpts`, or
    /// none is to be sent (`dsn` none).
    Bounced {
        dsn: Option<String>,
        rcpts: Vec<usize>,
    },
    /// A delay notice was queued as `dsn` for the pending `rcpts`.
    Warned {
        dsn: Option<String>,
        rcpts: Vec<usize>,
    },
    Rescheduled {
        next_ms: u64,
    },
    /// An operator released the quarantined message.
    Released {
        at_ms: u64,
    },
}

impl Record {
    /// The records of recipient `rcpt`'s outcome, established at `at_ms`,
    /// appended to `out`: one, or for a failure without a bounce the failure
    /// and a `Bounced` record without a DSN (so none is ever sent).
    pub fn of_outcome(out: &mut Vec<Record>, rcpt: usize, outcome: RcptOutcome, at_ms: u64) {
        let record = match outcome {
            RcptOutcome::Delivered(to, detail) => Record::Delivered {
                rcpt,
                at_ms,
                to,
                detail,
            },
            RcptOutcome::Failed(diag) => Record::Failed { rcpt, at_ms, diag },
            RcptOutcome::Deferred(diag) => Record::Deferred { rcpt, at_ms, diag },
            RcptOutcome::Suppressed(diag) => {
                out.push(Record::Failed { rcpt, at_ms, diag });
                Record::Bounced {
                    dsn: None,
                    rcpts: vec![rcpt],
                }
            }
        };
        out.push(record);
    }

    /// The records of every outcome in `results`.
    pub fn of_outcomes(
        results: impl IntoIterator<Item = (usize, RcptOutcome)>,
        at_ms: u64,
    ) -> Vec<Record> {
        let mut out = Vec::new();
        for (rcpt, outcome) in results {
            Record::of_outcome(&mut out, rcpt, outcome, at_ms);
        }
        out
    }
}

fn token(s: &str) -> String {
    let t: String = sanitize(s)
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    if t.is_empty() { "-".into() } else { t }
}

fn encode_diag(d: &Diagnostic) -> String {
    format!(
        "{} {} {} {}",
        d.status,
        d.remote_mta
            .as_deref()
            .map(token)
            .unwrap_or_else(|| "-".into()),
        d.kind.token(),
        sanitize(&d.text)
    )
}

/// The line for `record`, without its newline.
pub fn encode(record: &Record) -> String {
    match record {
        Record::Delivered {
            rcpt,
            at_ms,
            to,
            detail,
        } => format!("D {rcpt} {at_ms} {} {}", to.token(), sanitize(detail)),
        Record::Failed { rcpt, at_ms, diag } => format!("F {rcpt} {at_ms} {}", encode_diag(diag)),
        Record::Deferred { rcpt, at_ms, diag } => {
            format!("T {rcpt} {at_ms} {}", encode_diag(diag))
        }
        Record::Attempted { attempts, next_ms } => format!("A {attempts} {next_ms}"),
        Record::Bounced { dsn, rcpts } => format!("B {}", encode_report(dsn, rcpts)),
        Record::Warned { dsn, rcpts } => format!("W {}", encode_report(dsn, rcpts)),
        Record::Rescheduled { next_ms } => format!("N {next_ms}"),
        Record::Released { at_ms } => format!("R {at_ms}"),
    }
}

/// `<dsn id or -> <rcpt,rcpt or ->` of a report record.
fn encode_report(dsn: &Option<String>, rcpts: &[usize]) -> String {
    let list: Vec<String> = rcpts.iter().map(usize::to_string).collect();
    format!(
        "{} {}",
        dsn.as_deref().map(token).unwrap_or_else(|| "-".into()),
        if list.is_empty() {
            "-".into()
        } else {
            list.join(",")
        }
    )
}

fn parse_report(rest: &str) -> Option<(Option<String>, Vec<usize>)> {
    let (dsn, list) = rest.split_once(' ')?;
    let rcpts = if list == "-" {
        Vec::new()
    } else {
        list.split(',')
            .map(|n| n.parse().ok())
            .collect::<Option<Vec<usize>>>()?
    };
    Some(((dsn != "-").then(|| dsn.to_string()), rcpts))
}

fn parse_diag(rest: &str) -> Option<Diagnostic> {
    let mut f = rest.splitn(4, ' ');
    let status: EnhancedCode = f.next()?.parse().ok()?;
    let remote = f.next()?;
    let kind = DiagKind::from_token(f.next()?)?;
    Some(Diagnostic {
        status,
        remote_mta: (remote != "-").then(|| remote.to_string()),
        kind,
        text: f.next().unwrap_or("").to_string(),
    })
}

/// The hand-over and detail of a `D` line: `<hand-over> <detail>`, or a
/// journal written before the hand-over was recorded (`<detail>`, where it
/// was told by the detail's start).
fn delivered(tail: &str) -> (Handover, String) {
    if let Some((t, detail)) = tail.split_once(' ')
        && let Some(to) = Handover::from_token(t)
    {
        return (to, detail.to_string());
    }
    if let Some(detail) = tail.strip_prefix("dsn=handed-on, ") {
        (Handover::DsnHandedOn, detail.to_string())
    } else if tail.starts_with("maildir=") {
        (Handover::Mailbox, tail.to_string())
    } else {
        (Handover::Relayed, tail.to_string())
    }
}

/// Parse one line (without its newline); `None` if it is malformed.
pub fn parse(line: &str) -> Option<Record> {
    let (kind, rest) = line.split_once(' ')?;
    match kind {
        "D" | "F" | "T" => {
            let mut f = rest.splitn(3, ' ');
            let rcpt = f.next()?.parse().ok()?;
            let at_ms = f.next()?.parse().ok()?;
            let tail = f.next().unwrap_or("");
            Some(match kind {
                "D" => {
                    let (to, detail) = delivered(tail);
                    Record::Delivered {
                        rcpt,
                        at_ms,
                        to,
                        detail,
                    }
                }
                "F" => Record::Failed {
                    rcpt,
                    at_ms,
                    diag: parse_diag(tail)?,
                },
                _ => Record::Deferred {
                    rcpt,
                    at_ms,
                    diag: parse_diag(tail)?,
                },
            })
        }
        "A" => {
            let (a, n) = rest.split_once(' ')?;
            Some(Record::Attempted {
                attempts: a.parse().ok()?,
                next_ms: n.parse().ok()?,
            })
        }
        "B" => {
            let (dsn, rcpts) = parse_report(rest)?;
            Some(Record::Bounced { dsn, rcpts })
        }
        "W" => {
            let (dsn, rcpts) = parse_report(rest)?;
            Some(Record::Warned { dsn, rcpts })
        }
        "N" => Some(Record::Rescheduled {
            next_ms: rest.parse().ok()?,
        }),
        "R" => Some(Record::Released {
            at_ms: rest.parse().ok()?,
        }),
        _ => None,
    }
}

/// The text of `records`: one line each.
pub fn encode_all(records: &[Record]) -> String {
    let mut text = String::new();
    for r in records {
        text.push_str(&encode(r));
        text.push('\n');
    }
    text
}

/// Append `records` to the message's journal and make them durable (one state
/// record in the spool's log, group-committed). `NotFound` if the message is gone.
pub async fn append(spool: &Spool, id: &QueueId, records: &[Record]) -> Result<(), SpoolError> {
    if records.is_empty() {
        return Ok(());
    }
    spool.append_state(id, encode_all(records).as_bytes()).await
}

/// Parse journal text (any number of state records, concatenated); malformed lines
/// are skipped with a warning, and so is a last line without its newline.
pub fn parse_all(id: &QueueId, text: &[u8]) -> Vec<Record> {
    let text = String::from_utf8_lossy(text);
    let mut lines: Vec<&str> = text.split('\n').collect();
    // The piece after the last newline is empty (or not a whole record).
    lines.pop();
    let mut records = Vec::with_capacity(lines.len());
    for line in lines {
        match parse(line) {
            Some(r) => records.push(r),
            None if line.is_empty() => {}
            None => {
                tracing::warn!(queue_id = %id, line = %line.chars().take(120).collect::<String>(),
                "ignoring malformed delivery journal line")
            }
        }
    }
    records
}

/// Read every well-formed record of the message's journal, oldest first (blocking:
/// positioned reads of the log). `NotFound` if the message is not queued.
pub fn read(spool: &Spool, id: &QueueId) -> Result<Vec<Record>, SpoolError> {
    let mut text = Vec::new();
    for record in spool.state_records(id)? {
        text.extend_from_slice(&record);
        if !record.ends_with(b"\n") && !record.is_empty() {
            // Records are whole lines; never let one run into the next.
            text.push(b'\n');
        }
    }
    Ok(parse_all(id, &text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(status: &str, remote: Option<&str>, kind: DiagKind, text: &str) -> Diagnostic {
        Diagnostic {
            status: status.parse().unwrap(),
            remote_mta: remote.map(str::to_string),
            kind,
            text: text.into(),
        }
    }

    fn samples() -> Vec<Record> {
        vec![
            Record::Delivered {
                rcpt: 0,
                at_ms: 17,
                to: Handover::Relayed,
                detail: "relay=mx.test[127.0.0.1]:25 250 2.0.0 ok".into(),
            },
            Record::Delivered {
                rcpt: 1,
                at_ms: 17,
                to: Handover::DsnHandedOn,
                detail: "relay=mx.test[127.0.0.1]:25 250 ok".into(),
            },
            Record::Delivered {
                rcpt: 3,
                at_ms: 17,
                to: Handover::Mailbox,
                detail: "maildir=/m/new/1".into(),
            },
            Record::Failed {
                rcpt: 2,
                at_ms: 18,
                diag: diag(
                    "5.1.1",
                    Some("mx.test"),
                    DiagKind::Smtp,
                    "550 5.1.1 no such user",
                ),
            },
            Record::Deferred {
                rcpt: 1,
                at_ms: 19,
                diag: diag("4.4.1", None, DiagKind::Local, "connect to x: refused"),
            },
            Record::Attempted {
                attempts: 3,
                next_ms: 99,
            },
            Record::Bounced {
                dsn: Some("0HOHJM27GXA9FM4N9WQJ".into()),
                rcpts: vec![2, 5],
            },
            Record::Bounced {
                dsn: None,
                rcpts: vec![],
            },
            Record::Rescheduled { next_ms: 0 },
            Record::Released {
                at_ms: 1_700_000_000_000,
            },
        ]
    }

    #[test]
    fn round_trip() {
        for r in samples() {
            assert_eq!(parse(&encode(&r)), Some(r.clone()), "{}", encode(&r));
        }
    }

    #[test]
    fn journals_from_before_the_handover_was_recorded_still_read() {
        let read = |line: &str| match parse(line) {
            Some(Record::Delivered { to, detail, .. }) => (to, detail),
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(
            read("D 0 5 dsn=handed-on, relay=mx.t[127.0.0.1]:25, 250 ok"),
            (
                Handover::DsnHandedOn,
                "relay=mx.t[127.0.0.1]:25, 250 ok".into()
            )
        );
        assert_eq!(
            read("D 0 5 maildir=/m/new/1"),
            (Handover::Mailbox, "maildir=/m/new/1".into())
        );
        assert_eq!(
            read("D 0 5 relay=mx.t[127.0.0.1]:25, 250 ok"),
            (Handover::Relayed, "relay=mx.t[127.0.0.1]:25, 250 ok".into())
        );
        assert_eq!(read("D 0 5 "), (Handover::Relayed, String::new()));
    }

    #[test]
    fn malformed_lines_are_refused() {
        for bad in [
            "",
            "D",
            "D x 1 y",
            "F 1 2 9.9.9 - smtp t",
            "F 1 2 5.1.1 - nope t",
            "A 1",
            "A x y",
            "B id 1,x",
            "N soon",
            "Z 1 2",
            "D 1",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hostile_text_stays_on_one_line() {
        let r = Record::Failed {
            rcpt: 0,
            at_ms: 1,
            diag: diag(
                "5.0.0",
                Some("evil host\n"),
                DiagKind::Smtp,
                "550 x\r\nA 0 0",
            ),
        };
        let line = encode(&r);
        assert!(!line.contains('\n') && !line.contains('\r'));
        let Some(Record::Failed { diag, .. }) = parse(&line) else {
            panic!("{line}")
        };
        assert_eq!(diag.remote_mta.as_deref(), Some("evil_host"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn append_and_read_through_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(postern_spool::SpoolConfig::new(dir.path())).unwrap();
        let id = QueueId::generate();
        let mut env = crate::state::tests::envelope("a@x.test", &[("b@y.test", &[])]);
        env.queue_id = id;
        spool.commit(&env, &[b"Subject: x\r\n\r\n"]).await.unwrap();
        assert!(read(&spool, &id).unwrap().is_empty());
        let all = samples();
        append(&spool, &id, &all[..3]).await.unwrap();
        append(&spool, &id, &[]).await.unwrap();
        append(&spool, &id, &all[3..]).await.unwrap();
        assert_eq!(read(&spool, &id).unwrap(), all);
        // A malformed line (or one written without its newline) is skipped alone.
        spool.append_state(&id, b"Z bogus\nA 7 1").await.unwrap();
        append(&spool, &id, &[Record::Rescheduled { next_ms: 5 }])
            .await
            .unwrap();
        let back = read(&spool, &id).unwrap();
        assert_eq!(back.len(), all.len() + 2);
        assert_eq!(
            back[all.len()],
            Record::Attempted {
                attempts: 7,
                next_ms: 1
            }
        );
        assert_eq!(back.last(), Some(&Record::Rescheduled { next_ms: 5 }));
        // Gone with the message.
        assert!(spool.remove(&id).await.unwrap());
        assert!(matches!(read(&spool, &id), Err(SpoolError::NotFound(_))));
        assert!(matches!(
            append(&spool, &id, &all).await,
            Err(SpoolError::NotFound(_))
        ));
    }

    #[test]
    fn parse_all_skips_a_torn_last_line() {
        let id = QueueId::generate();
        let text = b"A 1 2\nN 3\nA 7 1";
        assert_eq!(
            parse_all(&id, text),
            vec![
                Record::Attempted {
                    attempts: 1,
                    next_ms: 2
                },
                Record::Rescheduled { next_ms: 3 }
            ]
        );
    }
}
