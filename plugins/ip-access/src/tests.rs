//! Unit tests of the allow/deny decision (pure, no host calls).

use super::*;

fn plugin(allow: &[&str], deny: &[&str], default: DefaultAction) -> Result<IpAccess, String> {
    IpAccess::new(Config {
        allow: allow.iter().map(|s| s.to_string()).collect(),
        deny: deny.iter().map(|s| s.to_string()).collect(),
        default,
    })
}

fn config(json: &str) -> Result<IpAccess, String> {
    let c: Config = postern_sdk::parse_config(json)?;
    IpAccess::new(c)
}

use postern_sdk::testing::summary;

fn verdict(p: &IpAccess, ip: &str) -> (&'static str, u16, String, String) {
    summary(&IpAccess::verdict(&p.decide(ip), ip))
}

#[test]
fn decision_table() {
    let p = plugin(
        &[
            "192.0.2.0/24",
            "198.51.100.7",
            "2001:db8:1::/48",
            "10.1.0.0/16",
        ],
        &[
            "192.0.2.128/25",
            "198.51.100.0/24",
            "2001:db8::/32",
            "10.0.0.0/8",
            "10.1.0.0/16",
        ],
        DefaultAction::Allow,
    )
    .unwrap();
    let allowed = |r: &str| Decision::Allowed { rule: r.into() };
    let denied = |r: &str| Decision::Denied { rule: r.into() };
    let cases: &[(&str, Decision)] = &[
        // only in allow
        ("192.0.2.1", allowed("192.0.2.0/24")),
        // more specific deny beats allow
        ("192.0.2.200", denied("192.0.2.128/25")),
        // more specific allow (a /32) beats deny /24
        ("198.51.100.7", allowed("198.51.100.7")),
        ("198.51.100.8", denied("198.51.100.0/24")),
        // tie (same prefix length in both lists) -> deny
        ("10.1.2.3", denied("10.1.0.0/16")),
        ("10.2.0.1", denied("10.0.0.0/8")),
        // IPv6
        ("2001:db8:1::25", allowed("2001:db8:1::/48")),
        ("2001:db8:2::25", denied("2001:db8::/32")),
        // IPv4-mapped IPv6 client matches IPv4 ranges
        ("::ffff:192.0.2.1", allowed("192.0.2.0/24")),
        ("::ffff:192.0.2.129", denied("192.0.2.128/25")),
        // nothing matches -> default
        ("203.0.113.9", Decision::Default(DefaultAction::Allow)),
        ("2001:db9::1", Decision::Default(DefaultAction::Allow)),
        ("garbage", Decision::Unknown),
    ];
    for (ip, want) in cases {
        assert_eq!(&p.decide(ip), want, "{ip}");
    }
}

#[test]
fn replies_are_exact() {
    let p = plugin(
        &["192.0.2.0/24"],
        &["198.51.100.0/24"],
        DefaultAction::Allow,
    )
    .unwrap();
    assert_eq!(verdict(&p, "192.0.2.1").0, "pass");
    assert_eq!(verdict(&p, "203.0.113.1").0, "pass");
    assert_eq!(
        verdict(&p, "198.51.100.9"),
        (
            "reject",
            554,
            "5.7.1".into(),
            "Access denied for 198.51.100.9".into()
        )
    );
    // The reply echoes the address as the host reported it.
    assert_eq!(
        verdict(&p, "::ffff:198.51.100.9").3,
        "Access denied for ::ffff:198.51.100.9"
    );
    assert_eq!(
        verdict(&p, "garbage"),
        (
            "defer",
            421,
            "4.3.0".into(),
            "Cannot determine client address".into()
        )
    );
}

#[test]
fn default_deny() {
    let p = plugin(
        &["192.0.2.0/24", "::1"],
        &["192.0.2.66"],
        DefaultAction::Deny,
    )
    .unwrap();
    assert_eq!(verdict(&p, "192.0.2.1").0, "pass");
    assert_eq!(verdict(&p, "::1").0, "pass");
    assert_eq!(
        verdict(&p, "192.0.2.66"),
        (
            "reject",
            554,
            "5.7.1".into(),
            "Access denied for 192.0.2.66".into()
        )
    );
    assert_eq!(
        verdict(&p, "2001:db8::1"),
        (
            "reject",
            554,
            "5.7.1".into(),
            "Access denied for 2001:db8::1".into()
        )
    );
    assert_eq!(
        p.decide("203.0.113.1"),
        Decision::Default(DefaultAction::Deny)
    );
}

#[test]
fn empty_config_allows_everyone() {
    let p = config("{}").unwrap();
    assert_eq!(p.default, DefaultAction::Allow);
    assert_eq!(verdict(&p, "192.0.2.1").0, "pass");
    assert_eq!(verdict(&p, "2001:db8::1").0, "pass");
}

#[test]
fn catch_all_ranges() {
    let p = plugin(
        &["127.0.0.0/8", "::1"],
        &["0.0.0.0/0", "::/0"],
        DefaultAction::Allow,
    )
    .unwrap();
    assert_eq!(verdict(&p, "127.0.0.1").0, "pass");
    assert_eq!(verdict(&p, "::1").0, "pass");
    assert_eq!(verdict(&p, "::ffff:127.0.0.1").0, "pass");
    assert_eq!(verdict(&p, "192.0.2.1").0, "reject");
    assert_eq!(verdict(&p, "2001:db8::1").0, "reject");
}

#[test]
fn config_errors_are_precise() {
    let cases = [
        (
            r#"{"allow": ["192.0.2.0/24", "192.0.2.300"]}"#,
            "allow[1]: \"192.0.2.300\" is not an IP address",
        ),
        (
            r#"{"deny": ["10.1.2.3/8"]}"#,
            "deny[0]: \"10.1.2.3/8\" has host bits set (did you mean \"10.0.0.0/8\"?)",
        ),
        (
            r#"{"deny": ["2001:db8::/200"]}"#,
            "deny[0]: \"2001:db8::/200\" is not a CIDR range",
        ),
        (r#"{"default": "maybe"}"#, "unknown variant `maybe`"),
        (r#"{"alow": []}"#, "unknown field `alow`"),
        (r#"{"allow": "192.0.2.0/24"}"#, "invalid type"),
        (r#"{"default": "deny"}"#, "would refuse every client"),
    ];
    for (json, want) in cases {
        let err = config(json)
            .err()
            .unwrap_or_else(|| panic!("accepted {json}"));
        assert!(err.contains(want), "{json}: {err}");
    }
}
