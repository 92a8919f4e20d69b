//! HELO/EHLO checks: the argument must be a domain or an address literal
//! (RFC 5321 §4.1.1.1, §4.1.2, §4.1.3), must not claim to be this server (by
//! name or by its own address) and, optionally, must be fully qualified.
//! An address literal naming our own address is a lie only when the client is
//! not at that address itself (a client on this host, e.g. Python's smtplib on
//! a machine without a fully qualified name, greets `EHLO [127.0.0.1]`).
//! Trusts the session's `server_name`, `local_ip` and `client_ip` (set by the
//! host); the HELO argument is hostile.

use postern_sdk::{Verdict, pass, reject};

use crate::syntax::{HeloName, literal, parse_helo, parse_ip, sanitize};

/// The HELO part of the configuration, validated.
#[derive(Debug, Clone)]
pub struct HeloPolicy {
    pub reject_own_hostname: bool,
    /// Extra names of this server: lower-case, no trailing dot.
    pub own_names: Vec<String>,
    pub require_fqdn: bool,
    pub reject_invalid_helo: bool,
}

pub const INVALID_TEXT: &str = "HELO name must be a domain name or an address literal";
pub const FQDN_TEXT: &str = "HELO name must be a fully qualified domain name";

/// The addresses of the connection, as the host reports them.
#[derive(Debug, Clone, Copy)]
pub struct Peers<'a> {
    /// The address the client connected to (ours).
    pub local_ip: &'a str,
    /// The client's address.
    pub client_ip: &'a str,
}

/// Decide on the HELO/EHLO argument `name`.
pub fn check(policy: &HeloPolicy, server_name: &str, peers: Peers<'_>, name: &str) -> Verdict {
    let parsed = parse_helo(name);
    if parsed.is_err() && policy.reject_invalid_helo {
        return reject(501, "5.5.2", INVALID_TEXT);
    }
    if policy.reject_own_hostname
        && let Some(claimed) = own_identity(policy, server_name, peers, name, &parsed)
    {
        return reject(
            550,
            "5.7.1",
            format!("You are not {}", sanitize(&claimed, 300)),
        );
    }
    if policy.require_fqdn {
        let is_literal = name.starts_with('[');
        let bare = name.strip_suffix('.').unwrap_or(name);
        if !is_literal && !bare.contains('.') {
            return reject(550, "5.5.2", FQDN_TEXT);
        }
    }
    pass()
}

/// Which of our identities the client claims, if any: our host name, one of
/// `own_names`, or the address it connected to as a literal (unless that is
/// the client's own address too: then the literal is the truth).
fn own_identity(
    policy: &HeloPolicy,
    server_name: &str,
    peers: Peers<'_>,
    name: &str,
    parsed: &Result<HeloName, &'static str>,
) -> Option<String> {
    match parsed {
        Ok(HeloName::Ip(ip)) => {
            let ours = parse_ip(peers.local_ip)?;
            let client_is_there = parse_ip(peers.client_ip) == Some(*ip);
            (ours == *ip && !client_is_there).then(|| literal(ours))
        }
        Ok(HeloName::General) => None,
        // A domain, or (when invalid names are let through) the raw text.
        _ => {
            let claimed = name.strip_suffix('.').unwrap_or(name);
            let server = server_name.strip_suffix('.').unwrap_or(server_name);
            if !server.is_empty() && claimed.eq_ignore_ascii_case(server) {
                return Some(server.to_ascii_lowercase());
            }
            policy
                .own_names
                .iter()
                .find(|own| claimed.eq_ignore_ascii_case(own))
                .cloned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{is_pass, reply_of};

    fn policy() -> HeloPolicy {
        HeloPolicy {
            reject_own_hostname: true,
            own_names: vec!["mx2.example.org".into()],
            require_fqdn: false,
            reject_invalid_helo: true,
        }
    }

    /// The expected refusal (code, enhanced, text), or none for `pass`.
    type Want = Option<(u16, &'static str, &'static str)>;

    const SERVER: &str = "mx.example.org";
    const LOCAL: &str = "192.0.2.25";
    /// A remote client.
    const CLIENT: &str = "198.51.100.7";

    fn check(p: &HeloPolicy, server: &str, local: &str, name: &str) -> Verdict {
        check_from(p, server, local, CLIENT, name)
    }

    fn check_from(p: &HeloPolicy, server: &str, local: &str, client: &str, name: &str) -> Verdict {
        let peers = Peers {
            local_ip: local,
            client_ip: client,
        };
        super::check(p, server, peers, name)
    }

    #[test]
    fn decisions() {
        let base = policy();
        let strict = HeloPolicy {
            require_fqdn: true,
            ..policy()
        };
        let lax = HeloPolicy {
            reject_invalid_helo: false,
            reject_own_hostname: false,
            ..policy()
        };
        let none: Want = None;
        #[rustfmt::skip]
        let table: Vec<(&HeloPolicy, &str, &str, Want)> = vec![
            (&base, LOCAL, "client.example.net", none),
            (&base, LOCAL, "localhost", none),
            (&base, LOCAL, "[198.51.100.1]", none),
            (&base, LOCAL, "[x-tag:abc]", none),
            (&base, LOCAL, "mx.example.org", Some((550, "5.7.1", "You are not mx.example.org"))),
            (&base, LOCAL, "MX.Example.Org.", Some((550, "5.7.1", "You are not mx.example.org"))),
            (&base, LOCAL, "mx2.example.org", Some((550, "5.7.1", "You are not mx2.example.org"))),
            (&base, LOCAL, "[192.0.2.25]", Some((550, "5.7.1", "You are not [192.0.2.25]"))),
            (&base, "::ffff:192.0.2.25", "[192.0.2.25]", Some((550, "5.7.1", "You are not [192.0.2.25]"))),
            (&base, "2001:db8::25", "[IPv6:2001:DB8::25]", Some((550, "5.7.1", "You are not [IPv6:2001:db8::25]"))),
            (&base, "127.0.0.1", "[127.0.0.1]", Some((550, "5.7.1", "You are not [127.0.0.1]"))),
            (&base, LOCAL, "bad..name", Some((501, "5.5.2", INVALID_TEXT))),
            (&base, LOCAL, "192.0.2.1", Some((501, "5.5.2", INVALID_TEXT))),
            (&base, LOCAL, "[192.0.2.300]", Some((501, "5.5.2", INVALID_TEXT))),
            (&strict, LOCAL, "localhost", Some((550, "5.5.2", FQDN_TEXT))),
            (&strict, LOCAL, "localhost.", Some((550, "5.5.2", FQDN_TEXT))),
            (&strict, LOCAL, "[198.51.100.1]", none),
            (&strict, LOCAL, "client.example.net", none),
            (&lax, LOCAL, "bad..name", none),
            (&lax, LOCAL, "mx.example.org", none),
        ];
        for (p, local, name, want) in table {
            let v = check(p, SERVER, local, name);
            match want {
                None => assert!(is_pass(&v), "{name:?} should pass, got {v:?}"),
                Some((code, enh, text)) => {
                    assert_eq!(reply_of(&v), Some((code, enh, text)), "{name:?}")
                }
            }
        }
    }

    #[test]
    fn invalid_names_still_checked_when_let_through() {
        let p = HeloPolicy {
            reject_invalid_helo: false,
            own_names: vec!["bad_but_ours".into()],
            require_fqdn: true,
            ..policy()
        };
        // Invalid syntax but ours: the own-name check still applies.
        assert_eq!(
            reply_of(&check(&p, SERVER, LOCAL, "BAD_BUT_OURS")),
            Some((550, "5.7.1", "You are not bad_but_ours"))
        );
        // Invalid and without a dot: the FQDN rule still applies.
        assert_eq!(
            reply_of(&check(&p, SERVER, LOCAL, "no-dot!")),
            Some((550, "5.5.2", FQDN_TEXT))
        );
    }

    #[test]
    fn own_literal_is_the_truth_for_a_client_at_that_address() {
        let p = policy();
        #[rustfmt::skip]
        let table: Vec<(&str, &str, &str, Want)> = vec![
            // smtplib on this host, no FQDN: `EHLO [127.0.0.1]` from 127.0.0.1.
            ("127.0.0.1", "127.0.0.1", "[127.0.0.1]", None),
            ("::1", "::1", "[IPv6:::1]", None),
            // The same literal, mapped and unmapped forms.
            ("::ffff:192.0.2.25", "::ffff:192.0.2.25", "[192.0.2.25]", None),
            (LOCAL, LOCAL, "[192.0.2.25]", None),
            // Another client claiming our address is still lying.
            ("127.0.0.1", "127.0.0.2", "[127.0.0.1]", Some((550, "5.7.1", "You are not [127.0.0.1]"))),
            (LOCAL, CLIENT, "[192.0.2.25]", Some((550, "5.7.1", "You are not [192.0.2.25]"))),
            // A client unknown to the host never excuses the claim.
            (LOCAL, "", "[192.0.2.25]", Some((550, "5.7.1", "You are not [192.0.2.25]"))),
            // Our host name stays ours whoever claims it.
            ("127.0.0.1", "127.0.0.1", "mx.example.org", Some((550, "5.7.1", "You are not mx.example.org"))),
        ];
        for (local, client, name, want) in table {
            let v = check_from(&p, SERVER, local, client, name);
            match want {
                None => assert!(is_pass(&v), "{name:?} from {client} should pass, got {v:?}"),
                Some((code, enh, text)) => {
                    assert_eq!(
                        reply_of(&v),
                        Some((code, enh, text)),
                        "{name:?} from {client}"
                    )
                }
            }
        }
    }

    #[test]
    fn unparsable_local_ip_never_matches() {
        assert!(is_pass(&check(&policy(), SERVER, "", "[192.0.2.25]")));
    }
}
