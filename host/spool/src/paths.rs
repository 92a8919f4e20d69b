//! The spool's directory layout. File names are built only from segment numbers
//! (and, for the version-1 import, validated [`QueueId`]s), so no caller-supplied
//! text ever becomes a path component.
//!
//! ```text
//! <dir>/lock             flock'd by the process that has the spool open
//! <dir>/log/<seq>.seg    the log: segment files, <seq> 16 hex digits, in order
//! <dir>/corrupt/         quarantined files, each with a `<name>.reason` note
//! <dir>/spill/           unnamed spill files of messages being received (see `spill`)
//! <dir>/queue/, tmp/     a version-1 spool, imported into the log by `open`
//! ```

use std::path::{Path, PathBuf};

use crate::id::QueueId;

/// Suffix of segment files.
pub(crate) const SEGMENT_SUFFIX: &str = ".seg";

/// Absolute locations of everything the spool keeps.
#[derive(Clone, Debug)]
pub(crate) struct SpoolPaths {
    pub root: PathBuf,
    pub log: PathBuf,
    pub corrupt: PathBuf,
    pub lock: PathBuf,
    /// Spill files of messages being received (`O_TMPFILE`, see `spill`).
    pub spill: PathBuf,
    /// Version-1 directories (read once, by the import).
    pub legacy_queue: PathBuf,
    pub legacy_tmp: PathBuf,
}

impl SpoolPaths {
    pub fn new(root: &Path) -> SpoolPaths {
        SpoolPaths {
            root: root.to_path_buf(),
            log: root.join("log"),
            corrupt: root.join("corrupt"),
            lock: root.join("lock"),
            spill: root.join("spill"),
            legacy_queue: root.join("queue"),
            legacy_tmp: root.join("tmp"),
        }
    }

    pub fn segment(&self, seq: u64) -> PathBuf {
        self.log.join(segment_name(seq))
    }

    pub fn legacy_message(&self, id: &QueueId) -> PathBuf {
        self.legacy_queue.join(id.as_str())
    }

    pub fn legacy_state(&self, id: &QueueId) -> PathBuf {
        self.legacy_queue.join(format!("{id}.state"))
    }
}

/// `<seq>.seg` with 16 hex digits, so names sort in log order.
pub(crate) fn segment_name(seq: u64) -> String {
    format!("{seq:016x}{SEGMENT_SUFFIX}")
}

/// The sequence number a segment file name stands for, if it is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort() {
        assert_eq!(segment_name(1), "0000000000000001.seg");
        assert_eq!(parse_segment_name(&segment_name(0xabc)), Some(0xabc));
        assert!(segment_name(9) < segment_name(10));
        for bad in ["1.seg", "000000000000000g.seg", "0000000000000001", "x"] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }
}
