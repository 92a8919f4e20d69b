//! Start-up recovery of the log (RFC 5321 §6.1, DESIGN "recover the queue"). Trusts
//! nothing on disk. Every segment is read in order and every record's checksums are
//! verified. The only damage that is simply cut off is a torn tail of the *last*
//! segment — bytes after its last valid record with no valid record behind them, the
//! trace of a crash mid-append; those records were never acknowledged. Any other
//! damage (a bad record with valid ones after it, or any defect in a sealed segment,
//! whose every byte was fdatasync'ed) may hit acknowledged records: it is reported
//! loudly, every valid record of the segment is copied into the active segment, and
//! the segment file is moved to `corrupt/` with a `.reason` note, never deleted.
//! Then the index is rebuilt (see `index`) and a version-1 spool, if any, imported.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::SpoolError;
use crate::format::{self, FormatError, RecordHeader};
use crate::fsio;
use crate::index::{Found, Index, Loc};
use crate::legacy;
use crate::paths::{self, SpoolPaths};
use crate::segment::{SegFile, SegWriter};

/// What `Spool::open` found and did.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    /// Segment files read.
    pub segments: usize,
    /// Messages in the queue after recovery.
    pub kept: usize,
    /// Delivery-state records of those messages.
    pub state_records: usize,
    /// Bytes of torn tail cut from the end of the last segment (an interrupted
    /// append that was never acknowledged).
    pub truncated_bytes: u64,
    /// Damaged regions skipped inside segments: (`<segment>@<offset>`, reason).
    pub skipped: Vec<(String, String)>,
    /// Files moved to `corrupt/`: (file name, reason).
    pub quarantined: Vec<(String, String)>,
    /// Valid records copied out of quarantined segments into the active one.
    pub salvaged: usize,
    /// Messages imported from a version-1 spool (`queue/`).
    pub imported: usize,
}

/// The spool as recovery left it.
pub(crate) struct Recovered {
    pub index: Index,
    /// The active segment (none when read-only).
    pub writer: Option<SegWriter>,
    pub next_lsn: u64,
    pub report: RecoveryReport,
}

/// How one segment scanned.
struct Scan {
    seq: u64,
    name: String,
    records: Vec<(RecordHeader, u64)>,
    /// Where the valid log ends (the torn tail, if any, starts here).
    end: u64,
    len: u64,
    /// Damage that is not a torn tail: (offset, reason).
    damage: Vec<(u64, String)>,
    /// The tail after the last valid record: (offset, reason, looked like a whole record).
    tail: Option<(u64, String, bool)>,
    mtime: Option<SystemTime>,
}

impl Scan {
    fn header_ok(&self) -> bool {
        !self.damage.iter().any(|(at, _)| *at == 0)
    }
}

/// Recover the log below `paths`: repair it (unless `read_only`), rebuild the index,
/// open the active segment.
pub(crate) fn recover(
    paths: &SpoolPaths,
    read_only: bool,
    segment_size: u64,
) -> Result<Recovered, SpoolError> {
    let mut report = RecoveryReport::default();
    let mut scans = Vec::new();
    let mut buf = Vec::new();
    for (seq, name) in list_segments(paths, read_only, &mut report)? {
        let path = paths.log.join(&name);
        buf.clear();
        let file = std::fs::File::open(&path).map_err(|e| SpoolError::io(&path, e))?;
        let mtime = file.metadata().and_then(|m| m.modified()).ok();
        (&file)
            .read_to_end(&mut buf)
            .map_err(|e| SpoolError::io(&path, e))?;
        let mut scan = scan(&buf, seq, name);
        scan.mtime = mtime;
        scans.push(scan);
    }
    report.segments = scans.len();

    let last = scans.len().checked_sub(1);
    let mut healthy = Vec::new();
    let mut corrupt = Vec::new();
    for (i, mut s) in scans.into_iter().enumerate() {
        let is_last = Some(i) == last;
        if is_last && s.records.is_empty() && !s.header_ok() {
            // Created but its header never made it to disk: nothing was ever in it.
            report.truncated_bytes += s.len;
            tracing::info!(segment = %s.name, bytes = s.len, "removing a segment whose creation was interrupted");
            if !read_only {
                let path = paths.log.join(&s.name);
                std::fs::remove_file(&path).map_err(|e| SpoolError::io(&path, e))?;
                sync(&paths.log)?;
            }
            continue;
        }
        if is_last && s.damage.is_empty() {
            if let Some((at, reason, whole)) = s.tail.take() {
                cut_tail(paths, &s, at, &reason, whole, read_only, &mut report)?;
            }
            healthy.push(s);
            continue;
        }
        if let Some((at, reason, _)) = s.tail.take() {
            s.damage
                .push((at, format!("{reason} (to the end of a sealed segment)")));
        }
        if s.damage.is_empty() {
            healthy.push(s);
            continue;
        }
        for (at, reason) in &s.damage {
            tracing::error!(segment = %s.name, offset = at, %reason,
                "damaged spool segment: acknowledged records may be affected");
            report
                .skipped
                .push((format!("{}@{at}", s.name), reason.clone()));
        }
        corrupt.push(s);
    }

    let mut writer = None;
    if !read_only {
        writer = Some(open_writer(paths, &healthy, &corrupt, segment_size)?);
    }
    let mut index = Index::default();
    let mut found = Vec::new();
    for s in &healthy {
        let active = writer.as_ref().is_some_and(|w| w.seq == s.seq);
        if active {
            continue;
        }
        let file = open_seg(paths, s)?;
        index.add_segment(file, s.end, Some(s.mtime.unwrap_or(SystemTime::UNIX_EPOCH)));
        found.extend(records_of(s, s.seq));
    }
    if let Some(w) = writer.as_mut() {
        if let Some(s) = healthy.iter().find(|s| s.seq == w.seq) {
            found.extend(records_of(s, s.seq));
        }
        for s in &corrupt {
            found.extend(salvage(paths, s, w, &mut report)?);
        }
        index.add_segment(Arc::clone(&w.shared), w.end, None);
    } else {
        // Read-only: use the valid records where they are.
        for s in &corrupt {
            index.add_segment(open_seg(paths, s)?, s.len, Some(SystemTime::UNIX_EPOCH));
            found.extend(records_of(s, s.seq));
        }
    }
    let summary = index.build(found);
    let mut next_lsn = summary.max_lsn + 1;
    if let Some(w) = writer.as_mut() {
        report.imported = legacy::import(paths, w, &mut index, &mut next_lsn, &mut report)?;
        index.grew(w.seq, w.end);
    }
    report.kept = index.messages.len();
    report.state_records = index.messages.values().map(|m| m.states.len()).sum();
    if summary.orphan_states > 0 {
        tracing::debug!(
            orphans = summary.orphan_states,
            "state records of removed messages ignored"
        );
    }
    Ok(Recovered {
        index,
        writer,
        next_lsn,
        report,
    })
}

/// Segment files in `log/` in order; anything else there is quarantined.
fn list_segments(
    paths: &SpoolPaths,
    read_only: bool,
    report: &mut RecoveryReport,
) -> Result<Vec<(u64, String)>, SpoolError> {
    let mut segments = Vec::new();
    let entries = std::fs::read_dir(&paths.log).map_err(|e| SpoolError::io(&paths.log, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| SpoolError::io(&paths.log, e))?;
        let name = entry.file_name();
        let seq = name.to_str().and_then(paths::parse_segment_name);
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        match (seq, is_file) {
            (Some(seq), true) => segments.push((seq, name.to_string_lossy().into_owned())),
            _ if read_only => {}
            _ => quarantine(paths, &paths.log, &name, "unexpected entry in log/", report)?,
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

/// Verify every record of one segment's bytes.
fn scan(bytes: &[u8], seq: u64, name: String) -> Scan {
    let len = bytes.len() as u64;
    let mut s = Scan {
        seq,
        name,
        records: Vec::new(),
        end: len,
        len,
        damage: Vec::new(),
        tail: None,
        mtime: None,
    };
    let mut pos = format::SEGMENT_HEADER_LEN;
    if let Err(e) = format::decode_segment_header(bytes, seq) {
        s.damage.push((0, format!("segment header: {e}")));
        match format::resync(bytes, 0) {
            Some(at) => pos = at,
            None => {
                s.end = 0;
                return s;
            }
        }
    }
    while pos < bytes.len() {
        match format::decode_record(&bytes[pos..]) {
            Ok(h) => {
                s.records.push((h, pos as u64));
                pos += h.record_len() as usize;
            }
            Err(e) => match format::resync(bytes, pos + 1) {
                Some(next) => {
                    let what = describe(&bytes[pos..], &e);
                    s.damage
                        .push((pos as u64, format!("{what}; {} bytes skipped", next - pos)));
                    pos = next;
                }
                None => {
                    let whole = matches!(e, FormatError::BodyChecksum);
                    s.tail = Some((pos as u64, describe(&bytes[pos..], &e), whole));
                    s.end = pos as u64;
                    return s;
                }
            },
        }
    }
    s.end = pos as u64;
    s
}

/// The error, naming the record's message when its header is still readable.
fn describe(bytes: &[u8], e: &FormatError) -> String {
    match format::decode_header(bytes) {
        Ok(h) => format!("{:?} record of {} (LSN {}): {e}", h.kind, h.id, h.lsn),
        Err(_) => e.to_string(),
    }
}

/// Cut the torn tail of the last segment (durably). A tail that was a complete
/// record with a bad checksum is kept in `corrupt/` as well: a torn write can do
/// that, but so can a damaged disk.
fn cut_tail(
    paths: &SpoolPaths,
    s: &Scan,
    at: u64,
    reason: &str,
    whole_record: bool,
    read_only: bool,
    report: &mut RecoveryReport,
) -> Result<(), SpoolError> {
    let bytes = s.len - at;
    report.truncated_bytes += bytes;
    if read_only {
        return Ok(());
    }
    let path = paths.log.join(&s.name);
    if whole_record {
        tracing::error!(segment = %s.name, offset = at, bytes, %reason,
            "last record of the log fails its checksum; cut off, a copy kept in corrupt/");
        save_tail(paths, s, at, reason, report);
    } else {
        tracing::info!(segment = %s.name, offset = at, bytes, %reason,
            "cut the torn tail of an interrupted append (never acknowledged)");
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| SpoolError::io(&path, e))?;
    file.set_len(at)
        .and_then(|()| file.sync_all())
        .map_err(|e| SpoolError::io(&path, e))
}

/// Best effort: keep the cut bytes for inspection.
fn save_tail(paths: &SpoolPaths, s: &Scan, at: u64, reason: &str, report: &mut RecoveryReport) {
    let name = format!("{}.tail-{at}", s.name);
    let result = (|| {
        let mut bytes = Vec::new();
        let mut file = std::fs::File::open(paths.log.join(&s.name))?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(at))?;
        file.read_to_end(&mut bytes)?;
        let mut out = private_file(&paths.corrupt.join(&name))?;
        out.write_all(&bytes)?;
        out.sync_all()?;
        fsio::sync_dir(&paths.corrupt)
    })();
    match result {
        Ok(()) => {
            write_reason(&paths.corrupt, &OsString::from(&name), reason);
            report.quarantined.push((name, reason.to_owned()));
        }
        Err(e) => tracing::warn!(error = %e, "cannot keep a copy of the cut tail"),
    }
}

/// The segment to append to: the last one if it is healthy and not full, else a new one.
fn open_writer(
    paths: &SpoolPaths,
    healthy: &[Scan],
    corrupt: &[Scan],
    segment_size: u64,
) -> Result<SegWriter, SpoolError> {
    let max_seq = healthy
        .iter()
        .chain(corrupt)
        .map(|s| s.seq)
        .max()
        .unwrap_or(0);
    if let Some(last) = healthy.last()
        && last.seq == max_seq
        && last.end < segment_size
    {
        let shared = open_seg(paths, last)?;
        return SegWriter::reopen(shared, last.end).map_err(|e| SpoolError::io(&last.name, e));
    }
    let seq = max_seq + 1;
    SegWriter::create(paths, seq).map_err(|e| SpoolError::io(paths.segment(seq), e))
}

fn open_seg(paths: &SpoolPaths, s: &Scan) -> Result<Arc<SegFile>, SpoolError> {
    let path = paths.log.join(&s.name);
    SegFile::open(&path, s.seq)
        .map(Arc::new)
        .map_err(|e| SpoolError::io(&path, e))
}

fn records_of(s: &Scan, seg: u64) -> impl Iterator<Item = Found> + '_ {
    s.records.iter().map(move |(h, offset)| Found {
        kind: h.kind,
        id: h.id,
        lsn: h.lsn,
        loc: Loc {
            seg,
            offset: *offset,
            len: h.record_len(),
        },
        envelope_len: h.envelope_len,
        payload_len: h.payload_len,
        body_crc: h.body_crc,
    })
}

/// Copy every valid record of a damaged segment into `w` (durably), then move the
/// segment to `corrupt/`. Returns the records at their new places.
fn salvage(
    paths: &SpoolPaths,
    s: &Scan,
    w: &mut SegWriter,
    report: &mut RecoveryReport,
) -> Result<Vec<Found>, SpoolError> {
    let path = paths.log.join(&s.name);
    let bytes = std::fs::read(&path).map_err(|e| SpoolError::io(&path, e))?;
    let mut out = Vec::with_capacity(s.records.len());
    for (h, offset) in &s.records {
        let record = &bytes[*offset as usize..(*offset + h.record_len()) as usize];
        let at = w
            .append(&[record])
            .map_err(|e| SpoolError::io(&w.shared.path, e))?;
        out.push(Found {
            kind: h.kind,
            id: h.id,
            lsn: h.lsn,
            loc: Loc {
                seg: w.seq,
                offset: at,
                len: h.record_len(),
            },
            envelope_len: h.envelope_len,
            payload_len: h.payload_len,
            body_crc: h.body_crc,
        });
    }
    w.sync().map_err(|e| SpoolError::io(&w.shared.path, e))?;
    report.salvaged += out.len();
    let reasons: Vec<String> = s
        .damage
        .iter()
        .map(|(at, r)| format!("offset {at}: {r}"))
        .collect();
    let reason = format!(
        "damaged segment; {} valid records copied to {}: {}",
        out.len(),
        paths::segment_name(w.seq),
        reasons.join("; ")
    );
    quarantine(paths, &paths.log, &OsString::from(&s.name), &reason, report)?;
    Ok(out)
}

/// Move `<dir>/<name>` to `corrupt/` under a free name and write the reason beside it.
pub(crate) fn quarantine(
    paths: &SpoolPaths,
    dir: &Path,
    name: &OsString,
    reason: &str,
    report: &mut RecoveryReport,
) -> Result<(), SpoolError> {
    let from = dir.join(name);
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
        %reason, "quarantined spool file");
    write_reason(&paths.corrupt, &target, reason);
    sync(&paths.corrupt)?;
    sync(dir)?;
    report
        .quarantined
        .push((name.to_string_lossy().into_owned(), reason.to_owned()));
    Ok(())
}

fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Best effort: the reason is also logged and reported, so a failure here only warns.
fn write_reason(corrupt: &Path, target: &OsString, reason: &str) {
    let mut name = target.clone();
    name.push(".reason");
    let path = corrupt.join(name);
    let result =
        private_file(&path).and_then(|mut file| file.write_all(format!("{reason}\n").as_bytes()));
    if let Err(e) = result {
        tracing::warn!(file = %path.display(), error = %e, "cannot write quarantine reason");
    }
}

pub(crate) fn sync(dir: &Path) -> Result<(), SpoolError> {
    fsio::sync_dir(dir).map_err(|e| SpoolError::io(dir, e))
}
