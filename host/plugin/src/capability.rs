//! Host capabilities offered to plugins (DNS, key-value store) as pluggable
//! backends. Input: keys, names and values chosen by untrusted plugins, so
//! every backend bounds sizes and never panics.

use std::net::IpAddr;

pub use postern_kv::{BoxFuture, KvBackend, KvFailure, MemoryKv};

/// What a plugin was granted in the configuration (`capabilities = [...]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    pub dns: bool,
    pub kv: bool,
    pub mail_auth: bool,
}

impl Grants {
    /// Parse capability names; unknown names are an error naming them.
    pub fn parse(names: &[String]) -> Result<Grants, String> {
        let mut g = Grants::default();
        for n in names {
            match n.as_str() {
                "dns" => g.dns = true,
                "kv" => g.kv = true,
                "mail-auth" => g.mail_auth = true,
                "log" | "clock" => {}
                other => {
                    return Err(format!(
                        "unknown capability {other:?} (known: \"dns\", \"kv\", \"mail-auth\", \"log\", \"clock\")"
                    ));
                }
            }
        }
        Ok(g)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsQuery {
    A(String),
    Aaaa(String),
    Mx(String),
    Txt(String),
    Ptr(IpAddr),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsAnswer {
    Addrs(Vec<IpAddr>),
    Mx(Vec<(u16, String)>),
    Txt(Vec<String>),
    Names(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsFailure {
    #[error("name does not exist")]
    NxDomain,
    #[error("no records of that type")]
    NoRecords,
    #[error("temporary DNS failure: {0}")]
    Temporary(String),
    #[error("invalid query: {0}")]
    Invalid(String),
}

/// A DNS resolver the host lends to plugins (and uses itself).
pub trait DnsBackend: Send + Sync {
    fn lookup(&self, query: DnsQuery) -> BoxFuture<'_, Result<DnsAnswer, DnsFailure>>;
}

/// Used when no resolver is configured: every look-up is a temporary failure.
pub struct NoDns;

impl DnsBackend for NoDns {
    fn lookup(&self, _query: DnsQuery) -> BoxFuture<'_, Result<DnsAnswer, DnsFailure>> {
        Box::pin(async { Err(DnsFailure::Temporary("no resolver configured".into())) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse() {
        assert_eq!(
            Grants::parse(&["dns".into(), "kv".into()]).unwrap(),
            Grants {
                dns: true,
                kv: true,
                mail_auth: false
            }
        );
        assert!(Grants::parse(&["mail-auth".into()]).unwrap().mail_auth);
        assert!(Grants::parse(&["network".into()]).is_err());
    }
}
