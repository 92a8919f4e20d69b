//! Start-up recovery of the spool (RFC 5321 §6.1, DESIGN "recover the queue"). Trusts
//! nothing on disk: files in `tmp/` were never acknowledged and are deleted; every file
//! in `queue/` is verified (header, lengths against the file size, envelope, id) and a
//! bad one is moved to `corrupt/` with a `.reason` note, never deleted. Sidecars named
//! `<id>.<suffix>` are left to their owner, except a `<id>.state` journal whose message
//! is gone (a crash between the two unlinks of `remove`), which is deleted.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::SpoolError;
use crate::fsio;
use crate::id::QueueId;
use crate::paths::{STATE_SUFFIX, SpoolPaths};
use crate::reader;
use crate::stats::Counters;

/// What `Spool::open` found and did.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    /// Verified messages left in the queue.
    pub kept: usize,
    /// Half-written files deleted from `tmp/`.
    pub removed_temp: usize,
    /// Files moved from `queue/` to `corrupt/`: (file name, reason).
    pub quarantined: Vec<(String, String)>,
}

/// Clean `tmp/`, verify `queue/`, count what is kept into `counters`.
pub(crate) fn recover(
    paths: &SpoolPaths,
    counters: &Counters,
) -> Result<RecoveryReport, SpoolError> {
    let mut report = RecoveryReport {
        removed_temp: clean_temp(&paths.tmp)?,
        ..RecoveryReport::default()
    };
    let mut orphans = Vec::new();
    let names = dir_names(&paths.queue)?;
    for name in &names {
        let name = name.clone();
        let Some(text) = name.to_str() else {
            let shown = name.to_string_lossy().into_owned();
            quarantine(paths, &name, &shown, "file name is not UTF-8", &mut report)?;
            continue;
        };
        match classify(text) {
            Entry::Message => verify(paths, &name, text, counters, &mut report)?,
            Entry::Sidecar => {
                if let Some(id) = text.strip_suffix(&format!(".{STATE_SUFFIX}"))
                    && !names.iter().any(|n| n.to_str() == Some(id))
                {
                    orphans.push(name.clone());
                }
            }
            Entry::Unexpected => quarantine(
                paths,
                &name,
                text,
                "unexpected file name in queue/",
                &mut report,
            )?,
        }
    }
    for name in &orphans {
        let path = paths.queue.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(file = %path.display(), "removed orphaned delivery journal"),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove orphaned delivery journal")
            }
        }
    }
    if !report.quarantined.is_empty() {
        sync(&paths.corrupt)?;
    }
    if !report.quarantined.is_empty() || !orphans.is_empty() {
        sync(&paths.queue)?;
    }
    Ok(report)
}

enum Entry {
    Message,
    Sidecar,
    Unexpected,
}

fn classify(name: &str) -> Entry {
    if name.parse::<QueueId>().is_ok() {
        return Entry::Message;
    }
    match name.split_once('.') {
        Some((id, suffix)) if id.parse::<QueueId>().is_ok() && !suffix.is_empty() => Entry::Sidecar,
        _ => Entry::Unexpected,
    }
}

fn verify(
    paths: &SpoolPaths,
    name: &OsString,
    text: &str,
    counters: &Counters,
    report: &mut RecoveryReport,
) -> Result<(), SpoolError> {
    match reader::open_message(&paths.queue.join(name), text) {
        Ok(message) => {
            counters.found(message.file_len);
            report.kept += 1;
            Ok(())
        }
        // Raced with nothing (the spool is locked), but a vanished file is no defect.
        Err(SpoolError::NotFound(_)) => Ok(()),
        Err(SpoolError::Corrupt { reason, .. }) => quarantine(paths, name, text, &reason, report),
        Err(other) => quarantine(paths, name, text, &format!("unreadable: {other}"), report),
    }
}

/// Delete every file in `tmp/`; returns how many.
fn clean_temp(tmp: &Path) -> Result<usize, SpoolError> {
    let mut removed = 0;
    for name in dir_names(tmp)? {
        let path = tmp.join(&name);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                removed += 1;
                tracing::info!(file = %path.display(), "removed unacknowledged spool temp file");
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove spool temp entry; left in place")
            }
        }
    }
    if removed > 0 {
        sync(tmp)?;
    }
    Ok(removed)
}

/// Move `queue/<name>` to `corrupt/` under a free name and write the reason beside it.
fn quarantine(
    paths: &SpoolPaths,
    name: &OsString,
    shown: &str,
    reason: &str,
    report: &mut RecoveryReport,
) -> Result<(), SpoolError> {
    let from = paths.queue.join(name);
    let mut target = name.clone();
    let mut attempt = 0u32;
    loop {
        let to = paths.corrupt.join(&target);
        match fsio::rename_noreplace(&from, &to) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 10_000 => {
                attempt += 1;
                target = name.clone();
                target.push(format!(".{attempt}"));
            }
            Err(e) => return Err(SpoolError::io(&from, e)),
        }
    }
    tracing::error!(file = %from.display(), moved_to = %paths.corrupt.join(&target).display(),
        %reason, "quarantined corrupt spool file");
    write_reason(&paths.corrupt, &target, reason);
    report
        .quarantined
        .push((shown.to_owned(), reason.to_owned()));
    Ok(())
}

/// Best effort: the reason is also logged and reported, so a failure here only warns.
fn write_reason(corrupt: &Path, target: &OsString, reason: &str) {
    let mut name = target.clone();
    name.push(".reason");
    let path = corrupt.join(name);
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut file| file.write_all(format!("{reason}\n").as_bytes()));
    if let Err(e) = result {
        tracing::warn!(file = %path.display(), error = %e, "cannot write quarantine reason");
    }
}

fn dir_names(dir: &Path) -> Result<Vec<OsString>, SpoolError> {
    let entries = std::fs::read_dir(dir).map_err(|e| SpoolError::io(dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        names.push(entry.map_err(|e| SpoolError::io(dir, e))?.file_name());
    }
    names.sort();
    Ok(names)
}

fn sync(dir: &Path) -> Result<(), SpoolError> {
    fsio::sync_dir(dir).map_err(|e| SpoolError::io(dir, e))
}
