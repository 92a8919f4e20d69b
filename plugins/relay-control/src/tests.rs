//! Unit tests of the relay decision: every address trick, every way to be
//! authorised, kv failures, configuration errors. Pure: a fake host.

use std::cell::RefCell;
use std::collections::HashMap;

use postern_sdk::testing::{self, summary};

use super::classify::{Trick, address_literal};
use super::*;

/// A logged level, message and fields.
type LogLine = (Level, String, Vec<(String, String)>);

struct Fake {
    kv: HashMap<String, String>,
    kv_error: Option<KvError>,
    now: u64,
    logs: RefCell<Vec<LogLine>>,
    kv_reads: RefCell<u32>,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            kv: HashMap::new(),
            kv_error: None,
            now: 1_000_000_000,
            logs: RefCell::new(Vec::new()),
            kv_reads: RefCell::new(0),
        }
    }
    fn logged(&self, message_part: &str) -> bool {
        self.logs
            .borrow()
            .iter()
            .any(|(_, m, _)| m.contains(message_part))
    }
    /// The `error` field of the warning about a failed recent-auth look-up.
    fn kv_warning(&self) -> Option<String> {
        let logs = self.logs.borrow();
        let (_, _, fields) = logs.iter().find(|(level, m, _)| {
            *level == Level::Warn && m.starts_with("recent-auth look-up failed")
        })?;
        fields
            .iter()
            .find(|(k, _)| k == "error")
            .map(|(_, v)| v.clone())
    }
}

impl Host for Fake {
    fn kv_get(&self, key: &str) -> Result<Option<String>, KvError> {
        *self.kv_reads.borrow_mut() += 1;
        if let Some(e) = &self.kv_error {
            return Err(e.clone());
        }
        Ok(self.kv.get(key).cloned())
    }
    fn now_ms(&self) -> u64 {
        self.now
    }
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        self.logs.borrow_mut().push((
            level,
            message.to_string(),
            fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
    }
}

fn session(ip: &str, auth_user: Option<&str>) -> Session {
    testing::session()
        .client_ip(ip)
        .auth(auth_user)
        .server_name("mx.local.example")
        .build()
}

/// A recipient as the host would pass it: split at the last `@`.
fn rcpt(address: &str, is_local: bool) -> EnvelopeAddress {
    testing::address(address).local(is_local).build()
}

fn plugin(json: &str) -> RelayControl {
    config(json).unwrap()
}

fn config(json: &str) -> Result<RelayControl, String> {
    RelayControl::new(postern_sdk::parse_config::<Config>(json)?)
}

fn denied(address: &str) -> (&'static str, u16, String, String) {
    (
        "reject",
        554,
        "5.7.1".into(),
        format!("{address}: Relay access denied"),
    )
}

fn kind(v: &Verdict) -> &'static str {
    summary(v).0
}

#[test]
fn classification_table() {
    use Class::*;
    let literals = vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
    // (address, host's is_local, expected class)
    let cases: &[(&str, bool, Class)] = &[
        ("user@local.example", true, Local),
        ("User@LOCAL.EXAMPLE.", true, Local),
        ("\"john smith\"@local.example", true, Local),
        ("postmaster", true, Local),
        ("user@remote.example", false, Remote),
        // percent hack, bang path, quoted @ — all with a local domain
        (
            "user%other.example@local.example",
            true,
            LocalTrick(Trick::Percent),
        ),
        (
            "user%other.example%third.example@local.example",
            true,
            LocalTrick(Trick::Percent),
        ),
        (
            "other.example!user@local.example",
            true,
            LocalTrick(Trick::Bang),
        ),
        ("a!b!user@local.example", true, LocalTrick(Trick::Bang)),
        (
            "\"user@other.example\"@local.example",
            true,
            LocalTrick(Trick::At),
        ),
        (
            "\"user%other.example\"@local.example",
            true,
            LocalTrick(Trick::Percent),
        ),
        (
            "\"other.example!user\"@local.example",
            true,
            LocalTrick(Trick::Bang),
        ),
        (
            "\"user\\@other.example\"@local.example",
            true,
            LocalTrick(Trick::At),
        ),
        ("\"a%b@c\"@local.example", true, LocalTrick(Trick::At)),
        (
            "user%other.example@LOCAL.EXAMPLE.",
            true,
            LocalTrick(Trick::Percent),
        ),
        // tricks aimed at a remote domain are plain relaying
        ("user%other.example@remote.example", false, Remote),
        ("\"user@local.example\"@remote.example", false, Remote),
        // address literals: remote unless listed, whatever the host says
        ("user@[192.0.2.1]", true, Local),
        ("user@[192.0.2.1]", false, Local),
        ("user@[192.0.2.2]", true, Remote),
        ("user@[IPv6:2001:db8::1]", true, Local),
        ("user@[ipv6:2001:DB8:0::1]", true, Local),
        ("user@[IPv6:2001:db8::2]", true, Remote),
        ("user@[IPv6:::ffff:192.0.2.1]", true, Local),
        ("user@[2001:db8::1]", true, Remote),
        ("user@[tag:whatever]", true, Remote),
        ("user@[192.0.2.1", true, Remote),
        ("user@[300.0.2.1]", true, Remote),
        (
            "user%other.example@[192.0.2.1]",
            true,
            LocalTrick(Trick::Percent),
        ),
    ];
    for (address, is_local, want) in cases {
        assert_eq!(
            classify(&rcpt(address, *is_local), &literals),
            *want,
            "{address} (is_local {is_local})"
        );
    }
}

#[test]
fn classification_falls_back_to_the_address_when_parts_are_empty() {
    let mut r = rcpt("user%evil.example@local.example", true);
    r.local_part.clear();
    r.domain.clear();
    assert_eq!(classify(&r, &[]), Class::LocalTrick(Trick::Percent));
    let mut r = rcpt("user@[192.0.2.9]", true);
    r.domain.clear();
    assert_eq!(classify(&r, &[]), Class::Remote);
}

#[test]
fn address_literals() {
    assert_eq!(address_literal("example.org"), None);
    assert_eq!(
        address_literal("[192.0.2.1]"),
        Some(Some("192.0.2.1".parse().unwrap()))
    );
    assert_eq!(
        address_literal("[IPv6:2001:db8::1]"),
        Some(Some("2001:db8::1".parse().unwrap()))
    );
    assert_eq!(address_literal("[x-tag:abc]"), Some(None));
    assert_eq!(address_literal("[]"), Some(None));
}

/// Every trick, from every kind of client, with the default `deny_tricks`.
#[test]
fn tricks_never_open_a_relay() {
    let p = plugin(
        r#"{"relay_networks": ["10.0.0.0/8"], "recent_auth_window": 600, "local_literals": ["192.0.2.1"]}"#,
    );
    let tricks = [
        "user%other.example@local.example",
        "other.example!user@local.example",
        "\"user@other.example\"@local.example",
        "\"user%other.example\"@local.example",
        "user%other.example@[192.0.2.1]",
    ];
    let mut h = Fake::new();
    h.kv.insert(
        "recent-auth:203.0.113.50".into(),
        (h.now - 1000).to_string(),
    );
    for t in tricks {
        let r = rcpt(t, true);
        // stranger: refused
        let v = p.decide(&h, &session("198.51.100.9", None), &r);
        assert_eq!(summary(&v), denied(t), "{t}");
        // authorised clients: passed on as a local mailbox, never `accept`
        for s in [
            session("198.51.100.9", Some("alice")),
            session("10.1.2.3", None),
            session("203.0.113.50", None),
        ] {
            let v = p.decide(&h, &s, &r);
            assert_eq!(kind(&v), "pass", "{t} from {}", s.client_ip());
        }
    }
    assert!(h.logged("address trick from an authorised client"));
}

#[test]
fn deny_tricks_false_passes_local_tricks_but_not_remote_ones() {
    let p = plugin(r#"{"deny_tricks": false}"#);
    let h = Fake::new();
    let stranger = session("198.51.100.9", None);
    for t in [
        "user%other.example@local.example",
        "other.example!user@local.example",
        "\"user@other.example\"@local.example",
    ] {
        assert_eq!(
            kind(&p.decide(&h, &stranger, &rcpt(t, true))),
            "pass",
            "{t}"
        );
    }
    assert!(h.logged("deny_tricks = false"));
    // Still no relay: the destination is remote.
    let t = "user%local.example@remote.example";
    assert_eq!(
        summary(&p.decide(&h, &stranger, &rcpt(t, false))),
        denied(t)
    );
    // Unlisted address literals stay remote too.
    let t = "user%x@[192.0.2.1]";
    assert_eq!(summary(&p.decide(&h, &stranger, &rcpt(t, true))), denied(t));
}

#[test]
fn local_recipients_pass_without_any_lookup() {
    let p = plugin(r#"{"recent_auth_window": 600}"#);
    let mut h = Fake::new();
    h.kv_error = Some(KvError::Unavailable("down".into()));
    for a in [
        "user@local.example",
        "postmaster",
        "\"odd name\"@local.example",
    ] {
        let v = p.decide(&h, &session("198.51.100.9", None), &rcpt(a, true));
        assert_eq!(kind(&v), "pass", "{a}");
    }
    assert_eq!(*h.kv_reads.borrow(), 0);
}

#[test]
fn remote_recipients() {
    let p = plugin(
        r#"{"relay_networks": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.77"], "recent_auth_window": 600}"#,
    );
    let mut h = Fake::new();
    h.kv.insert(
        "recent-auth:203.0.113.50".into(),
        (h.now - 599_000).to_string(),
    );
    h.kv.insert(
        "recent-auth:203.0.113.51".into(),
        (h.now - 601_000).to_string(),
    );
    h.kv.insert("recent-auth:203.0.113.52".into(), "alice".into());
    h.kv.insert(
        "recent-auth:203.0.113.53".into(),
        format!("{} alice", h.now - 1000),
    );
    h.kv.insert(
        "recent-auth:203.0.113.54".into(),
        (h.now + 5000).to_string(),
    );
    let a = "user@remote.example";
    let r = rcpt(a, false);
    // (client ip, auth user, expected kind)
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("198.51.100.9", Some("alice"), "accept"),
        ("10.9.8.7", None, "accept"),
        ("::ffff:10.9.8.7", None, "accept"),
        ("2001:db8:5::1", None, "accept"),
        ("192.0.2.77", None, "accept"),
        ("192.0.2.78", None, "reject"),
        ("203.0.113.50", None, "accept"),
        ("203.0.113.51", None, "reject"),
        ("203.0.113.52", None, "accept"),
        ("203.0.113.53", None, "accept"),
        ("203.0.113.54", None, "accept"),
        ("203.0.113.99", None, "reject"),
        ("198.51.100.9", None, "reject"),
    ];
    for (ip, user, want) in cases {
        let v = p.decide(&h, &session(ip, *user), &r);
        assert_eq!(kind(&v), *want, "{ip} {user:?}");
        if *want == "reject" {
            assert_eq!(summary(&v), denied(a));
        }
    }
    // Literals that are not listed are relaying, even if the host marks them local.
    let lit = "user@[192.0.2.1]";
    let v = p.decide(&h, &session("198.51.100.9", None), &rcpt(lit, true));
    assert_eq!(summary(&v), denied(lit));
    let v = p.decide(&h, &session("198.51.100.9", Some("bob")), &rcpt(lit, true));
    assert_eq!(kind(&v), "accept");
}

#[test]
fn recent_auth_is_off_by_default() {
    let p = plugin("{}");
    let mut h = Fake::new();
    h.kv.insert("recent-auth:203.0.113.50".into(), h.now.to_string());
    let v = p.decide(
        &h,
        &session("203.0.113.50", None),
        &rcpt("a@remote.example", false),
    );
    assert_eq!(summary(&v), denied("a@remote.example"));
    assert_eq!(*h.kv_reads.borrow(), 0);
}

/// The error a failed look-up logs: `denied` names the missing grant.
fn assert_kv_logged(h: &Fake, err: &KvError) {
    let error = h.kv_warning().expect("a warning about the look-up");
    match err {
        KvError::Denied => assert!(error.contains("capabilities = [\"kv\"]"), "{error}"),
        KvError::Unavailable(m) | KvError::Invalid(m) => assert!(error.contains(m), "{error}"),
    }
}

fn kv_errors() -> [KvError; 3] {
    [
        KvError::Denied,
        KvError::Unavailable("connection refused".into()),
        KvError::Invalid("key too long".into()),
    ]
}

#[test]
fn kv_failures_defer() {
    let p = plugin(r#"{"recent_auth_window": 60}"#);
    assert_eq!(p.on_kv_error, OnKvError::Tempfail, "the default");
    for err in kv_errors() {
        let mut h = Fake::new();
        h.kv_error = Some(err.clone());
        for a in ["user@remote.example", "user%other.example@local.example"] {
            let local = a.ends_with("@local.example");
            let v = p.decide(&h, &session("198.51.100.9", None), &rcpt(a, local));
            assert_eq!(
                summary(&v),
                (
                    "defer",
                    451,
                    "4.3.0".into(),
                    format!("{a}: Temporary relay check failure, try again later")
                )
            );
        }
        assert!(h.logged("recent-auth look-up failed; deferring the recipient"));
        assert_kv_logged(&h, &err);
        // Authenticated clients and relay networks never need the store.
        let a = "user@remote.example";
        let v = p.decide(&h, &session("198.51.100.9", Some("alice")), &rcpt(a, false));
        assert_eq!(kind(&v), "accept");
    }
}

#[test]
fn kv_failures_with_on_kv_error_allow_go_on_without_recent_auth() {
    let p = plugin(
        r#"{"recent_auth_window": 60, "relay_networks": ["10.0.0.0/8"], "on_kv_error": "allow"}"#,
    );
    for err in kv_errors() {
        let mut h = Fake::new();
        h.kv_error = Some(err.clone());
        // Not recently authenticated, as far as the plugin can tell: the
        // normal refusal, not a deferral — for tricks as for remote domains.
        for a in ["user@remote.example", "user%other.example@local.example"] {
            let local = a.ends_with("@local.example");
            let v = p.decide(&h, &session("198.51.100.9", None), &rcpt(a, local));
            assert_eq!(summary(&v), denied(a));
        }
        assert!(h.logged("going on without it"));
        assert_kv_logged(&h, &err);
        // Local recipients still pass; relay networks and AUTH still relay.
        let v = p.decide(
            &h,
            &session("198.51.100.9", None),
            &rcpt("user@local.example", true),
        );
        assert_eq!(kind(&v), "pass");
        let a = "user@remote.example";
        let v = p.decide(&h, &session("10.1.2.3", None), &rcpt(a, false));
        assert_eq!(kind(&v), "accept");
        let v = p.decide(&h, &session("198.51.100.9", Some("alice")), &rcpt(a, false));
        assert_eq!(kind(&v), "accept");
    }
}

#[test]
fn on_kv_error_values() {
    let p = plugin(r#"{"on_kv_error": "tempfail"}"#);
    assert_eq!(p.on_kv_error, OnKvError::Tempfail);
    let p = plugin(r#"{"on_kv_error": "allow"}"#);
    assert_eq!(p.on_kv_error, OnKvError::Allow);
    for json in [
        r#"{"on_kv_error": "ignore"}"#,
        r#"{"on_kv_error": "Allow"}"#,
        r#"{"on_kv_error": true}"#,
    ] {
        let e = config(json).err().unwrap();
        assert!(
            e.contains("expected on_kv_error = \"tempfail\" or \"allow\""),
            "{json}: {e}"
        );
    }
}

#[test]
fn freshness() {
    let now = 10_000_000;
    assert!(fresh(&(now - 60_000).to_string(), now, 60_000));
    assert!(!fresh(&(now - 60_001).to_string(), now, 60_000));
    assert!(fresh(&(now + 1).to_string(), now, 60_000));
    assert!(fresh("1234 alice", 1234, 0));
    assert!(!fresh("1233 alice", 1234, 0));
    assert!(fresh("alice", now, 1));
    assert!(fresh("", now, 1));
    assert!(fresh("+5", now, 1), "not all digits: presence only");
    assert!(
        fresh("99999999999999999999999", now, 1),
        "overflow: presence only"
    );
}

#[test]
fn denial_logs_name_the_reason() {
    let p = plugin("{}");
    let h = Fake::new();
    p.decide(
        &h,
        &session("198.51.100.9", None),
        &rcpt("x!y@local.example", true),
    );
    let logs = h.logs.borrow();
    let (_, msg, fields) = logs.last().unwrap();
    assert_eq!(msg, "relay denied");
    assert!(fields.contains(&("reason".into(), "bang-path".into())));
    assert!(fields.contains(&("rcpt".into(), "x!y@local.example".into())));
}

#[test]
fn long_addresses_keep_the_reply_short() {
    let long = format!("{}@remote.example", "a".repeat(500));
    let (.., text) = summary(&relay_denied(&long));
    assert!(text.len() <= 400, "{}", text.len());
    assert!(text.ends_with(": Relay access denied"));
    let multibyte = format!("{}@remote.example", "é".repeat(300));
    let (.., text) = summary(&relay_denied(&multibyte));
    assert!(text.len() <= 400);
}

#[test]
fn config_errors_are_precise() {
    let cases = [
        (
            r#"{"relay_networks": ["10.0.0.0/8", "10.0.0.1/8"]}"#,
            "relay_networks[1]: \"10.0.0.1/8\" has host bits set",
        ),
        (
            r#"{"relay_networks": ["localhost"]}"#,
            "relay_networks[0]: \"localhost\" is not an IP address",
        ),
        (
            r#"{"local_literals": ["[192.0.2.1]", "[IPv6:nope]"]}"#,
            "local_literals[1]: \"[IPv6:nope]\" is not an IP address literal",
        ),
        (r#"{"local_literals": ["mx.example"]}"#, "local_literals[0]"),
        (r#"{"recent_auth_window": -1}"#, "invalid value"),
        (r#"{"recent_auth_window": "10m"}"#, "invalid type"),
        (r#"{"deny_trick": true}"#, "unknown field `deny_trick`"),
        (r#"{"mynetworks": []}"#, "unknown field `mynetworks`"),
    ];
    for (json, want) in cases {
        let err = config(json)
            .err()
            .unwrap_or_else(|| panic!("accepted {json}"));
        assert!(err.contains(want), "{json}: {err}");
    }
    let ok = plugin(
        r#"{"local_literals": ["192.0.2.1", "[192.0.2.2]", "2001:db8::1", "[IPv6:2001:db8::2]"]}"#,
    );
    assert_eq!(ok.local_literals.len(), 4);
    assert!(plugin("{}").deny_tricks);
}
