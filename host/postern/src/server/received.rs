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
    let mut counter = ReceivedCounter::default();
    counter.feed(message);
    counter.finish()
}

/// [`count_received`] over a message given in pieces (one in a spill file is
/// read a block at a time), whatever the cuts; keeps no line in memory.
#[derive(Debug, Default)]
pub struct ReceivedCounter {
    count: usize,
    /// Octets of the line in progress (its `\n` excluded).
    len: usize,
    /// Its first octet.
    first: u8,
    /// How far the line in progress matches "Received" WSP* ":".
    state: Match,
    done: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Match {
    /// This many octets of the name matched so far.
    #[default]
    Start,
    Name(usize),
    /// The name and maybe WSP: the next other octet decides.
    Wsp,
    /// Decided for this line.
    Counted,
    No,
}

impl ReceivedCounter {
    /// The next piece of the message; true once the header section ended
    /// (more input changes nothing).
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            if self.done {
                break;
            }
            if b == b'\n' {
                self.end_line();
            } else {
                self.octet(b);
            }
        }
        self.done
    }

    /// The count, the last line (without a line end) included.
    pub fn finish(mut self) -> usize {
        if !self.done {
            self.end_line();
        }
        self.count
    }

    fn octet(&mut self, b: u8) {
        const NAME: &[u8] = b"received";
        if self.len == 0 {
            self.first = b;
        }
        self.len += 1;
        self.state = match self.state {
            Match::Start | Match::Name(_) => {
                let i = match self.state {
                    Match::Name(i) => i,
                    _ => 0,
                };
                if b.eq_ignore_ascii_case(&NAME[i]) {
                    if i + 1 == NAME.len() {
                        Match::Wsp
                    } else {
                        Match::Name(i + 1)
                    }
                } else {
                    Match::No
                }
            }
            // "Received" then optional WSP before the colon (RFC 5322 §4.5.3
            // obsolete syntax, still seen).
            Match::Wsp if b == b' ' || b == b'\t' => Match::Wsp,
            Match::Wsp if b == b':' => Match::Counted,
            Match::Wsp => Match::No,
            decided => decided,
        };
    }

    fn end_line(&mut self) {
        // A line is empty when it holds nothing or only the CR of its CRLF.
        if self.len == 0 || (self.len == 1 && self.first == b'\r') {
            self.done = true;
        } else if self.state == Match::Counted {
            self.count += 1;
        }
        self.len = 0;
        self.state = Match::Start;
    }
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
    fn counting_in_pieces_is_the_same_whatever_the_cuts() {
        let samples: [&[u8]; 5] = [
            b"Received: from a\r\n\tby b; date\r\nreceived : from c\r\nRECEIVED:x\r\n\
X-Received: no\r\nSubject: Received: no\r\n \
Received: folded, no\r\n\r\nReceived: in the body\r\n",
            b"Received: a\nReceived: b",
            b"\r\nReceived: x\r\n",
            b"Received: x\r\nReceived: y\r",
            b"",
        ];
        for m in samples {
            let whole = count_received(m);
            for cut in 1..=m.len().max(1) {
                let mut c = ReceivedCounter::default();
                for piece in m.chunks(cut) {
                    c.feed(piece);
                }
                assert_eq!(
                    c.finish(),
                    whole,
                    "{:?} in pieces of {cut}",
                    String::from_utf8_lossy(m)
                );
            }
        }
        let mut c = ReceivedCounter::default();
        assert!(!c.feed(b"Received: a\r\nReceived: b\r\n"));
        assert!(c.feed(b"\r\nReceived: c\r\n"));
        assert_eq!(c.finish(), 2);
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
