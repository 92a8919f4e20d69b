//! The switch itself: supplementary groups, then group, then user (the only
//! order in which each step still has the privilege it needs), each checked,
//! then "no new privileges", then proof that it held: real, effective and
//! saved ids of every thread, no capability left, and setuid(0) refused.
//! glibc applies set*id calls to every thread of the process, so switching
//! inside the running tokio runtime is sound; the per-thread check proves it.
//! Input: the account from the configuration (trusted). POSIX setgroups,
//! setresgid, setresuid; Linux prctl(PR_SET_NO_NEW_PRIVS) and /proc.

use std::ffi::CString;

use nix::unistd::{Gid, Uid};

use super::PrivilegeError;
use crate::config::RunAs;

/// Switch the whole process to `r` for good.
pub fn switch(r: &RunAs) -> Result<(), PrivilegeError> {
    let call = |step: &'static str| {
        move |source: nix::Error| PrivilegeError::Call {
            user: r.user.clone(),
            step,
            source,
        }
    };
    let (uid, gid) = (Uid::from_raw(r.uid), Gid::from_raw(r.gid));
    let name = CString::new(r.user.as_str()).map_err(|_| PrivilegeError::NotDropped {
        user: r.user.clone(),
        what: "the user name contains NUL".into(),
    })?;
    // The user's supplementary groups (as /etc/group and NSS list them) plus
    // the configured group; no others (root's are dropped).
    let mut groups = nix::unistd::getgrouplist(&name, gid).map_err(call("getgrouplist"))?;
    groups.sort_by_key(|g| g.as_raw());
    groups.dedup();
    nix::unistd::setgroups(&groups).map_err(call("setgroups"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(call("setgid"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(call("setuid"))?;
    nix::sys::prctl::set_no_new_privs().map_err(call("prctl(PR_SET_NO_NEW_PRIVS)"))?;
    verify(r, &groups)
}

fn verify(r: &RunAs, groups: &[Gid]) -> Result<(), PrivilegeError> {
    let failed = |what: String| PrivilegeError::NotDropped {
        user: r.user.clone(),
        what,
    };
    let ids = nix::unistd::getresuid().map_err(|e| failed(format!("getresuid: {e}")))?;
    let gids = nix::unistd::getresgid().map_err(|e| failed(format!("getresgid: {e}")))?;
    let want_u = Uid::from_raw(r.uid);
    let want_g = Gid::from_raw(r.gid);
    if (ids.real, ids.effective, ids.saved) != (want_u, want_u, want_u) {
        return Err(failed(format!(
            "uids are {}/{}/{} (real/effective/saved)",
            ids.real, ids.effective, ids.saved
        )));
    }
    if (gids.real, gids.effective, gids.saved) != (want_g, want_g, want_g) {
        return Err(failed(format!(
            "gids are {}/{}/{} (real/effective/saved)",
            gids.real, gids.effective, gids.saved
        )));
    }
    let mut now = nix::unistd::getgroups().map_err(|e| failed(format!("getgroups: {e}")))?;
    now.sort_by_key(|g| g.as_raw());
    now.dedup();
    if now != groups {
        return Err(failed(format!(
            "supplementary groups are {now:?}, not {groups:?}"
        )));
    }
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(failed("setuid(0) succeeded: root can be regained".into()));
    }
    if nix::unistd::setgid(Gid::from_raw(0)).is_ok() {
        return Err(failed("setgid(0) succeeded".into()));
    }
    every_thread(r.uid, r.gid).map_err(failed)
}

/// Every thread's ids are the account's and no capability is left (read from
/// /proc/self/task/*/status: the threads tokio, the spool and others started
/// before the switch included). Without /proc (a chroot) only the calling
/// thread's ids were checked, and setuid(0) refused: said in the log.
fn every_thread(uid: u32, gid: u32) -> Result<(), String> {
    let tasks = match std::fs::read_dir("/proc/self/task") {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("cannot check every thread's ids without /proc/self/task: {e}");
            return Ok(());
        }
    };
    let mut seen = 0;
    for task in tasks.flatten() {
        let path = task.path().join("status");
        let Ok(status) = std::fs::read_to_string(&path) else {
            continue; // the thread ended meanwhile
        };
        seen += 1;
        for line in status.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let fields: Vec<&str> = value.split_whitespace().collect();
            let bad = match key {
                "Uid" => fields.iter().any(|f| *f != uid.to_string()),
                "Gid" => fields.iter().any(|f| *f != gid.to_string()),
                "CapPrm" | "CapEff" | "CapAmb" => {
                    fields.iter().any(|f| !f.trim_start_matches('0').is_empty())
                }
                _ => false,
            };
            if bad {
                return Err(format!("{}: {line}", path.display()));
            }
        }
    }
    if seen == 0 {
        return Err("no thread status readable in /proc/self/task".into());
    }
    Ok(())
}
