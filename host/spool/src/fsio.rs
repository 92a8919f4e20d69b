//! Thin, blocking POSIX file-system helpers with the exact durability semantics the
//! spool needs: private modes (0700 dirs, 0600 files), exclusive create, vectored
//! writes, in-kernel copies between files (`copy_file_range`), rename that never
//! replaces (`renameat2(RENAME_NOREPLACE)`), directory fsync, the spool lock, and
//! reopening an open file independently. Trusts its callers for paths (built from
//! segment numbers and validated ids).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Create `path` as a 0700 directory if it is missing. Returns whether it was created.
pub fn create_private_dir(path: &Path) -> io::Result<bool> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if path.is_dir() {
                Ok(false)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a directory",
                ))
            }
        }
        Err(e) => Err(e),
    }
}

/// Open a directory so it can be fsynced.
pub fn open_dir(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// fsync a directory: makes the entries created, renamed or removed in it durable.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    open_dir(path)?.sync_all()
}

/// Create a new file with mode 0600, failing if the name already exists.
pub fn create_new_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Write every byte of `bufs` in order with `writev`, retrying short writes.
pub fn write_all_vectored(file: &mut File, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match file.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut bufs, written),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Copy up to `len` bytes of `src` from `src_offset` to `dst` at its file offset
/// (advancing it) inside the kernel (`copy_file_range`: no user-space buffer, and a
/// reflink where the file system shares extents). Returns the bytes copied (0 at the
/// end of `src`). `Unsupported` when the kernel or file system cannot do it for these
/// files: the caller then copies through a buffer.
pub fn copy_range(src: &File, src_offset: u64, dst: &File, len: u64) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    let mut off_in = libc::loff_t::try_from(src_offset)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // At most 1 GiB per call (the kernel caps a call near 2 GiB anyway).
    let want = usize::try_from(len.min(1 << 30)).unwrap_or(1 << 30);
    loop {
        // SAFETY: both descriptors are open for the duration of the call; `off_in` is
        // a valid loff_t the kernel reads and updates; a null `off_out` makes the
        // kernel use (and advance) `dst`'s own file offset.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                std::ptr::null_mut(),
                want,
                0,
            )
        };
        if n >= 0 {
            return Ok(n as u64);
        }
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ENOSYS | libc::EXDEV | libc::EOPNOTSUPP | libc::EINVAL) => {
                Err(io::Error::new(io::ErrorKind::Unsupported, err))
            }
            _ => Err(err),
        };
    }
}

/// Rename `from` to `to`, failing with `AlreadyExists` instead of replacing `to`.
/// Falls back to link + unlink on file systems without `RENAME_NOREPLACE`.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let from_c = c_path(from)?;
    let to_c = c_path(to)?;
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call;
    // renameat2 reads nothing else from our memory.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        _ => Err(err),
    }
}

fn c_path(path: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Open (creating if needed, 0600) and lock `path` for this process's lifetime:
/// exclusively, or `shared` (readers only). `Ok(None)` means another open file
/// description holds a conflicting lock.
pub fn lock_file(path: &Path, shared: bool) -> io::Result<Option<File>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    let locked = if shared {
        file.try_lock_shared()
    } else {
        file.try_lock()
    };
    match locked {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// A new open file description of the file behind `file` (its own offset), even if
/// the file was unlinked meanwhile: opened through `/proc/self/fd`, falling back to
/// `path` where `/proc` is not mounted.
pub fn reopen(file: &File, path: &Path) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    match File::open(format!("/proc/self/fd/{}", file.as_raw_fd())) {
        Ok(f) => Ok(f),
        Err(_) => File::open(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, b"new").unwrap();
        std::fs::write(&b, b"old").unwrap();
        let err = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&b).unwrap(), b"old");
        std::fs::remove_file(&b).unwrap();
        rename_noreplace(&a, &b).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"new");
        assert!(!a.exists());
    }

    #[test]
    fn vectored_write_writes_everything_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = create_new_private(&path).unwrap();
        let big = vec![b'x'; 3 << 20];
        let parts: Vec<&[u8]> = vec![b"", b"head\n", b"", &big, b"tail"];
        let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        write_all_vectored(&mut file, &mut slices).unwrap();
        let written = std::fs::read(&path).unwrap();
        assert_eq!(written.len(), 5 + big.len() + 4);
        assert!(written.starts_with(b"head\nxxx") && written.ends_with(b"xtail"));
        assert!(create_new_private(&path).is_err());
    }

    #[test]
    fn copy_range_appends_at_the_destination_offset() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        std::fs::write(&src_path, b"0123456789").unwrap();
        let src = File::open(&src_path).unwrap();
        let dst_path = dir.path().join("dst");
        let mut dst = create_new_private(&dst_path).unwrap();
        dst.write_all(b"head:").unwrap();
        let mut copied = 0;
        while copied < 6 {
            match copy_range(&src, 2 + copied, &dst, 6 - copied) {
                Ok(n) => copied += n,
                Err(e) if e.kind() == io::ErrorKind::Unsupported => return,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(copy_range(&src, 10, &dst, 5).unwrap(), 0);
        dst.write_all(b":tail").unwrap();
        assert_eq!(std::fs::read(&dst_path).unwrap(), b"head:234567:tail");
    }

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = lock_file(&path, false).unwrap();
        assert!(held.is_some());
        assert!(lock_file(&path, false).unwrap().is_none());
        assert!(lock_file(&path, true).unwrap().is_none());
        drop(held);
        let reader = lock_file(&path, true).unwrap();
        assert!(reader.is_some());
        assert!(lock_file(&path, true).unwrap().is_some());
        assert!(lock_file(&path, false).unwrap().is_none());
        drop(reader);
        assert!(lock_file(&path, false).unwrap().is_some());
    }

    #[test]
    fn reopen_survives_unlink_and_has_its_own_offset() {
        use std::io::{Read, Seek, SeekFrom};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let mut first = File::open(&path).unwrap();
        first.seek(SeekFrom::Start(5)).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut second = reopen(&first, &path).unwrap();
        let mut all = String::new();
        second.read_to_string(&mut all).unwrap();
        assert_eq!(all, "0123456789");
        let mut rest = String::new();
        first.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "56789");
    }
}
