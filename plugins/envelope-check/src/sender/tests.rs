//! Tests of the sender decisions against fakes of the host.

use super::*;
use crate::testutil::{FakeDns, addr, is_pass, reply_of};

fn policy() -> SenderPolicy {
    SenderPolicy {
        check_sender_domain: true,
        skip_domains: vec!["skipped.example".into()],
    }
}

fn mx(x: &str) -> Vec<Mx> {
    vec![Mx {
        preference: 10,
        exchange: x.into(),
    }]
}

type R<T> = Result<T, DnsError>;

fn dns(mx: R<Vec<Mx>>, a: R<Vec<String>>, aaaa: R<Vec<String>>) -> FakeDns {
    FakeDns::new(mx, a, aaaa)
}

fn ips(list: &[&str]) -> R<Vec<String>> {
    Ok(list.iter().map(|s| s.to_string()).collect())
}

fn temp() -> DnsError {
    DnsError::Temporary("timeout".into())
}

#[test]
fn resolution_table() {
    use DnsError::{Denied, NoRecords, NxDomain};
    use Resolution as Res;
    let null_plus_real = Ok(vec![
        Mx {
            preference: 0,
            exchange: ".".into(),
        },
        Mx {
            preference: 10,
            exchange: "mx.example".into(),
        },
    ]);
    #[rustfmt::skip]
    let table: Vec<(FakeDns, Resolution)> = vec![
        (dns(Ok(mx("mx.example.org")), Err(NoRecords), Err(NoRecords)), Res::Exists),
        (dns(Ok(mx(".")), ips(&["192.0.2.1"]), Err(NoRecords)), Res::NullMx),
        (dns(Ok(mx("")), Err(NoRecords), Err(NoRecords)), Res::NullMx),
        (dns(null_plus_real, Err(NoRecords), Err(NoRecords)), Res::Exists),
        (dns(Err(NxDomain), ips(&["192.0.2.1"]), Err(NoRecords)), Res::NotFound),
        (dns(Err(NoRecords), ips(&["192.0.2.1"]), Err(NoRecords)), Res::Exists),
        (dns(Ok(vec![]), ips(&["192.0.2.1"]), Err(NoRecords)), Res::Exists),
        (dns(Err(NoRecords), Err(NoRecords), ips(&["2001:db8::1"])), Res::Exists),
        (dns(Err(NoRecords), ips(&["0.0.0.0"]), ips(&["::"])), Res::NotFound),
        (dns(Err(NoRecords), ips(&["garbage"]), Err(NoRecords)), Res::NotFound),
        (dns(Err(NoRecords), Err(NoRecords), Err(NoRecords)), Res::NotFound),
        (dns(Err(NoRecords), Err(NxDomain), Err(temp())), Res::NotFound),
        (dns(Err(NoRecords), Err(temp()), ips(&["2001:db8::1"])), Res::Exists),
        (dns(Err(NoRecords), Err(temp()), Err(NoRecords)), Res::Temporary("timeout".into())),
        (dns(Err(NoRecords), Err(NoRecords), Err(temp())), Res::Temporary("timeout".into())),
        (dns(Err(temp()), ips(&["192.0.2.1"]), Err(NoRecords)), Res::Temporary("timeout".into())),
        (dns(Err(Denied), Err(Denied), Err(Denied)), Res::Denied),
        (dns(Err(DnsError::Invalid("x".into())), Err(NoRecords), Err(NoRecords)), Res::NotFound),
    ];
    for (i, (fake, want)) in table.into_iter().enumerate() {
        assert_eq!(resolve("example.org", &fake), want, "row {i}");
    }
}

#[test]
fn verdicts() {
    let not_found = dns(
        Err(DnsError::NxDomain),
        Err(DnsError::NxDomain),
        Err(DnsError::NxDomain),
    );
    let v = check(&policy(), &addr("a@nowhere.example", false), &not_found);
    assert_eq!(reply_of(&v), Some((550, "5.1.8", NOT_FOUND_TEXT)));
    assert!(matches!(v, Verdict::Reject(_)));

    let null = dns(
        Ok(mx(".")),
        Err(DnsError::NoRecords),
        Err(DnsError::NoRecords),
    );
    let v = check(&policy(), &addr("a@null.example", false), &null);
    assert_eq!(reply_of(&v), Some((550, "5.1.8", NULL_MX_TEXT)));

    let t = dns(Err(temp()), Err(temp()), Err(temp()));
    let v = check(&policy(), &addr("a@slow.example", false), &t);
    assert_eq!(reply_of(&v), Some((451, "4.4.3", TEMP_TEXT)));
    assert!(matches!(v, Verdict::Defer(_)));
    assert!(t.logged("temporary DNS failure"));

    let denied = dns(
        Err(DnsError::Denied),
        Err(DnsError::Denied),
        Err(DnsError::Denied),
    );
    let v = check(&policy(), &addr("a@any.example", false), &denied);
    assert_eq!(reply_of(&v), Some((451, "4.4.3", TEMP_TEXT)));
    assert!(denied.logged("capabilities = [\"dns\"]"));

    let ok = dns(
        Ok(mx("mx.example")),
        Err(DnsError::NoRecords),
        Err(DnsError::NoRecords),
    );
    assert!(is_pass(&check(
        &policy(),
        &addr("a@fine.example", false),
        &ok
    )));
}

#[test]
fn skipped_without_lookups() {
    // Every look-up would fail: anything that reaches the DNS is refused.
    let nx = || {
        dns(
            Err(DnsError::NxDomain),
            Err(DnsError::NxDomain),
            Err(DnsError::NxDomain),
        )
    };
    let cases = [
        (policy(), addr("", false)),                      // null sender
        (policy(), addr("a@[192.0.2.1]", false)),         // address literal
        (policy(), addr("a@Skipped.Example.", false)),    // skip_domains
        (policy(), addr("a@ours.example", true)),         // local domain
        (policy(), addr("postmaster", false)),            // no domain
        (policy(), addr("a@b\u{fc}cher.example", false)), // U-label
        (
            SenderPolicy {
                check_sender_domain: false,
                ..policy()
            },
            addr("a@x.example", false),
        ),
    ];
    for (p, a) in cases {
        let fake = nx();
        assert!(is_pass(&check(&p, &a, &fake)), "{:?}", a.address);
        assert_eq!(fake.queries(), 0, "{:?} must not be looked up", a.address);
    }
}
