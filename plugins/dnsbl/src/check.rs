//! The connect-stage DNSBL check: each zone in order, through the KV cache,
//! then the host's resolver; the first zone whose listing rejects or defers
//! decides. NXDOMAIN means "not listed" (RFC 5782 §2.1); a failed look-up
//! follows the zone's `on_dns_error` (default: pass, logged). Trusts the
//! host's `client_ip`, DNS answers only as classified by `query`, and the
//! KV cache it wrote itself.

use std::net::{IpAddr, Ipv4Addr};

use postern_sdk::{DnsError, KvError, Level, Session, Verdict, defer, net, pass, reject};

use crate::config::{Action, OnDnsError, Settings, Zone};
use crate::query::{Answer, classify, query_name};

/// DNS, KV and log as the check needs them.
pub trait Host {
    fn lookup_a(&self, name: &str) -> Result<Vec<String>, DnsError>;
    fn kv_get(&self, key: &str) -> Result<Option<String>, KvError>;
    fn kv_set(&self, key: &str, value: &str, ttl_ms: u64) -> Result<(), KvError>;
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]);
}

/// What one zone says about the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Listed(Ipv4Addr),
    Clean,
    /// The look-up failed (time-out, SERVFAIL, error code, denied).
    Failed(String),
}

/// Decide on a new connection.
pub fn on_connect(settings: &Settings, session: &Session, host: &impl Host) -> Verdict {
    let Some(ip) = parse_ip(&session.client_ip()) else {
        host.log(
            Level::Warn,
            "client address not understood; DNSBL check skipped",
            &[("client_ip", &session.client_ip())],
        );
        return pass();
    };
    if settings.skip_networks.iter().any(|n| n.contains(&ip)) {
        return pass();
    }
    let ip_text = ip.to_string();
    for zone in &settings.zones {
        let outcome = cached(settings, zone, &ip_text, host)
            .unwrap_or_else(|| look_up(settings, zone, ip, &ip_text, host));
        match outcome {
            Outcome::Clean => {}
            Outcome::Listed(code) => {
                let code = code.to_string();
                host.log(
                    Level::Info,
                    "client listed",
                    &[
                        ("zone", &zone.zone),
                        ("client_ip", &ip_text),
                        ("code", &code),
                    ],
                );
                match zone.action {
                    Action::Reject => return reject(554, "5.7.1", listed_text(zone, &ip_text)),
                    Action::Defer => return defer(450, "4.7.1", listed_text(zone, &ip_text)),
                    Action::Log => {}
                }
            }
            Outcome::Failed(why) => {
                host.log(
                    Level::Warn,
                    "DNSBL look-up failed",
                    &[
                        ("zone", &zone.zone),
                        ("client_ip", &ip_text),
                        ("error", &why),
                    ],
                );
                if zone.on_dns_error == OnDnsError::Defer {
                    return defer(451, "4.4.3", failed_text(zone));
                }
            }
        }
    }
    pass()
}

/// The client address, IPv4-mapped IPv6 folded to IPv4, zone id dropped.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    net::parse_client(text)
}

/// The reply for a listed client: the zone's `reply` with `{ip}` and
/// `{zone}` replaced, or the standard text.
pub fn listed_text(zone: &Zone, ip: &str) -> String {
    let text = match &zone.reply {
        Some(r) => r.replace("{ip}", ip).replace("{zone}", &zone.zone),
        None => format!(
            "Service unavailable; client [{ip}] blocked using {}",
            zone.zone
        ),
    };
    cut(text)
}

/// The reply when a zone's look-up failed and `on_dns_error = "defer"`.
pub fn failed_text(zone: &Zone) -> String {
    cut(format!(
        "Temporary DNSBL failure ({}), try again later",
        zone.zone
    ))
}

/// Replies are at most 400 bytes; everything here is ASCII.
fn cut(mut text: String) -> String {
    if text.len() > 400 {
        text.truncate(397);
        text.push_str("...");
    }
    text
}

fn cache_key(zone: &Zone, ip: &str) -> String {
    format!("dnsbl:{}:{ip}", zone.zone)
}

/// The cached outcome, if any. KV trouble only skips the cache.
fn cached(settings: &Settings, zone: &Zone, ip: &str, host: &impl Host) -> Option<Outcome> {
    settings.cache_ttl_ms?;
    match host.kv_get(&cache_key(zone, ip)) {
        Ok(Some(v)) if v == "clean" => Some(Outcome::Clean),
        Ok(Some(v)) => v
            .strip_prefix("listed:")
            .and_then(|c| c.parse().ok())
            .map(Outcome::Listed),
        Ok(None) => None,
        Err(e) => {
            host.log(
                Level::Debug,
                "DNSBL cache unavailable",
                &[("error", &format!("{e:?}"))],
            );
            None
        }
    }
}

/// Ask the DNS and cache the definite answers.
fn look_up(
    settings: &Settings,
    zone: &Zone,
    ip: IpAddr,
    ip_text: &str,
    host: &impl Host,
) -> Outcome {
    let outcome = match host.lookup_a(&query_name(ip, &zone.zone)) {
        Ok(addrs) => match classify(&addrs, zone.matches.as_deref()) {
            Answer::Listed(code) => Outcome::Listed(code),
            Answer::Clean => Outcome::Clean,
            Answer::ErrorCode(code) => {
                return Outcome::Failed(format!("DNSBL answered with error code {code}"));
            }
            Answer::Unexpected(a) => {
                host.log(
                    Level::Warn,
                    "DNSBL answer outside 127.0.0.0/8 ignored (is the resolver rewriting NXDOMAIN?)",
                    &[("zone", &zone.zone), ("answer", &a)],
                );
                return Outcome::Clean;
            }
        },
        Err(DnsError::NxDomain | DnsError::NoRecords) => Outcome::Clean,
        Err(DnsError::Temporary(why)) => return Outcome::Failed(why),
        Err(DnsError::Invalid(why)) => return Outcome::Failed(format!("invalid query: {why}")),
        Err(DnsError::Denied) => {
            host.log(
                Level::Error,
                "dnsbl needs the \"dns\" capability: add capabilities = [\"dns\", \"kv\"] to its [[plugin]] entry",
                &[],
            );
            return Outcome::Failed("dns capability not granted".into());
        }
    };
    if let Some(ttl) = settings.cache_ttl_ms {
        let value = match &outcome {
            Outcome::Listed(code) => format!("listed:{code}"),
            _ => "clean".to_string(),
        };
        if let Err(e) = host.kv_set(&cache_key(zone, ip_text), &value, ttl) {
            host.log(
                Level::Debug,
                "DNSBL cache not written",
                &[("error", &format!("{e:?}"))],
            );
        }
    }
    outcome
}

#[cfg(test)]
mod tests;
