//! Host capabilities offered to plugins (DNS, key-value store) as pluggable
//! backends (their traits live in `postern-capability` and `postern-kv`, so
//! the host's other crates use them without the runtime), and the grants
//! that decide which plugin may call them. Input: keys, names and values chosen by untrusted plugins, so
//! every backend bounds sizes and never panics.

pub use postern_capability::{DnsAnswer, DnsBackend, DnsFailure, DnsQuery, NoDns};
pub use postern_kv::{BoxFuture, KvBackend, KvFailure, KvFuture, MemoryKv};

/// What a plugin was granted in the configuration (`capabilities = [...]`),
/// and what it was knowingly refused (`"-kv"`: the component imports kv
/// for a feature this configuration does not use, so `check` does not warn).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    pub dns: bool,
    pub kv: bool,
    pub mail_auth: bool,
    pub av_scan: bool,
    declined: [bool; 4],
}

/// The capabilities a grant can name, in `Grants::declined` order.
const GRANTABLE: [&str; 4] = ["dns", "kv", "mail-auth", "av-scan"];

impl Grants {
    /// Parse capability names; unknown names are an error naming them.
    pub fn parse(names: &[String]) -> Result<Grants, String> {
        let mut g = Grants::default();
        for n in names {
            let (declined, name) = match n.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, n.as_str()),
            };
            if !declined && matches!(name, "log" | "clock") {
                continue;
            }
            let Some(i) = GRANTABLE.iter().position(|c| *c == name) else {
                return Err(format!(
                    "unknown capability {n:?} (known: \"dns\", \"kv\", \"mail-auth\", \"av-scan\", \"log\", \"clock\"; \
                     \"-dns\" and the like decline one without a warning)"
                ));
            };
            if declined {
                g.declined[i] = true;
            } else {
                match i {
                    0 => g.dns = true,
                    1 => g.kv = true,
                    2 => g.mail_auth = true,
                    _ => g.av_scan = true,
                }
            }
            if g.declined[i] && g.granted(i) {
                return Err(format!("capability {name:?} both granted and declined"));
            }
        }
        Ok(g)
    }

    fn granted(&self, i: usize) -> bool {
        [self.dns, self.kv, self.mail_auth, self.av_scan][i]
    }

    /// The capabilities a component imports (by its `postern:policy`
    /// import names, e.g. `postern:policy/kv@0.2.0`) without being granted
    /// or knowingly declined them: each of its calls there will answer
    /// `denied`.
    pub fn missing<'a>(&self, imports: impl IntoIterator<Item = &'a str>) -> Vec<&'static str> {
        let mut missing = Vec::new();
        for name in imports {
            let Some(iface) = name
                .strip_prefix("postern:policy/")
                .map(|r| r.split_once('@').map_or(r, |(i, _)| i))
            else {
                continue;
            };
            let Some(i) = GRANTABLE.iter().position(|c| *c == iface) else {
                continue;
            };
            if !self.granted(i) && !self.declined[i] && !missing.contains(&GRANTABLE[i]) {
                missing.push(GRANTABLE[i]);
            }
        }
        missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse() {
        let g = Grants::parse(&["dns".into(), "kv".into(), "log".into()]).unwrap();
        assert!(g.dns && g.kv && !g.mail_auth);
        assert!(Grants::parse(&["mail-auth".into()]).unwrap().mail_auth);
        let kv_only = Grants::parse(&["kv".into()]).unwrap();
        let imports = [
            "postern:policy/log@0.2.0",
            "postern:policy/kv@0.2.0",
            "postern:policy/dns@0.2.0",
            "postern:policy/mail-auth@0.1.0",
            "wasi:cli/environment@0.2.0",
            "postern:policy/dns",
        ];
        assert_eq!(kv_only.missing(imports), ["dns", "mail-auth"]);
        let declined = Grants::parse(&["kv".into(), "-dns".into()]).unwrap();
        assert!(!declined.dns);
        assert_eq!(declined.missing(imports), ["mail-auth"]);
        let both = Grants::parse(&["dns".into(), "-dns".into()]).unwrap_err();
        assert!(both.contains("both granted and declined"), "{both}");
        assert!(
            Grants::parse(&["-log".into()])
                .unwrap_err()
                .contains("\"-log\"")
        );
        assert!(
            Grants::parse(&["dns".into(), "kv".into(), "mail-auth".into()])
                .unwrap()
                .missing(imports)
                .is_empty()
        );
        assert!(Grants::parse(&["network".into()]).is_err());
    }
}
