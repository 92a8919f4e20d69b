//! Which hosts to connect to for a destination. RFC 5321 §5.1: MX records sorted by
//! preference (equal preferences in random order), none at all means the implicit MX
//! (the domain's own A/AAAA records); RFC 7505: a null MX ("." as the only exchange)
//! means the domain accepts no mail — a permanent failure; NXDOMAIN is permanent,
//! DNS trouble temporary. If this host is among the MX hosts, only more preferred
//! ones are used, and none means a mail loop (§5.1, "loops back to myself").
//! Input: DNS answers (untrusted; bounded here to `MAX_ADDRS` addresses).

use std::net::IpAddr;

use postern_capability::{DnsAnswer, DnsBackend, DnsFailure, DnsQuery};
use postern_protocol::EnhancedCode;
use rand::seq::SliceRandom;

use crate::outcome::Diagnostic;
use crate::route::Destination;
use crate::settings::Settings;

/// Most addresses tried for one destination in one attempt.
pub const MAX_ADDRS: usize = 10;

/// One host to try, with its addresses in the order to try them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxHost {
    /// The name to verify a certificate against and to report (`Remote-MTA`).
    pub name: String,
    pub addrs: Vec<IpAddr>,
}

fn temporary(detail: u16, text: String) -> Diagnostic {
    Diagnostic::local(EnhancedCode::new(4, 4, detail), text)
}

fn permanent(subject: u16, detail: u16, text: String) -> Diagnostic {
    Diagnostic::local(EnhancedCode::new(5, subject, detail), text)
}

/// Order MX records for `domain`: `Err` for a null MX or a loop back to `myself`.
pub fn order_mx(
    domain: &str,
    mut records: Vec<(u16, String)>,
    myself: &str,
) -> Result<Vec<String>, Diagnostic> {
    let is_null = |n: &str| n.is_empty() || n == ".";
    records.retain(|(_, n)| !is_null(n));
    if records.is_empty() {
        return Err(permanent(
            1,
            10,
            format!("domain {domain} accepts no mail (null MX, RFC 7505)"),
        ));
    }
    records.shuffle(&mut rand::rng());
    records.sort_by_key(|(pref, _)| *pref);
    let myself = myself.trim_end_matches('.');
    let mut hosts = Vec::new();
    for (_, name) in records {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name.eq_ignore_ascii_case(myself) {
            // Only hosts more preferred than this one may be used.
            if hosts.is_empty() {
                return Err(permanent(
                    4,
                    6,
                    format!("mail for {domain} loops back to myself ({myself})"),
                ));
            }
            break;
        }
        if !hosts.contains(&name) {
            hosts.push(name);
        }
    }
    Ok(hosts)
}

/// A and AAAA records of `name` (IPv4 first).
pub(crate) async fn addresses(dns: &dyn DnsBackend, name: &str) -> Result<Vec<IpAddr>, DnsFailure> {
    let (a, aaaa) = tokio::join!(
        dns.lookup(DnsQuery::A(name.to_string())),
        dns.lookup(DnsQuery::Aaaa(name.to_string()))
    );
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for answer in [a, aaaa] {
        match answer {
            Ok(DnsAnswer::Addrs(v)) => out.extend(v),
            Ok(_) => {}
            Err(e) => failures.push(e),
        }
    }
    if !out.is_empty() {
        return Ok(out);
    }
    Err(failures
        .iter()
        .find(|f| matches!(f, DnsFailure::Temporary(_)))
        .or_else(|| failures.iter().find(|f| matches!(f, DnsFailure::NxDomain)))
        .cloned()
        .unwrap_or(DnsFailure::NoRecords))
}

/// The hosts to try for `dest` (not `Local`), or why there are none.
pub async fn hosts_for(
    dest: &Destination,
    settings: &Settings,
    dns: &dyn DnsBackend,
) -> Result<Vec<MxHost>, Diagnostic> {
    match dest {
        Destination::Local => Err(temporary(4, "local destination has no hosts".into())),
        Destination::Literal(ip) => Ok(vec![MxHost {
            name: ip.to_string(),
            addrs: vec![*ip],
        }]),
        Destination::Relay | Destination::Via(_) => {
            let relay = match dest {
                Destination::Via(r) => r,
                _ => match &settings.relayhost {
                    Some(r) => r,
                    None => return Err(temporary(4, "no relayhost configured".into())),
                },
            };
            if let Ok(ip) = relay.host.parse::<IpAddr>() {
                return Ok(vec![MxHost {
                    name: relay.host.clone(),
                    addrs: vec![ip],
                }]);
            }
            // The relayhost is the operator's choice: any failure is temporary.
            let addrs = addresses(dns, &relay.host).await.map_err(|e| {
                temporary(4, format!("cannot resolve relayhost {}: {e}", relay.host))
            })?;
            Ok(vec![MxHost {
                name: relay.host.clone(),
                addrs,
            }])
        }
        Destination::Domain(domain) => domain_hosts(domain, settings, dns).await,
        Destination::RoutedMx(domain) => {
            domain_hosts(domain, settings, dns)
                .await
                .map_err(|d| match d.is_permanent() {
                    true => Diagnostic::local(
                        EnhancedCode::new(4, d.status.subject, d.status.detail),
                        format!("{} (the MX domain a route-hook chose)", d.text),
                    ),
                    false => d,
                })
        }
    }
}

async fn domain_hosts(
    domain: &str,
    settings: &Settings,
    dns: &dyn DnsBackend,
) -> Result<Vec<MxHost>, Diagnostic> {
    let names = match dns.lookup(DnsQuery::Mx(domain.to_string())).await {
        Ok(DnsAnswer::Mx(records)) => order_mx(domain, records, &settings.hostname)?,
        Ok(_) | Err(DnsFailure::NoRecords) => {
            // No MX: the implicit MX is the domain itself (RFC 5321 §5.1).
            return match addresses(dns, domain).await {
                Ok(addrs) => Ok(vec![MxHost {
                    name: domain.to_string(),
                    addrs: cap(addrs, MAX_ADDRS),
                }]),
                Err(DnsFailure::Temporary(e)) => {
                    Err(temporary(3, format!("DNS look-up of {domain} failed: {e}")))
                }
                Err(_) => Err(permanent(
                    1,
                    2,
                    format!("domain {domain} has no MX, A or AAAA records"),
                )),
            };
        }
        Err(DnsFailure::NxDomain) => {
            return Err(permanent(1, 2, format!("domain {domain} does not exist")));
        }
        Err(DnsFailure::Invalid(e)) => {
            return Err(permanent(1, 2, format!("bad domain {domain}: {e}")));
        }
        Err(DnsFailure::Temporary(e)) => {
            return Err(temporary(3, format!("MX look-up of {domain} failed: {e}")));
        }
    };
    let mut hosts = Vec::new();
    let mut budget = MAX_ADDRS;
    let mut last_error = None;
    for name in names {
        if budget == 0 {
            break;
        }
        match addresses(dns, &name).await {
            Ok(addrs) => {
                let addrs = cap(addrs, budget);
                budget -= addrs.len();
                hosts.push(MxHost { name, addrs });
            }
            Err(e) => last_error = Some(format!("MX host {name} of {domain}: {e}")),
        }
    }
    if hosts.is_empty() {
        // Explicit MX hosts that do not resolve: a DNS fault the domain may fix.
        return Err(temporary(
            4,
            last_error.unwrap_or_else(|| format!("no usable MX host for {domain}")),
        ));
    }
    Ok(hosts)
}

fn cap(mut v: Vec<IpAddr>, n: usize) -> Vec<IpAddr> {
    v.truncate(n);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_capability::BoxFuture;
    use std::path::Path;

    #[test]
    fn mx_ordering_table() {
        let r = |v: &[(u16, &str)]| v.iter().map(|(p, n)| (*p, n.to_string())).collect();
        assert_eq!(
            order_mx(
                "d.test",
                r(&[(20, "b.test."), (10, "A.test"), (30, "c.test")]),
                "me.test"
            )
            .unwrap(),
            vec!["a.test", "b.test", "c.test"]
        );
        let null = order_mx("d.test", r(&[(0, ".")]), "me.test").unwrap_err();
        assert_eq!(null.status.to_string(), "5.1.10");
        assert!(null.is_permanent());
        // Ourselves as backup MX: only the more preferred hosts.
        assert_eq!(
            order_mx(
                "d.test",
                r(&[(10, "a.test"), (20, "me.test"), (30, "c.test")]),
                "me.test"
            )
            .unwrap(),
            vec!["a.test"]
        );
        let lp = order_mx("d.test", r(&[(10, "ME.test.")]), "me.test").unwrap_err();
        assert_eq!(lp.status.to_string(), "5.4.6");
        // Equal preferences are all kept (in random order).
        let mut eq = order_mx("d.test", r(&[(5, "x.test"), (5, "y.test")]), "me.test").unwrap();
        eq.sort();
        assert_eq!(eq, vec!["x.test", "y.test"]);
    }

    struct FakeDns(Vec<(DnsQuery, Result<DnsAnswer, DnsFailure>)>);

    impl DnsBackend for FakeDns {
        fn lookup(&self, q: DnsQuery) -> BoxFuture<'_, Result<DnsAnswer, DnsFailure>> {
            let a = self
                .0
                .iter()
                .find(|(k, _)| *k == q)
                .map(|(_, v)| v.clone())
                .unwrap_or(Err(DnsFailure::NxDomain));
            Box::pin(async move { a })
        }
    }

    fn dns(entries: Vec<(DnsQuery, Result<DnsAnswer, DnsFailure>)>) -> FakeDns {
        FakeDns(entries)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn resolution_cases() {
        let s = Settings::new("me.test", &[], Path::new("/d"));
        let dom = |d: &str| Destination::Domain(d.into());
        let mx = |d: &str| DnsQuery::Mx(d.into());
        let a = |d: &str| DnsQuery::A(d.into());
        let d = dns(vec![
            (
                mx("mx.test"),
                Ok(DnsAnswer::Mx(vec![(10, "h1.mx.test".into())])),
            ),
            (a("h1.mx.test"), Ok(DnsAnswer::Addrs(vec![ip("127.0.0.2")]))),
            (
                DnsQuery::Aaaa("h1.mx.test".into()),
                Err(DnsFailure::NoRecords),
            ),
            (mx("implicit.test"), Err(DnsFailure::NoRecords)),
            (
                a("implicit.test"),
                Ok(DnsAnswer::Addrs(vec![ip("127.0.0.3")])),
            ),
            (mx("bare.test"), Err(DnsFailure::NoRecords)),
            (a("bare.test"), Err(DnsFailure::NoRecords)),
            (mx("null.test"), Ok(DnsAnswer::Mx(vec![(0, ".".into())]))),
            (
                mx("flaky.test"),
                Err(DnsFailure::Temporary("SERVFAIL".into())),
            ),
            (
                mx("dangling.test"),
                Ok(DnsAnswer::Mx(vec![(10, "gone.test".into())])),
            ),
        ]);
        let hosts = hosts_for(&dom("mx.test"), &s, &d).await.unwrap();
        assert_eq!(
            hosts,
            vec![MxHost {
                name: "h1.mx.test".into(),
                addrs: vec![ip("127.0.0.2")]
            }]
        );
        let hosts = hosts_for(&dom("implicit.test"), &s, &d).await.unwrap();
        assert_eq!(hosts[0].addrs, vec![ip("127.0.0.3")]);
        let status = |r: Result<Vec<MxHost>, Diagnostic>| r.unwrap_err().status.to_string();
        assert_eq!(status(hosts_for(&dom("bare.test"), &s, &d).await), "5.1.2");
        assert_eq!(status(hosts_for(&dom("null.test"), &s, &d).await), "5.1.10");
        assert_eq!(status(hosts_for(&dom("nx.test"), &s, &d).await), "5.1.2");
        assert_eq!(status(hosts_for(&dom("flaky.test"), &s, &d).await), "4.4.3");
        assert_eq!(
            status(hosts_for(&dom("dangling.test"), &s, &d).await),
            "4.4.4"
        );
        // A domain a route-hook chose: the same hosts, but no permanent
        // failure (the plugin's answer is wrong, not the address).
        let routed = |n: &str| Destination::RoutedMx(n.into());
        let hosts = hosts_for(&routed("mx.test"), &s, &d).await.unwrap();
        assert_eq!(hosts[0].name, "h1.mx.test");
        for (bad, status) in [
            ("nx.test", "4.1.2"),
            ("bare.test", "4.1.2"),
            ("null.test", "4.1.10"),
        ] {
            let e = hosts_for(&routed(bad), &s, &d).await.unwrap_err();
            assert_eq!(e.status.to_string(), status, "{bad}");
            assert!(
                e.text.ends_with("(the MX domain a route-hook chose)"),
                "{}",
                e.text
            );
        }
        let lit = hosts_for(&Destination::Literal(ip("::1")), &s, &d)
            .await
            .unwrap();
        assert_eq!(lit[0].addrs, vec![ip("::1")]);
    }
}
