//! Least privilege: whether a command that was started as root switches to
//! the configured account (`[server] user` / `group`), and the refusal to
//! serve mail as root without one (unless `allow_root = true`). `serve` binds
//! its sockets, opens its spool and reads its certificates first, then
//! switches (`switch`); `check` and the offline `queue` commands switch too,
//! so that everything they write in the data dir belongs to that account.
//! Input: the validated configuration and the process's own credentials
//! (trusted). No RFC; POSIX credentials, Linux /proc for the proof.

mod dirs;
mod switch;

pub use dirs::{adopt_spool, prepare};
pub use switch::switch;

use std::path::PathBuf;

use nix::unistd::{getegid, geteuid};

use crate::config::{Config, RunAs};

/// What to do about the process's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Keep the credentials postern was started with.
    Keep,
    /// Root now; switch to this account once the privileged work is done.
    Switch(RunAs),
}

impl Plan {
    pub fn run_as(&self) -> Option<&RunAs> {
        match self {
            Plan::Keep => None,
            Plan::Switch(r) => Some(r),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "{config}: refusing to serve as root: set [server] user = \"postern\" (an \
         unprivileged account postern switches to once its ports are bound), or \
         allow_root = true to serve as root anyway (test set-ups only)",
        config = .config.display()
    )]
    RootRefused { config: PathBuf },
    #[error(
        "{at}: server.user = {user:?}: switching to it needs root, but postern runs as uid \
         {uid} (start it as root, or as {user} itself)"
    )]
    NeedsRoot { at: String, user: String, uid: u32 },
    #[error(
        "{at}: server.group = {group:?} (gid {gid}): postern already runs as user {user} but \
         with gid {egid}, and only root can change it"
    )]
    GroupMismatch {
        at: String,
        user: String,
        group: String,
        gid: u32,
        egid: u32,
    },
    #[error("cannot switch to user {user}: {step} failed: {source}")]
    Call {
        user: String,
        step: &'static str,
        source: nix::Error,
    },
    #[error("privilege drop to user {user} did not hold: {what}")]
    NotDropped { user: String, what: String },
    #[error("{0}")]
    Dir(String),
}

/// `postern serve`: refuse root without an account to switch to.
pub fn decide(config: &Config) -> Result<Plan, PrivilegeError> {
    let (euid, egid) = (geteuid(), getegid());
    match &config.run_as {
        Some(r) if euid.is_root() => Ok(Plan::Switch(r.clone())),
        Some(r) if euid.as_raw() == r.uid && egid.as_raw() == r.gid => Ok(Plan::Keep),
        Some(r) if euid.as_raw() == r.uid => Err(PrivilegeError::GroupMismatch {
            at: r.at.clone(),
            user: r.user.clone(),
            group: r.group.clone(),
            gid: r.gid,
            egid: egid.as_raw(),
        }),
        Some(r) => Err(PrivilegeError::NeedsRoot {
            at: r.at.clone(),
            user: r.user.clone(),
            uid: euid.as_raw(),
        }),
        None if euid.is_root() && !config.allow_root => Err(PrivilegeError::RootRefused {
            config: config.path.clone(),
        }),
        None => Ok(Plan::Keep),
    }
}

/// `check` and the offline `queue` commands: switch when root and an account
/// is configured (so that the plugin cache and spool files they write belong
/// to it); otherwise run as started. They never refuse: an operator may
/// check, as root, a file that a non-root service manager runs.
pub fn for_tool(config: &Config) -> Plan {
    match &config.run_as {
        Some(r) if geteuid().is_root() => Plan::Switch(r.clone()),
        _ => Plan::Keep,
    }
}

/// After the switch: the configuration file must stay readable, since a
/// reload reads it again as this account; certificates that are not only
/// get a warning (a reload re-reads them; restarting picks them up as root).
pub fn check_readable(config: &Config, r: &RunAs) -> Result<(), PrivilegeError> {
    if let Err(e) = std::fs::File::open(&config.path) {
        return Err(PrivilegeError::Dir(format!(
            "{path}: not readable by user {user} after the switch ({e}); `postern reload` \
             reads it again as that user: e.g. `chgrp {group} {path}; chmod g+r {path}`",
            path = config.path.display(),
            user = r.user,
            group = r.group,
        )));
    }
    if let Some(t) = &config.tls {
        for (file, at) in [(&t.cert, &t.cert_at), (&t.key, &t.key_at)] {
            if let Err(e) = std::fs::File::open(file) {
                tracing::warn!(
                    file = %file.display(),
                    "{at}: not readable by user {} ({e}): a reload cannot re-read it \
                     (make it readable to group {}, or restart after renewals)",
                    r.user,
                    r.group
                );
            }
        }
    }
    Ok(())
}
