//! The pure half of a mail transaction: which commands to send for a message given
//! the server's capabilities, and what to refuse before sending anything. Input: the
//! spooled envelope (validated at receipt, re-checked here so nothing that could
//! break a command line reaches the wire) and the remote capabilities.
//! RFC 5321 §4.1.1.2-3 (MAIL, RCPT), RFC 1870 (SIZE), RFC 6152 (BODY=8BITMIME),
//! RFC 6531 §3.2, §3.4 (SMTPUTF8: passed on when offered; refused with 5.6.7
//! when not offered and an address or header field needs it), RFC 3463 X.6.3
//! (8-bit content a hop without 8BITMIME cannot take and that cannot be
//! converted), RFC 3461 §4 (RET, ENVID, NOTIFY, ORCPT), RFC 4954 / RFC 4616
//! (AUTH PLAIN).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use postern_protocol::EnhancedCode;

use crate::outcome::Diagnostic;
use crate::smtp::ehlo::Capabilities;
use crate::state::param;

/// An address safe to put between angle brackets on a command line.
pub fn safe_path(address: &str) -> bool {
    address.len() <= 256
        && !address
            .chars()
            .any(|c| c.is_control() || c == '<' || c == '>')
}

/// An ESMTP parameter value safe to pass through (xtext has no spaces or controls).
fn safe_value(v: &str) -> bool {
    !v.is_empty() && v.len() <= 500 && v.bytes().all(|b| (33..127).contains(&b) && b != b'=')
}

/// Whether the message was submitted with SMTPUTF8 (passed on to a hop that
/// offers it, RFC 6531 §3.4).
pub fn requests_smtputf8(mail_params: &[String]) -> bool {
    param(mail_params, "SMTPUTF8").is_some()
}

/// Whether the transaction needs SMTPUTF8 (RFC 6531 §3.2): requested, and some
/// address or (`utf8_headers`) some header field is not ASCII.
pub fn needs_smtputf8(
    mail_params: &[String],
    sender: &str,
    rcpts: &[&str],
    utf8_headers: bool,
) -> bool {
    requests_smtputf8(mail_params)
        && (utf8_headers || !sender.is_ascii() || rcpts.iter().any(|r| !r.is_ascii()))
}

/// What the check of the message's content for this hop found (see
/// [`crate::downgrade`]); the default, nothing, when the hop needed no check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContentCheck {
    /// Some header field of the message is not ASCII (RFC 6532); looked for
    /// when the message asked for SMTPUTF8 and the hop does not offer it.
    pub utf8_headers: bool,
    /// The hop does not offer 8BITMIME and the 8-bit message could not be
    /// converted to 7 bit: why.
    pub unconvertible: Option<String>,
}

/// Whether the message asked for REQUIRETLS (RFC 8689).
pub fn requires_tls(mail_params: &[String]) -> bool {
    param(mail_params, "REQUIRETLS").is_some()
}

/// A reason to give up on the message at this server before MAIL, if any.
/// `verified`: the session runs over TLS whose certificate was verified.
pub fn precheck(
    caps: &Capabilities,
    verified: bool,
    size: u64,
    mail_params: &[String],
    sender: &str,
    rcpts: &[&str],
    content: &ContentCheck,
) -> Option<Diagnostic> {
    if requires_tls(mail_params) {
        // RFC 8689 §4.2.1: only over verified TLS, to a hop that offers it.
        let why = if !verified {
            Some(
                "the connection is not TLS with a verified certificate (delivery.tls = \"required\")",
            )
        } else if !caps.requiretls {
            Some("the server does not offer REQUIRETLS")
        } else {
            None
        };
        if let Some(why) = why {
            return Some(Diagnostic::local(
                EnhancedCode::new(5, 7, 10),
                format!("REQUIRETLS support required: {why}"),
            ));
        }
    }
    if caps.too_large(size) {
        return Some(Diagnostic::local(
            EnhancedCode::new(5, 3, 4),
            format!(
                "message size {size} exceeds the server's limit of {}",
                caps.size.unwrap_or(0)
            ),
        ));
    }
    if needs_smtputf8(mail_params, sender, rcpts, content.utf8_headers) && !caps.smtputf8 {
        return Some(Diagnostic::local(
            EnhancedCode::new(5, 6, 7),
            "the message needs SMTPUTF8 (non-ASCII addresses or header fields), \
             which the server does not support",
        ));
    }
    if let Some(why) = &content.unconvertible {
        // RFC 3463 X.6.3 "conversion required but not supported"; X.6.7 for an
        // internationalised message (RFC 6531 §3.2).
        let detail = if requests_smtputf8(mail_params) { 7 } else { 3 };
        return Some(Diagnostic::local(
            EnhancedCode::new(5, 6, detail),
            format!(
                "the server does not offer 8BITMIME and the message cannot be \
                 converted to 7 bit: {why}"
            ),
        ));
    }
    None
}

/// `MAIL FROM:<sender> [SIZE=n] [BODY=8BITMIME] [SMTPUTF8] [RET=..] [ENVID=..]` CRLF.
pub fn mail_command(
    sender: &str,
    mail_params: &[String],
    size: u64,
    caps: &Capabilities,
    smtputf8: bool,
) -> String {
    let mut cmd = format!("MAIL FROM:<{sender}>");
    if caps.size.is_some() {
        cmd.push_str(&format!(" SIZE={size}"));
    }
    if caps.eightbitmime
        && param(mail_params, "BODY").is_some_and(|b| b.eq_ignore_ascii_case("8BITMIME"))
    {
        cmd.push_str(" BODY=8BITMIME");
    }
    if smtputf8 && caps.smtputf8 {
        cmd.push_str(" SMTPUTF8");
    }
    if caps.requiretls && requires_tls(mail_params) {
        cmd.push_str(" REQUIRETLS");
    }
    if caps.dsn {
        push_dsn_params(&mut cmd, mail_params, ["RET", "ENVID"]);
    }
    cmd.push_str("\r\n");
    cmd
}

/// `RCPT TO:<address> [NOTIFY=..] [ORCPT=..]` CRLF.
pub fn rcpt_command(address: &str, params: &[String], caps: &Capabilities) -> String {
    let mut cmd = format!("RCPT TO:<{address}>");
    if caps.dsn {
        push_dsn_params(&mut cmd, params, ["NOTIFY", "ORCPT"]);
    }
    cmd.push_str("\r\n");
    cmd
}

/// Append ` KEY=value` for each of `keys` the client gave with a value safe
/// to pass on (RFC 3461 parameters, relayed only to a DSN-capable server).
fn push_dsn_params(cmd: &mut String, params: &[String], keys: [&str; 2]) {
    for key in keys {
        if let Some(v) = param(params, key).filter(|v| safe_value(v)) {
            cmd.push_str(&format!(" {key}={v}"));
        }
    }
}

/// The SASL mechanism to use, preferring PLAIN.
pub fn choose_auth(caps: &Capabilities) -> Option<&'static str> {
    ["PLAIN", "LOGIN"]
        .into_iter()
        .find(|m| caps.auth.iter().any(|a| a == m))
}

/// `AUTH PLAIN <base64(\0user\0password)>` CRLF (RFC 4616 initial response).
pub fn auth_plain(user: &str, password: &str) -> String {
    format!(
        "AUTH PLAIN {}\r\n",
        B64.encode(format!("\0{user}\0{password}"))
    )
}

/// One base64 line for AUTH LOGIN's prompts.
pub fn b64_line(text: &str) -> String {
    format!("{}\r\n", B64.encode(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(f: impl FnOnce(&mut Capabilities)) -> Capabilities {
        let mut c = Capabilities {
            esmtp: true,
            ..Capabilities::default()
        };
        f(&mut c);
        c
    }

    fn p(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn mail_commands() {
        let params = p(&[
            "BODY=8BITMIME",
            "SIZE=5",
            "RET=HDRS",
            "ENVID=abc+2B",
            "SMTPUTF8",
        ]);
        let plain = caps(|_| {});
        assert_eq!(
            mail_command("a@x.test", &params, 10, &plain, false),
            "MAIL FROM:<a@x.test>\r\n"
        );
        let full = caps(|c| {
            c.size = Some(0);
            c.eightbitmime = true;
            c.dsn = true;
            c.smtputf8 = true;
        });
        assert_eq!(
            mail_command("", &params, 10, &full, true),
            "MAIL FROM:<> SIZE=10 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=abc+2B\r\n"
        );
        let evil = p(&["ENVID=a b\r\nRCPT TO:<x>"]);
        assert_eq!(
            mail_command("a@x", &evil, 1, &full, false),
            "MAIL FROM:<a@x> SIZE=1\r\n"
        );
    }

    #[test]
    fn rcpt_commands() {
        let params = p(&["NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;b@y.test"]);
        assert_eq!(
            rcpt_command("b@y.test", &params, &caps(|_| {})),
            "RCPT TO:<b@y.test>\r\n"
        );
        assert_eq!(
            rcpt_command("b@y.test", &params, &caps(|c| c.dsn = true)),
            "RCPT TO:<b@y.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;b@y.test\r\n"
        );
    }

    #[test]
    fn prechecks() {
        let none = ContentCheck::default();
        let small = caps(|c| c.size = Some(100));
        assert_eq!(
            precheck(&small, false, 101, &[], "a@x", &["b@y"], &none)
                .unwrap()
                .status
                .to_string(),
            "5.3.4"
        );
        assert!(precheck(&small, false, 100, &[], "a@x", &["b@y"], &none).is_none());
        let utf8 = p(&["SMTPUTF8"]);
        assert_eq!(
            precheck(&small, false, 1, &utf8, "a@x", &["ü@y"], &none)
                .unwrap()
                .status
                .to_string(),
            "5.6.7"
        );
        // Requested but all-ASCII: sent without it.
        assert!(precheck(&small, false, 1, &utf8, "a@x", &["b@y"], &none).is_none());
        // Non-ASCII header fields need it too (RFC 6531 §3.2).
        let headers = ContentCheck {
            utf8_headers: true,
            ..ContentCheck::default()
        };
        let status = |d: Option<Diagnostic>| d.map(|d| d.status.to_string());
        assert_eq!(
            status(precheck(&small, false, 1, &utf8, "a@x", &["b@y"], &headers)),
            Some("5.6.7".into())
        );
        let offers_utf8 = caps(|c| c.smtputf8 = true);
        assert!(precheck(&offers_utf8, false, 1, &utf8, "a@x", &["b@y"], &headers).is_none());
        // Raw UTF-8 headers without SMTPUTF8 are the downgrade's business.
        assert!(precheck(&small, false, 1, &[], "a@x", &["b@y"], &headers).is_none());
        // A message the hop cannot take unconverted, and that cannot be converted.
        let stuck = ContentCheck {
            unconvertible: Some("a header field has 8-bit characters".into()),
            ..ContentCheck::default()
        };
        assert_eq!(
            status(precheck(&small, false, 1, &[], "a@x", &["b@y"], &stuck)),
            Some("5.6.3".into())
        );
        assert_eq!(
            status(precheck(
                &offers_utf8,
                false,
                1,
                &utf8,
                "a@x",
                &["b@y"],
                &stuck
            )),
            Some("5.6.7".into())
        );
        let rtls = ["REQUIRETLS".to_string()];
        let offers = Capabilities {
            requiretls: true,
            ..small.clone()
        };
        for (caps, verified, refused) in [
            (&small, true, true),
            (&offers, false, true),
            (&offers, true, false),
        ] {
            let d = precheck(caps, verified, 1, &rtls, "a@x", &["b@y"], &none);
            assert_eq!(d.is_some(), refused, "{caps:?} {verified}");
            if let Some(d) = d {
                assert_eq!(d.status.to_string(), "5.7.10");
            }
        }
        assert!(mail_command("a@x", &rtls, 1, &offers, false).contains(" REQUIRETLS\r\n"));
        assert!(!mail_command("a@x", &rtls, 1, &small, false).contains("REQUIRETLS"));
    }

    #[test]
    fn paths_and_auth() {
        assert!(safe_path("a@b.test") && safe_path(""));
        assert!(!safe_path("a@b\r\nRSET") && !safe_path("a>b"));
        assert_eq!(
            auth_plain("user", "pass"),
            "AUTH PLAIN AHVzZXIAcGFzcw==\r\n"
        );
        let c = caps(|c| c.auth = vec!["LOGIN".into(), "PLAIN".into()]);
        assert_eq!(choose_auth(&c), Some("PLAIN"));
        assert_eq!(
            choose_auth(&caps(|c| c.auth = vec!["LOGIN".into()])),
            Some("LOGIN")
        );
        assert_eq!(
            choose_auth(&caps(|c| c.auth = vec!["CRAM-MD5".into()])),
            None
        );
        assert_eq!(b64_line("user"), "dXNlcg==\r\n");
    }
}
