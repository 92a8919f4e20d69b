//! Unit tests of the AUTH decision with hashes generated here (native, no
//! host calls), and of the configuration checks.

use argon2::password_hash::{PasswordHasher, SaltString};
use password_hash::rand_core::OsRng;
use postern_sdk::testing::summary;

use super::*;

/// A PHC string for `password` with the given algorithm and (small, fast)
/// parameters; `None` params: the defaults `postern hash-password` uses.
fn hash(password: &str, algorithm: Algorithm, params: Option<Params>) -> String {
    let salt = SaltString::generate(&mut OsRng);
    let argon = Argon2::new(
        algorithm,
        argon2::Version::V0x13,
        params.unwrap_or_default(),
    );
    argon
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

fn fast() -> Option<Params> {
    Some(Params::new(64, 1, 1, None).unwrap())
}

fn creds(user: &str, password: &str, authzid: Option<&str>) -> Credentials {
    Credentials {
        mechanism: "PLAIN".into(),
        authzid: authzid.map(String::from),
        username: user.into(),
        password: password.into(),
    }
}

fn plugin(users: &[(&str, &str)], on_unknown_user: OnUnknownUser) -> AuthFile {
    AuthFile::new(Config {
        users: users
            .iter()
            .map(|(u, h)| (u.to_string(), h.to_string()))
            .collect(),
        on_unknown_user,
    })
    .unwrap()
}

fn config(json: &str) -> Result<AuthFile, String> {
    AuthFile::new(postern_sdk::parse_config::<Config>(json)?)
}

fn invalid_reply() -> (&'static str, u16, String, String) {
    (
        "reject",
        535,
        "5.7.8".into(),
        "Authentication credentials invalid".into(),
    )
}

#[test]
fn decision_table() {
    let alice = hash("correct horse", Algorithm::Argon2id, None);
    let bob = hash("pässwörd ✓", Algorithm::Argon2id, fast());
    let p = plugin(
        &[("alice", &alice), ("bob@example.org", &bob)],
        OnUnknownUser::Reject,
    );
    // (user, password, authzid, outcome)
    let cases: &[(&str, &str, Option<&str>, Outcome)] = &[
        ("alice", "correct horse", None, Outcome::Ok),
        ("alice", "correct horse", Some("alice"), Outcome::Ok),
        ("alice", "correct horse", Some(""), Outcome::Ok),
        ("alice", "Correct horse", None, Outcome::WrongPassword),
        ("alice", "correct horse ", None, Outcome::WrongPassword),
        ("alice", "", None, Outcome::WrongPassword),
        ("Alice", "correct horse", None, Outcome::UnknownUser),
        ("mallory", "correct horse", None, Outcome::UnknownUser),
        ("bob@example.org", "pässwörd ✓", None, Outcome::Ok),
        ("bob@example.org", "passwort", None, Outcome::WrongPassword),
        (
            "alice",
            "correct horse",
            Some("bob@example.org"),
            Outcome::AuthzidMismatch,
        ),
        ("mallory", "x", Some("alice"), Outcome::AuthzidMismatch),
    ];
    for (user, pw, authzid, want) in cases {
        assert_eq!(
            p.check(&creds(user, pw, *authzid)),
            *want,
            "{user} {pw:?} {authzid:?}"
        );
    }
}

#[test]
fn replies_are_identical_for_every_refusal() {
    let p = plugin(
        &[("alice", &hash("s3cret", Algorithm::Argon2id, fast()))],
        OnUnknownUser::Reject,
    );
    assert_eq!(summary(&p.verdict(Outcome::Ok)).0, "accept");
    for o in [
        Outcome::WrongPassword,
        Outcome::UnknownUser,
        Outcome::AuthzidMismatch,
    ] {
        assert_eq!(summary(&p.verdict(o)), invalid_reply(), "{o:?}");
    }
    let wrong = p.verdict(p.check(&creds("alice", "nope", None)));
    let unknown = p.verdict(p.check(&creds("nobody", "nope", None)));
    assert_eq!(summary(&wrong), summary(&unknown));
}

#[test]
fn unknown_users_can_be_left_to_the_next_plugin() {
    let p = plugin(
        &[("alice", &hash("s3cret", Algorithm::Argon2id, fast()))],
        OnUnknownUser::Pass,
    );
    let v = p.verdict(p.check(&creds("nobody", "s3cret", None)));
    assert_eq!(summary(&v).0, "pass");
    // Known users are still decided here.
    let v = p.verdict(p.check(&creds("alice", "wrong", None)));
    assert_eq!(summary(&v), invalid_reply());
    let v = p.verdict(p.check(&creds("alice", "s3cret", None)));
    assert_eq!(summary(&v).0, "accept");
    // A foreign authzid is refused whatever the user.
    let v = p.verdict(p.check(&creds("nobody", "x", Some("alice"))));
    assert_eq!(summary(&v), invalid_reply());
}

#[test]
fn every_argon2_variant_verifies() {
    for alg in [Algorithm::Argon2id, Algorithm::Argon2i, Algorithm::Argon2d] {
        let h = hash("pw", alg, fast());
        assert!(h.starts_with(&format!("${}$", alg.ident())), "{h}");
        let p = plugin(&[("u", &h)], OnUnknownUser::Reject);
        assert_eq!(p.check(&creds("u", "pw", None)), Outcome::Ok, "{h}");
        assert_eq!(
            p.check(&creds("u", "pw2", None)),
            Outcome::WrongPassword,
            "{h}"
        );
    }
    // Non-default parameters are read from the string.
    let h = hash(
        "pw",
        Algorithm::Argon2id,
        Some(Params::new(256, 3, 2, None).unwrap()),
    );
    let p = plugin(&[("u", &h)], OnUnknownUser::Reject);
    assert_eq!(p.check(&creds("u", "pw", None)), Outcome::Ok);
}

#[test]
fn the_dummy_hash_costs_what_a_default_hash_costs() {
    // The unknown-user path verifies against DUMMY_HASH; it must be a valid
    // argon2id string with the defaults `postern hash-password` uses, so an
    // unknown user takes as long as a known one.
    check_entry("dummy", DUMMY_HASH).unwrap();
    let h = PasswordHash::new(DUMMY_HASH).unwrap();
    assert_eq!(
        Algorithm::try_from(h.algorithm).unwrap(),
        Algorithm::Argon2id
    );
    let (params, default) = (Params::try_from(&h).unwrap(), Params::default());
    assert_eq!(
        (params.m_cost(), params.t_cost(), params.p_cost()),
        (default.m_cost(), default.t_cost(), default.p_cost())
    );
    assert!(!verify(DUMMY_HASH, ""));
    assert!(!verify(DUMMY_HASH, "password"));
}

#[test]
fn config_is_checked_at_init() {
    let good = hash("pw", Algorithm::Argon2id, fast());
    let cases: Vec<(String, &str)> = vec![
        (r#"{}"#.into(), "missing field `users`"),
        (
            format!(r#"{{"users": {{"": "{good}"}}}}"#),
            "empty user name",
        ),
        (
            r#"{"users": {"alice": "hunter2"}}"#.into(),
            "users[\"alice\"]: not a PHC password hash string",
        ),
        (
            r#"{"users": {"carol": "$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"}}"#.into(),
            "users[\"carol\"]: unsupported algorithm \"pbkdf2-sha256\"",
        ),
        (
            r#"{"users": {"dave": "$argon2id$v=19$m=1,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"}}"#.into(),
            "users[\"dave\"]: invalid argon2 parameters",
        ),
        (
            r#"{"users": {"erin": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ"}}"#.into(),
            "users[\"erin\"]: the PHC string has no salt or no hash",
        ),
        (
            format!(r#"{{"users": {{"a": "{good}"}}, "on_unknown_user": "accept"}}"#),
            "unknown variant `accept`",
        ),
        (
            format!(r#"{{"users": {{"a": "{good}"}}, "passwords": {{}}}}"#),
            "unknown field `passwords`",
        ),
    ];
    for (json, want) in &cases {
        let err = config(json)
            .err()
            .unwrap_or_else(|| panic!("accepted {json}"));
        assert!(err.contains(want), "{json}: {err}");
        // The message names the user but never echoes the hash.
        for secret in ["hunter2", "aGFzaGhhc2hoYXNoaGFzaA", "c2FsdHNhbHQ"] {
            assert!(!err.contains(secret), "{err}");
        }
    }
    let p = config(&format!(
        r#"{{"users": {{"alice": " {good} "}}, "on_unknown_user": "pass"}}"#
    ))
    .unwrap();
    assert_eq!(p.on_unknown_user, OnUnknownUser::Pass);
    assert_eq!(p.check(&creds("alice", "pw", None)), Outcome::Ok);
}
