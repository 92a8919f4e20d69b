//! IP addresses and CIDR ranges for policy plugins: client addresses as the
//! host reports them, and ranges from the operator's configuration, matched
//! against them. Input: configuration entries (validated here, every error
//! names the entry) and the client address text from the host (formatted by
//! the host, so trusted for form). RFC 4632 (CIDR notation), RFC 4291
//! §2.5.5.2 (IPv4-mapped IPv6 addresses are matched as the IPv4 address they
//! carry).
//!
//! Two ways to read a range:
//! - [`parse_range`] (and [`Ranges`]) is strict: host bits must be zero, so
//!   a typo such as `10.1.2.3/8` is refused with a suggestion;
//! - [`parse_network`] is lenient: host bits are cleared (`10.1.2.3/8` is
//!   `10.0.0.0/8`); the caller words its own error.
//!
//! Both read an IPv6 range inside `::ffff:0:0/96` as the IPv4 range it
//! denotes. [`ipnet`] is re-exported so plugins need not depend on it.

pub use ipnet;
pub use ipnet::IpNet;

use std::net::IpAddr;

/// The address a policy should reason about: IPv4-mapped IPv6
/// (`::ffff:192.0.2.1`) becomes the IPv4 address it carries.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Parse a client address as the host reports it ("192.0.2.7",
/// "2001:db8::7"); tolerates brackets and an IPv6 zone ("fe80::1%eth0").
pub fn parse_client(text: &str) -> Option<IpAddr> {
    let t = text.trim();
    let t = t
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(t);
    let t = t.split_once('%').map_or(t, |(addr, _zone)| addr);
    t.parse::<IpAddr>().ok().map(canonical)
}

/// One CIDR range: `192.0.2.0/24`, `2001:db8::/32`, or a bare address
/// (`/32` or `/128`). Host bits must be zero so a typo such as
/// `10.1.2.3/8` is refused instead of silently widened. An IPv6 range inside
/// `::ffff:0:0/96` is stored as the IPv4 range it denotes.
pub fn parse_range(entry: &str) -> Result<IpNet, String> {
    let text = entry.trim();
    let net = if text.contains('/') {
        let net: IpNet = text.parse().map_err(|_| {
            format!(
                "{entry:?} is not a CIDR range (examples: \"192.0.2.0/24\", \"2001:db8::/32\", \"192.0.2.7\")"
            )
        })?;
        if net.trunc() != net {
            return Err(format!(
                "{entry:?} has host bits set (did you mean \"{}\"?)",
                net.trunc()
            ));
        }
        net
    } else {
        let ip: IpAddr = text.parse().map_err(|_| {
            format!(
                "{entry:?} is not an IP address or CIDR range (examples: \"192.0.2.7\", \"192.0.2.0/24\", \"2001:db8::/32\")"
            )
        })?;
        IpNet::from(ip)
    };
    Ok(unmap(net))
}

fn unmap(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && let Ok(n) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(n);
    }
    net
}

/// A range or a bare address, leniently: host bits are cleared
/// (`"10.1.2.3/8"` is `10.0.0.0/8`), surrounding spaces ignored, and a range
/// in IPv4-mapped form read as IPv4. `None` when `text` is neither; the
/// caller words the error (it knows the key).
pub fn parse_network(text: &str) -> Option<IpNet> {
    let t = text.trim();
    t.parse::<IpNet>()
        .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
        .ok()
        .map(|n| unmap(n.trunc()))
}

/// A list of ranges, each remembered with the text the operator wrote.
#[derive(Debug, Default, Clone)]
pub struct Ranges(Vec<(IpNet, String)>);

impl Ranges {
    /// Parse the configuration list `key`; an error names the key, the
    /// index and the entry, e.g. `deny[2]: "10.0.0.300" is not ...`.
    pub fn parse(key: &str, entries: &[String]) -> Result<Ranges, String> {
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                parse_range(e)
                    .map(|n| (n, e.trim().to_string()))
                    .map_err(|m| format!("{key}[{i}]: {m}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Ranges)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The most specific range containing `ip` (already canonical): its
    /// prefix length and the entry as written.
    pub fn longest_match(&self, ip: IpAddr) -> Option<(u8, &str)> {
        self.0
            .iter()
            .filter(|(n, _)| n.contains(&ip))
            .map(|(n, text)| (n.prefix_len(), text.as_str()))
            .max_by_key(|(len, _)| *len)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|(n, _)| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        parse_client(s).unwrap()
    }

    #[test]
    fn parses_ranges_and_bare_addresses() {
        let cases = [
            ("192.0.2.0/24", "192.0.2.0/24"),
            ("192.0.2.7", "192.0.2.7/32"),
            (" 10.0.0.0/8 ", "10.0.0.0/8"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("2001:db8::7", "2001:db8::7/128"),
            ("::/0", "::/0"),
            ("::ffff:192.0.2.0/120", "192.0.2.0/24"),
            ("::ffff:192.0.2.9", "192.0.2.9/32"),
            ("::ffff:0:0/96", "0.0.0.0/0"),
        ];
        for (input, want) in cases {
            assert_eq!(parse_range(input).unwrap().to_string(), want, "{input}");
        }
    }

    #[test]
    fn refuses_bad_entries_with_a_precise_message() {
        let cases = [
            ("10.0.0.300", "is not an IP address or CIDR range"),
            ("10.0.0.0/33", "is not a CIDR range"),
            ("2001:db8::/129", "is not a CIDR range"),
            ("example.org", "is not an IP address"),
            ("", "is not an IP address"),
            ("10.1.2.3/8", "did you mean \"10.0.0.0/8\""),
            ("2001:db8::1/32", "did you mean \"2001:db8::/32\""),
            ("192.0.2.0/", "is not a CIDR range"),
        ];
        for (input, want) in cases {
            let err = parse_range(input).unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
            assert!(err.contains(&format!("{input:?}")), "{input}: {err}");
        }
    }

    #[test]
    fn lenient_networks_clear_host_bits() {
        let cases = [
            ("10.1.2.3/8", Some("10.0.0.0/8")),
            (" 192.0.2.7 ", Some("192.0.2.7/32")),
            ("2001:db8::1/32", Some("2001:db8::/32")),
            ("2001:db8::1", Some("2001:db8::1/128")),
            ("::ffff:10.1.0.0/112", Some("10.1.0.0/16")),
            ("10.0.0.0/33", None),
            ("127.0.0.256", None),
            ("example.org", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_network(input).map(|n| n.to_string()).as_deref(),
                want,
                "{input}"
            );
        }
    }

    #[test]
    fn list_errors_name_key_and_index() {
        let err = Ranges::parse("deny", &["192.0.2.0/24".into(), "nonsense".into()]).unwrap_err();
        assert!(err.starts_with("deny[1]: \"nonsense\""), "{err}");
    }

    #[test]
    fn client_addresses() {
        assert_eq!(ip("192.0.2.1").to_string(), "192.0.2.1");
        assert_eq!(ip("::ffff:192.0.2.1").to_string(), "192.0.2.1");
        assert_eq!(ip("[2001:db8::1]").to_string(), "2001:db8::1");
        assert_eq!(ip("fe80::1%eth0").to_string(), "fe80::1");
        assert!(parse_client("").is_none());
        assert!(parse_client("not-an-ip").is_none());
    }

    #[test]
    fn matching_across_families() {
        let r = Ranges::parse(
            "allow",
            &[
                "192.0.2.0/24".into(),
                "192.0.2.128/25".into(),
                "2001:db8::/32".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            r.longest_match(ip("192.0.2.200")),
            Some((25, "192.0.2.128/25"))
        );
        assert_eq!(r.longest_match(ip("192.0.2.5")), Some((24, "192.0.2.0/24")));
        assert_eq!(
            r.longest_match(ip("::ffff:192.0.2.5")),
            Some((24, "192.0.2.0/24"))
        );
        assert_eq!(
            r.longest_match(ip("2001:db8:1::5")),
            Some((32, "2001:db8::/32"))
        );
        assert!(!r.contains(ip("198.51.100.1")));
        assert!(!r.contains(ip("2001:db9::1")));
        // An IPv6 catch-all does not cover IPv4 clients (mapped or not).
        let all6 = Ranges::parse("x", &["::/0".into()]).unwrap();
        assert!(!all6.contains(ip("::ffff:192.0.2.1")));
        assert!(all6.contains(ip("::1")));
    }
}
