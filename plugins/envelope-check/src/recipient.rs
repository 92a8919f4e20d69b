//! RCPT TO check: a recipient in a local domain must be a known mailbox (a
//! listed address or an `@domain` catch-all); postmaster always passes (RFC
//! 5321 §4.5.1). Domains compare case-insensitively (RFC 5321 §2.4); local
//! parts too unless configured otherwise, after removing quoting (RFC 5321
//! §4.1.2: `"alice"` and `alice` are the same mailbox). Trusts the host's
//! `is_local`; the address is hostile.

use std::collections::HashSet;

use postern_sdk::{EnvelopeAddress, Verdict, pass, reject};

use crate::syntax::sanitize;

/// The configured mailboxes, normalized for look-ups.
#[derive(Debug, Clone, Default)]
pub struct Mailboxes {
    /// (local part, domain) pairs; local parts lower-cased unless
    /// `case_sensitive_local`.
    exact: HashSet<(String, String)>,
    /// Domains with a catch-all.
    catch_all: HashSet<String>,
    case_sensitive_local: bool,
}

impl Mailboxes {
    /// Build from config entries ("local@domain" or "@domain").
    pub fn new(entries: &[String], case_sensitive_local: bool) -> Result<Mailboxes, String> {
        let mut m = Mailboxes {
            case_sensitive_local,
            ..Mailboxes::default()
        };
        for entry in entries {
            let (local, domain) = entry.trim().rsplit_once('@').ok_or_else(|| {
                format!("mailboxes entry {entry:?}: expected \"local@domain\" or \"@domain\"")
            })?;
            let domain = normalize_domain(domain);
            let domain_ok = crate::syntax::is_domain(&domain)
                || (domain.starts_with('[') && crate::syntax::parse_helo(&domain).is_ok());
            if !domain_ok {
                return Err(format!(
                    "mailboxes entry {entry:?}: {domain:?} is not a valid domain"
                ));
            }
            if local.is_empty() {
                m.catch_all.insert(domain);
            } else {
                let local = m.fold(&unquote(local));
                m.exact.insert((local, domain));
            }
        }
        Ok(m)
    }

    fn fold(&self, local: &str) -> String {
        if self.case_sensitive_local {
            local.to_string()
        } else {
            local.to_lowercase()
        }
    }

    /// Whether `local@domain` is a known mailbox.
    pub fn contains(&self, local_part: &str, domain: &str) -> bool {
        let domain = normalize_domain(domain);
        if self.catch_all.contains(&domain) {
            return true;
        }
        let local = self.fold(&unquote(local_part));
        self.exact.contains(&(local, domain))
    }
}

fn normalize_domain(domain: &str) -> String {
    domain.trim_end_matches('.').to_ascii_lowercase()
}

/// The mailbox name of a local part: a quoted string loses its quotes and
/// quoted pairs their backslash.
pub fn unquote(local: &str) -> String {
    let Some(inner) = local
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .filter(|_| local.len() >= 2)
    else {
        return local.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Decide on one recipient.
pub fn check(mailboxes: Option<&Mailboxes>, rcpt: &EnvelopeAddress) -> Verdict {
    let Some(mailboxes) = mailboxes else {
        return pass();
    };
    if !rcpt.is_local || is_postmaster(rcpt) {
        return pass();
    }
    if mailboxes.contains(&rcpt.local_part, &rcpt.domain) {
        return pass();
    }
    reject(
        550,
        "5.1.1",
        format!(
            "<{}>: Recipient address rejected: User unknown",
            sanitize(&rcpt.address, 320)
        ),
    )
}

/// `<Postmaster>` or postmaster@<a local domain>, in any case.
fn is_postmaster(rcpt: &EnvelopeAddress) -> bool {
    rcpt.address.eq_ignore_ascii_case("postmaster")
        || unquote(&rcpt.local_part).eq_ignore_ascii_case("postmaster")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{addr, is_pass, reply_of};

    fn boxes(case_sensitive: bool) -> Mailboxes {
        let entries: Vec<String> = [
            "alice@example.org",
            "Bob.Smith@EXAMPLE.org",
            "@catch.example",
            "\"odd name\"@example.org",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Mailboxes::new(&entries, case_sensitive).unwrap()
    }

    #[test]
    fn recipient_table() {
        let insensitive = boxes(false);
        let sensitive = boxes(true);
        #[rustfmt::skip]
        let table: Vec<(&Mailboxes, &str, bool, bool)> = vec![
            // (mailboxes, address, is_local, passes)
            (&insensitive, "alice@example.org", true, true),
            (&insensitive, "ALICE@Example.ORG", true, true),
            (&insensitive, "\"alice\"@example.org", true, true),
            (&insensitive, "bob.smith@example.org", true, true),
            (&insensitive, "\"odd name\"@example.org", true, true),
            (&insensitive, "carol@example.org", true, false),
            (&insensitive, "anyone@catch.example", true, true),
            (&insensitive, "anyone@CATCH.example.", true, true),
            (&insensitive, "postmaster@example.org", true, true),
            (&insensitive, "PostMaster@other-local.example", true, true),
            (&insensitive, "\"postmaster\"@example.org", true, true),
            (&insensitive, "postmaster", true, true),
            (&insensitive, "stranger@remote.example", false, true),
            (&sensitive, "alice@example.org", true, true),
            (&sensitive, "Alice@example.org", true, false),
            (&sensitive, "Bob.Smith@example.org", true, true),
            (&sensitive, "bob.smith@example.org", true, false),
            (&sensitive, "whoever@Catch.Example", true, true),
        ];
        for (m, address, local, passes) in table {
            let v = check(Some(m), &addr(address, local));
            assert_eq!(is_pass(&v), passes, "{address:?}: {v:?}");
            if !passes {
                assert_eq!(
                    reply_of(&v),
                    Some((
                        550,
                        "5.1.1",
                        format!("<{address}>: Recipient address rejected: User unknown").as_str()
                    ))
                );
            }
        }
    }

    #[test]
    fn without_mailboxes_everyone_passes() {
        assert!(is_pass(&check(None, &addr("nobody@example.org", true))));
    }

    #[test]
    fn hostile_address_is_sanitized() {
        let m = boxes(false);
        let v = check(Some(&m), &addr("\"a\u{7}b\"@example.org", true));
        let (_, _, text) = reply_of(&v).unwrap();
        assert!(!text.chars().any(|c| c.is_control()), "{text:?}");
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in ["no-at-sign", "a@", "a@bad..domain", "@-x.example"] {
            let err = Mailboxes::new(&[bad.to_string()], false).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
        assert!(Mailboxes::new(&["a@[192.0.2.1]".into()], false).is_ok());
    }

    #[test]
    fn unquoting() {
        assert_eq!(unquote("plain"), "plain");
        assert_eq!(unquote("\"a b\""), "a b");
        assert_eq!(unquote("\"a\\\"b\""), "a\"b");
        assert_eq!(unquote("\""), "\"");
    }
}
