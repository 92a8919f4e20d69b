//! Spill files: where the SMTP session puts DATA content too large to keep in
//! memory until the message is committed (`Spool::commit_file` copies it into the
//! log). A spill file is never a message of the queue: it is created unnamed in
//! `<dir>/spill/` (`O_TMPFILE`, mode 0600), so it disappears when its last handle is
//! closed, whatever happens to the session (message refused, connection lost, the
//! process killed). Where the file system has no `O_TMPFILE`, it is created under a
//! random name and unlinked at once; a crash between the two leaves a stale file,
//! which the next exclusive `open` of the spool removes. Trusts nothing it finds in
//! `spill/`: everything there is stale once the spool is locked.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::fsio;

/// Create `dir` (0700) if missing and remove whatever an earlier process left in it.
/// Returns how many stale files were removed. Called with the spool's lock held.
pub(crate) fn prepare(dir: &Path) -> io::Result<usize> {
    fsio::create_private_dir(dir)?;
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove a stale spill file")
            }
        }
    }
    Ok(removed)
}

/// A new, empty spill file in `dir`, open for reading and writing, with no name
/// left in the directory.
pub(crate) fn create(dir: &Path) -> io::Result<File> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
    {
        Ok(file) => Ok(file),
        Err(e) if tmpfile_unsupported(&e) => create_named(dir),
        Err(e) => Err(e),
    }
}

/// `O_TMPFILE` refused by this kernel (`EISDIR`: it predates the flag) or file
/// system (`EOPNOTSUPP`).
fn tmpfile_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
    )
}

/// Fallback: an exclusive 0600 file under a random name, unlinked right away.
fn create_named(dir: &Path) -> io::Result<File> {
    loop {
        let path = dir.join(format!("{:016x}.spill", rand::random::<u64>()));
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(file = %path.display(), error = %e,
                "cannot unlink a new spill file; the next start removes it");
        }
        return Ok(file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn entries(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn spill_files_are_private_and_leave_no_name() {
        let dir = tempfile::tempdir().unwrap();
        let spill = dir.path().join("spill");
        assert_eq!(prepare(&spill).unwrap(), 0);
        assert_eq!(
            std::fs::metadata(&spill).unwrap().permissions().mode() & 0o777,
            0o700
        );
        for mut file in [create(&spill).unwrap(), create_named(&spill).unwrap()] {
            assert_eq!(entries(&spill), 0);
            assert_eq!(file.metadata().unwrap().mode() & 0o777, 0o600);
            file.write_all(b"spilled").unwrap();
            file.seek(SeekFrom::Start(0)).unwrap();
            let mut back = String::new();
            file.read_to_string(&mut back).unwrap();
            assert_eq!(back, "spilled");
        }
    }

    #[test]
    fn prepare_removes_stale_files() {
        let dir = tempfile::tempdir().unwrap();
        let spill = dir.path().join("spill");
        prepare(&spill).unwrap();
        std::fs::write(spill.join("0123456789abcdef.spill"), b"left by a crash").unwrap();
        std::fs::write(spill.join("other"), b"x").unwrap();
        assert_eq!(prepare(&spill).unwrap(), 2);
        assert_eq!(entries(&spill), 0);
    }
}
