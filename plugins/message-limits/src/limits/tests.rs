//! Tests of the limits decisions against fakes of the host.

use super::*;
use crate::testutil::{FakeKv, is_pass, reply_of, sender, session, session_with, settings};

const CONF: &str = r#"{
    "window": 60,
    "default": {"max_message_size": 1000, "max_recipients": 2, "max_messages": 2, "max_connections_rate": 3},
    "classes": [
        {"name": "relay", "networks": ["10.0.0.0/8"], "max_message_size": 5000},
        {"name": "users", "authenticated": true, "max_messages": 5, "window": 3600}
    ]
}"#;

#[test]
fn connection_rate() {
    let s = settings(CONF);
    let kv = FakeKv::default();
    let sess = session("192.0.2.9");
    for _ in 0..3 {
        assert!(is_pass(&on_connect(&s, &sess, &kv)));
    }
    let v = on_connect(&s, &sess, &kv);
    assert!(matches!(v, Verdict::Disconnect(_)));
    assert_eq!(
        reply_of(&v),
        Some((
            421,
            "4.7.0",
            "Too many connections from 192.0.2.9, slow down"
        ))
    );
    assert_eq!(kv.window_of("conn:192.0.2.9"), Some(60_000));
    // Another address has its own counter; the relay class has no limit.
    assert!(is_pass(&on_connect(&s, &session("192.0.2.10"), &kv)));
    for _ in 0..10 {
        assert!(is_pass(&on_connect(&s, &session("10.0.0.1"), &kv)));
    }
    assert_eq!(kv.value_of("conn:10.0.0.1"), None);
}

#[test]
fn size_at_mail_from_and_data() {
    let s = settings(CONF);
    let kv = FakeKv::default();
    let anon = session("192.0.2.9");
    let v = on_mail_from(&s, &anon, &sender(Some("1001")), &kv);
    assert_eq!(
        reply_of(&v),
        Some((552, "5.3.4", "Message size exceeds limit for default"))
    );
    assert!(matches!(v, Verdict::Reject(_)));
    assert_eq!(
        kv.value_of("msgs:192.0.2.9"),
        None,
        "refused before counting"
    );
    assert!(is_pass(&on_mail_from(
        &s,
        &anon,
        &sender(Some("1000")),
        &kv
    )));
    assert!(is_pass(&on_mail_from(
        &s,
        &anon,
        &sender(Some("junk")),
        &kv
    )));
    let relay = session("10.2.3.4");
    assert!(is_pass(&on_mail_from(
        &s,
        &relay,
        &sender(Some("4000")),
        &kv
    )));
    assert_eq!(
        reply_of(&on_mail_from(&s, &relay, &sender(Some("5001")), &kv)),
        Some((552, "5.3.4", "Message size exceeds limit for relay"))
    );
    assert!(is_pass(&on_data(&s, &anon, 1000)));
    assert_eq!(
        reply_of(&on_data(&s, &anon, 1001)),
        Some((552, "5.3.4", "Message size exceeds limit for default"))
    );
    assert!(is_pass(&on_data(&s, &relay, 5000)));
    // The users class sets no size limit.
    let user = session_with("192.0.2.9", |d| d.auth_user = Some("alice".into()));
    assert!(is_pass(&on_data(&s, &user, 1 << 40)));
}

#[test]
fn message_rate() {
    let s = settings(CONF);
    let kv = FakeKv::default();
    let anon = session("192.0.2.9");
    assert!(is_pass(&on_mail_from(&s, &anon, &sender(None), &kv)));
    assert!(is_pass(&on_mail_from(&s, &anon, &sender(None), &kv)));
    let v = on_mail_from(&s, &anon, &sender(None), &kv);
    assert!(matches!(v, Verdict::Disconnect(_)));
    assert_eq!(reply_of(&v), Some((421, "4.7.0", RATE_TEXT)));
    assert!(kv.logged("rate limit exceeded"));
    // Authenticated: its own limit and window, same per-address key.
    let user = session_with("192.0.2.77", |d| d.auth_user = Some("alice".into()));
    for _ in 0..5 {
        assert!(is_pass(&on_mail_from(&s, &user, &sender(None), &kv)));
    }
    assert!(matches!(
        on_mail_from(&s, &user, &sender(None), &kv),
        Verdict::Disconnect(_)
    ));
    assert_eq!(kv.window_of("msgs:192.0.2.77"), Some(3_600_000));
}

#[test]
fn recipients() {
    let s = settings(CONF);
    let sess = session("192.0.2.9");
    assert!(is_pass(&on_rcpt_to(&s, &sess)));
    let sess = session_with("192.0.2.9", |d| d.recipients = vec![sender(None)]);
    assert!(is_pass(&on_rcpt_to(&s, &sess)));
    let sess = session_with("192.0.2.9", |d| d.recipients = vec![sender(None); 2]);
    let v = on_rcpt_to(&s, &sess);
    assert!(matches!(v, Verdict::Defer(_)));
    assert_eq!(reply_of(&v), Some((452, "4.5.3", RCPT_TEXT)));
    // No recipient limit for the relay class.
    let relay = session_with("10.0.0.1", |d| d.recipients = vec![sender(None); 100]);
    assert!(is_pass(&on_rcpt_to(&s, &relay)));
}

#[test]
fn kv_failures() {
    let tempfail = settings(CONF);
    let allow = settings(&CONF.replacen('{', r#"{"on_kv_error": "allow","#, 1));
    let sess = session("192.0.2.9");
    for err in [
        KvError::Unavailable("down".into()),
        KvError::Invalid("bad key".into()),
        KvError::Denied,
    ] {
        let kv = FakeKv::failing(err.clone());
        let v = on_connect(&tempfail, &sess, &kv);
        assert!(matches!(v, Verdict::Disconnect(_)));
        assert_eq!(reply_of(&v), Some((421, "4.3.0", KV_TEXT)));
        let v = on_mail_from(&tempfail, &sess, &sender(None), &kv);
        assert!(matches!(v, Verdict::Defer(_)));
        assert_eq!(reply_of(&v), Some((451, "4.3.0", KV_TEXT)));
        assert!(is_pass(&on_connect(&allow, &sess, &kv)));
        assert!(is_pass(&on_mail_from(&allow, &sess, &sender(None), &kv)));
        // Logged in both modes: a missing grant as an error naming the
        // fix, a store failure as a warning.
        match err {
            KvError::Denied => {
                assert!(kv.logged("Error message-limits needs the \"kv\" capability"));
                assert!(kv.logged("add capabilities = [\"kv\"]"));
            }
            _ => assert!(kv.logged("Warn kv counter failed")),
        }
    }
}

#[test]
fn no_limits_no_kv() {
    let s = settings("{}");
    let kv = FakeKv::failing(KvError::Denied);
    let sess = session("192.0.2.9");
    assert!(is_pass(&on_connect(&s, &sess, &kv)));
    assert!(is_pass(&on_mail_from(
        &s,
        &sess,
        &sender(Some("999999999")),
        &kv
    )));
    assert!(is_pass(&on_rcpt_to(&s, &sess)));
    assert!(is_pass(&on_data(&s, &sess, u64::MAX)));
    assert!(!kv.logged(""), "nothing touched the store");
}
