//! Delivery status notifications: an RFC 3464 report in an RFC 6522
//! `multipart/report` — a human-readable part, the `message/delivery-status` part
//! (Reporting-MTA, Original-Envelope-Id from RFC 3461 ENVID, Arrival-Date, and per
//! recipient Final-Recipient, Original-Recipient from ORCPT, Action (`failed`,
//! `delayed` with Will-Retry-Until, `delivered` or `relayed`), Status, Remote-MTA,
//! Diagnostic-Code, Last-Attempt-Date) and the original header section as
//! `text/rfc822-headers`, or the whole message as `message/rfc822` for a failure
//! when the sender asked `RET=FULL` and it is at most [`MAX_FULL`]. The report is a new
//! message from the null reverse-path `<>` (RFC 5321 §4.5.5, so it is never bounced
//! itself) to the original sender, committed to the spool and delivered like any
//! other. Input: the spooled envelope and headers (already accepted by us) and
//! diagnostics (sanitised when recorded).

use std::io::{self, Read};

use postern_spool::{Client, Envelope, QueueId, Recipient, Spool, SpoolError};

use crate::outcome::{Diagnostic, Handover};
use crate::settings::Settings;
use crate::state::{MessageState, RcptStatus, param};
use postern_protocol::date;

/// Most of the original header section quoted in a report.
pub const MAX_HEADERS: usize = 64 * 1024;

/// The largest message returned whole (`RET=FULL`); a larger one is
/// returned as its header section, as for `RET=HDRS`.
pub const MAX_FULL: u64 = 1024 * 1024;

/// The recipients one report is about, by envelope index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Failed for good (`Action: failed`).
    pub failed: Vec<usize>,
    /// Still queued past the delay-warning point (`Action: delayed`).
    pub delayed: Vec<usize>,
    /// Delivered (`delivered` into a Maildir, `relayed` to a next hop
    /// without DSN) and asked for with `NOTIFY=SUCCESS`.
    pub delivered: Vec<usize>,
}

impl Report {
    pub fn is_empty(&self) -> bool {
        self.failed.is_empty() && self.delayed.is_empty() && self.delivered.is_empty()
    }

    /// Whether the whole message is returned (`RET=FULL` on a failure).
    pub fn returns_full(&self, state: &MessageState) -> bool {
        !self.failed.is_empty()
            && state.size <= MAX_FULL
            // RFC 8689 §5: a REQUIRETLS message comes back as headers only.
            && param(&state.envelope.mail_params, "REQUIRETLS").is_none()
            && param(&state.envelope.mail_params, "RET")
                .is_some_and(|r| r.eq_ignore_ascii_case("FULL"))
    }
}

/// What a report quotes of the original: the whole message (CRLF, as
/// queued) when `full`, else its header section. Blocking.
pub fn original(spool: &Spool, id: &QueueId, full: bool) -> Result<Vec<u8>, SpoolError> {
    if !full {
        return original_headers(spool, id);
    }
    let message = spool.open_message(id)?;
    let path = message.segment_path().to_path_buf();
    let mut bytes = Vec::new();
    message
        .reader()
        .take(MAX_FULL)
        .read_to_end(&mut bytes)
        .map_err(|e: io::Error| SpoolError::Io { path, source: e })?;
    Ok(bytes)
}

/// Decode RFC 3461 §4 xtext (`+XX` escapes).
pub fn xtext_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'+'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    crate::outcome::sanitize(&String::from_utf8_lossy(&out))
}

/// The header section of a queued message (up to the empty line, at most
/// `MAX_HEADERS` bytes, ending in CRLF). Blocking.
pub fn original_headers(spool: &Spool, id: &QueueId) -> Result<Vec<u8>, SpoolError> {
    let message = spool.open_message(id)?;
    let path = message.segment_path().to_path_buf();
    let mut bytes = Vec::new();
    message
        .reader()
        .take(MAX_HEADERS as u64)
        .read_to_end(&mut bytes)
        .map_err(|e: io::Error| SpoolError::Io { path, source: e })?;
    Ok(header_section(&bytes))
}

/// Everything before the first empty line; a cut-off last line is dropped.
pub fn header_section(message: &[u8]) -> Vec<u8> {
    if message.starts_with(b"\r\n") {
        return Vec::new();
    }
    if let Some(i) = message.windows(4).position(|w| w == b"\r\n\r\n") {
        return message[..i + 2].to_vec();
    }
    match message.windows(2).rposition(|w| w == b"\r\n") {
        Some(i) => message[..i + 2].to_vec(),
        None => Vec::new(),
    }
}

/// `rfc822` for ASCII addresses, `utf-8` (RFC 6533) otherwise.
fn address_type(address: &str) -> &'static str {
    if address.is_ascii() {
        "rfc822"
    } else {
        "utf-8"
    }
}

/// Recipient `i` and its last error, for the human-readable part.
fn explained(state: &MessageState, i: usize) -> Vec<String> {
    let r = &state.rcpts[i];
    let mut lines = vec![format!("<{}>:", r.address)];
    lines.extend(r.last.as_ref().map(|d| format!("    {d}")));
    lines.push(String::new());
    lines
}

/// The RFC 3464 action for recipient `i` of a report.
fn action(state: &MessageState, i: usize) -> &'static str {
    let r = &state.rcpts[i];
    match r.status {
        RcptStatus::Failed => "failed",
        RcptStatus::Pending => "delayed",
        RcptStatus::Delivered if r.handover == Some(Handover::Mailbox) => "delivered",
        RcptStatus::Delivered => "relayed",
    }
}

fn remote_name(d: &Diagnostic) -> Option<&str> {
    d.remote_mta
        .as_deref()
        .map(|r| r.split('[').next().unwrap_or(r))
        .filter(|r| !r.is_empty())
}

/// Build the report on `report`'s recipients of `state`: its envelope (a fresh
/// queue id, from `<>`, to the original sender) and its content (CRLF).
/// `original` is the header section, or the whole message when
/// `report.returns_full(state)`.
pub fn build(
    state: &MessageState,
    report: &Report,
    original: &[u8],
    settings: &Settings,
    now_ms: u64,
) -> (Envelope, Vec<u8>) {
    let full = report.returns_full(state);
    let id = QueueId::generate();
    let host = &settings.hostname;
    let sender = &state.envelope.mail_from;
    let boundary = format!("=_postern_{id}");
    let mut m = String::new();
    let mut line = |s: &str| {
        m.push_str(s);
        m.push_str("\r\n");
    };
    line(&format!("Date: {}", date::rfc5322(now_ms)));
    line(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{host}>"
    ));
    line(&format!("To: <{sender}>"));
    line(if !report.failed.is_empty() {
        "Subject: Undelivered Mail Returned to Sender"
    } else if !report.delayed.is_empty() {
        "Subject: Delayed Mail (still being retried)"
    } else {
        "Subject: Successful Mail Delivery Report"
    });
    line(&format!("Message-ID: <{id}.dsn@{host}>"));
    line("Auto-Submitted: auto-replied");
    line("MIME-Version: 1.0");
    line("Content-Type: multipart/report; report-type=delivery-status;");
    line(&format!("\tboundary=\"{boundary}\""));
    line("");
    line("This is a MIME-encapsulated message.");
    line("");
    // The head of each part: its boundary, description and type.
    let part = |line: &mut dyn FnMut(&str), description: &str, content_type: &str| {
        line(&format!("--{boundary}"));
        line(&format!("Content-Description: {description}"));
        line(&format!("Content-Type: {content_type}"));
        line("");
    };
    part(&mut line, "Notification", "text/plain; charset=utf-8");
    line(&format!("This is the mail system at host {host}."));
    line("");
    let explain = |rcpts: &[usize], line: &mut dyn FnMut(&str)| {
        for &i in rcpts {
            for l in explained(state, i) {
                line(&l);
            }
        }
    };
    if !report.failed.is_empty() {
        line("I'm sorry to have to inform you that your message could not");
        line("be delivered to one or more recipients. It's attached below.");
        line("");
        explain(&report.failed, &mut line);
    }
    if !report.delayed.is_empty() {
        line("Your message could not be delivered yet to the recipients");
        line(&format!(
            "below. Delivery will be tried until {}.",
            date::rfc5322(settings.retry.expires_at(state.arrival_ms()))
        ));
        line("");
        explain(&report.delayed, &mut line);
    }
    if !report.delivered.is_empty() {
        line("Your message was delivered to the recipients below, as you asked.");
        line("");
        for &i in &report.delivered {
            line(&format!(
                "<{}>: {}",
                state.rcpts[i].address,
                action(state, i)
            ));
        }
        line("");
    }
    part(&mut line, "Delivery report", "message/delivery-status");
    line(&format!("Reporting-MTA: dns; {host}"));
    line(&format!("X-Postern-Queue-ID: {}", state.id));
    if let Some(envid) = param(&state.envelope.mail_params, "ENVID") {
        line(&format!("Original-Envelope-Id: {}", xtext_decode(envid)));
    }
    line(&format!(
        "Arrival-Date: {}",
        date::rfc5322(state.arrival_ms())
    ));
    let reported = report
        .failed
        .iter()
        .chain(&report.delayed)
        .chain(&report.delivered);
    for &i in reported {
        let r = &state.rcpts[i];
        line("");
        line(&format!(
            "Final-Recipient: {}; {}",
            address_type(&r.address),
            r.address
        ));
        if let Some(orcpt) = param(&r.params, "ORCPT")
            && let Some((kind, addr)) = orcpt.split_once(';')
        {
            line(&format!(
                "Original-Recipient: {}; {}",
                crate::outcome::sanitize(kind),
                xtext_decode(addr)
            ));
        }
        let action = action(state, i);
        line(&format!("Action: {action}"));
        if matches!(action, "delivered" | "relayed") {
            line("Status: 2.0.0");
        } else if let Some(d) = &r.last {
            line(&format!("Status: {}", d.status));
            if let Some(remote) = remote_name(d) {
                line(&format!("Remote-MTA: dns; {remote}"));
            }
            line(&format!("Diagnostic-Code: {}", d.diagnostic_code()));
        } else if action == "delayed" {
            line("Status: 4.0.0");
        } else {
            line("Status: 5.0.0");
        }
        if action == "delayed" {
            line(&format!(
                "Will-Retry-Until: {}",
                date::rfc5322(settings.retry.expires_at(state.arrival_ms()))
            ));
        }
        if r.at_ms > 0 {
            line(&format!("Last-Attempt-Date: {}", date::rfc5322(r.at_ms)));
        }
    }
    line("");
    if full {
        part(&mut line, "Undelivered Message", "message/rfc822");
    } else {
        part(&mut line, "Message Headers", "text/rfc822-headers");
    }
    let mut bytes = m.into_bytes();
    bytes.extend_from_slice(original);
    if full && !original.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut mail_params = Vec::new();
    if !bytes.is_ascii() {
        mail_params.push("BODY=8BITMIME".to_string());
    }
    if !sender.is_ascii() {
        // An internationalised address needs SMTPUTF8 on the way (RFC 6531).
        mail_params.push("SMTPUTF8".to_string());
    }
    if param(&state.envelope.mail_params, "REQUIRETLS").is_some() {
        // RFC 8689 §5: the report on a REQUIRETLS message requires TLS too.
        mail_params.push("REQUIRETLS".to_string());
    }
    let envelope = Envelope {
        queue_id: id,
        received_at_unix_ms: now_ms,
        client: Client {
            helo: Some(host.clone()),
            ..Client::at("127.0.0.1", 0)
        },
        mail_from: String::new(),
        mail_params,
        recipients: vec![Recipient {
            address: sender.clone(),
            params: Vec::new(),
        }],
        session_id: format!("dsn-{}", state.id),
        quarantine: None,
    };
    (envelope, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Record;
    use postern_protocol::Reply;
    use std::path::Path;
    use std::sync::Arc;

    #[test]
    fn xtext_and_headers() {
        assert_eq!(xtext_decode("a+2Bb+3Dc"), "a+b=c");
        assert_eq!(xtext_decode("bad+zz+2"), "bad+zz+2");
        assert_eq!(
            header_section(b"A: 1\r\nB: 2\r\n\r\nbody\r\n"),
            b"A: 1\r\nB: 2\r\n"
        );
        assert_eq!(header_section(b"A: 1\r\nB: cut"), b"A: 1\r\n");
        assert_eq!(header_section(b"\r\nbody"), b"");
    }

    #[test]
    fn report_has_the_rfc3464_fields() {
        let env = Envelope {
            queue_id: "0000000000000000000A".parse().unwrap(),
            received_at_unix_ms: 1_700_000_000_000,
            client: Client::at("192.0.2.1", 1),
            mail_from: "alice@example.test".into(),
            mail_params: vec!["ENVID=env+2B1".into()],
            recipients: vec![
                Recipient {
                    address: "bob@remote.test".into(),
                    params: vec!["ORCPT=rfc822;Bob+2Bx@remote.test".into()],
                },
                Recipient {
                    address: "carol@remote.test".into(),
                    params: vec![],
                },
            ],
            session_id: "s".into(),
            quarantine: None,
        };
        let mut state = MessageState::new(env.queue_id, Arc::new(env), 100);
        let reply = Reply::new(550, Some("5.1.1".parse().unwrap()), "no such user");
        state.apply(&Record::Failed {
            rcpt: 0,
            at_ms: 1_700_000_060_000,
            diag: Diagnostic::from_reply(&reply, "mx.remote.test[127.0.0.1]:25"),
        });
        let settings = Settings::new("mx.example.test", &[], Path::new("/d"));
        let (envelope, bytes) = build(
            &state,
            &Report {
                failed: vec![0],
                ..Report::default()
            },
            b"Subject: hello\r\nFrom: alice@example.test\r\n",
            &settings,
            1_700_000_100_000,
        );
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(envelope.mail_from, "");
        assert_eq!(envelope.recipients[0].address, "alice@example.test");
        assert_ne!(
            envelope.queue_id, state.id,
            "the report has its own queue id"
        );
        for want in [
            "To: <alice@example.test>\r\n",
            "Content-Type: multipart/report; report-type=delivery-status;\r\n",
            "Reporting-MTA: dns; mx.example.test\r\n",
            "Original-Envelope-Id: env+1\r\n",
            "Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n",
            "Final-Recipient: rfc822; bob@remote.test\r\n",
            "Original-Recipient: rfc822; Bob+x@remote.test\r\n",
            "Action: failed\r\nStatus: 5.1.1\r\n",
            "Remote-MTA: dns; mx.remote.test\r\n",
            "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n",
            "Last-Attempt-Date: Tue, 14 Nov 2023 22:14:20 +0000\r\n",
            "Content-Type: text/rfc822-headers\r\n\r\nSubject: hello\r\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        // Each part's head: boundary, description, type, blank line.
        let boundary = format!("--=_postern_{}\r\n", envelope.queue_id);
        for (description, content_type) in [
            ("Notification", "text/plain; charset=utf-8"),
            ("Delivery report", "message/delivery-status"),
            ("Message Headers", "text/rfc822-headers"),
        ] {
            let head = format!(
                "{boundary}Content-Description: {description}\r\nContent-Type: {content_type}\r\n\r\n"
            );
            assert!(text.contains(&head), "missing {head:?} in\n{text}");
        }
        assert!(!text.contains("carol"));
        assert!(text.ends_with(&format!("--=_postern_{}--\r\n", envelope.queue_id)));
        assert!(!text.replace("\r\n", "").contains('\n'));
    }
}
