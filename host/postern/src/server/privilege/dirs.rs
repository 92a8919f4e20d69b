//! The directories postern writes after switching users: the data dir, the
//! spool, the compiled-plugin cache and the Maildir root. As root, before the
//! switch, `prepare` creates the missing ones (and their missing parents)
//! owned by the account, and refuses, naming the path, any existing one (or,
//! inside the spool and cache, any file; inside the Maildir root, any
//! directory) that the account does not own: postern never changes the owner
//! of what it did not create. `adopt_spool` hands the account what opening the
//! spool as root just created. Input: paths from the validated configuration
//! (trusted); symbolic links are never followed. No RFC.

use std::fs::{DirBuilder, Metadata};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, lchown};
use std::path::{Path, PathBuf};

use super::PrivilegeError;
use crate::config::{Config, RunAs};

/// How much of a directory must belong to the account.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Depth {
    /// The directory itself (the data dir may hold the operator's own files).
    Top,
    /// It and every directory below (Maildirs: files are written by name
    /// into directories, never rewritten).
    Dirs,
    /// Everything below (spool segments and cached code are reopened).
    All,
}

struct Managed {
    role: &'static str,
    path: PathBuf,
    depth: Depth,
}

fn managed(config: &Config) -> Vec<Managed> {
    let mut v = vec![
        Managed {
            role: "data dir",
            path: config.data_dir.clone(),
            depth: Depth::Top,
        },
        Managed {
            role: "spool",
            path: config.spool.dir.clone(),
            depth: Depth::All,
        },
    ];
    if let Some(cache) = &config.runtime.cache_dir {
        v.push(Managed {
            role: "plugin cache",
            path: cache.clone(),
            depth: Depth::All,
        });
    }
    v.push(Managed {
        role: "Maildir root",
        path: config.delivery.maildir_root.clone(),
        depth: Depth::Dirs,
    });
    v
}

/// As root, before the switch: every managed directory exists and belongs to
/// `r` (created here when missing), or an error names what does not.
pub fn prepare(config: &Config, r: &RunAs) -> Result<(), PrivilegeError> {
    for m in managed(config) {
        create_owned(&m, r)?;
        walk(&m.path, m.depth, &mut |path, meta| {
            if meta.uid() != r.uid {
                return Err(not_owned(&m, r, path, meta));
            }
            if meta.is_dir() && meta.mode() & 0o700 != 0o700 {
                return Err(PrivilegeError::Dir(format!(
                    "{} {}: mode {:o} lets its owner {} not read, write or enter it",
                    m.role,
                    path.display(),
                    meta.mode() & 0o7777,
                    r.user
                )));
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// After opening the spool as root (its lock, a new segment, recovery's
/// quarantine): what that created belongs to root; hand it to `r`. Everything
/// else in the spool was checked by `prepare` to be `r`'s already.
pub fn adopt_spool(config: &Config, r: &RunAs) -> Result<(), PrivilegeError> {
    walk(&config.spool.dir, Depth::All, &mut |path, meta| {
        if meta.uid() != r.uid || meta.gid() != r.gid {
            lchown(path, Some(r.uid), Some(r.gid)).map_err(|e| {
                PrivilegeError::Dir(format!(
                    "spool {}: cannot hand it to user {}: {e}",
                    path.display(),
                    r.user
                ))
            })?;
        }
        Ok(())
    })
}

/// Create `m.path` and its missing parents, each owned by `r` (mode 0750).
fn create_owned(m: &Managed, r: &RunAs) -> Result<(), PrivilegeError> {
    let mut missing = Vec::new();
    let mut at = m.path.as_path();
    while std::fs::symlink_metadata(at).is_err() {
        missing.push(at.to_path_buf());
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => break,
        }
    }
    for dir in missing.iter().rev() {
        let failed = |what: &str, e: std::io::Error| {
            PrivilegeError::Dir(format!("{} {}: cannot {what}: {e}", m.role, dir.display()))
        };
        match DirBuilder::new().mode(0o750).create(dir) {
            Ok(()) => {}
            // Created meanwhile (another managed dir's parent): checked below.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(failed("create it", e)),
        }
        lchown(dir, Some(r.uid), Some(r.gid))
            .map_err(|e| failed(&format!("hand it to user {}", r.user), e))?;
    }
    Ok(())
}

fn not_owned(m: &Managed, r: &RunAs, path: &Path, meta: &Metadata) -> PrivilegeError {
    PrivilegeError::Dir(format!(
        "{role} {path}: owned by uid {owner}, but postern switches to user {user} (uid {uid}) \
         and must write there; postern changes the owner only of what it creates: \
         `chown -R {user}:{group} {root}`",
        role = m.role,
        path = path.display(),
        owner = meta.uid(),
        user = r.user,
        uid = r.uid,
        group = r.group,
        root = m.path.display(),
    ))
}

/// Call `f` on `root` and, as `depth` says, what is below it; symbolic
/// links are reported, never followed.
fn walk(
    root: &Path,
    depth: Depth,
    f: &mut dyn FnMut(&Path, &Metadata) -> Result<(), PrivilegeError>,
) -> Result<(), PrivilegeError> {
    let io = |path: &Path, e: std::io::Error| {
        PrivilegeError::Dir(format!("{}: cannot inspect: {e}", path.display()))
    };
    let meta = std::fs::symlink_metadata(root).map_err(|e| io(root, e))?;
    f(root, &meta)?;
    if !meta.is_dir() || depth == Depth::Top {
        return Ok(());
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let path = entry.path();
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&path, e)),
            };
            if meta.is_dir() {
                f(&path, &meta)?;
                stack.push(path);
            } else if depth == Depth::All {
                f(&path, &meta)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_as_me() -> RunAs {
        RunAs {
            user: "me".into(),
            uid: nix::unistd::geteuid().as_raw(),
            group: "me".into(),
            gid: nix::unistd::getegid().as_raw(),
            at: "t.toml:1".into(),
        }
    }

    fn config(dir: &Path) -> Config {
        let text = format!(
            "[server]\nhostname = \"h\"\nlisten = [\"127.0.0.1:1\"]\nlocal_domains = [\"t\"]\ndata_dir = {:?}\n",
            dir.join("data").display().to_string()
        );
        Config::parse(
            &dir.join("p.toml"),
            &text,
            &crate::config::Overrides::default(),
        )
        .unwrap()
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("postern-dirs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A fresh temporary directory (`tag` in its name) and a config using it,
    /// prepared for this process's own account.
    fn prepared(tag: &str) -> (PathBuf, Config) {
        let d = tempdir(tag);
        let c = config(&d);
        prepare(&c, &run_as_me()).unwrap();
        (d, c)
    }

    #[test]
    fn creates_every_managed_dir() {
        let (d, c) = prepared("create");
        for p in [
            &c.data_dir,
            &c.spool.dir,
            c.runtime.cache_dir.as_ref().unwrap(),
            &c.delivery.maildir_root,
        ] {
            let m = std::fs::metadata(p).unwrap();
            assert!(m.is_dir(), "{}", p.display());
            assert_eq!(m.mode() & 0o777, 0o750, "{}", p.display());
        }
        // Again: nothing to create, everything owned.
        prepare(&c, &run_as_me()).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn refuses_what_the_account_does_not_own() {
        let (d, c) = prepared("refuse");
        std::fs::write(c.spool.dir.join("lock"), b"").unwrap();
        let other = RunAs {
            uid: run_as_me().uid + 4242,
            user: "postern".into(),
            group: "postern".into(),
            ..run_as_me()
        };
        let e = prepare(&c, &other).unwrap_err().to_string();
        assert!(e.contains("data dir"), "{e}");
        assert!(e.contains("switches to user postern"), "{e}");
        assert!(
            e.contains(&format!(
                "chown -R postern:postern {}",
                c.data_dir.display()
            )),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn walk_depths() {
        let d = tempdir("walk");
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        std::fs::write(d.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/", d.join("a/link")).unwrap();
        let seen = |depth| {
            let mut v = Vec::new();
            walk(&d, depth, &mut |p, _| {
                v.push(p.strip_prefix(&d).unwrap().display().to_string());
                Ok(())
            })
            .unwrap();
            v.sort();
            v
        };
        assert_eq!(seen(Depth::Top), [""]);
        assert_eq!(seen(Depth::Dirs), ["", "a", "a/b"]);
        assert_eq!(seen(Depth::All), ["", "a", "a/b", "a/b/f", "a/link"]);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
