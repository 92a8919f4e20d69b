//! Unit tests of the VRFY/EXPN answers, the trust decision, the rate limit
//! and configuration errors. Pure: a fake host.

use std::cell::RefCell;
use std::collections::HashMap;

use super::directory::{bare, check_address};
use super::*;

#[derive(Default)]
struct Fake {
    counters: RefCell<HashMap<String, i64>>,
    windows: RefCell<Vec<u64>>,
    kv_error: Option<KvError>,
    logs: RefCell<Vec<String>>,
}

impl Host for Fake {
    fn kv_increment(&self, key: &str, delta: i64, window_ms: u64) -> Result<i64, KvError> {
        if let Some(e) = &self.kv_error {
            return Err(e.clone());
        }
        self.windows.borrow_mut().push(window_ms);
        let mut c = self.counters.borrow_mut();
        let v = c.entry(key.to_string()).or_insert(0);
        *v += delta;
        Ok(*v)
    }
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        let f: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.logs
            .borrow_mut()
            .push(format!("{level:?} {message} {}", f.join(" ")));
    }
}

impl Fake {
    fn failing(e: KvError) -> Fake {
        Fake {
            kv_error: Some(e),
            ..Fake::default()
        }
    }
    fn logged(&self, needle: &str) -> bool {
        self.logs.borrow().iter().any(|l| l.contains(needle))
    }
}

fn session(ip: &str, auth_user: Option<&str>) -> Session {
    postern_sdk::testing::session()
        .client_ip(ip)
        .auth(auth_user)
        .build()
}

fn config(json: &str) -> Result<VrfyExpn, String> {
    VrfyExpn::new(postern_sdk::parse_config::<Config>(json)?)
}

type Summary = (&'static str, u16, String, String);

use postern_sdk::testing::summary;

fn s(kind: &'static str, code: u16, enhanced: &str, text: &str) -> Summary {
    (kind, code, enhanced.into(), text.into())
}

fn vrfy_off_reply() -> Summary {
    s(
        "accept-with",
        252,
        "2.0.0",
        "Cannot VRFY user, but will accept message and attempt delivery",
    )
}

fn expn_off_reply() -> Summary {
    s("reject", 502, "5.5.1", "EXPN is disabled")
}

const TRUSTED: &str = r#"{
    "mode": "trusted",
    "trusted_networks": ["10.0.0.0/8", "2001:db8::/32"],
    "mailboxes": ["jane@example.org", "John.Smith@example.org", "jane@example.net", "bob@example.org"],
    "lists": {
        "staff": ["jane@example.org", "bob@example.org"],
        "Sales@Example.org": ["john.smith@example.org"]
    },
    "rate_limit": 0
}"#;

#[test]
fn off_mode_reveals_nothing() {
    let p = config(r#"{"rate_limit": 0, "mailboxes": ["jane@example.org"]}"#).unwrap();
    let h = Fake::default();
    for sess in [
        session("10.0.0.1", Some("alice")),
        session("192.0.2.9", None),
    ] {
        for arg in ["jane@example.org", "jane", "nobody", "staff"] {
            assert_eq!(
                summary(&p.answer(&h, &sess, Command::Vrfy, arg)),
                vrfy_off_reply()
            );
            assert_eq!(
                summary(&p.answer(&h, &sess, Command::Expn, arg)),
                expn_off_reply()
            );
        }
    }
    // The defaults: mode off.
    let p = config(r#"{"rate_limit": 0}"#).unwrap();
    assert_eq!(p.mode, Mode::Off);
}

#[test]
fn trust_decision() {
    let p = config(TRUSTED).unwrap();
    let cases = [
        ("10.1.2.3", None, true),
        ("::ffff:10.1.2.3", None, true),
        ("2001:db8::25", None, true),
        ("192.0.2.9", Some("alice"), true),
        ("192.0.2.9", None, false),
        ("2001:db9::1", None, false),
        ("garbage", None, false),
    ];
    for (ip, user, want) in cases {
        assert_eq!(p.trusted(&session(ip, user)), want, "{ip} {user:?}");
    }
}

#[test]
fn untrusted_clients_get_the_off_answers_in_trusted_mode() {
    let p = config(TRUSTED).unwrap();
    let h = Fake::default();
    let stranger = session("192.0.2.9", None);
    for arg in ["jane@example.org", "jane", "nobody@example.org", "staff"] {
        assert_eq!(
            summary(&p.answer(&h, &stranger, Command::Vrfy, arg)),
            vrfy_off_reply()
        );
        assert_eq!(
            summary(&p.answer(&h, &stranger, Command::Expn, arg)),
            expn_off_reply()
        );
    }
}

#[test]
fn vrfy_table_for_trusted_clients() {
    let p = config(TRUSTED).unwrap();
    let h = Fake::default();
    let me = session("10.0.0.7", None);
    let unknown = s("reject", 550, "5.1.1", "Mailbox unknown");
    let cases: &[(&str, Summary)] = &[
        (
            "jane@example.org",
            s("accept-with", 250, "2.1.5", "<jane@example.org>"),
        ),
        (
            "<jane@example.org>",
            s("accept-with", 250, "2.1.5", "<jane@example.org>"),
        ),
        (
            "Jane Doe <JANE@Example.ORG.>",
            s("accept-with", 250, "2.1.5", "<jane@example.org>"),
        ),
        (
            "  jane@example.net  ",
            s("accept-with", 250, "2.1.5", "<jane@example.net>"),
        ),
        (
            "john.smith@example.org",
            s("accept-with", 250, "2.1.5", "<John.Smith@example.org>"),
        ),
        ("bob", s("accept-with", 250, "2.1.5", "<bob@example.org>")),
        ("jane", s("reject", 553, "5.1.4", "User ambiguous")),
        (
            "staff",
            s("reject", 550, "5.1.1", "That is a mailing list, not a user"),
        ),
        ("nobody@example.org", unknown.clone()),
        ("jane@example.com", unknown.clone()),
        ("nobody", unknown.clone()),
        ("\"jane\"@example.org", unknown.clone()),
        ("", unknown.clone()),
    ];
    for (arg, want) in cases {
        assert_eq!(
            &summary(&p.answer(&h, &me, Command::Vrfy, arg)),
            want,
            "VRFY {arg:?}"
        );
    }
    // Authenticated sessions are trusted from anywhere.
    let v = p.answer(
        &h,
        &session("198.51.100.1", Some("alice")),
        Command::Vrfy,
        "bob",
    );
    assert_eq!(summary(&v).1, 250);
}

#[test]
fn expn_table_for_trusted_clients() {
    let p = config(TRUSTED).unwrap();
    let h = Fake::default();
    let me = session("192.0.2.9", Some("alice"));
    let staff = s(
        "accept-with",
        250,
        "2.1.5",
        "<jane@example.org>, <bob@example.org>",
    );
    let sales = s("accept-with", 250, "2.1.5", "<john.smith@example.org>");
    let cases: &[(&str, Summary)] = &[
        ("staff", staff.clone()),
        ("STAFF", staff.clone()),
        ("<staff>", staff),
        ("sales@example.org", sales.clone()),
        ("Sales <SALES@example.org.>", sales),
        ("sales", s("reject", 550, "5.1.1", "Mailing list unknown")),
        (
            "staff@example.org",
            s("reject", 550, "5.1.1", "Mailing list unknown"),
        ),
        (
            "jane@example.org",
            s(
                "reject",
                550,
                "5.1.1",
                "That is a user name, not a mailing list",
            ),
        ),
        ("nothing", s("reject", 550, "5.1.1", "Mailing list unknown")),
    ];
    for (arg, want) in cases {
        assert_eq!(
            &summary(&p.answer(&h, &me, Command::Expn, arg)),
            want,
            "EXPN {arg:?}"
        );
    }
}

#[test]
fn answers_never_echo_the_argument() {
    let p = config(TRUSTED).unwrap();
    let h = Fake::default();
    let me = session("10.0.0.7", None);
    let probe = "x".repeat(600);
    for cmd in [Command::Vrfy, Command::Expn] {
        let (.., text) = summary(&p.answer(&h, &me, cmd, &probe));
        assert!(!text.contains("xxx"), "{text}");
    }
}

#[test]
fn rate_limit_counts_vrfy_and_expn_together_per_ip() {
    let p = config(r#"{"rate_limit": 3, "rate_window": 30}"#).unwrap();
    let h = Fake::default();
    let a = session("192.0.2.9", None);
    let b = session("192.0.2.10", None);
    assert_eq!(
        summary(&p.answer(&h, &a, Command::Vrfy, "x")),
        vrfy_off_reply()
    );
    assert_eq!(
        summary(&p.answer(&h, &a, Command::Expn, "x")),
        expn_off_reply()
    );
    assert_eq!(
        summary(&p.answer(&h, &a, Command::Vrfy, "x")),
        vrfy_off_reply()
    );
    let limited = s(
        "defer",
        450,
        "4.7.1",
        "Too many VRFY/EXPN requests, slow down",
    );
    assert_eq!(summary(&p.answer(&h, &a, Command::Vrfy, "x")), limited);
    assert_eq!(summary(&p.answer(&h, &a, Command::Expn, "x")), limited);
    // Another client has its own counter.
    assert_eq!(
        summary(&p.answer(&h, &b, Command::Vrfy, "x")),
        vrfy_off_reply()
    );
    assert_eq!(h.counters.borrow()["rate:192.0.2.9"], 5);
    assert!(h.windows.borrow().iter().all(|w| *w == 30_000));
    assert!(
        h.logs
            .borrow()
            .iter()
            .any(|l| l.contains("rate limit exceeded") && l.contains("client=192.0.2.9"))
    );
}

#[test]
fn rate_limit_applies_to_trusted_clients_too() {
    let p = config(
        r#"{"mode": "trusted", "mailboxes": ["jane@example.org"], "rate_limit": 1, "rate_window": 60}"#,
    )
    .unwrap();
    let h = Fake::default();
    let me = session("192.0.2.9", Some("alice"));
    assert_eq!(summary(&p.answer(&h, &me, Command::Vrfy, "jane")).1, 250);
    assert_eq!(summary(&p.answer(&h, &me, Command::Vrfy, "jane")).1, 450);
}

#[test]
fn default_rate_limit_is_ten_per_minute() {
    let p = config("{}").unwrap();
    let h = Fake::default();
    let me = session("192.0.2.9", None);
    for _ in 0..10 {
        assert_eq!(summary(&p.answer(&h, &me, Command::Vrfy, "x")).1, 252);
    }
    assert_eq!(summary(&p.answer(&h, &me, Command::Vrfy, "x")).1, 450);
    assert_eq!(h.windows.borrow()[0], 60_000);
}

fn kv_errors() -> [KvError; 3] {
    [
        KvError::Denied,
        KvError::Unavailable("down".into()),
        KvError::Invalid("x".into()),
    ]
}

/// TRUSTED with a rate limit, plus `extra` keys.
fn limited(extra: &str) -> VrfyExpn {
    config(
        TRUSTED
            .replace("\"rate_limit\": 0", &format!("\"rate_limit\": 5{extra}"))
            .as_str(),
    )
    .unwrap()
}

/// The warning a failed count logs: `denied` names the fix.
fn assert_kv_logged(h: &Fake, err: &KvError, message: &str) {
    let hint = match err {
        KvError::Denied => "add capabilities = [\"kv\"] or set rate_limit = 0",
        KvError::Unavailable(_) => "kv unavailable: down",
        KvError::Invalid(_) => "kv request invalid: x",
    };
    let logs = h.logs.borrow();
    assert!(
        logs.iter()
            .any(|l| l.contains("Warn") && l.contains(message) && l.contains(hint)),
        "{logs:?}"
    );
}

#[test]
fn kv_failure_fails_safe() {
    let p = limited("");
    assert_eq!(p.on_kv_error, OnKvError::Tempfail, "the default");
    for err in kv_errors() {
        let h = Fake::failing(err.clone());
        for cmd in [Command::Vrfy, Command::Expn] {
            for who in [session("10.0.0.1", None), session("192.0.2.9", None)] {
                let v = p.answer(&h, &who, cmd, "jane@example.org");
                assert_eq!(
                    summary(&v),
                    s(
                        "defer",
                        451,
                        "4.3.0",
                        "VRFY/EXPN temporarily unavailable, try again later"
                    )
                );
            }
        }
        assert_kv_logged(&h, &err, "rate limit check failed; deferring");
    }
    // With the limit off the store is never asked.
    let h = Fake::failing(KvError::Denied);
    let p = config(TRUSTED).unwrap();
    assert_eq!(
        summary(&p.answer(&h, &session("10.0.0.1", None), Command::Vrfy, "bob")).1,
        250
    );
    assert!(h.logs.borrow().is_empty());
}

#[test]
fn kv_failure_with_on_kv_error_allow_answers_unlimited() {
    let p = limited(r#", "on_kv_error": "allow""#);
    for err in kv_errors() {
        let h = Fake::failing(err.clone());
        // More than rate_limit commands: none is counted, all are answered.
        for _ in 0..10 {
            let trusted = session("10.0.0.1", None);
            assert_eq!(
                summary(&p.answer(&h, &trusted, Command::Vrfy, "bob")),
                s("accept-with", 250, "2.1.5", "<bob@example.org>")
            );
            assert_eq!(
                summary(&p.answer(&h, &trusted, Command::Expn, "staff")).1,
                250
            );
            // Untrusted clients still learn nothing.
            let stranger = session("192.0.2.9", None);
            assert_eq!(
                summary(&p.answer(&h, &stranger, Command::Vrfy, "bob")),
                vrfy_off_reply()
            );
            assert_eq!(
                summary(&p.answer(&h, &stranger, Command::Expn, "staff")),
                expn_off_reply()
            );
        }
        assert_kv_logged(&h, &err, "answering unlimited (on_kv_error = \"allow\")");
        assert!(!h.logged("deferring"));
    }
}

#[test]
fn on_kv_error_values() {
    assert_eq!(
        config(r#"{"on_kv_error": "tempfail"}"#)
            .unwrap()
            .on_kv_error,
        OnKvError::Tempfail
    );
    assert_eq!(
        config(r#"{"on_kv_error": "allow"}"#).unwrap().on_kv_error,
        OnKvError::Allow
    );
    for json in [
        r#"{"on_kv_error": "maybe"}"#,
        r#"{"on_kv_error": "Allow"}"#,
        r#"{"on_kv_error": 1}"#,
    ] {
        let e = config(json).err().unwrap();
        assert!(
            e.contains("expected on_kv_error = \"tempfail\" or \"allow\""),
            "{json}: {e}"
        );
    }
}

#[test]
fn address_checks_and_bare() {
    assert!(check_address("jane@example.org").is_ok());
    assert!(check_address("\"j.d\"@[192.0.2.1]").is_ok());
    for bad in [
        "jane",
        "@example.org",
        "jane@",
        "ja ne@example.org",
        "<jane@example.org>",
        "a@b,c@d",
        "a\t@b",
    ] {
        assert!(check_address(bad).is_err(), "{bad}");
    }
    assert!(check_address(&format!("{}@example.org", "a".repeat(250))).is_err());
    assert_eq!(bare(" <a@b> "), "a@b");
    assert_eq!(bare("Name <a@b>"), "a@b");
    assert_eq!(bare("a@b"), "a@b");
    assert_eq!(bare(">a<"), ">a<");
}

#[test]
fn config_errors_are_precise() {
    let many: Vec<String> = (0..40)
        .map(|i| format!("\"member{i}@example.org\""))
        .collect();
    let long_list = format!(r#"{{"lists": {{"all": [{}]}}}}"#, many.join(","));
    let cases = [
        (r#"{"mode": "on"}"#.to_string(), "unknown variant `on`"),
        (
            r#"{"trusted_networks": ["10.0.0.0/33"]}"#.into(),
            "trusted_networks[0]: \"10.0.0.0/33\" is not a CIDR range",
        ),
        (
            r#"{"mailboxes": ["jane@example.org", "bob"]}"#.into(),
            "mailboxes[1]: \"bob\" is not a mailbox address (expected local-part@domain)",
        ),
        (
            r#"{"lists": {"staff": []}}"#.into(),
            "lists.\"staff\" has no members",
        ),
        (
            r#"{"lists": {"staff": ["ok@example.org", "not an address"]}}"#.into(),
            "lists.\"staff\"[1]: \"not an address\" is not a mailbox address",
        ),
        (
            r#"{"lists": {"my list": ["a@b"]}}"#.into(),
            "lists: \"my list\" is not a list name",
        ),
        (
            r#"{"lists": {"Staff": ["a@b"], "staff": ["c@d"]}}"#.into(),
            "same name",
        ),
        (long_list, "the EXPN reply would be"),
        (
            r#"{"rate_window": 0}"#.into(),
            "rate_window must be at least 1",
        ),
        (r#"{"rate_limit": -1}"#.into(), "invalid value"),
        (r#"{"mailbox": []}"#.into(), "unknown field `mailbox`"),
        (r#"{"lists": ["a@b"]}"#.into(), "invalid type"),
    ];
    for (json, want) in cases {
        let err = config(&json)
            .err()
            .unwrap_or_else(|| panic!("accepted {json}"));
        assert!(err.contains(want), "{json}: {err}");
    }
    // rate_window 0 is fine when the limit is off.
    assert!(config(r#"{"rate_limit": 0, "rate_window": 0}"#).is_ok());
}
