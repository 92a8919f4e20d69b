//! Syntax of HELO names and domains: RFC 5321 §4.1.2 (`Domain`) and §4.1.3
//! (address literals). Trusts nothing: every input is client-supplied text.
//! Also the reply-text sanitizer, so hostile text never breaks a reply.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A syntactically valid HELO/EHLO argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeloName {
    /// A domain, lower-cased, without a trailing dot.
    Domain(String),
    /// `[192.0.2.1]` or `[IPv6:2001:db8::1]` (IPv4-mapped IPv6 folded to IPv4).
    Ip(IpAddr),
    /// A general address literal `[tag:content]` (RFC 5321 §4.1.3).
    General,
}

/// Parse a HELO argument; `Err` names what is wrong.
pub fn parse_helo(name: &str) -> Result<HeloName, &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > 255 {
        return Err("name longer than 255 octets");
    }
    if name.starts_with('[') {
        return parse_literal(name);
    }
    let domain = name.strip_suffix('.').unwrap_or(name);
    if is_domain(domain) {
        Ok(HeloName::Domain(domain.to_ascii_lowercase()))
    } else {
        Err("not a domain name")
    }
}

/// An address literal, brackets included.
fn parse_literal(name: &str) -> Result<HeloName, &'static str> {
    let inner = name
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or("unterminated address literal")?;
    if inner.len() >= 5 && inner[..5].eq_ignore_ascii_case("IPv6:") {
        let ip: Ipv6Addr = inner[5..].parse().map_err(|_| "bad IPv6 literal")?;
        return Ok(HeloName::Ip(IpAddr::V6(ip).to_canonical()));
    }
    if let Some((tag, content)) = inner.split_once(':') {
        // General-address-literal = Standardized-tag ":" 1*dcontent
        let tag_ok = is_ldh_label(tag, false) && !tag.ends_with('-');
        let content_ok = !content.is_empty()
            && content
                .bytes()
                .all(|b| (33..=90).contains(&b) || (94..=126).contains(&b));
        return if tag_ok && content_ok {
            Ok(HeloName::General)
        } else {
            Err("bad general address literal")
        };
    }
    let ip: Ipv4Addr = inner.parse().map_err(|_| "bad IPv4 literal")?;
    Ok(HeloName::Ip(IpAddr::V4(ip)))
}

/// `sub-domain *("." sub-domain)`, labels of letters, digits and inner
/// hyphens (underscores tolerated, as many MTAs do for Windows host names),
/// at most 63 octets each and 253 in all; the last label is not all digits
/// (so a bare "192.0.2.1" is not a domain: it needs brackets).
pub fn is_domain(domain: &str) -> bool {
    if domain.is_empty() || domain.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if !labels.iter().all(|l| is_ldh_label(l, true)) {
        return false;
    }
    let last = labels[labels.len() - 1];
    !last.bytes().all(|b| b.is_ascii_digit())
}

fn is_ldh_label(label: &str, allow_underscore: bool) -> bool {
    let b = label.as_bytes();
    if b.is_empty() || b.len() > 63 {
        return false;
    }
    let inner_ok =
        |c: u8| c.is_ascii_alphanumeric() || c == b'-' || (allow_underscore && c == b'_');
    b[0].is_ascii_alphanumeric() && b[b.len() - 1] != b'-' && b.iter().all(|&c| inner_ok(c))
}

/// An IP address as text ("192.0.2.1", "2001:db8::1", "fe80::1%eth0"),
/// IPv4-mapped IPv6 folded to IPv4.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.split('%').next().unwrap_or("");
    text.trim()
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The address literal form of `ip`: "[192.0.2.1]" or "[IPv6:2001:db8::1]".
pub fn literal(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    }
}

/// Text safe for an SMTP reply: printable ASCII only (anything else becomes
/// '?'), cut to `max` bytes.
pub fn sanitize(text: &str, max: usize) -> String {
    let clean = |c: char| if (' '..='~').contains(&c) { c } else { '?' };
    if text.chars().count() <= max {
        return text.chars().map(clean).collect();
    }
    let mut out: String = text
        .chars()
        .take(max.saturating_sub(3))
        .map(clean)
        .collect();
    out.push_str("...");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helo_names() {
        let dom = |s: &str| Ok(HeloName::Domain(s.to_string()));
        let table: &[(&str, Result<HeloName, &str>)] = &[
            ("mail.example.org", dom("mail.example.org")),
            ("Mail.Example.ORG.", dom("mail.example.org")),
            ("localhost", dom("localhost")),
            ("my_pc.example", dom("my_pc.example")),
            ("a-b.c-d", dom("a-b.c-d")),
            ("xn--bcher-kva.example", dom("xn--bcher-kva.example")),
            (
                "[192.0.2.1]",
                Ok(HeloName::Ip("192.0.2.1".parse().unwrap())),
            ),
            (
                "[IPv6:2001:db8::1]",
                Ok(HeloName::Ip("2001:db8::1".parse().unwrap())),
            ),
            (
                "[ipv6:::ffff:192.0.2.1]",
                Ok(HeloName::Ip("192.0.2.1".parse().unwrap())),
            ),
            ("[x-tag:some-content]", Ok(HeloName::General)),
            ("", Err("empty name")),
            ("192.0.2.1", Err("not a domain name")),
            ("bad..name", Err("not a domain name")),
            ("-lead.example", Err("not a domain name")),
            ("trail-.example", Err("not a domain name")),
            ("sp ace.example", Err("not a domain name")),
            ("b\u{fc}cher.example", Err("not a domain name")),
            (".", Err("not a domain name")),
            ("[192.0.2.256]", Err("bad IPv4 literal")),
            ("[192.0.2.1", Err("unterminated address literal")),
            ("[IPv6:zz::1]", Err("bad IPv6 literal")),
            ("[tag:]", Err("bad general address literal")),
            ("[-tag:x]", Err("bad general address literal")),
        ];
        for (input, want) in table {
            assert_eq!(&parse_helo(input), want, "input {input:?}");
        }
        let long_label = format!("{}.example", "a".repeat(64));
        assert!(parse_helo(&long_label).is_err());
        let long_name = vec!["abcdefghi"; 30].join(".");
        assert!(parse_helo(&long_name).is_err());
    }

    #[test]
    fn ips_and_literals() {
        assert_eq!(parse_ip("192.0.2.7"), Some("192.0.2.7".parse().unwrap()));
        assert_eq!(
            parse_ip("::ffff:192.0.2.7"),
            Some("192.0.2.7".parse().unwrap())
        );
        assert_eq!(parse_ip("fe80::1%eth0"), Some("fe80::1".parse().unwrap()));
        assert_eq!(parse_ip("nonsense"), None);
        assert_eq!(literal("192.0.2.1".parse().unwrap()), "[192.0.2.1]");
        assert_eq!(
            literal("2001:db8::1".parse().unwrap()),
            "[IPv6:2001:db8::1]"
        );
    }

    #[test]
    fn sanitizing() {
        assert_eq!(sanitize("plain", 100), "plain");
        assert_eq!(sanitize("a\r\nb\u{e9}", 100), "a??b?");
        assert_eq!(sanitize(&"x".repeat(50), 10), "xxxxxxx...");
        assert_eq!(sanitize(&"x".repeat(10), 10), "x".repeat(10));
    }
}
