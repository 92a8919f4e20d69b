//! What happened to one recipient in one delivery attempt, and the diagnostic that
//! explains a failure (the material of RFC 3464 `Status:`, `Remote-MTA:` and
//! `Diagnostic-Code:` fields). Texts may come from remote servers: they are
//! sanitised (no control characters, bounded length) before they are kept.

use std::fmt;

use postern_protocol::{EnhancedCode, Reply};

/// Longest diagnostic text kept (journal line, DSN field).
pub const MAX_TEXT: usize = 900;

/// How the diagnostic text is to be read (RFC 3464 §2.3.6 diagnostic-type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiagKind {
    /// An SMTP reply of the remote server.
    Smtp,
    /// A condition found by Postern itself (DNS, connection, local delivery).
    Local,
}

impl DiagKind {
    pub fn token(self) -> &'static str {
        match self {
            DiagKind::Smtp => "smtp",
            DiagKind::Local => "x-postern",
        }
    }

    pub fn from_token(t: &str) -> Option<DiagKind> {
        match t {
            "smtp" => Some(DiagKind::Smtp),
            "x-postern" => Some(DiagKind::Local),
            _ => None,
        }
    }
}

/// Where a delivered recipient went: what its success notice says (RFC 3464
/// `Action`) and whether Postern still owes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handover {
    /// Into a local mailbox (`Action: delivered`).
    Mailbox,
    /// To a next hop without DSN (`Action: relayed`): success notices asked
    /// for are Postern's to send.
    Relayed,
    /// To a next hop that offered DSN and was handed the recipient's
    /// `NOTIFY`/`ORCPT` (RFC 3461 §5.2.2): its success notices now.
    DsnHandedOn,
}

impl Handover {
    pub fn token(self) -> &'static str {
        match self {
            Handover::Mailbox => "mailbox",
            Handover::Relayed => "relayed",
            Handover::DsnHandedOn => "dsn-handed-on",
        }
    }

    pub fn from_token(t: &str) -> Option<Handover> {
        [Handover::Mailbox, Handover::Relayed, Handover::DsnHandedOn]
            .into_iter()
            .find(|h| h.token() == t)
    }
}

/// Why a recipient was not (yet) delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// RFC 3463 status; class 4 = try again, class 5 = give up.
    pub status: EnhancedCode,
    /// The remote host that answered, if any.
    pub remote_mta: Option<String>,
    pub kind: DiagKind,
    /// One line: the remote reply ("550 5.1.1 no such user") or our explanation.
    pub text: String,
}

/// Replace control characters with spaces and cut to `MAX_TEXT` bytes.
pub fn sanitize(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > MAX_TEXT {
        let mut cut = MAX_TEXT;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out.trim().to_string()
}

impl Diagnostic {
    /// A failure found here (not a remote reply).
    pub fn local(status: EnhancedCode, text: impl AsRef<str>) -> Diagnostic {
        Diagnostic {
            status,
            remote_mta: None,
            kind: DiagKind::Local,
            text: sanitize(text.as_ref()),
        }
    }

    /// A local condition at a remote host (connection refused, time-out, TLS).
    pub fn at_host(status: EnhancedCode, host: &str, text: impl AsRef<str>) -> Diagnostic {
        Diagnostic {
            remote_mta: Some(sanitize(host)),
            ..Diagnostic::local(status, text)
        }
    }

    /// A negative remote reply. The status is the reply's enhanced code when its
    /// class matches the reply code, else `X.0.0` (RFC 3463 §3.1).
    pub fn from_reply(reply: &Reply, host: &str) -> Diagnostic {
        let class = (reply.code / 100) as u8;
        let status = match reply.enhanced {
            Some(e) if e.class == class => e,
            _ if class == 5 => EnhancedCode::new(5, 0, 0),
            _ => EnhancedCode::new(4, 0, 0),
        };
        Diagnostic {
            status,
            remote_mta: Some(sanitize(host)),
            kind: DiagKind::Smtp,
            text: sanitize(&reply.to_string()),
        }
    }

    /// The same failure, final: a class-4 status becomes class 5 (a plugin
    /// gave up on it).
    pub fn made_permanent(mut self) -> Diagnostic {
        self.status.class = 5;
        self
    }

    pub fn is_permanent(&self) -> bool {
        self.status.class == 5
    }

    /// The RFC 3464 `Diagnostic-Code:` value, e.g. `smtp; 550 5.1.1 unknown user`.
    pub fn diagnostic_code(&self) -> String {
        format!("{}; {}", self.kind.token(), self.text)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.remote_mta, self.kind) {
            (Some(h), DiagKind::Smtp) => write!(f, "host {h} said: {}", self.text),
            (Some(h), DiagKind::Local) => write!(f, "{h}: {}", self.text),
            (None, _) => f.write_str(&self.text),
        }
    }
}

/// The result for one recipient of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcptOutcome {
    /// Accepted by the next hop or written to the mailbox; the text says where.
    Delivered(Handover, String),
    /// Try again later.
    Deferred(Diagnostic),
    /// Give up (and bounce).
    Failed(Diagnostic),
    /// Give up without a bounce (a delivery-side plugin said so).
    Suppressed(Diagnostic),
}

impl RcptOutcome {
    /// `Failed` for a class-5 diagnostic, else `Deferred`.
    pub fn from_diagnostic(d: Diagnostic) -> RcptOutcome {
        if d.is_permanent() {
            RcptOutcome::Failed(d)
        } else {
            RcptOutcome::Deferred(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_from_replies() {
        let r = |code, e: Option<&str>| Reply::new(code, e.map(|e| e.parse().unwrap()), "x");
        let table = [
            (r(550, Some("5.1.1")), "5.1.1", true),
            (r(550, None), "5.0.0", true),
            (r(451, Some("4.7.1")), "4.7.1", false),
            (r(451, None), "4.0.0", false),
            // A mismatched class is ignored.
            (r(450, Some("5.1.1")), "4.0.0", false),
        ];
        for (reply, status, permanent) in table {
            let d = Diagnostic::from_reply(&reply, "mx.test");
            assert_eq!(d.status.to_string(), status);
            assert_eq!(d.is_permanent(), permanent);
            assert_eq!(d.kind, DiagKind::Smtp);
        }
    }

    #[test]
    fn texts_are_sanitised() {
        let d = Diagnostic::local(EnhancedCode::new(4, 4, 1), "a\r\nb\tc\0");
        assert_eq!(d.text, "a  b c");
        let long = "é".repeat(MAX_TEXT);
        assert!(
            Diagnostic::local(EnhancedCode::new(4, 0, 0), long)
                .text
                .len()
                <= MAX_TEXT
        );
        assert_eq!(d.diagnostic_code(), "x-postern; a  b c");
    }
}
