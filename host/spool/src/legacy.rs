//! One-time import of a version-1 spool (one file per message in `queue/`, delivery
//! journals beside them as `queue/<id>.state`, temp files in `tmp/`) into the log, so
//! an upgrade keeps every queued message. Trusts nothing it reads: a v1 file is
//! imported only if its header, lengths, separator, envelope JSON and envelope id all
//! check out; anything else goes to `corrupt/` with a reason. Files in `tmp/` were
//! never acknowledged and are deleted. The import is idempotent: records are synced
//! before any v1 file is deleted, and an id already in the log is not imported twice.
//!
//! ```text
//! POSTERN-SPOOL 1 <envelope_len> <message_len>\n<envelope JSON>\n<message>
//! ```

use std::ffi::OsString;

use crate::envelope::Envelope;
use crate::error::SpoolError;
use crate::format::{self, Kind};
use crate::id::QueueId;
use crate::index::{Index, Loc, MsgEntry};
use crate::paths::SpoolPaths;
use crate::recovery::{RecoveryReport, quarantine, sync};
use crate::segment::SegWriter;

/// Import `queue/` into `w` and the index; returns how many messages were imported.
pub(crate) fn import(
    paths: &SpoolPaths,
    w: &mut SegWriter,
    index: &mut Index,
    next_lsn: &mut u64,
    report: &mut RecoveryReport,
) -> Result<usize, SpoolError> {
    if paths.legacy_tmp.is_dir() {
        for name in names(&paths.legacy_tmp)? {
            let path = paths.legacy_tmp.join(&name);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove a version-1 temp file");
            }
        }
        remove_dir(&paths.legacy_tmp, &paths.root);
    }
    if !paths.legacy_queue.is_dir() {
        return Ok(0);
    }
    let names = names(&paths.legacy_queue)?;
    let mut done: Vec<OsString> = Vec::new();
    let mut imported = 0;
    for name in &names {
        let Some(id) = name.to_str().and_then(|n| n.parse::<QueueId>().ok()) else {
            continue;
        };
        if index.messages.contains_key(&id) {
            done.push(name.clone());
            continue;
        }
        let path = paths.legacy_message(&id);
        let bytes = std::fs::read(&path).map_err(|e| SpoolError::io(&path, e))?;
        let (envelope, message) = match parse(&bytes, id.as_str()) {
            Ok(parts) => parts,
            Err(reason) => {
                quarantine(paths, &paths.legacy_queue, name, &reason, report)?;
                continue;
            }
        };
        let mut record = format::build_record(Kind::Message, &id, envelope, &[message]);
        let lsn = *next_lsn;
        *next_lsn += 1;
        format::seal(&mut record, lsn);
        let at = w
            .append(&[&record])
            .map_err(|e| SpoolError::io(&w.shared.path, e))?;
        let decoded = format::decode_header(&record).map_err(|e| SpoolError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        index.commit(
            id,
            MsgEntry {
                lsn,
                loc: Loc {
                    seg: w.seq,
                    offset: at,
                    len: record.len() as u64,
                },
                envelope_len: decoded.envelope_len,
                message_len: decoded.payload_len,
                body_crc: decoded.body_crc,
                states: Vec::new(),
                stale: Vec::new(),
            },
        );
        let journal = paths.legacy_state(&id);
        if let Ok(text) = std::fs::read(&journal) {
            // Only whole lines: a torn last line was never acted on.
            let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            if whole > 0 {
                let mut record = format::build_record(Kind::State, &id, b"", &[&text[..whole]]);
                let lsn = *next_lsn;
                *next_lsn += 1;
                format::seal(&mut record, lsn);
                let at = w
                    .append(&[&record])
                    .map_err(|e| SpoolError::io(&w.shared.path, e))?;
                let loc = Loc {
                    seg: w.seq,
                    offset: at,
                    len: record.len() as u64,
                };
                index.add_state(id, lsn, loc);
            }
        }
        imported += 1;
        done.push(name.clone());
    }
    w.sync().map_err(|e| SpoolError::io(&w.shared.path, e))?;
    // Now durable in the log: the v1 files (and journals, orphaned ones too) can go.
    for name in &names {
        let text = name.to_string_lossy();
        let id_part = text.strip_suffix(".state").unwrap_or(&text);
        let is_ours =
            done.contains(name) || (text.ends_with(".state") && id_part.parse::<QueueId>().is_ok());
        if !is_ours {
            if name
                .to_str()
                .and_then(|n| n.parse::<QueueId>().ok())
                .is_none()
                && paths.legacy_queue.join(name).exists()
            {
                quarantine(
                    paths,
                    &paths.legacy_queue,
                    name,
                    "unexpected file in a version-1 queue/",
                    report,
                )?;
            }
            continue;
        }
        let path = paths.legacy_queue.join(name);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove an imported version-1 file");
        }
    }
    sync(&paths.legacy_queue)?;
    remove_dir(&paths.legacy_queue, &paths.root);
    if imported > 0 {
        tracing::info!(
            messages = imported,
            "imported a version-1 spool into the log"
        );
    }
    Ok(imported)
}

/// Split a v1 file into its envelope JSON and message, checking everything.
fn parse<'a>(bytes: &'a [u8], name: &str) -> Result<(&'a [u8], &'a [u8]), String> {
    let newline = bytes
        .iter()
        .take(64)
        .position(|&b| b == b'\n')
        .ok_or("version-1 file without a header line")?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| "header is not text")?;
    let fields: Vec<&str> = header.split(' ').collect();
    let [magic, version, env_len, msg_len] = fields.as_slice() else {
        return Err("malformed version-1 header".into());
    };
    if *magic != "POSTERN-SPOOL" || *version != "1" {
        return Err(format!("not a version-1 spool file: {header:?}"));
    }
    let number = |t: &str| {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse::<usize>().ok())
            .flatten()
            .ok_or_else(|| format!("bad length {t:?}"))
    };
    let (env_len, msg_len) = (number(env_len)?, number(msg_len)?);
    let env_start = newline + 1;
    let expected = env_start
        .checked_add(env_len)
        .and_then(|n| n.checked_add(1))
        .and_then(|n| n.checked_add(msg_len));
    if expected != Some(bytes.len()) {
        return Err(format!(
            "file is {} bytes but its header announces more or less",
            bytes.len()
        ));
    }
    let envelope = &bytes[env_start..env_start + env_len];
    if bytes[env_start + env_len] != b'\n' {
        return Err("missing newline between envelope and message".into());
    }
    let decoded: Envelope =
        serde_json::from_slice(envelope).map_err(|e| format!("envelope is not valid JSON: {e}"))?;
    if decoded.queue_id.as_str() != name {
        return Err(format!(
            "envelope queue_id {:?} does not match file name",
            decoded.queue_id
        ));
    }
    Ok((envelope, &bytes[env_start + env_len + 1..]))
}

fn names(dir: &std::path::Path) -> Result<Vec<OsString>, SpoolError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| SpoolError::io(dir, e))? {
        out.push(entry.map_err(|e| SpoolError::io(dir, e))?.file_name());
    }
    out.sort();
    Ok(out)
}

/// Remove an emptied v1 directory (best effort) and make that durable.
fn remove_dir(dir: &std::path::Path, root: &std::path::Path) {
    if std::fs::remove_dir(dir).is_ok() {
        let _ = crate::fsio::sync_dir(root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_checks_everything() {
        let env = br#"{"queue_id":"0000000000000000000A"}"#;
        let good = [
            format!("POSTERN-SPOOL 1 {} 5\n", env.len()).as_bytes(),
            env,
            b"\nhello",
        ]
        .concat();
        assert!(
            parse(&good, "0000000000000000000A").is_err(),
            "not a full envelope"
        );
        let full = br#"{"queue_id":"0000000000000000000A","received_at_unix_ms":1,"client_ip":"::1","client_port":2,"helo":null,"auth_user":null,"tls":false,"mail_from":"","mail_params":[],"recipients":[],"session_id":"s"}"#;
        let good = [
            format!("POSTERN-SPOOL 1 {} 5\n", full.len()).as_bytes(),
            full,
            b"\nhello",
        ]
        .concat();
        let (e, m) = parse(&good, "0000000000000000000A").unwrap();
        assert_eq!((e, m), (&full[..], &b"hello"[..]));
        assert!(parse(&good, "B").unwrap_err().contains("does not match"));
        assert!(parse(&good[..good.len() - 1], "0000000000000000000A").is_err());
        assert!(parse(b"POSTERN-SPOOL 2 1 1\n{\nx", "A").is_err());
        assert!(parse(b"garbage", "A").is_err());
        let mut no_sep = good.clone();
        let at = good.len() - 6;
        no_sep[at] = b' ';
        assert!(
            parse(&no_sep, "0000000000000000000A")
                .unwrap_err()
                .contains("newline")
        );
    }
}
