//! MAIL FROM check: the sender's domain must exist in the DNS and accept
//! mail — an MX, else an A or AAAA record (RFC 5321 §5.1 implicit MX); a
//! null MX (RFC 7505 §3-4) or NXDOMAIN refuses it, temporary DNS trouble
//! defers it (never a 5xx for a 4xx problem). The null sender `<>` always
//! passes so bounces flow (RFC 5321 §4.5.5). Trusts the host's DNS answers
//! and `is_local`; the address itself is hostile.

use postern_sdk::{DnsError, EnvelopeAddress, Level, Mx, Verdict, defer, pass, reject};

/// DNS and logging as the sender check needs them (the host's in the
/// plugin, a fake in tests).
pub trait Resolver {
    fn mx(&self, name: &str) -> Result<Vec<Mx>, DnsError>;
    fn a(&self, name: &str) -> Result<Vec<String>, DnsError>;
    fn aaaa(&self, name: &str) -> Result<Vec<String>, DnsError>;
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]);
}

/// The MAIL FROM part of the configuration, validated.
#[derive(Debug, Clone)]
pub struct SenderPolicy {
    pub check_sender_domain: bool,
    /// Domains never checked: lower-case, no trailing dot.
    pub skip_domains: Vec<String>,
}

pub const NOT_FOUND_TEXT: &str = "Sender address rejected: Domain not found";
pub const NULL_MX_TEXT: &str = "Sender address rejected: domain accepts no mail (null MX)";
pub const TEMP_TEXT: &str = "Sender address rejected: temporary DNS failure";

/// What the DNS says about a sender domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// An MX, A or AAAA record exists.
    Exists,
    /// The domain publishes a null MX (RFC 7505).
    NullMx,
    /// NXDOMAIN, or no MX and no usable address.
    NotFound,
    /// Time-out, SERVFAIL and the like.
    Temporary(String),
    /// The plugin lacks the "dns" capability.
    Denied,
}

/// Decide on the proposed sender.
pub fn check(policy: &SenderPolicy, sender: &EnvelopeAddress, dns: &impl Resolver) -> Verdict {
    if sender.address.is_empty() || !policy.check_sender_domain || sender.is_local {
        return pass();
    }
    let domain = postern_sdk::addr::domain_of(&sender.address);
    if domain.is_empty() || domain.starts_with('[') {
        return pass();
    }
    if policy.skip_domains.contains(&domain) {
        return pass();
    }
    if !domain.is_ascii() {
        // An SMTPUTF8 U-label domain: the host resolver takes A-labels only,
        // and converting needs IDNA tables this plugin does not carry.
        dns.log(
            Level::Debug,
            "sender domain not ASCII; DNS check skipped",
            &[("domain", &domain)],
        );
        return pass();
    }
    match resolve(&domain, dns) {
        Resolution::Exists => pass(),
        Resolution::NullMx => {
            dns.log(
                Level::Info,
                "sender domain publishes a null MX",
                &[("domain", &domain)],
            );
            reject(550, "5.1.8", NULL_MX_TEXT)
        }
        Resolution::NotFound => {
            dns.log(
                Level::Info,
                "sender domain not found",
                &[("domain", &domain)],
            );
            reject(550, "5.1.8", NOT_FOUND_TEXT)
        }
        Resolution::Temporary(why) => {
            dns.log(
                Level::Warn,
                "temporary DNS failure checking the sender domain",
                &[("domain", &domain), ("error", &why)],
            );
            defer(451, "4.4.3", TEMP_TEXT)
        }
        Resolution::Denied => {
            dns.log(
                Level::Error,
                "envelope-check needs the \"dns\" capability to check sender domains: add capabilities = [\"dns\"] to its [[plugin]] entry (or set check_sender_domain = false)",
                &[("domain", &domain)],
            );
            defer(451, "4.4.3", TEMP_TEXT)
        }
    }
}

/// MX first; without MX records fall back to A, then AAAA.
pub fn resolve(domain: &str, dns: &impl Resolver) -> Resolution {
    match dns.mx(domain) {
        Ok(mx) if !mx.is_empty() => {
            let usable = mx.iter().any(|m| !is_null_exchange(&m.exchange));
            return if usable {
                Resolution::Exists
            } else {
                Resolution::NullMx
            };
        }
        Ok(_) | Err(DnsError::NoRecords) => {}
        Err(e) => return failure(e),
    }
    let a = dns.a(domain);
    if let Ok(addrs) = &a
        && usable_addresses(addrs)
    {
        return Resolution::Exists;
    }
    if let Err(DnsError::NxDomain | DnsError::Invalid(_)) = &a {
        return Resolution::NotFound;
    }
    let aaaa = dns.aaaa(domain);
    if let Ok(addrs) = &aaaa
        && usable_addresses(addrs)
    {
        return Resolution::Exists;
    }
    // No usable address in either family: a temporary failure in either one
    // may hide a record, so it wins over "not found".
    for r in [a, aaaa] {
        match r {
            Err(DnsError::Denied) => return Resolution::Denied,
            Err(DnsError::Temporary(why)) => return Resolution::Temporary(why),
            _ => {}
        }
    }
    Resolution::NotFound
}

fn failure(e: DnsError) -> Resolution {
    match e {
        DnsError::NxDomain | DnsError::NoRecords | DnsError::Invalid(_) => Resolution::NotFound,
        DnsError::Temporary(why) => Resolution::Temporary(why),
        DnsError::Denied => Resolution::Denied,
    }
}

/// A null MX exchange is "." (the host's rendering); an empty name is
/// treated the same.
fn is_null_exchange(exchange: &str) -> bool {
    exchange.trim().trim_end_matches('.').is_empty()
}

/// At least one address that parses and is not unspecified (0.0.0.0, ::).
fn usable_addresses(addrs: &[String]) -> bool {
    addrs.iter().any(|a| {
        a.trim()
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| !ip.is_unspecified())
    })
}

#[cfg(test)]
mod tests;
