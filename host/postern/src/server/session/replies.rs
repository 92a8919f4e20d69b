//! Every reply the server itself sends, in one place (RFC 5321 §4.2, RFC 3463
//! enhanced codes, RFC 2034), plus the conversion of plugin replies. Input:
//! plugin replies were already validated by the runtime.

use postern_plugin::PluginReply;
use postern_protocol::{EnhancedCode, Reply};

fn r(code: u16, class: u8, subject: u16, detail: u16, text: impl Into<String>) -> Reply {
    Reply::new(code, Some(EnhancedCode::new(class, subject, detail)), text)
}

// SMTP AUTH (RFC 4954 §4, §6).
pub fn auth_needs_tls() -> Reply {
    r(
        538,
        5,
        7,
        11,
        "Encryption required: issue STARTTLS before AUTH",
    )
}
pub fn already_authenticated() -> Reply {
    r(503, 5, 5, 1, "Already authenticated")
}
pub fn auth_in_transaction() -> Reply {
    r(
        503,
        5,
        5,
        1,
        "AUTH is not allowed during a mail transaction",
    )
}
pub fn auth_client_blocked() -> Reply {
    r(
        421,
        4,
        7,
        0,
        "Too many failed authentications from your address, try again later",
    )
}
pub fn auth_too_many_failures() -> Reply {
    r(
        421,
        4,
        7,
        0,
        "Too many failed authentication attempts, closing connection",
    )
}
/// An empty `334` (PLAIN without an initial response).
pub fn auth_continue() -> Reply {
    Reply::new(334, None, "")
}
/// A `334` prompt, base64-encoded (LOGIN's "Username:", "Password:").
pub fn auth_challenge(prompt: &str) -> Reply {
    use base64::Engine as _;
    Reply::new(
        334,
        None,
        base64::engine::general_purpose::STANDARD.encode(prompt),
    )
}
pub fn unknown_mechanism() -> Reply {
    r(504, 5, 5, 4, "Unrecognized authentication mechanism")
}
pub fn cannot_decode(why: Option<&str>) -> Reply {
    match why {
        Some(e) => r(501, 5, 5, 2, format!("Cannot decode response: {e}")),
        None => r(501, 5, 5, 2, "Cannot decode response"),
    }
}
pub fn auth_cancelled() -> Reply {
    r(501, 5, 0, 0, "Authentication cancelled")
}
pub fn auth_ok() -> Reply {
    r(235, 2, 7, 0, "Authentication successful")
}
pub fn auth_invalid() -> Reply {
    r(535, 5, 7, 8, "Authentication credentials invalid")
}

pub fn plugin(p: &PluginReply) -> Reply {
    let enhanced = p.enhanced.as_deref().and_then(|e| e.parse().ok());
    Reply::new(p.code, enhanced, p.text.clone())
}

pub fn greeting(hostname: &str) -> Reply {
    Reply::new(220, None, format!("{hostname} ESMTP Postern"))
}

pub fn helo(hostname: &str) -> Reply {
    Reply::new(250, None, hostname.to_string())
}

pub fn ehlo(hostname: &str, client: &str, keywords: Vec<String>) -> Reply {
    let mut lines = vec![format!("{hostname} greets {client}")];
    lines.extend(keywords);
    Reply::multiline(250, None, lines)
}

pub fn ok() -> Reply {
    r(250, 2, 0, 0, "Ok")
}
pub fn sender_ok() -> Reply {
    r(250, 2, 1, 0, "Sender ok")
}
pub fn recipient_ok() -> Reply {
    r(250, 2, 1, 5, "Recipient ok")
}
pub fn start_data() -> Reply {
    Reply::new(354, None, "End data with <CR><LF>.<CR><LF>")
}
pub fn queued(id: &str) -> Reply {
    r(250, 2, 0, 0, format!("Ok: queued as {id}"))
}
pub fn bye() -> Reply {
    r(221, 2, 0, 0, "Bye")
}
/// HELP: the commands this session would accept now (STARTTLS and AUTH
/// only where EHLO would offer them).
pub fn help(starttls: bool, auth: bool) -> Reply {
    let mut commands = vec!["EHLO", "HELO"];
    if starttls {
        commands.push("STARTTLS");
    }
    if auth {
        commands.push("AUTH");
    }
    commands.extend([
        "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP",
    ]);
    r(214, 2, 0, 0, format!("Commands: {}", commands.join(" ")))
}
pub fn vrfy_default() -> Reply {
    r(
        252,
        2,
        0,
        0,
        "Cannot VRFY user, but will accept message and attempt delivery",
    )
}
pub fn expn_default() -> Reply {
    r(502, 5, 5, 1, "EXPN is disabled")
}
pub fn not_available(what: &str) -> Reply {
    r(502, 5, 5, 1, format!("{what} not available"))
}

// Sequence errors (RFC 5321 §4.3.2).
pub fn need_helo() -> Reply {
    r(503, 5, 5, 1, "Send HELO/EHLO first")
}
pub fn need_ehlo() -> Reply {
    r(503, 5, 5, 1, "Send EHLO first")
}
pub fn auth_required() -> Reply {
    r(530, 5, 7, 0, "Authentication required")
}
pub fn ready_for_tls() -> Reply {
    r(220, 2, 0, 0, "Ready to start TLS")
}
pub fn tls_already_active() -> Reply {
    r(503, 5, 5, 1, "TLS already active")
}
pub fn nested_mail() -> Reply {
    r(503, 5, 5, 1, "Nested MAIL command")
}
/// A BDAT chunk was added to the message (RFC 3030 §2).
pub fn chunk_received(size: u64) -> Reply {
    r(250, 2, 0, 0, format!("Ok: {size} octets received"))
}
/// Never sent: what `step_reply` shows for a BDAT chunk still to be read.
pub fn chunk_pending() -> Reply {
    r(250, 2, 0, 0, "Chunk being received")
}
pub fn data_after_bdat() -> Reply {
    r(
        503,
        5,
        5,
        1,
        "DATA cannot follow BDAT in the same transaction",
    )
}
pub fn bdat_syntax() -> Reply {
    r(
        501,
        5,
        5,
        4,
        "Syntax: BDAT chunk-size [LAST]; closing (the chunk cannot be told from commands)",
    )
}
pub fn bdat_needs_ehlo() -> Reply {
    r(
        503,
        5,
        5,
        1,
        "BDAT needs EHLO (CHUNKING is an ESMTP extension)",
    )
}
pub fn need_mail() -> Reply {
    r(503, 5, 5, 1, "Need MAIL command first")
}
pub fn no_valid_recipients() -> Reply {
    r(554, 5, 5, 1, "No valid recipients")
}
pub fn refused_only_quit() -> Reply {
    r(
        503,
        5,
        5,
        1,
        "Bad sequence of commands: this connection was refused, send QUIT",
    )
}

// Parameter and address policy of the host.
pub fn unsupported_param(keyword: &str) -> Reply {
    r(555, 5, 5, 4, format!("Unsupported parameter {keyword}"))
}
pub fn params_need_ehlo() -> Reply {
    r(555, 5, 5, 4, "ESMTP parameters require EHLO")
}
pub fn need_smtputf8() -> Reply {
    r(553, 5, 6, 7, "Non-ASCII address requires SMTPUTF8")
}
pub fn size_exceeded() -> Reply {
    r(
        552,
        5,
        3,
        4,
        "Message size exceeds fixed maximum message size",
    )
}
pub fn too_many_recipients() -> Reply {
    r(452, 4, 5, 3, "Too many recipients")
}
pub fn relay_denied(address: &str) -> Reply {
    r(554, 5, 7, 1, format!("<{address}>: Relay access denied"))
}

// Line and data errors (RFC 5321 §2.3.8, §4.5.3.1).
pub fn line_too_long() -> Reply {
    r(500, 5, 5, 2, "Line too long (maximum 512 octets)")
}
pub fn bare_line_ending() -> Reply {
    r(
        500,
        5,
        5,
        2,
        "Bare CR or LF not allowed; lines must end with CRLF",
    )
}
pub fn data_bare_line_ending() -> Reply {
    r(
        554,
        5,
        6,
        0,
        "Message refused: bare CR or LF in message data (SMTP smuggling defence)",
    )
}
/// RFC 5321 §6.3 loop detection; RFC 3463 X.4.6 "routing loop detected".
pub fn too_many_hops(count: usize) -> Reply {
    r(
        554,
        5,
        4,
        6,
        format!("Message refused: too many hops ({count} Received: fields), routing loop"),
    )
}

pub fn data_nul() -> Reply {
    r(
        554,
        5,
        6,
        0,
        "Message refused: NUL character in message data",
    )
}
pub fn data_line_too_long() -> Reply {
    r(
        554,
        5,
        6,
        0,
        "Message refused: line longer than 1000 octets",
    )
}

// Connection-level.
pub fn too_many_errors(hostname: &str) -> Reply {
    r(
        421,
        4,
        7,
        0,
        format!("{hostname} Too many errors, closing connection"),
    )
}
pub fn timeout(hostname: &str) -> Reply {
    r(
        421,
        4,
        4,
        2,
        format!("{hostname} Timeout exceeded, closing connection"),
    )
}
pub fn shutting_down(hostname: &str) -> Reply {
    r(
        421,
        4,
        3,
        2,
        format!("{hostname} Service shutting down, try again later"),
    )
}
pub fn too_many_connections(hostname: &str) -> Reply {
    r(
        421,
        4,
        7,
        0,
        format!("{hostname} Too many connections, try again later"),
    )
}
/// Recipient-enumeration resistance (RFC 3463 X.7.1: delivery not
/// authorized): this session had too many recipients refused.
pub fn too_many_unknown_recipients(hostname: &str) -> Reply {
    r(
        421,
        4,
        7,
        1,
        format!("{hostname} Too many unknown recipients, closing connection"),
    )
}
/// ... and this client address, over the window, too.
pub fn client_too_many_unknown_recipients(hostname: &str) -> Reply {
    r(
        421,
        4,
        7,
        1,
        format!("{hostname} Too many unknown recipients from your address, try again later"),
    )
}
/// A data-stage plugin asked for changes that cannot be applied (an
/// unparsable address, no recipient left): a policy failure, retried later.
pub fn changes_failed() -> Reply {
    r(
        451,
        4,
        3,
        0,
        "Temporary policy failure, please try again later",
    )
}

pub fn storage_failure() -> Reply {
    r(
        451,
        4,
        3,
        0,
        "Temporary failure storing the message, try again later",
    )
}

/// A temporary refusal at connect must be 421 (RFC 5321 §3.1).
pub fn connect_defer(p: &PluginReply) -> Reply {
    let enhanced = p.enhanced.as_deref().and_then(|e| e.parse().ok());
    Reply::new(421, enhanced, p.text.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms() {
        assert_eq!(queued("X").to_bytes(), b"250 2.0.0 Ok: queued as X\r\n");
        assert_eq!(
            ehlo("mx", "c", vec!["PIPELINING".into(), "SIZE 10".into()]).to_bytes(),
            b"250-mx greets c\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
        );
        let p = PluginReply {
            code: 550,
            enhanced: Some("5.7.1".into()),
            text: "no".into(),
        };
        assert_eq!(plugin(&p).to_bytes(), b"550 5.7.1 no\r\n");
        assert_eq!(connect_defer(&p).code, 421);
    }
}
