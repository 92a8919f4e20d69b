//! DNSBL query names and answers (RFC 5782 §2.1 IPv4, §2.4 IPv6; §2.3 the
//! 127.0.0.2 convention): reversed octets or nibbles under the zone; an A
//! answer in 127.0.0.0/8 lists the address, 127.255.255.0/24 signals a
//! DNSBL error (e.g. a refused resolver), anything else is unexpected.
//! Trusts nothing: addresses come from the host, answers from the network.

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};

use postern_sdk::net::IpNet;

/// The name to look up: "2.0.0.127.zen.example" for 127.0.0.2; 32 reversed
/// nibbles for IPv6. IPv4-mapped IPv6 addresses are queried as IPv4.
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    let mut name = String::with_capacity(72 + zone.len());
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            let _ = write!(name, "{d}.{c}.{b}.{a}.");
        }
        IpAddr::V6(v6) => {
            for byte in v6.octets().iter().rev() {
                let _ = write!(name, "{:x}.{:x}.", byte & 0x0f, byte >> 4);
            }
        }
    }
    name.push_str(zone);
    name
}

/// What one A answer set means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Listed; the first matching return code.
    Listed(Ipv4Addr),
    /// Answers, none of which counts as a listing.
    Clean,
    /// The DNSBL answered with an error code (127.255.255.0/24).
    ErrorCode(Ipv4Addr),
    /// Answers outside 127.0.0.0/8 (a hijacking resolver?); not a listing.
    Unexpected(String),
}

/// Classify the A records of a query. `matches`: the return codes (or
/// networks) that count as listed; `None`: the default rule.
pub fn classify(addrs: &[String], matches: Option<&[IpNet]>) -> Answer {
    let codes: Vec<Option<Ipv4Addr>> = addrs.iter().map(|a| a.trim().parse().ok()).collect();
    let error_net = |ip: &Ipv4Addr| ip.octets()[..3] == [127, 255, 255];
    for ip in codes.iter().flatten() {
        let listed = match matches {
            Some(nets) => nets.iter().any(|n| n.contains(&IpAddr::V4(*ip))),
            None => ip.octets()[0] == 127 && !error_net(ip),
        };
        if listed {
            return Answer::Listed(*ip);
        }
    }
    if let Some(ip) = codes.iter().flatten().find(|ip| error_net(ip)) {
        return Answer::ErrorCode(*ip);
    }
    match codes
        .iter()
        .zip(addrs)
        .find(|(c, _)| c.is_none_or(|ip| ip.octets()[0] != 127))
    {
        Some((_, text)) => Answer::Unexpected(text.clone()),
        None => Answer::Clean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names() {
        let table = [
            ("127.0.0.2", "zen.example", "2.0.0.127.zen.example"),
            ("192.0.2.99", "bl.example.org", "99.2.0.192.bl.example.org"),
            ("::ffff:192.0.2.99", "bl.example", "99.2.0.192.bl.example"),
            ("::ffff:7f00:2", "bl.example", "2.0.0.127.bl.example"),
            (
                "2001:db8:1:2:3:4:567:89ab",
                "bl.example",
                "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.example",
            ),
            (
                "2001:db8::1",
                "v6.example",
                "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.v6.example",
            ),
            (
                "::1",
                "x.example",
                "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.x.example",
            ),
        ];
        for (ip, zone, want) in table {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(query_name(ip, zone), want, "{ip}");
        }
        let v6 = query_name("2001:db8::1".parse().unwrap(), "z");
        assert_eq!(v6.split('.').count(), 33);
    }

    fn s(list: &[&str]) -> Vec<String> {
        list.iter().map(|x| x.to_string()).collect()
    }

    type Row<'a> = (Vec<String>, Option<&'a [IpNet]>, Answer);

    #[test]
    fn answers() {
        let only_2: Vec<IpNet> = vec!["127.0.0.2/32".parse().unwrap()];
        let net: Vec<IpNet> = vec!["127.0.0.8/29".parse().unwrap()];
        let ip = |t: &str| t.parse::<Ipv4Addr>().unwrap();
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            (s(&["127.0.0.2"]), None, Answer::Listed(ip("127.0.0.2"))),
            (s(&["127.0.0.10", "127.0.0.4"]), None, Answer::Listed(ip("127.0.0.10"))),
            (s(&["127.255.255.254"]), None, Answer::ErrorCode(ip("127.255.255.254"))),
            (s(&["127.255.255.254", "127.0.0.3"]), None, Answer::Listed(ip("127.0.0.3"))),
            (s(&["198.51.100.7"]), None, Answer::Unexpected("198.51.100.7".into())),
            (s(&["nonsense"]), None, Answer::Unexpected("nonsense".into())),
            (s(&[]), None, Answer::Clean),
            (s(&["127.0.0.4"]), Some(&only_2), Answer::Clean),
            (s(&["127.0.0.4", "127.0.0.2"]), Some(&only_2), Answer::Listed(ip("127.0.0.2"))),
            (s(&["127.0.0.9"]), Some(&net), Answer::Listed(ip("127.0.0.9"))),
            (s(&["127.0.0.16"]), Some(&net), Answer::Clean),
            (s(&["127.255.255.252"]), Some(&only_2), Answer::ErrorCode(ip("127.255.255.252"))),
        ];
        for (addrs, m, want) in table {
            assert_eq!(classify(&addrs, m), want, "{addrs:?}");
        }
    }
}
