//! Classifies an RCPT TO recipient for the relay decision: a plain local
//! mailbox, a local domain whose local part carries routing characters (an
//! "address trick"), or a remote destination. Input: the recipient as the
//! host parsed it (client-controlled text; only the host's `is_local` flag is
//! trusted, and not for address literals). RFC 5321 §2.3.11 and §4.1.2 (the
//! local part is opaque here: `%`, `!` and quoted `@` must never route),
//! §3.6.1 and Appendix C (source routes, removed by the host), §4.1.3
//! (address literals), §4.5.1 (bare `<Postmaster>`), RFC 2505 §2.1.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use postern_sdk::EnvelopeAddress;

/// A routing character in a local part (RFC 2505 §2.1 lists all three).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trick {
    /// `user@other.example` quoted in the local part: `"user@other"@local`.
    At,
    /// The "percent hack": `user%other.example@local.example`.
    Percent,
    /// A UUCP bang path: `other.example!user@local.example`.
    Bang,
}

impl Trick {
    pub fn name(self) -> &'static str {
        match self {
            Trick::At => "quoted-at",
            Trick::Percent => "percent-hack",
            Trick::Bang => "bang-path",
        }
    }
}

/// How the relay policy sees one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Mail for this server: a local domain (per the host) or a listed
    /// local address literal, with a plain local part.
    Local,
    /// Mail for this server by its domain, but the local part names another
    /// destination (`%`, `!` or `@`).
    LocalTrick(Trick),
    /// Anything else: delivering it means relaying.
    Remote,
}

/// The first routing character found in `local_part` (quotes included).
pub fn trick(local_part: &str) -> Option<Trick> {
    if local_part.contains('@') {
        Some(Trick::At)
    } else if local_part.contains('%') {
        Some(Trick::Percent)
    } else if local_part.contains('!') {
        Some(Trick::Bang)
    } else {
        None
    }
}

/// `Some(Some(ip))` for an IPv4 or IPv6 address literal (`[192.0.2.1]`,
/// `[IPv6:2001:db8::1]`), `Some(None)` for any other bracketed literal
/// (general literals, malformed ones), `None` for a domain name.
pub fn address_literal(domain: &str) -> Option<Option<IpAddr>> {
    let inner = domain.strip_prefix('[')?;
    let Some(inner) = inner.strip_suffix(']') else {
        return Some(None);
    };
    let ip = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner[5..]
            .parse::<Ipv6Addr>()
            .ok()
            .map(|v6| IpAddr::V6(v6).to_canonical()),
        _ => inner.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    };
    Some(ip)
}

/// Parse one `local_literals` entry: "192.0.2.1", "[192.0.2.1]",
/// "2001:db8::1" or "[IPv6:2001:db8::1]".
pub fn parse_local_literal(entry: &str) -> Result<IpAddr, String> {
    let t = entry.trim();
    let parsed = if t.starts_with('[') {
        address_literal(t).flatten()
    } else {
        t.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
    };
    parsed.ok_or_else(|| {
        format!(
            "{entry:?} is not an IP address literal (examples: \"192.0.2.1\", \"[192.0.2.1]\", \"[IPv6:2001:db8::1]\")"
        )
    })
}

/// Classify `rcpt`. `local_literals` are the address literals this server
/// answers for; every other literal is remote whatever the host says.
pub fn classify(rcpt: &EnvelopeAddress, local_literals: &[IpAddr]) -> Class {
    let at = rcpt.address.rfind('@');
    let local_part = match (&rcpt.local_part, at) {
        (lp, _) if !lp.is_empty() => lp.as_str(),
        (_, Some(i)) => &rcpt.address[..i],
        (_, None) => rcpt.address.as_str(),
    };
    let domain = match (&rcpt.domain, at) {
        (d, _) if !d.is_empty() => d.as_str(),
        (_, Some(i)) => &rcpt.address[i + 1..],
        (_, None) => "",
    };
    let local_destination = match address_literal(domain) {
        Some(Some(ip)) => local_literals.contains(&ip),
        Some(None) => false,
        None => rcpt.is_local,
    };
    if !local_destination {
        return Class::Remote;
    }
    match trick(local_part) {
        Some(t) => Class::LocalTrick(t),
        None => Class::Local,
    }
}
