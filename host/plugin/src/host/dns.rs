//! `postern:policy/dns`: look-ups through the host's resolver, only for
//! plugins granted the "dns" capability. Names are checked for length before
//! they reach the resolver.

use std::net::IpAddr;

use crate::bindings::postern::policy::dns::{DnsError, Host, Mx};
use crate::capability::{DnsAnswer, DnsFailure, DnsQuery};
use crate::state::PluginState;

type Answer<T> = wasmtime::Result<Result<T, DnsError>>;

fn to_wit(f: DnsFailure) -> DnsError {
    match f {
        DnsFailure::NxDomain => DnsError::NxDomain,
        DnsFailure::NoRecords => DnsError::NoRecords,
        DnsFailure::Temporary(m) => DnsError::Temporary(m),
        DnsFailure::Invalid(m) => DnsError::Invalid(m),
    }
}

impl PluginState {
    async fn dns(&mut self, query: DnsQuery) -> Result<DnsAnswer, DnsError> {
        if !self.meta.grants.dns {
            tracing::warn!(
                target: "postern::plugin",
                plugin = %self.meta.name,
                session = %self.session_id,
                "dns look-up denied: capability \"dns\" not granted"
            );
            return Err(DnsError::Denied);
        }
        if let DnsQuery::A(n) | DnsQuery::Aaaa(n) | DnsQuery::Mx(n) | DnsQuery::Txt(n) = &query
            && (n.is_empty() || n.len() > 253 + 1)
        {
            return Err(DnsError::Invalid(format!("bad name length {}", n.len())));
        }
        self.services.dns.lookup(query).await.map_err(to_wit)
    }
}

fn addrs(a: DnsAnswer) -> Vec<String> {
    match a {
        DnsAnswer::Addrs(v) => v.iter().map(IpAddr::to_string).collect(),
        _ => Vec::new(),
    }
}

impl Host for PluginState {
    async fn lookup_a(&mut self, name: String) -> Answer<Vec<String>> {
        Ok(self.dns(DnsQuery::A(name)).await.map(addrs))
    }

    async fn lookup_aaaa(&mut self, name: String) -> Answer<Vec<String>> {
        Ok(self.dns(DnsQuery::Aaaa(name)).await.map(addrs))
    }

    async fn lookup_mx(&mut self, name: String) -> Answer<Vec<Mx>> {
        Ok(self.dns(DnsQuery::Mx(name)).await.map(|a| match a {
            DnsAnswer::Mx(v) => v
                .into_iter()
                .map(|(preference, exchange)| Mx {
                    preference,
                    exchange,
                })
                .collect(),
            _ => Vec::new(),
        }))
    }

    async fn lookup_txt(&mut self, name: String) -> Answer<Vec<String>> {
        Ok(self.dns(DnsQuery::Txt(name)).await.map(|a| match a {
            DnsAnswer::Txt(v) => v,
            _ => Vec::new(),
        }))
    }

    async fn lookup_ptr(&mut self, ip: String) -> Answer<Vec<String>> {
        let Ok(addr) = ip.trim().parse::<IpAddr>() else {
            return Ok(Err(DnsError::Invalid(format!(
                "{ip:?} is not an IP address"
            ))));
        };
        Ok(self.dns(DnsQuery::Ptr(addr)).await.map(|a| match a {
            DnsAnswer::Names(v) => v,
            _ => Vec::new(),
        }))
    }
}
