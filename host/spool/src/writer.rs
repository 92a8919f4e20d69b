//! The file half of a commit (RFC 5321 §6.1): write `tmp/<id>` with one vectored write
//! sequence, `fdatasync` it, then rename it into `queue/` without ever replacing an
//! existing message. Trusts the caller for the id (already validated) and the parts.

use std::fs::File;
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};

use crate::error::SpoolError;
use crate::fsio;

/// Removes its file on drop unless disarmed: a commit that fails or is abandoned
/// leaves nothing behind (open's recovery catches what a crash leaves).
pub(crate) struct RemoveOnDrop {
    path: Option<PathBuf>,
}

impl RemoveOnDrop {
    pub fn new(path: PathBuf) -> RemoveOnDrop {
        RemoveOnDrop { path: Some(path) }
    }

    /// Keep the file.
    pub fn disarm(&mut self) {
        self.path = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Err(e) = std::fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove abandoned spool file");
        }
    }
}

/// Create `path` (0600, must not exist) and write `parts` in order. The file is not
/// yet synced; the guard removes it unless disarmed. Runs on the caller's thread.
pub(crate) fn write_temp(
    path: &Path,
    id: &str,
    parts: &[&[u8]],
) -> Result<(File, RemoveOnDrop), SpoolError> {
    let mut file = fsio::create_new_private(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            SpoolError::IdInUse(id.to_owned())
        } else {
            SpoolError::io(path, e)
        }
    })?;
    // Created by us, so from now on ours to remove on failure.
    let guard = RemoveOnDrop::new(path.to_path_buf());
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|part| !part.is_empty())
        .map(|part| IoSlice::new(part))
        .collect();
    fsio::write_all_vectored(&mut file, &mut slices).map_err(|e| SpoolError::io(path, e))?;
    Ok((file, guard))
}

/// `fdatasync` the temp file, close it, and rename it to `queue_path` (never replacing).
/// Blocking: runs on the blocking pool so concurrent commits' syncs overlap.
pub(crate) fn sync_and_publish(
    file: File,
    temp_path: &Path,
    queue_path: &Path,
    id: &str,
) -> Result<(), SpoolError> {
    file.sync_data().map_err(|e| SpoolError::io(temp_path, e))?;
    drop(file);
    fsio::rename_noreplace(temp_path, queue_path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            SpoolError::IdInUse(id.to_owned())
        } else {
            SpoolError::io(queue_path, e)
        }
    })
}
