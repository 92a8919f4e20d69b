//! The per-message delivery journal `queue/<id>.state`: an append-only text file
//! beside the spool file, one record per line, recording what delivery attempts
//! established — recipients delivered or failed for good, attempts made, the next
//! attempt time, bounces sent. Appends are fdatasync'ed (and the directory fsync'ed
//! when the file is new) before the caller acts on them. Trusts nothing it reads: a
//! torn last line (crash mid-append) and malformed lines are ignored.
//!
//! ```text
//! D <rcpt> <unix_ms> <where>                               delivered
//! F <rcpt> <unix_ms> <status> <remote|-> <type> <text>     failed permanently
//! T <rcpt> <unix_ms> <status> <remote|-> <type> <text>     deferred (last error)
//! A <attempts> <next_ms>                                   attempt finished
//! B <dsn-queue-id|-> <rcpt,rcpt,...>                       bounce committed for these
//! N <next_ms>                                              rescheduled (queue flush)
//! ```
//! `<rcpt>` indexes the envelope's recipient list (immutable once spooled).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use postern_protocol::EnhancedCode;

use crate::outcome::{DiagKind, Diagnostic, sanitize};

/// Largest journal read back (a healthy one is a few KiB).
const MAX_JOURNAL: u64 = 16 << 20;

/// One journal line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Delivered {
        rcpt: usize,
        at_ms: u64,
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
    Bounced {
        dsn: Option<String>,
        rcpts: Vec<usize>,
    },
    Rescheduled {
        next_ms: u64,
    },
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
            detail,
        } => format!("D {rcpt} {at_ms} {}", sanitize(detail)),
        Record::Failed { rcpt, at_ms, diag } => format!("F {rcpt} {at_ms} {}", encode_diag(diag)),
        Record::Deferred { rcpt, at_ms, diag } => {
            format!("T {rcpt} {at_ms} {}", encode_diag(diag))
        }
        Record::Attempted { attempts, next_ms } => format!("A {attempts} {next_ms}"),
        Record::Bounced { dsn, rcpts } => {
            let list: Vec<String> = rcpts.iter().map(usize::to_string).collect();
            format!(
                "B {} {}",
                dsn.as_deref().map(token).unwrap_or_else(|| "-".into()),
                if list.is_empty() {
                    "-".into()
                } else {
                    list.join(",")
                }
            )
        }
        Record::Rescheduled { next_ms } => format!("N {next_ms}"),
    }
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
                "D" => Record::Delivered {
                    rcpt,
                    at_ms,
                    detail: tail.to_string(),
                },
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
            let (dsn, list) = rest.split_once(' ')?;
            let rcpts = if list == "-" {
                Vec::new()
            } else {
                list.split(',')
                    .map(|n| n.parse().ok())
                    .collect::<Option<Vec<usize>>>()?
            };
            Some(Record::Bounced {
                dsn: (dsn != "-").then(|| dsn.to_string()),
                rcpts,
            })
        }
        "N" => Some(Record::Rescheduled {
            next_ms: rest.parse().ok()?,
        }),
        _ => None,
    }
}

/// Append `records` to the journal at `path` and make them durable: fdatasync the
/// file, and fsync `dir` when the file was created by this call.
pub fn append(path: &Path, dir: &Path, records: &[Record]) -> io::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for r in records {
        text.push_str(&encode(r));
        text.push('\n');
    }
    let (mut file, created) = match OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => (f, true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (
            OpenOptions::new().append(true).read(true).open(path)?,
            false,
        ),
        Err(e) => return Err(e),
    };
    if !created {
        drop_torn_tail(&file)?;
    }
    file.write_all(text.as_bytes())?;
    file.sync_data()?;
    if created {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A crash mid-append can leave a torn last line (a prefix of a record, no newline).
/// Cut it off so the new records start on a line of their own and the fragment is
/// never read as a record.
fn drop_torn_tail(file: &File) -> io::Result<()> {
    let len = file.metadata()?.len();
    let mut last = [0u8; 1];
    if len == 0 || (file.read_at(&mut last, len - 1)? == 1 && last[0] == b'\n') {
        return Ok(());
    }
    let window = len.min(64 * 1024);
    let mut tail = vec![0u8; window as usize];
    file.read_exact_at(&mut tail, len - window)?;
    let keep = match tail.iter().rposition(|&b| b == b'\n') {
        Some(i) => len - window + i as u64 + 1,
        None if window == len => 0,
        // A "line" longer than the window is garbage anyway; keep what precedes it.
        None => len - window,
    };
    file.set_len(keep)
}

/// Read every well-formed record; a missing journal is empty.
pub fn read(path: &Path) -> io::Result<Vec<Record>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(MAX_JOURNAL).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.split('\n').collect();
    // The piece after the last newline is empty, or a torn append.
    lines.pop();
    let mut records = Vec::with_capacity(lines.len());
    for line in lines {
        match parse(line) {
            Some(r) => records.push(r),
            None if line.is_empty() => {}
            None => {
                tracing::warn!(journal = %path.display(), line = %line.chars().take(120).collect::<String>(),
                "ignoring malformed delivery journal line")
            }
        }
    }
    Ok(records)
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
                detail: "relay=mx.test[127.0.0.1]:25 250 2.0.0 ok".into(),
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
        ]
    }

    #[test]
    fn round_trip() {
        for r in samples() {
            assert_eq!(parse(&encode(&r)), Some(r.clone()), "{}", encode(&r));
        }
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

    #[test]
    fn append_read_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("X.state");
        assert!(read(&path).unwrap().is_empty());
        let all = samples();
        append(&path, dir.path(), &all[..3]).unwrap();
        append(&path, dir.path(), &all[3..]).unwrap();
        assert_eq!(read(&path).unwrap(), all);
        // A crash mid-append: the torn line is ignored, and the next append cuts it
        // off (it could be a valid-looking prefix, "A 7 1" of "A 7 12").
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"A 7 1").unwrap();
        drop(f);
        assert_eq!(read(&path).unwrap(), all);
        append(&path, dir.path(), &[Record::Rescheduled { next_ms: 5 }]).unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back.len(), all.len() + 1);
        assert_eq!(back.last(), Some(&Record::Rescheduled { next_ms: 5 }));
    }
}
