//! Local delivery into a Maildir (the qmail/Dovecot convention): the message is
//! written to `tmp/<unique>` (created exclusively, 0600), fsync'ed, renamed into
//! `new/<unique>`, and `new/` is fsync'ed — only then is the recipient delivered.
//! Directories created on the way have their parents fsync'ed too.
//! `Return-Path:` (RFC 5321 §4.4) and `Delivered-To:` are prepended, and CRLF line
//! ends become LF as Maildir readers expect. Trusts its caller for the mailbox path
//! (built by `mailbox`, which confines it to the root) and the spooled message.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use postern_protocol::EnhancedCode;

use crate::mailbox::LocalMailbox;
use crate::outcome::Diagnostic;

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A unique Maildir file name: `<secs>.M<usec>P<pid>Q<seq>R<random>.<host>`, with
/// `/` and `:` in the host name escaped as `\057` and `\072` (Maildir convention).
pub fn unique_name(host: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let host: String = host
        .chars()
        .map(|c| match c {
            '/' => "\\057".to_string(),
            ':' => "\\072".to_string(),
            c if c.is_control() => "_".to_string(),
            c => c.to_string(),
        })
        .collect();
    format!(
        "{}.M{}P{}Q{}R{:016x}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed),
        rand::random::<u64>(),
        host
    )
}

/// Copies CRLF-terminated text as LF-terminated text, across chunk boundaries.
#[derive(Default)]
pub struct CrlfToLf {
    pending_cr: bool,
}

impl CrlfToLf {
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    out.push(b'\n');
                    continue;
                }
                out.push(b'\r');
            }
            if b == b'\r' {
                self.pending_cr = true;
            } else {
                out.push(b);
            }
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.push(b'\r');
        }
    }
}

/// Create `dir` and any missing ancestors, one level at a time (0700); every
/// directory created here, outermost first. One that appears meanwhile (another
/// delivery made it) is still listed, so its parent is synced here too.
fn create_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.is_dir() {
        missing.push(at.to_path_buf());
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => break,
        }
    }
    missing.reverse();
    for d in &missing {
        match DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(missing)
}

/// Make sure `tmp/`, `new/` and `cur/` exist. The parent of every directory
/// created on the way (`<root>/`, `<root>/<domain>/`, the mailbox, its
/// subdirectories) is fsync'ed, up to the root's parent, so the new entries
/// survive a crash before the message does.
fn prepare(mailbox: &Path) -> io::Result<()> {
    let mut created = Vec::new();
    for sub in ["tmp", "new", "cur"] {
        created.extend(create_dirs(&mailbox.join(sub))?);
    }
    let mut parents: Vec<&Path> = created.iter().filter_map(|d| d.parent()).collect();
    // Innermost first: a directory's own entries before its entry in its parent.
    parents.sort_by(|a, b| {
        let depth = |p: &Path| p.components().count();
        depth(b).cmp(&depth(a)).then_with(|| a.cmp(b))
    });
    parents.dedup();
    for parent in parents {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Deliver `message` (CRLF text) to `mailbox`; the path of the file in `new/`.
/// Blocking file I/O: run it on the blocking pool.
pub fn deliver(
    mailbox: &LocalMailbox,
    hostname: &str,
    return_path: &str,
    message: &mut dyn Read,
) -> io::Result<PathBuf> {
    prepare(&mailbox.dir)?;
    let name = unique_name(hostname);
    let tmp = mailbox.dir.join("tmp").join(&name);
    let new = mailbox.dir.join("new").join(&name);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let result = write_and_publish(file, &tmp, &new, mailbox, return_path, message);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| new)
}

fn write_and_publish(
    file: File,
    tmp: &Path,
    new: &Path,
    mailbox: &LocalMailbox,
    return_path: &str,
    message: &mut dyn Read,
) -> io::Result<()> {
    let clean = |s: &str| s.replace(['\r', '\n'], "");
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    write!(
        out,
        "Return-Path: <{}>\nDelivered-To: {}\n",
        clean(return_path),
        clean(&mailbox.address)
    )?;
    let mut convert = CrlfToLf::default();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut converted = Vec::with_capacity(64 * 1024);
    loop {
        let n = match message.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        converted.clear();
        convert.feed(&chunk[..n], &mut converted);
        out.write_all(&converted)?;
    }
    converted.clear();
    convert.finish(&mut converted);
    out.write_all(&converted)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(tmp, new)?;
    File::open(mailbox.dir.join("new"))?.sync_all()
}

/// The diagnostic for a failed local delivery: always temporary (a full disk or a
/// permission problem is the operator's to fix; the message waits).
pub fn failure(mailbox: &LocalMailbox, e: &io::Error) -> Diagnostic {
    let status = match e.raw_os_error() {
        Some(libc::ENOSPC) => EnhancedCode::new(4, 3, 1),
        Some(libc::EDQUOT) => EnhancedCode::new(4, 2, 2),
        _ => EnhancedCode::new(4, 3, 0),
    };
    Diagnostic::local(
        status,
        format!("cannot deliver to maildir {}: {e}", mailbox.dir.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_becomes_lf_across_chunks() {
        let mut c = CrlfToLf::default();
        let mut out = Vec::new();
        for chunk in [&b"a\r"[..], b"\nb\rc\r", b"", b"\n\r"] {
            c.feed(chunk, &mut out);
        }
        c.finish(&mut out);
        assert_eq!(out, b"a\nb\rc\n\r");
    }

    #[test]
    fn unique_names_escape_the_host() {
        let a = unique_name("mx/evil:host");
        let b = unique_name("mx/evil:host");
        assert_ne!(a, b);
        assert!(a.ends_with(".mx\\057evil\\072host"), "{a}");
        assert!(!a.contains('/'));
    }

    #[test]
    fn delivers_into_new_with_headers() {
        let dir = tempfile::tempdir().unwrap();
        let mailbox = LocalMailbox {
            dir: dir.path().join("example.test").join("alice"),
            address: "alice@example.test".into(),
        };
        let mut body: &[u8] = b"Subject: hi\r\n\r\nline 1\r\n.line 2\r\n";
        let path = deliver(&mailbox, "mx.test", "bob@x.test", &mut body).unwrap();
        assert_eq!(path.parent().unwrap(), mailbox.dir.join("new"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "Return-Path: <bob@x.test>\nDelivered-To: alice@example.test\nSubject: hi\n\nline 1\n.line 2\n"
        );
        assert_eq!(
            std::fs::read_dir(mailbox.dir.join("tmp")).unwrap().count(),
            0
        );
        assert!(mailbox.dir.join("cur").is_dir());
        let mut again: &[u8] = b"x\r\n";
        let second = deliver(&mailbox, "mx.test", "", &mut again).unwrap();
        assert_ne!(second, path);
        assert!(
            std::fs::read_to_string(second)
                .unwrap()
                .starts_with("Return-Path: <>\n")
        );
    }

    #[test]
    fn missing_ancestors_are_created_outermost_first() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("mail");
        let mailbox = root.join("example.test").join("bob");
        let created = create_dirs(&mailbox.join("new")).unwrap();
        assert_eq!(
            created,
            vec![
                root.clone(),
                root.join("example.test"),
                mailbox.clone(),
                mailbox.join("new")
            ]
        );
        assert!(create_dirs(&mailbox.join("new")).unwrap().is_empty());
        prepare(&mailbox).unwrap();
        for d in [&root, &mailbox, &mailbox.join("tmp"), &mailbox.join("cur")] {
            let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        // A file in the way is an error, not a panic.
        std::fs::write(root.join("file"), b"x").unwrap();
        assert!(create_dirs(&root.join("file").join("x")).is_err());
    }
}
