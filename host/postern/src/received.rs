//! The trace header the server prepends to every accepted message (RFC 5321
//! §4.4, RFC 3848 / RFC 6531 "with" keywords) and the RFC 5322 §3.3 date.
//! Input: client-chosen HELO names, sanitised here so they cannot break the
//! header's structure.

use std::net::IpAddr;
use std::time::SystemTime;

pub struct Trace<'a> {
    pub helo: Option<&'a str>,
    pub client_name: Option<&'a str>,
    pub client_ip: IpAddr,
    pub hostname: &'a str,
    pub esmtp: bool,
    pub tls: bool,
    pub authenticated: bool,
    pub smtputf8: bool,
    pub queue_id: &'a str,
    /// Named only when there is exactly one recipient (privacy).
    pub single_recipient: Option<&'a str>,
    pub when: SystemTime,
}

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || c == '(' || c == ')' || c == ';' {
                '_'
            } else {
                c
            }
        })
        .take(255)
        .collect()
}

/// RFC 3848 / RFC 6531 protocol keyword.
fn protocol(t: &Trace<'_>) -> String {
    let base = match (t.smtputf8, t.esmtp) {
        (true, _) => "UTF8SMTP",
        (false, true) => "ESMTP",
        (false, false) => "SMTP",
    };
    let mut p = base.to_string();
    if t.esmtp || t.smtputf8 {
        if t.tls {
            p.push('S');
        }
        if t.authenticated {
            p.push('A');
        }
    }
    p
}

/// The full `Received:` field, folded, ending in CRLF.
pub fn received(t: &Trace<'_>) -> String {
    let ip = match t.client_ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("IPv6:{v6}"),
        },
    };
    let from = t.helo.map(clean).unwrap_or_else(|| "unknown".into());
    let name = t.client_name.map(clean).unwrap_or_else(|| "unknown".into());
    let mut s = format!(
        "Received: from {from} ({name} [{ip}])\r\n\tby {} (Postern) with {} id {}\r\n",
        t.hostname,
        protocol(t),
        t.queue_id
    );
    match t.single_recipient {
        Some(r) => s.push_str(&format!(
            "\tfor <{}>; {}\r\n",
            clean(r),
            rfc5322_date(t.when)
        )),
        None => s.push_str(&format!("\t; {}\r\n", rfc5322_date(t.when))),
    }
    s
}

/// `Wed, 25 Nov 2026 09:27:59 +0000`
pub fn rfc5322_date(when: SystemTime) -> String {
    postern_protocol::date::rfc5322(postern_protocol::date::unix_ms(when))
}

/// How many `Received:` fields the header section of `message` holds (RFC
/// 5321 §6.3 loop detection). Only field starts count: a folded continuation
/// line or a body line mentioning "Received:" does not. The header section
/// ends at the first empty line; a message without one is all header.
pub fn count_received(message: &[u8]) -> usize {
    const NAME: &[u8] = b"received";
    let mut count = 0;
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.len() > NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME) {
            // "Received" then optional WSP before the colon (RFC 5322 §4.5.3
            // obsolete syntax, still seen).
            let rest = &line[NAME.len()..];
            let rest = &rest[rest
                .iter()
                .take_while(|b| **b == b' ' || **b == b'\t')
                .count()..];
            if rest.first() == Some(&b':') {
                count += 1;
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn counts_received_fields_in_the_header_only() {
        let m = b"Received: from a\r\n\tby b; date\r\nreceived : from c\r\nRECEIVED:x\r\n\
X-Received: no\r\nReceived-SPF: pass\r\nSubject: Received: no\r\n \
Received: folded, no\r\n\r\nReceived: in the body\r\n";
        assert_eq!(count_received(m), 3);
        assert_eq!(count_received(b""), 0);
        assert_eq!(count_received(b"\r\nReceived: x\r\n"), 0);
        // No empty line: all header; bare LF tolerated by the counter.
        assert_eq!(count_received(b"Received: a\nReceived: b"), 2);
        let many: Vec<u8> = b"Received: x\r\n"
            .repeat(100)
            .into_iter()
            .chain(*b"\r\nbody")
            .collect();
        assert_eq!(count_received(&many), 100);
    }

    #[test]
    fn header_shape() {
        let t = Trace {
            helo: Some("client.example (evil)"),
            client_name: None,
            client_ip: "127.0.0.1".parse().unwrap(),
            hostname: "mx.test",
            esmtp: true,
            tls: true,
            authenticated: false,
            smtputf8: false,
            queue_id: "Q1",
            single_recipient: Some("a@b"),
            when: UNIX_EPOCH,
        };
        let h = received(&t);
        assert!(h.starts_with("Received: from client.example _evil_ (unknown [127.0.0.1])\r\n"));
        assert!(h.contains("by mx.test (Postern) with ESMTPS id Q1\r\n"));
        assert!(h.ends_with("\tfor <a@b>; Thu, 1 Jan 1970 00:00:00 +0000\r\n"));
        let v6 = Trace {
            client_ip: "2001:db8::1".parse().unwrap(),
            single_recipient: None,
            esmtp: false,
            tls: false,
            ..t
        };
        let h = received(&v6);
        assert!(h.contains("[IPv6:2001:db8::1]"));
        assert!(h.contains("with SMTP id"));
    }
}
