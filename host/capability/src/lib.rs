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
