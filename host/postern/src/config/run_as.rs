//! `[server] user` and `group`: the unprivileged account `postern serve`
//! switches to once its sockets are bound (see `crate::server::privilege`). Input:
//! account names from the operator's file, looked up in the system's user and
//! group databases (getpwnam_r / getgrnam_r through `nix`, so NSS sources
//! count too); an unknown name is a configuration error at its line. POSIX
//! only; no RFC.

use nix::unistd::{Gid, Group, User};
use toml::Spanned;

use super::{ConfigError, Ctx};

/// The account to run as: names as configured, ids as looked up.
#[derive(Clone)]
pub struct RunAs {
    pub user: String,
    pub uid: u32,
    /// `group`, or the user's primary group.
    pub group: String,
    pub gid: u32,
    /// "file:line" of `user`, for errors found when switching.
    pub at: String,
}

/// Equal when the account is: where the key stands in the file does not
/// matter (a reload compares them).
impl PartialEq for RunAs {
    fn eq(&self, other: &Self) -> bool {
        (&self.user, self.uid, &self.group, self.gid)
            == (&other.user, other.uid, &other.group, other.gid)
    }
}

impl Eq for RunAs {}

/// As a reload names it: "user postern (uid 999), group postern (gid 999)".
impl std::fmt::Debug for RunAs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "user {} (uid {}), group {} (gid {})",
            self.user, self.uid, self.group, self.gid
        )
    }
}

pub(super) fn build(
    cx: &Ctx,
    user: Option<&Spanned<String>>,
    group: Option<&Spanned<String>>,
) -> Result<Option<RunAs>, ConfigError> {
    let Some(user) = user else {
        if let Some(g) = group {
            return Err(cx.at(
                g,
                "server.group needs server.user (the account whose group it replaces)",
            ));
        }
        return Ok(None);
    };
    let name = user.get_ref().trim();
    let account = match User::from_name(name) {
        Ok(Some(u)) => u,
        Ok(None) => {
            return Err(cx.at(
                user,
                format!(
                    "server.user: there is no user {name:?} on this system \
                     (create it, e.g. `adduser --system --group {name}`)"
                ),
            ));
        }
        Err(e) => {
            return Err(cx.at(
                user,
                format!("server.user: cannot look up user {name:?}: {e}"),
            ));
        }
    };
    if account.uid.is_root() {
        return Err(cx.at(
            user,
            format!(
                "server.user: {name:?} is uid 0, which keeps every privilege: name an \
                 unprivileged account (or remove `user` and set allow_root = true)"
            ),
        ));
    }
    let (group_name, gid) = match group {
        Some(g) => {
            let gname = g.get_ref().trim();
            match Group::from_name(gname) {
                Ok(Some(found)) => (found.name, found.gid),
                Ok(None) => {
                    return Err(cx.at(
                        g,
                        format!("server.group: there is no group {gname:?} on this system"),
                    ));
                }
                Err(e) => {
                    return Err(cx.at(
                        g,
                        format!("server.group: cannot look up group {gname:?}: {e}"),
                    ));
                }
            }
        }
        None => (primary_group_name(account.gid), account.gid),
    };
    if gid.as_raw() == 0 {
        let span = group.unwrap_or(user);
        return Err(cx.at(
            span,
            format!(
                "server.group: group {group_name:?} is gid 0 (root's group): name an \
                 unprivileged group"
            ),
        ));
    }
    Ok(Some(RunAs {
        user: account.name,
        uid: account.uid.as_raw(),
        group: group_name,
        gid: gid.as_raw(),
        at: cx.location(user),
    }))
}

/// The name of a primary group, or its number when it has no entry.
fn primary_group_name(gid: Gid) -> String {
    match Group::from_gid(gid) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        crate::config::parse_minimal(extra)
    }

    /// An unprivileged account every Debian system has.
    fn nobody() -> Option<nix::unistd::User> {
        nix::unistd::User::from_name("nobody").ok().flatten()
    }

    #[test]
    fn none_by_default() {
        let c = parse("").unwrap();
        assert!(c.run_as.is_none());
        assert!(!c.allow_root);
        assert!(parse("allow_root = true\n").unwrap().allow_root);
    }

    #[test]
    fn user_with_its_primary_group() {
        let Some(nobody) = nobody() else {
            eprintln!("no user nobody here: skipped");
            return;
        };
        let r = parse("user = \"nobody\"\n").unwrap().run_as.unwrap();
        assert_eq!((r.uid, r.gid), (nobody.uid.as_raw(), nobody.gid.as_raw()));
        assert_eq!(r.user, "nobody");
        assert_eq!(r.at, "/etc/postern/p.toml:5");
    }

    #[test]
    fn explicit_group() {
        let Some(nobody) = nobody() else {
            return;
        };
        let Some(group) = nix::unistd::Group::from_gid(nobody.gid).ok().flatten() else {
            return;
        };
        let r = parse(&format!("user = \"nobody\"\ngroup = \"{}\"\n", group.name))
            .unwrap()
            .run_as
            .unwrap();
        assert_eq!(r.group, group.name);
        assert_eq!(r.gid, nobody.gid.as_raw());
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (
                "user = \"no-such-user-postern-test\"\n",
                "p.toml:5",
                "there is no user \"no-such-user-postern-test\"",
            ),
            ("user = \"root\"\n", "p.toml:5", "is uid 0"),
            (
                "group = \"nogroup\"\n",
                "p.toml:5",
                "server.group needs server.user",
            ),
            (
                "user = \"nobody\"\ngroup = \"no-such-group-postern-test\"\n",
                "p.toml:6",
                "there is no group \"no-such-group-postern-test\"",
            ),
            (
                "user = \"nobody\"\ngroup = \"root\"\n",
                "p.toml:6",
                "is gid 0",
            ),
        ];
        for (extra, at, msg) in cases {
            if extra.contains("nobody") && nobody().is_none() {
                continue;
            }
            let e = parse(extra).unwrap_err().to_string();
            assert!(e.contains(at), "{e:?} should contain {at:?}");
            assert!(e.contains(msg), "{e:?} should contain {msg:?}");
        }
    }
}
