//! Table-style tests of the connect check against a fake DNS and KV.

use std::cell::RefCell;
use std::collections::HashMap;

use super::*;
use crate::config::Config;

type Dns = Result<Vec<String>, DnsError>;
/// The expected refusal: (kind, code, enhanced, text), or none for `pass`.
type Want = Option<(&'static str, u16, &'static str, String)>;

#[derive(Default)]
struct FakeHost {
    dns: HashMap<String, Dns>,
    kv: RefCell<HashMap<String, String>>,
    kv_fail: Option<KvError>,
    queries: RefCell<Vec<String>>,
    sets: RefCell<Vec<(String, String, u64)>>,
    logs: RefCell<Vec<String>>,
}

impl FakeHost {
    fn answer(mut self, name: &str, r: Dns) -> Self {
        self.dns.insert(name.to_string(), r);
        self
    }
    fn cache(self, key: &str, value: &str) -> Self {
        self.kv.borrow_mut().insert(key.into(), value.into());
        self
    }
    fn logged(&self, needle: &str) -> bool {
        self.logs.borrow().iter().any(|l| l.contains(needle))
    }
    fn queries(&self) -> Vec<String> {
        self.queries.borrow().clone()
    }
}

impl Host for FakeHost {
    fn lookup_a(&self, name: &str) -> Result<Vec<String>, DnsError> {
        self.queries.borrow_mut().push(name.to_string());
        self.dns
            .get(name)
            .cloned()
            .unwrap_or(Err(DnsError::NxDomain))
    }
    fn kv_get(&self, key: &str) -> Result<Option<String>, KvError> {
        match &self.kv_fail {
            Some(e) => Err(e.clone()),
            None => Ok(self.kv.borrow().get(key).cloned()),
        }
    }
    fn kv_set(&self, key: &str, value: &str, ttl_ms: u64) -> Result<(), KvError> {
        if let Some(e) = &self.kv_fail {
            return Err(e.clone());
        }
        self.sets
            .borrow_mut()
            .push((key.into(), value.into(), ttl_ms));
        self.kv.borrow_mut().insert(key.into(), value.into());
        Ok(())
    }
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        self.logs
            .borrow_mut()
            .push(format!("{level:?} {message} {fields:?}"));
    }
}

fn settings(json: &str) -> Settings {
    postern_sdk::parse_config::<Config>(json)
        .and_then(|c| c.validate())
        .unwrap()
}

fn session(ip: &str) -> Session {
    postern_sdk::testing::session().client_ip(ip).build()
}

fn reply_of(v: &Verdict) -> Option<(&'static str, u16, &str, &str)> {
    match v {
        Verdict::Reject(r) => Some((
            "reject",
            r.code,
            r.enhanced.as_deref().unwrap_or(""),
            &r.text,
        )),
        Verdict::Defer(r) => Some((
            "defer",
            r.code,
            r.enhanced.as_deref().unwrap_or(""),
            &r.text,
        )),
        Verdict::Pass => None,
        other => panic!("unexpected verdict {other:?}"),
    }
}

fn listed(code: &str) -> Dns {
    Ok(vec![code.to_string()])
}

const ONE: &str = r#"{"zones": [{"zone": "bl.example"}]}"#;
const Q: &str = "99.2.0.192.bl.example";

#[test]
fn clean_client_is_cached() {
    let s = settings(ONE);
    let h = FakeHost::default();
    assert_eq!(reply_of(&on_connect(&s, &session("192.0.2.99"), &h)), None);
    assert_eq!(h.queries(), vec![Q]);
    assert_eq!(
        h.sets.borrow().clone(),
        vec![(
            "dnsbl:bl.example:192.0.2.99".to_string(),
            "clean".to_string(),
            300_000
        )]
    );
    // The second connection is answered from the cache.
    assert_eq!(reply_of(&on_connect(&s, &session("192.0.2.99"), &h)), None);
    assert_eq!(h.queries().len(), 1);
}

#[test]
fn listed_client_is_rejected_and_cached() {
    let s = settings(ONE);
    let h = FakeHost::default().answer(Q, listed("127.0.0.2"));
    let v = on_connect(&s, &session("192.0.2.99"), &h);
    assert_eq!(
        reply_of(&v),
        Some((
            "reject",
            554,
            "5.7.1",
            "Service unavailable; client [192.0.2.99] blocked using bl.example"
        ))
    );
    assert_eq!(h.sets.borrow()[0].1, "listed:127.0.0.2");
    let again = on_connect(&s, &session("::ffff:192.0.2.99"), &h);
    assert_eq!(reply_of(&again), reply_of(&v));
    assert_eq!(h.queries().len(), 1, "second answer from the cache");
    assert!(h.logged("client listed"));
}

#[test]
fn actions_replies_and_zone_order() {
    let s = settings(
        r#"{"cache_ttl": 0, "zones": [
            {"zone": "log.example", "action": "log"},
            {"zone": "soft.example", "action": "defer", "match": ["127.0.0.3"]},
            {"zone": "hard.example", "reply": "Blocked: {ip} is on {zone}; see https://hard.example/{ip}"}
        ]}"#,
    );
    let ip = "198.51.100.7";
    let rev = "7.100.51.198";
    let q = |z: &str| format!("{rev}.{z}");
    #[rustfmt::skip]
    let table: Vec<(Vec<(String, Dns)>, Want)> = vec![
        (vec![], None),
        (vec![(q("log.example"), listed("127.0.0.2"))], None),
        (vec![(q("soft.example"), listed("127.0.0.2"))], None), // 127.0.0.2 is not in match
        (vec![(q("soft.example"), listed("127.0.0.3"))],
         Some(("defer", 450, "4.7.1", format!("Service unavailable; client [{ip}] blocked using soft.example")))),
        (vec![(q("log.example"), listed("127.0.0.2")), (q("hard.example"), listed("127.0.0.4"))],
         Some(("reject", 554, "5.7.1", format!("Blocked: {ip} is on hard.example; see https://hard.example/{ip}")))),
        (vec![(q("soft.example"), listed("127.0.0.3")), (q("hard.example"), listed("127.0.0.4"))],
         Some(("defer", 450, "4.7.1", format!("Service unavailable; client [{ip}] blocked using soft.example")))),
    ];
    for (answers, want) in table {
        let mut h = FakeHost::default();
        for (name, a) in answers.clone() {
            h = h.answer(&name, a);
        }
        let v = on_connect(&s, &session(ip), &h);
        let got = reply_of(&v).map(|(k, c, e, t)| (k, c, e, t.to_string()));
        assert_eq!(got, want, "{answers:?}");
        assert!(h.sets.borrow().is_empty(), "cache_ttl = 0 writes nothing");
    }
}

#[test]
fn dns_failures() {
    let s = settings(
        r#"{"zones": [
            {"zone": "open.example"},
            {"zone": "strict.example", "on_dns_error": "defer"}
        ]}"#,
    );
    let temp = || Err(DnsError::Temporary("SERVFAIL".into()));
    let q1 = "9.2.0.192.open.example";
    let q2 = "9.2.0.192.strict.example";
    let strict = Some((
        "defer",
        451,
        "4.4.3",
        "Temporary DNSBL failure (strict.example), try again later".to_string(),
    ));
    #[rustfmt::skip]
    let table: Vec<(Dns, Dns, Want)> = vec![
        (temp(), Err(DnsError::NxDomain), None),
        (temp(), Err(DnsError::NoRecords), None),
        (Err(DnsError::NxDomain), temp(), strict.clone()),
        (Err(DnsError::NxDomain), listed("127.255.255.254"), strict.clone()),
        (listed("127.255.255.255"), Err(DnsError::NxDomain), None),
        (Err(DnsError::NxDomain), Err(DnsError::Invalid("bad".into())), strict.clone()),
        (Err(DnsError::Denied), Err(DnsError::Denied), strict),
    ];
    for (a1, a2, want) in table {
        let h = FakeHost::default()
            .answer(q1, a1.clone())
            .answer(q2, a2.clone());
        let v = on_connect(&s, &session("192.0.2.9"), &h);
        let got = reply_of(&v).map(|(k, c, e, t)| (k, c, e, t.to_string()));
        assert_eq!(got, want, "{a1:?} {a2:?}");
        // Failures are logged and never cached.
        assert!(h.logged("DNSBL look-up failed"), "{a1:?} {a2:?}");
        for (_, value, _) in h.sets.borrow().iter() {
            assert_eq!(value, "clean");
        }
    }
    let denied = FakeHost::default()
        .answer(q1, Err(DnsError::Denied))
        .answer(q2, Err(DnsError::NxDomain));
    on_connect(&s, &session("192.0.2.9"), &denied);
    assert!(denied.logged("capabilities = [\"dns\", \"kv\"]"));
}

#[test]
fn unexpected_answers_are_not_listings() {
    let s = settings(ONE);
    let h = FakeHost::default().answer(Q, listed("198.51.100.1"));
    assert_eq!(reply_of(&on_connect(&s, &session("192.0.2.99"), &h)), None);
    assert!(h.logged("outside 127.0.0.0/8"));
    assert!(h.sets.borrow().is_empty(), "not cached");
}

#[test]
fn cache_contents_and_failures() {
    let s = settings(ONE);
    let key = "dnsbl:bl.example:192.0.2.99";
    // A cached listing is trusted without a query.
    let h = FakeHost::default().cache(key, "listed:127.0.0.4");
    assert!(matches!(
        on_connect(&s, &session("192.0.2.99"), &h),
        Verdict::Reject(_)
    ));
    assert!(h.queries().is_empty());
    // A cached "clean" too.
    let h = FakeHost::default()
        .cache(key, "clean")
        .answer(Q, listed("127.0.0.2"));
    assert_eq!(reply_of(&on_connect(&s, &session("192.0.2.99"), &h)), None);
    assert!(h.queries().is_empty());
    // Garbage in the cache: ask again.
    let h = FakeHost::default()
        .cache(key, "listed:banana")
        .answer(Q, listed("127.0.0.2"));
    assert!(matches!(
        on_connect(&s, &session("192.0.2.99"), &h),
        Verdict::Reject(_)
    ));
    assert_eq!(h.queries().len(), 1);
    // A failing KV only skips the cache: the DNS decides, a listing still
    // refuses and a clean client passes (no on_kv_error: never a 4xx).
    for e in [
        KvError::Unavailable("down".into()),
        KvError::Invalid("bad key".into()),
        KvError::Denied,
    ] {
        let h = FakeHost {
            kv_fail: Some(e.clone()),
            ..FakeHost::default()
        }
        .answer(Q, listed("127.0.0.2"));
        assert!(matches!(
            on_connect(&s, &session("192.0.2.99"), &h),
            Verdict::Reject(_)
        ));
        assert_eq!(h.queries(), [Q]);
        assert!(h.logged("Debug DNSBL cache unavailable"));
        assert!(h.logged("Debug DNSBL cache not written"));
        let h = FakeHost {
            kv_fail: Some(e),
            ..FakeHost::default()
        };
        assert_eq!(reply_of(&on_connect(&s, &session("192.0.2.99"), &h)), None);
        assert_eq!(h.queries(), [Q]);
    }
}

#[test]
fn skipped_clients() {
    let s = settings(ONE);
    for ip in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] {
        let h = FakeHost::default();
        assert_eq!(reply_of(&on_connect(&s, &session(ip), &h)), None);
        assert!(h.queries().is_empty(), "{ip} must not be queried");
    }
    let custom =
        settings(r#"{"zones": [{"zone": "bl.example"}], "skip_networks": ["10.0.0.0/8"]}"#);
    let h = FakeHost::default();
    on_connect(&custom, &session("10.1.1.1"), &h);
    assert!(h.queries().is_empty());
    on_connect(&custom, &session("127.0.0.1"), &h);
    assert_eq!(
        h.queries(),
        vec!["1.0.0.127.bl.example"],
        "replaces the default list"
    );
    let h = FakeHost::default();
    assert_eq!(reply_of(&on_connect(&s, &session("garbage"), &h)), None);
    assert!(h.logged("client address not understood"));
}

#[test]
fn ipv6_clients() {
    let s = settings(ONE);
    let q = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example";
    let h = FakeHost::default().answer(q, listed("127.0.0.2"));
    let v = on_connect(&s, &session("2001:db8::1"), &h);
    assert_eq!(
        reply_of(&v),
        Some((
            "reject",
            554,
            "5.7.1",
            "Service unavailable; client [2001:db8::1] blocked using bl.example"
        ))
    );
    assert_eq!(h.sets.borrow()[0].0, "dnsbl:bl.example:2001:db8::1");
}

#[test]
fn long_replies_are_cut() {
    let zone = Zone {
        zone: format!("{}.example", vec!["a".repeat(60); 3].join(".")),
        action: Action::Reject,
        reply: Some(format!("{} {{zone}} {{zone}}", "x".repeat(200))),
        matches: None,
        on_dns_error: OnDnsError::Pass,
    };
    let text = listed_text(&zone, "2001:db8::1");
    assert_eq!(text.len(), 400);
    assert!(text.ends_with("..."));
}
