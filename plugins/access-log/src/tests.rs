//! Unit tests of the log line: field order and values, stage filtering,
//! arguments, and that AUTH never logs an argument.

use super::*;
use postern_sdk::TlsInfo;
use postern_sdk::testing;

fn session() -> Session {
    testing::session()
        .id("3f2a9c")
        .client_ip("192.0.2.7")
        .client_port(4711)
        .client_name("client.example")
        .listener("mx")
        .build()
}

fn outcome(stage: Stage, argument: &str, code: u16, enhanced: Option<&str>, text: &str) -> Outcome {
    Outcome {
        stage,
        argument: argument.into(),
        code,
        enhanced: enhanced.map(String::from),
        text: text.into(),
        decided_by: None,
        helo: None,
        tls: None,
        auth_user: None,
        mail_from: None,
        recipient_count: 0,
    }
}

fn config(json: &str) -> Result<AccessLog, String> {
    AccessLog::new(postern_sdk::parse_config::<Config>(json)?)
}

fn line(p: &AccessLog, s: &Session, o: &Outcome) -> Option<Vec<(String, String)>> {
    p.fields(s, o).map(|f| {
        f.into_iter()
            .map(|(k, v)| (k.to_string(), v.into_owned()))
            .collect()
    })
}

fn get<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn connect_line_has_every_field_in_order() {
    let p = config("{}").unwrap();
    let f = line(
        &p,
        &session(),
        &outcome(
            Stage::Connect,
            "",
            220,
            None,
            "mx.example.org ESMTP Postern",
        ),
    )
    .unwrap();
    let want: Vec<(String, String)> = [
        ("session", "3f2a9c"),
        ("client", "192.0.2.7:4711"),
        ("helo", ""),
        ("stage", "connect"),
        ("argument", ""),
        ("code", "220"),
        ("enhanced", ""),
        ("text", "mx.example.org ESMTP Postern"),
        ("decided_by", "host"),
        ("auth_user", ""),
        ("tls", "none"),
        ("mail_from", ""),
        ("rcpt_count", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(f, want);
}

#[test]
fn rcpt_line_with_full_session() {
    let p = config("{}").unwrap();
    // The session's changing state comes with the outcome (as it was when
    // the stage was decided), the rest from the session.
    let s = testing::session()
        .id("3f2a9c")
        .client_ip("2001:db8::7")
        .client_port(4711)
        .build();
    let mut o = outcome(
        Stage::RcptTo,
        "x@remote.example",
        554,
        Some("5.7.1"),
        "x@remote.example: Relay access denied",
    );
    o.decided_by = Some("relay-control".into());
    o.helo = Some("client.example".into());
    o.auth_user = Some("alice".into());
    o.tls = Some(TlsInfo {
        protocol: "TLSv1.3".into(),
        cipher: "TLS13_AES_256_GCM_SHA384".into(),
        client_certificate: false,
        server_name: None,
    });
    o.mail_from = Some("alice@example.org".into());
    o.recipient_count = 2;
    let f = line(&p, &s, &o).unwrap();
    let expect = [
        ("client", "[2001:db8::7]:4711"),
        ("helo", "client.example"),
        ("stage", "rcpt-to"),
        ("argument", "x@remote.example"),
        ("code", "554"),
        ("enhanced", "5.7.1"),
        ("text", "x@remote.example: Relay access denied"),
        ("decided_by", "relay-control"),
        ("auth_user", "alice"),
        ("tls", "TLSv1.3 TLS13_AES_256_GCM_SHA384"),
        ("mail_from", "alice@example.org"),
        ("rcpt_count", "2"),
    ];
    for (k, v) in expect {
        assert_eq!(get(&f, k), Some(v), "{k}");
    }
}

#[test]
fn null_sender_is_shown_as_angle_brackets() {
    let p = config("{}").unwrap();
    let mut o = outcome(Stage::RcptTo, "a@b", 250, Some("2.1.5"), "OK");
    o.mail_from = Some(String::new());
    let f = line(&p, &session(), &o).unwrap();
    assert_eq!(get(&f, "mail_from"), Some("<>"));
}

#[test]
fn auth_outcomes_never_carry_an_argument() {
    let secret = "AHVzZXIAc2VjcmV0"; // what a careless host might pass
    for json in [
        "{}",
        r#"{"include_arguments": true}"#,
        r#"{"stages": ["auth"]}"#,
    ] {
        let p = config(json).unwrap();
        let s = session();
        let mut o = outcome(
            Stage::Auth,
            secret,
            235,
            Some("2.7.0"),
            "Authentication successful",
        );
        o.auth_user = Some("user".into());
        let f = line(&p, &s, &o).unwrap();
        assert_eq!(get(&f, "argument"), None, "{json}");
        assert!(f.iter().all(|(_, v)| !v.contains(secret)), "{json}: {f:?}");
        assert_eq!(get(&f, "stage"), Some("auth"));
        assert_eq!(get(&f, "code"), Some("235"));
    }
}

#[test]
fn arguments_can_be_left_out() {
    let p = config(r#"{"include_arguments": false}"#).unwrap();
    let f = line(
        &p,
        &session(),
        &outcome(Stage::Vrfy, "jane", 252, Some("2.0.0"), "x"),
    )
    .unwrap();
    assert_eq!(get(&f, "argument"), None);
    assert_eq!(f.len(), 12);
    let p = config("{}").unwrap();
    let f = line(
        &p,
        &session(),
        &outcome(Stage::Vrfy, "jane", 252, Some("2.0.0"), "x"),
    )
    .unwrap();
    assert_eq!(get(&f, "argument"), Some("jane"));
    assert_eq!(f.len(), 13);
}

#[test]
fn stage_filter() {
    let p = config(r#"{"stages": ["rcpt_to", "MAIL-FROM", "disconnect"]}"#).unwrap();
    let all = [
        (Stage::Connect, false),
        (Stage::Helo, false),
        (Stage::Auth, false),
        (Stage::MailFrom, true),
        (Stage::RcptTo, true),
        (Stage::Data, false),
        (Stage::Vrfy, false),
        (Stage::Expn, false),
        (Stage::Disconnect, true),
    ];
    for (stage, logged) in all {
        let name = STAGE_NAMES[stage_index(&stage)];
        assert_eq!(
            line(&p, &session(), &outcome(stage, "", 0, None, "")).is_some(),
            logged,
            "{name}"
        );
    }
}

#[test]
fn every_stage_is_logged_by_default_with_its_name() {
    let p = config("{}").unwrap();
    let stages = [
        Stage::Connect,
        Stage::Helo,
        Stage::Auth,
        Stage::MailFrom,
        Stage::RcptTo,
        Stage::Data,
        Stage::Vrfy,
        Stage::Expn,
        Stage::Disconnect,
    ];
    for (i, stage) in stages.into_iter().enumerate() {
        let f = line(&p, &session(), &outcome(stage, "", 0, None, "")).unwrap();
        assert_eq!(get(&f, "stage"), Some(STAGE_NAMES[i]));
    }
}

#[test]
fn disconnect_has_code_zero() {
    let p = config("{}").unwrap();
    let f = line(&p, &session(), &outcome(Stage::Disconnect, "", 0, None, "")).unwrap();
    assert_eq!(get(&f, "code"), Some("0"));
    assert_eq!(get(&f, "stage"), Some("disconnect"));
}

#[test]
fn config_errors_are_precise() {
    let cases = [
        (r#"{"stages": []}"#, "stages is empty"),
        (
            r#"{"stages": ["connect", "rcpt"]}"#,
            "stages[1]: unknown stage \"rcpt\" (known: connect, helo, auth, mail-from, rcpt-to, data, vrfy, expn, disconnect)",
        ),
        (r#"{"stages": "connect"}"#, "invalid type"),
        (
            r#"{"include_argument": false}"#,
            "unknown field `include_argument`",
        ),
    ];
    for (json, want) in cases {
        let err = config(json)
            .err()
            .unwrap_or_else(|| panic!("accepted {json}"));
        assert!(err.contains(want), "{json}: {err}");
    }
}
