//! The spool's directory layout. Trusts only validated [`QueueId`]s for file names,
//! so no caller-supplied text ever becomes a path component.
//!
//! ```text
//! <dir>/lock          flock'd by the process that has the spool open
//! <dir>/tmp/<id>      being written; never acknowledged; deleted at open
//! <dir>/queue/<id>    committed messages (the durable queue)
//! <dir>/queue/<id>.*  sidecars owned by the queue manager (e.g. the `.state` journal)
//! <dir>/corrupt/      quarantined files, each with a `<name>.reason` note
//! ```

use std::path::{Path, PathBuf};

use crate::id::QueueId;

/// Absolute locations of everything the spool keeps.
#[derive(Clone, Debug)]
pub(crate) struct SpoolPaths {
    pub root: PathBuf,
    pub tmp: PathBuf,
    pub queue: PathBuf,
    pub corrupt: PathBuf,
    pub lock: PathBuf,
}

impl SpoolPaths {
    pub fn new(root: &Path) -> SpoolPaths {
        SpoolPaths {
            root: root.to_path_buf(),
            tmp: root.join("tmp"),
            queue: root.join("queue"),
            corrupt: root.join("corrupt"),
            lock: root.join("lock"),
        }
    }

    pub fn temp_file(&self, id: &QueueId) -> PathBuf {
        self.tmp.join(id.as_str())
    }

    pub fn queue_file(&self, id: &QueueId) -> PathBuf {
        self.queue.join(id.as_str())
    }

    /// The delivery-state journal beside a message (`queue/<id>.state`).
    pub fn state_file(&self, id: &QueueId) -> PathBuf {
        self.queue.join(format!("{id}.{STATE_SUFFIX}"))
    }
}

/// Suffix of the queue manager's per-message delivery-state journal.
pub(crate) const STATE_SUFFIX: &str = "state";
