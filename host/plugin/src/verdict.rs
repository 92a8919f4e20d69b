//! Host-side verdicts and their validation. Input: replies returned by
//! untrusted plugins. Implements the reply rules of the WIT contract
//! (`wit/types.wit`): RFC 5321 §4.2 reply codes, RFC 3463 enhanced codes.

/// A reply a plugin asked for, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginReply {
    pub code: u16,
    /// RFC 3463 code such as "5.7.1"; its class matches `code`.
    pub enhanced: Option<String>,
    pub text: String,
}

/// The decision of one plugin (or of the chain) for one stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Verdict {
    /// No opinion: the next plugin, or the host's default, decides.
    #[default]
    Pass,
    Accept,
    AcceptWith(PluginReply),
    Reject(PluginReply),
    Defer(PluginReply),
    Disconnect(PluginReply),
}

impl Verdict {
    pub fn is_pass(&self) -> bool {
        matches!(self, Verdict::Pass)
    }

    /// Short lower-case name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Accept => "accept",
            Verdict::AcceptWith(_) => "accept-with",
            Verdict::Reject(_) => "reject",
            Verdict::Defer(_) => "defer",
            Verdict::Disconnect(_) => "disconnect",
        }
    }

    pub fn reply(&self) -> Option<&PluginReply> {
        match self {
            Verdict::Pass | Verdict::Accept => None,
            Verdict::AcceptWith(r)
            | Verdict::Reject(r)
            | Verdict::Defer(r)
            | Verdict::Disconnect(r) => Some(r),
        }
    }
}

/// Why a plugin's reply was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidReply {
    #[error("{verdict} needs a {expected} code, got {code}")]
    WrongClass {
        verdict: &'static str,
        expected: &'static str,
        code: u16,
    },
    #[error("enhanced status code {0:?} is not of the form class.subject.detail")]
    BadEnhanced(String),
    #[error("enhanced status code {enhanced} does not match reply code {code}")]
    EnhancedMismatch { code: u16, enhanced: String },
    #[error("reply text contains CR, LF or another control character")]
    ControlCharacter,
    #[error("reply text is {0} bytes, more than 400")]
    TooLong(usize),
    #[error("header {0:?}: {1}")]
    BadHeader(String, &'static str),
    #[error("envelope address {0:?}: {1}")]
    BadAddress(String, &'static str),
    #[error("quarantine reason: {0}")]
    BadReason(&'static str),
}

pub const MAX_TEXT: usize = 400;

fn check_reply(
    r: PluginReply,
    verdict: &'static str,
    expected: &'static str,
    ok: impl Fn(u16) -> bool,
) -> Result<PluginReply, InvalidReply> {
    if !ok(r.code) {
        return Err(InvalidReply::WrongClass {
            verdict,
            expected,
            code: r.code,
        });
    }
    if let Some(e) = &r.enhanced {
        let parts: Vec<&str> = e.split('.').collect();
        let well_formed = parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
            && parts[0].len() == 1;
        if !well_formed {
            return Err(InvalidReply::BadEnhanced(e.clone()));
        }
        if parts[0].as_bytes()[0] as u16 - b'0' as u16 != r.code / 100 {
            return Err(InvalidReply::EnhancedMismatch {
                code: r.code,
                enhanced: e.clone(),
            });
        }
    }
    if r.text.chars().any(|c| c.is_control()) {
        return Err(InvalidReply::ControlCharacter);
    }
    if r.text.len() > MAX_TEXT {
        return Err(InvalidReply::TooLong(r.text.len()));
    }
    Ok(r)
}

/// Validate a verdict returned by a plugin (converted to host types as it
/// came, not yet checked).
pub fn validate(v: Verdict) -> Result<Verdict, InvalidReply> {
    Ok(match v {
        Verdict::Pass => Verdict::Pass,
        Verdict::Accept => Verdict::Accept,
        Verdict::AcceptWith(r) => Verdict::AcceptWith(check_reply(r, "accept-with", "2xx", |c| {
            (200..300).contains(&c)
        })?),
        Verdict::Reject(r) => Verdict::Reject(check_reply(r, "reject", "5xx", |c| {
            (500..600).contains(&c)
        })?),
        Verdict::Defer(r) => {
            Verdict::Defer(check_reply(r, "defer", "4xx", |c| (400..500).contains(&c))?)
        }
        Verdict::Disconnect(r) => {
            Verdict::Disconnect(check_reply(r, "disconnect", "4xx or 5xx", |c| {
                (400..600).contains(&c)
            })?)
        }
    })
}

/// Check a header field name a plugin gave (RFC 5322 §2.2: printable ASCII
/// without ':').
pub fn check_field_name(name: &str) -> Result<(), InvalidReply> {
    if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(InvalidReply::BadHeader(
            name.to_string(),
            "invalid field name",
        ));
    }
    Ok(())
}

/// Check one header field a plugin wants written (name, no CR/LF/NUL in the
/// value, RFC 5322 §2.1.1 line length).
pub fn check_field(name: &str, value: &str) -> Result<(), InvalidReply> {
    check_field_name(name)?;
    if value.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
        return Err(InvalidReply::BadHeader(
            name.to_string(),
            "CR, LF or NUL in value",
        ));
    }
    if name.len() + 2 + value.len() > 998 {
        return Err(InvalidReply::BadHeader(
            name.to_string(),
            "field longer than 998 bytes",
        ));
    }
    Ok(())
}

/// Check the shape of an address a plugin wants in the envelope: a mailbox
/// `local@domain` without angle brackets, spaces or control characters (the
/// session parses it fully when applying it); "" only for a sender.
pub fn check_address(a: &str, may_be_empty: bool) -> Result<(), InvalidReply> {
    let bad = |why| Err(InvalidReply::BadAddress(a.to_string(), why));
    if a.is_empty() {
        return if may_be_empty { Ok(()) } else { bad("empty") };
    }
    if a.len() > 256 {
        return bad("longer than 256 bytes");
    }
    if a.chars()
        .any(|c| c.is_control() || c == ' ' || c == '<' || c == '>')
    {
        return bad("space, angle bracket or control character");
    }
    match a.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => Ok(()),
        _ => bad("not of the form local-part@domain"),
    }
}

/// Validate what a data-stage plugin wants added or changed.
pub(crate) fn validate_data(
    d: crate::hooks::DataReturn,
) -> Result<crate::hooks::DataReturn, InvalidReply> {
    use crate::context::{EnvelopeChange, HeaderChange};
    for (n, v) in &d.add_headers {
        check_field(n, v)?;
    }
    for c in &d.changes.headers {
        match c {
            HeaderChange::Remove(n)
            | HeaderChange::Change {
                name: n,
                value: None,
                ..
            } => check_field_name(n)?,
            HeaderChange::Replace(n, v)
            | HeaderChange::Change {
                name: n,
                value: Some(v),
                ..
            } => check_field(n, v)?,
        }
    }
    for c in &d.changes.envelope {
        match c {
            EnvelopeChange::SetSender(a) => check_address(a, true)?,
            EnvelopeChange::AddRecipient(a) | EnvelopeChange::RemoveRecipient(a) => {
                check_address(a, false)?
            }
        }
    }
    if let Some(r) = &d.changes.quarantine {
        if r.chars().any(|c| c.is_control()) {
            return Err(InvalidReply::BadReason("control character"));
        }
        if r.len() > MAX_TEXT {
            return Err(InvalidReply::BadReason("longer than 400 bytes"));
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(code: u16, enhanced: Option<&str>, text: &str) -> PluginReply {
        PluginReply {
            code,
            enhanced: enhanced.map(str::to_string),
            text: text.to_string(),
        }
    }

    #[test]
    fn table() {
        use Verdict as V;
        let cases: Vec<(Verdict, bool)> = vec![
            (V::Pass, true),
            (V::Accept, true),
            (V::Reject(r(550, Some("5.7.1"), "no")), true),
            (V::Reject(r(554, None, "no")), true),
            (V::Reject(r(450, None, "no")), false),
            (V::Reject(r(550, Some("4.7.1"), "no")), false),
            (V::Reject(r(550, Some("5.7"), "no")), false),
            (V::Reject(r(550, Some("5.x.1"), "no")), false),
            (V::Reject(r(550, Some("55.1.1"), "no")), false),
            (V::Reject(r(550, None, "a\r\nb")), false),
            (V::Reject(r(550, None, "a\nb")), false),
            (V::Reject(r(550, None, &"x".repeat(401))), false),
            (V::Reject(r(550, None, &"x".repeat(400))), true),
            (V::Defer(r(451, Some("4.7.1"), "later")), true),
            (V::Defer(r(551, None, "later")), false),
            (V::Disconnect(r(421, Some("4.7.0"), "bye")), true),
            (V::Disconnect(r(554, None, "bye")), true),
            (V::Disconnect(r(250, None, "bye")), false),
            (V::AcceptWith(r(250, Some("2.1.5"), "ok")), true),
            (V::AcceptWith(r(550, None, "ok")), false),
            (V::AcceptWith(r(99, None, "ok")), false),
        ];
        for (v, ok) in cases {
            let shown = format!("{v:?}");
            assert_eq!(validate(v).is_ok(), ok, "{shown}");
        }
    }

    #[test]
    fn headers() {
        assert!(check_field("X-Ok", "fine").is_ok());
        assert!(check_field("X Bad", "v").is_err());
        assert!(check_field("X:Bad", "v").is_err());
        assert!(check_field("", "v").is_err());
        assert!(check_field("X", "a\r\nInjected: yes").is_err());
        assert!(check_field("X", &"v".repeat(996)).is_err());
    }

    #[test]
    fn addresses() {
        assert!(check_address("a@example.org", false).is_ok());
        assert!(check_address("", true).is_ok());
        assert!(check_address("", false).is_err());
        assert!(check_address("<a@example.org>", false).is_err());
        assert!(check_address("a b@example.org", false).is_err());
        assert!(check_address("a@example.org\r\nRCPT TO:<x@y>", false).is_err());
        assert!(check_address("nodomain", false).is_err());
        assert!(check_address("@example.org", false).is_err());
    }
}
