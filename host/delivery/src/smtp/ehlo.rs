//! The EHLO reply as a set of capabilities (RFC 5321 §4.1.1.1: the first line is the
//! greeting, each further line an extension keyword and its parameters). Input: the
//! remote server's reply (untrusted; unknown keywords are ignored, bad numbers too).

use postern_protocol::Reply;

/// What the server announced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// EHLO succeeded (false after a HELO fallback: no extensions at all).
    pub esmtp: bool,
    pub pipelining: bool,
    /// `SIZE` (RFC 1870): `Some(0)` when announced without a limit.
    pub size: Option<u64>,
    pub eightbitmime: bool,
    pub starttls: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    /// `CHUNKING` (RFC 3030): the content goes in BDAT chunks.
    pub chunking: bool,
    /// `REQUIRETLS` (RFC 8689).
    pub requiretls: bool,
    /// SASL mechanisms, upper case.
    pub auth: Vec<String>,
}

impl Capabilities {
    /// Parse a positive EHLO reply.
    pub fn parse(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities {
            esmtp: true,
            ..Capabilities::default()
        };
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let keyword = keyword.to_ascii_uppercase();
            match keyword.as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => caps.eightbitmime = true,
                "STARTTLS" => caps.starttls = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "DSN" => caps.dsn = true,
                "CHUNKING" => caps.chunking = true,
                "REQUIRETLS" => caps.requiretls = true,
                "AUTH" => caps.add_auth(words),
                k if k.starts_with("AUTH=") => {
                    // Pre-RFC 4954 syntax some servers still send.
                    caps.add_auth(k["AUTH=".len()..].split_ascii_whitespace().chain(words));
                }
                _ => {}
            }
        }
        caps
    }

    fn add_auth<'a>(&mut self, mechs: impl Iterator<Item = &'a str>) {
        for m in mechs {
            let m = m.to_ascii_uppercase();
            if !m.is_empty() && !self.auth.contains(&m) && self.auth.len() < 32 {
                self.auth.push(m);
            }
        }
    }

    /// The message is larger than the announced limit.
    pub fn too_large(&self, size: u64) -> bool {
        matches!(self.size, Some(limit) if limit > 0 && size > limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(lines: &[&str]) -> Reply {
        Reply::multiline(250, None, lines.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn capability_table() {
        let c = Capabilities::parse(&reply(&[
            "mx.test greets you",
            "PIPELINING",
            "size 1000",
            "8BITMIME",
            "STARTTLS",
            "AUTH PLAIN login",
            "AUTH=CRAM-MD5 PLAIN",
            "SMTPUTF8",
            "DSN",
            "X-UNKNOWN foo",
            "",
        ]));
        assert!(c.esmtp && c.pipelining && c.eightbitmime && c.starttls && c.smtputf8 && c.dsn);
        assert_eq!(c.size, Some(1000));
        assert_eq!(c.auth, vec!["PLAIN", "LOGIN", "CRAM-MD5"]);
        assert!(c.too_large(1001) && !c.too_large(1000));

        let bare = Capabilities::parse(&reply(&["mx.test", "SIZE", "SIZE nonsense"]));
        assert_eq!(bare.size, Some(0));
        assert!(!bare.too_large(u64::MAX));
        assert!(!bare.pipelining && !bare.starttls);
        // The greeting line is not a capability.
        assert!(!Capabilities::parse(&reply(&["STARTTLS"])).starttls);
    }
}
