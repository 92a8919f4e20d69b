//! The capabilities Postern lends to plugins and uses itself, as plain
//! traits and types with no plugin runtime behind them: the delivery side
//! resolves MX hosts through the same [`DnsBackend`] plugins call, without
//! linking wasmtime, and asks its delivery-side plugins about the
//! [`delivery`] facts the runtime hands them. (The key-value store's trait is in `postern-kv` with
//! its stores; AV scanning and mail authentication stay in the runtime,
//! whose message handle they take.) Input: names chosen by untrusted
//! plugins or remote peers, so implementations bound sizes and never panic.

pub mod delivery;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

/// A boxed future borrowing its backend (the same alias as `postern-kv`'s).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsQuery {
    A(String),
    Aaaa(String),
    Mx(String),
    Txt(String),
    Ptr(IpAddr),
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsAnswer {
    Addrs(Vec<IpAddr>),
    Mx(Vec<(u16, String)>),
    Txt(Vec<String>),
    Names(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
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

/// A DNSSEC-aware look-up for DANE (RFC 7672): the record types delivery
/// needs to know the security status of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnssecQuery {
    Mx(String),
    A(String),
    Aaaa(String),
    /// `_25._tcp.mx.example.org` and the like.
    Tlsa(String),
}

/// One TLSA record (RFC 6698 §2.1): usage, selector, matching type, data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsaRecord {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

/// An answer and whether the resolver vouched for it. `secure` is the AD bit
/// of a response from the operator's validating resolver (RFC 4035 §3.2.3,
/// RFC 6840 §5.8): true only when the whole RRset (or the denial of its
/// existence) validated. A bogus answer is not an answer: the validating
/// resolver says SERVFAIL, which is `DnsFailure::Temporary`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnssecAnswer {
    pub secure: bool,
    /// Records of the asked type (none: the name or the type does not exist).
    pub count: usize,
    /// The TLSA records, for a TLSA query.
    pub tlsa: Vec<TlsaRecord>,
}

/// A DNS resolver the host lends to plugins (and uses itself).
pub trait DnsBackend: Send + Sync {
    fn lookup(&self, query: DnsQuery) -> BoxFuture<'_, Result<DnsAnswer, DnsFailure>>;

    /// A look-up that reports DNSSEC validation (for DANE). Backends without
    /// a validating resolver behind them fail it, so DANE is never assumed.
    fn lookup_dnssec(
        &self,
        _query: DnssecQuery,
    ) -> BoxFuture<'_, Result<DnssecAnswer, DnsFailure>> {
        Box::pin(async {
            Err(DnsFailure::Temporary(
                "this resolver cannot report DNSSEC validation".into(),
            ))
        })
    }
}

/// Used when no resolver is configured: every look-up is a temporary failure.
pub struct NoDns;

impl DnsBackend for NoDns {
    fn lookup(&self, _query: DnsQuery) -> BoxFuture<'_, Result<DnsAnswer, DnsFailure>> {
        Box::pin(async { Err(DnsFailure::Temporary("no resolver configured".into())) })
    }
}
