//! Routing: which delivery agent and destination each recipient goes to. Local
//! domains go to the Maildir agent; everything else to the relayhost when one is
//! set, else to the recipient domain's MX hosts (RFC 5321 §5.1), or straight to an
//! address literal (§4.1.3). Input: recipient addresses from the spool envelope,
//! validated at RCPT time but parsed again here (an unparseable one fails for good).

use std::fmt;
use std::net::IpAddr;

use postern_protocol::{Domain, EnhancedCode, Mailbox};

use crate::outcome::Diagnostic;
use crate::policy::RouteChoice;
use crate::settings::{Relayhost, Settings};

/// Where a group of recipients is delivered; the unit of per-destination
/// concurrency and connection reuse.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    /// Local Maildirs.
    Local,
    /// The relayhost.
    Relay,
    /// An SMTP host a plugin chose (`route-hook`), without MX look-up or
    /// relayhost credentials.
    Via(Relayhost),
    /// A recipient domain (lower case, no trailing dot): its MX hosts.
    Domain(String),
    /// The MX hosts of a domain a plugin chose (`route-hook` `mx(...)`): as
    /// `Domain`, but a domain that does not exist defers the recipient (the
    /// plugin's answer is wrong, not the recipient's address).
    RoutedMx(String),
    /// An address literal.
    Literal(IpAddr),
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Local => f.write_str("local"),
            Destination::Relay => f.write_str("relayhost"),
            Destination::Via(r) => write!(f, "via {r}"),
            Destination::Domain(d) => f.write_str(d),
            Destination::RoutedMx(d) => write!(f, "mx {d}"),
            Destination::Literal(ip) => write!(f, "[{ip}]"),
        }
    }
}

/// The destination of `address` under a policy's `choice`, or the failure
/// (permanent or temporary) it is instead.
pub fn route_as(
    address: &str,
    choice: &RouteChoice,
    settings: &Settings,
) -> Result<Destination, Diagnostic> {
    match choice {
        RouteChoice::Default => route(address, settings),
        RouteChoice::Local => Ok(Destination::Local),
        RouteChoice::Relayhost if settings.relayhost.is_some() => Ok(Destination::Relay),
        RouteChoice::Relayhost => Err(Diagnostic::local(
            EnhancedCode::new(4, 3, 5),
            "routed to the relayhost, but none is configured",
        )),
        RouteChoice::Relay(r) if settings.relayhost.as_ref() == Some(r) => Ok(Destination::Relay),
        RouteChoice::Relay(r) if settings.route_relays.contains(r) => {
            Ok(Destination::Via(r.clone()))
        }
        RouteChoice::Relay(r) => Err(Diagnostic::local(
            EnhancedCode::new(4, 3, 5),
            format!("routed to relay {r}, which is not in delivery.route_relays"),
        )),
        RouteChoice::Mx(domain) => Ok(Destination::RoutedMx(domain.clone())),
        RouteChoice::Fail(d) => Err(d.clone()),
    }
}

/// The destination of `address`, or a permanent failure.
pub fn route(address: &str, settings: &Settings) -> Result<Destination, Diagnostic> {
    if address.eq_ignore_ascii_case("postmaster") {
        return Ok(Destination::Local);
    }
    let mailbox = Mailbox::parse(address).map_err(|e| {
        Diagnostic::local(
            EnhancedCode::new(5, 1, 3),
            format!("bad recipient address syntax <{address}>: {e}"),
        )
    })?;
    if let Domain::Name(name) = &mailbox.domain
        && settings.is_local_domain(name)
    {
        return Ok(Destination::Local);
    }
    if settings.relayhost.is_some() {
        return Ok(Destination::Relay);
    }
    match mailbox.domain {
        Domain::Name(_) => Ok(Destination::Domain(mailbox.domain.normalized())),
        Domain::Ipv4(a) => Ok(Destination::Literal(IpAddr::V4(a))),
        Domain::Ipv6(a) => Ok(Destination::Literal(IpAddr::V6(a))),
        Domain::General { .. } => Err(Diagnostic::local(
            EnhancedCode::new(5, 1, 2),
            format!("cannot route to the address literal of <{address}>"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Relayhost;
    use std::path::Path;

    #[test]
    fn routing_table() {
        let mut s = Settings::new("mx.test", &["example.test".into()], Path::new("/d"));
        let d = |n: &str| Destination::Domain(n.into());
        let table: Vec<(&str, Result<Destination, ()>)> = vec![
            ("a@example.test", Ok(Destination::Local)),
            ("a@EXAMPLE.TEST.", Ok(Destination::Local)),
            ("POSTMASTER", Ok(Destination::Local)),
            ("a@Remote.Test", Ok(d("remote.test"))),
            ("a@remote.test.", Ok(d("remote.test"))),
            (
                "a@[127.0.0.1]",
                Ok(Destination::Literal("127.0.0.1".parse().unwrap())),
            ),
            (
                "a@[IPv6:::1]",
                Ok(Destination::Literal("::1".parse().unwrap())),
            ),
            ("a@[x-tag:foo]", Err(())),
            ("no-at-sign", Err(())),
        ];
        for (addr, want) in table {
            let got = route(addr, &s).map_err(|e| assert!(e.is_permanent()));
            assert_eq!(got, want, "{addr}");
        }
        s.relayhost = Some(Relayhost::parse("smart.test:587").unwrap());
        assert_eq!(route("a@remote.test", &s), Ok(Destination::Relay));
        assert_eq!(route("a@[127.0.0.1]", &s), Ok(Destination::Relay));
        assert_eq!(route("a@example.test", &s), Ok(Destination::Local));
    }

    #[test]
    fn a_route_hook_relays_only_where_the_operator_allows() {
        let mut s = Settings::new("mx.test", &[], Path::new("/d"));
        let relay = |t: &str| RouteChoice::Relay(Relayhost::parse(t).unwrap());
        let refused = route_as("a@b.test", &relay("10.0.0.5:25"), &s).unwrap_err();
        assert_eq!(refused.status.to_string(), "4.3.5");
        assert!(refused.text.contains("[10.0.0.5]:25") && refused.text.contains("route_relays"));
        s.route_relays = vec![Relayhost::parse("[10.0.0.5]:25").unwrap()];
        assert_eq!(
            route_as("a@b.test", &relay("10.0.0.5"), &s),
            Ok(Destination::Via(Relayhost::parse("10.0.0.5:25").unwrap()))
        );
        assert!(route_as("a@b.test", &relay("10.0.0.5:26"), &s).is_err());
        // Another spelling of the same address is the same relay.
        s.route_relays = vec![Relayhost::parse("[2001:db8::1]:25").unwrap()];
        assert!(route_as("a@b.test", &relay("[2001:DB8:0:0::1]:25"), &s).is_ok());
        assert!(route_as("a@b.test", &relay("[::ffff:10.0.0.5]"), &s).is_err());
        s.route_relays = vec![Relayhost::parse("10.0.0.5").unwrap()];
        assert!(route_as("a@b.test", &relay("[::ffff:10.0.0.5]"), &s).is_ok());
        // The configured relayhost needs no listing (and keeps its credentials).
        s.relayhost = Some(Relayhost::parse("smart.test:587").unwrap());
        assert_eq!(
            route_as("a@b.test", &relay("[smart.test]:587"), &s),
            Ok(Destination::Relay)
        );
    }
}
