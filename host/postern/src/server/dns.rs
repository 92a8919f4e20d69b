//! The host's DNS resolver (hickory-resolver), lent to plugins through the
//! `dns` capability and used by delivery. Nameservers come from `[dns]` (so
//! tests can point at a server on loopback) or `/etc/resolv.conf`. Answers
//! separate "does not exist" (NXDOMAIN / no records) from temporary trouble
//! (time-outs, SERVFAIL), as RFC 5321 §5 and RFC 7505 policies need. Input:
//! names from plugins and messages (untrusted; length-checked).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use postern_capability::{DnssecAnswer, DnssecQuery};
use postern_plugin::{BoxFuture, DnsAnswer, DnsBackend, DnsFailure, DnsQuery};

pub struct HickoryDns {
    resolver: TokioResolver,
    /// Where DNSSEC-aware look-ups go (`dnssec`): the same servers.
    servers: Vec<SocketAddr>,
    timeout: Duration,
}

impl HickoryDns {
    /// A resolver using `nameservers` (UDP with TCP fallback) or, when
    /// empty, the system configuration.
    pub fn new(nameservers: &[SocketAddr], timeout: Duration) -> anyhow::Result<HickoryDns> {
        let servers = if nameservers.is_empty() {
            system_nameservers()
        } else {
            nameservers.to_vec()
        };
        Ok(HickoryDns {
            resolver: tokio_resolver(nameservers, timeout)?,
            servers,
            timeout,
        })
    }
}

/// The system's nameservers (resolv.conf), for DNSSEC-aware look-ups.
fn system_nameservers() -> Vec<SocketAddr> {
    match hickory_resolver::system_conf::read_system_conf() {
        Ok((config, _)) => config
            .name_servers()
            .iter()
            .map(|ns| SocketAddr::new(ns.ip, 53))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The hickory resolver for the `[dns]` settings: `nameservers` (UDP with
/// TCP fallback) or, when empty, the system configuration; the host's
/// time-out. Shared by the `dns` capability, delivery and mail-auth.
pub fn tokio_resolver(
    nameservers: &[SocketAddr],
    timeout: Duration,
) -> anyhow::Result<TokioResolver> {
    let mut builder = if nameservers.is_empty() {
        TokioResolver::builder_tokio()
            .map_err(|e| anyhow::anyhow!("cannot read the system DNS configuration: {e}"))?
    } else {
        let mut config = ResolverConfig::default();
        for ns in nameservers {
            let mut udp = ConnectionConfig::new(ProtocolConfig::Udp);
            udp.port = ns.port();
            let mut tcp = ConnectionConfig::new(ProtocolConfig::Tcp);
            tcp.port = ns.port();
            config.add_name_server(NameServerConfig::new(ns.ip(), true, vec![udp, tcp]));
        }
        TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.timeout = timeout;
    opts.attempts = 2;
    opts.ndots = 0;
    opts.cache_size = 4096;
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the DNS resolver: {e}"))
}

impl HickoryDns {
    pub async fn query(&self, q: DnsQuery) -> Result<DnsAnswer, DnsFailure> {
        let (name, rtype) = match &q {
            DnsQuery::A(n) => (fqdn(n)?, RecordType::A),
            DnsQuery::Aaaa(n) => (fqdn(n)?, RecordType::AAAA),
            DnsQuery::Mx(n) => (fqdn(n)?, RecordType::MX),
            DnsQuery::Txt(n) => (fqdn(n)?, RecordType::TXT),
            DnsQuery::Ptr(ip) => (reverse_name(*ip), RecordType::PTR),
        };
        let lookup = self
            .resolver
            .lookup(name.as_str(), rtype)
            .await
            .map_err(classify)?;
        let records = lookup.answers().iter().map(|r| &r.data);
        let answer = match rtype {
            RecordType::A | RecordType::AAAA => DnsAnswer::Addrs(
                records
                    .filter_map(|d| match d {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                        _ => None,
                    })
                    .collect(),
            ),
            RecordType::MX => {
                let mut v: Vec<(u16, String)> = records
                    .filter_map(|d| match d {
                        RData::MX(mx) => Some((mx.preference, name_text(&mx.exchange.to_ascii()))),
                        _ => None,
                    })
                    .collect();
                v.sort();
                DnsAnswer::Mx(v)
            }
            RecordType::TXT => DnsAnswer::Txt(
                records
                    .filter_map(|d| match d {
                        RData::TXT(t) => Some(
                            t.txt_data
                                .iter()
                                .map(|s| String::from_utf8_lossy(s).into_owned())
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => DnsAnswer::Names(
                records
                    .filter_map(|d| match d {
                        RData::PTR(p) => Some(name_text(&p.0.to_ascii())),
                        _ => None,
                    })
                    .collect(),
            ),
        };
        let empty = match &answer {
            DnsAnswer::Addrs(v) => v.is_empty(),
            DnsAnswer::Mx(v) => v.is_empty(),
            DnsAnswer::Txt(v) => v.is_empty(),
            DnsAnswer::Names(v) => v.is_empty(),
        };
        if empty {
            return Err(DnsFailure::NoRecords);
        }
        Ok(answer)
    }
}

impl DnsBackend for HickoryDns {
    fn lookup(&self, query: DnsQuery) -> BoxFuture<'_, Result<DnsAnswer, DnsFailure>> {
        Box::pin(self.query(query))
    }

    fn lookup_dnssec(&self, query: DnssecQuery) -> BoxFuture<'_, Result<DnssecAnswer, DnsFailure>> {
        Box::pin(crate::server::dnssec::lookup(
            &self.servers,
            self.timeout,
            query,
        ))
    }
}

fn classify(e: NetError) -> DnsFailure {
    if e.is_nx_domain() {
        DnsFailure::NxDomain
    } else if e.is_no_records_found() {
        DnsFailure::NoRecords
    } else {
        DnsFailure::Temporary(e.to_string())
    }
}

/// "example.org" → "example.org." (absolute: no search domains).
fn fqdn(name: &str) -> Result<String, DnsFailure> {
    let n = name.trim();
    if n.is_empty() || n.len() > 254 || n.contains(char::is_whitespace) || n.starts_with('.') {
        return Err(DnsFailure::Invalid(format!(
            "{name:?} is not a domain name"
        )));
    }
    Ok(if n.ends_with('.') {
        n.to_string()
    } else {
        format!("{n}.")
    })
}

/// Name text without the trailing root dot ("." stays "." for null MX).
fn name_text(s: &str) -> String {
    if s == "." {
        return ".".into();
    }
    s.trim_end_matches('.').to_string()
}

/// in-addr.arpa / ip6.arpa name for a PTR query (RFC 1035 §3.5, RFC 3596 §2.5).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return reverse_name(IpAddr::V4(v4));
            }
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa.");
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("192.0.2.7".parse().unwrap()),
            "7.2.0.192.in-addr.arpa."
        );
        assert_eq!(
            reverse_name("::ffff:192.0.2.7".parse().unwrap()),
            "7.2.0.192.in-addr.arpa."
        );
        assert_eq!(
            reverse_name("2001:db8::567:89ab".parse().unwrap()),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
        );
    }

    #[test]
    fn names() {
        assert_eq!(fqdn("example.org").unwrap(), "example.org.");
        assert_eq!(fqdn("example.org.").unwrap(), "example.org.");
        assert!(fqdn("").is_err());
        assert!(fqdn("a b").is_err());
        assert_eq!(name_text("mx.example.org."), "mx.example.org");
        assert_eq!(name_text("."), ".");
    }
}
