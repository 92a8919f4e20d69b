//! SMTP replies: typed reply values, their wire encoding, and a client-side parser
//! for (multi-line) replies read from remote servers. Trusts no input: reply texts
//! written by the server are sanitised, and the parser treats every remote line as
//! hostile. Implements RFC 5321 §4.2 (reply syntax), §4.2.1 (reply code classes),
//! RFC 3463 (enhanced status codes) and RFC 2034 (enhanced codes in reply texts).

use std::fmt;
use std::str::FromStr;

/// An RFC 3463 enhanced status code `class.subject.detail`, e.g. `5.7.1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// Subject, 0..=999.
    pub subject: u16,
    /// Detail, 0..=999.
    pub detail: u16,
}

impl EnhancedCode {
    /// Build a code; no validation (use [`str::parse`] for untrusted text).
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// The text is not a valid RFC 3463 enhanced status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed enhanced status code")]
pub struct EnhancedCodeError;

/// Parse 1..=`max_digits` ASCII digits (no sign, no spaces).
fn parse_digits(s: &str, max_digits: usize) -> Result<u16, EnhancedCodeError> {
    if s.is_empty() || s.len() > max_digits || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EnhancedCodeError);
    }
    s.parse::<u16>().map_err(|_| EnhancedCodeError)
}

impl FromStr for EnhancedCode {
    type Err = EnhancedCodeError;

    /// Strict RFC 3463 syntax: `class "." 1*3digit "." 1*3digit`, class in {2,4,5}.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('.');
        let (Some(class), Some(subject), Some(detail), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(EnhancedCodeError);
        };
        let class = u8::try_from(parse_digits(class, 1)?).map_err(|_| EnhancedCodeError)?;
        if !matches!(class, 2 | 4 | 5) {
            return Err(EnhancedCodeError);
        }
        Ok(Self::new(
            class,
            parse_digits(subject, 3)?,
            parse_digits(detail, 3)?,
        ))
    }
}

/// An SMTP reply: a three-digit code, an optional enhanced code and text lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code (RFC 5321 §4.2); callers keep it in 200..=599.
    pub code: u16,
    /// Enhanced status code written in front of every line's text, if any.
    pub enhanced: Option<EnhancedCode>,
    /// Text lines, without codes and without line endings.
    pub lines: Vec<String>,
}

/// Replace CR and LF with spaces so a text can never break the reply framing.
fn sanitize(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\r', '\n']) {
        std::borrow::Cow::Owned(text.replace(['\r', '\n'], " "))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

impl Reply {
    /// A one-line reply.
    pub fn new(code: u16, enhanced: Option<EnhancedCode>, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced,
            lines: vec![text.into()],
        }
    }

    /// A multi-line reply (e.g. the EHLO capability list).
    pub fn multiline(code: u16, enhanced: Option<EnhancedCode>, lines: Vec<String>) -> Self {
        Self {
            code,
            enhanced,
            lines,
        }
    }

    /// 2xx or 3xx.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not try again.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// Append the wire form. Every line is `CODE-` except the last, `CODE `; with an
    /// enhanced code each text is prefixed with `x.y.z `. Lines end in CRLF. An empty
    /// `lines` (or an empty last line without enhanced code) writes `CODE\r\n` (or
    /// `CODE x.y.z\r\n`). CR and LF inside a text are replaced by spaces.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let code = self.code.to_string();
        let enhanced = self.enhanced.map(|e| e.to_string());
        if self.lines.is_empty() {
            out.extend_from_slice(code.as_bytes());
            if let Some(e) = &enhanced {
                out.push(b' ');
                out.extend_from_slice(e.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            return;
        }
        let mut lines = self.lines.iter().peekable();
        while let Some(line) = lines.next() {
            let last = lines.peek().is_none();
            out.extend_from_slice(code.as_bytes());
            let text = sanitize(line);
            // RFC 4954 §4: a SASL challenge is "334" SP [base64], even when
            // empty; other empty last lines are the bare code (RFC 5321 §4.2).
            if last && enhanced.is_none() && text.is_empty() && self.code != 334 {
                out.extend_from_slice(b"\r\n");
                continue;
            }
            out.push(if last { b' ' } else { b'-' });
            if let Some(e) = &enhanced {
                out.extend_from_slice(e.as_bytes());
                if !text.is_empty() {
                    out.push(b' ');
                }
            }
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

impl fmt::Display for Reply {
    /// One line for logs: `550 5.7.1 text` (several lines joined with ` / `).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        for (i, line) in self.lines.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { " / " })?;
            f.write_str(&sanitize(line))?;
        }
        Ok(())
    }
}

/// Most lines accepted in one multi-line reply (bounds memory against a hostile server).
pub const MAX_REPLY_LINES: usize = 1000;
/// Most text octets accepted in one reply, summed over its lines.
pub const MAX_REPLY_TEXT: usize = 64 * 1024;

/// A remote reply line that breaks RFC 5321 §4.2.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum ReplyParseError {
    /// The line does not start with a three-digit code 200..=599.
    #[error("reply line does not start with a valid reply code")]
    BadCode,
    /// The code is followed by something other than SP, "-" or the line end.
    #[error("bad separator after reply code")]
    BadSeparator,
    /// A continuation line carries a different code than the first line.
    #[error("reply code changed within a multi-line reply ({expected} then {found})")]
    CodeMismatch {
        /// Code of the first line.
        expected: u16,
        /// Code of the offending line.
        found: u16,
    },
    /// More than [`MAX_REPLY_LINES`] lines or [`MAX_REPLY_TEXT`] octets of text.
    #[error("reply too long")]
    TooLong,
}

/// Assembles remote reply lines into [`Reply`] values. After an error the parser
/// is reset and expects the first line of a new reply.
#[derive(Debug, Clone, Default)]
pub struct ReplyParser {
    code: Option<u16>,
    enhanced: Option<EnhancedCode>,
    lines: Vec<String>,
    text_len: usize,
}

impl ReplyParser {
    /// A parser waiting for the first line of a reply.
    pub fn new() -> Self {
        Self::default()
    }

    /// True while a multi-line reply has started but not finished.
    pub fn in_progress(&self) -> bool {
        self.code.is_some()
    }

    /// Forget any partial reply.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Feed one line without its CRLF. `Ok(Some)` when the reply is complete
    /// (`CODE text` or `CODE` alone), `Ok(None)` after a `CODE-text` line.
    pub fn feed_line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyParseError> {
        let result = self.feed_inner(line);
        if result.is_err() {
            self.reset();
        }
        result
    }

    fn feed_inner(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyParseError> {
        let (digits, rest) = line.split_at_checked(3).ok_or(ReplyParseError::BadCode)?;
        let code = parse_reply_code(digits)?;
        if let Some(expected) = self.code
            && expected != code
        {
            return Err(ReplyParseError::CodeMismatch {
                expected,
                found: code,
            });
        }
        let (last, text) = match rest.split_first() {
            None => (true, &[][..]),
            Some((b' ', text)) => (true, text),
            Some((b'-', text)) => (false, text),
            Some(_) => return Err(ReplyParseError::BadSeparator),
        };
        self.text_len = self.text_len.saturating_add(text.len());
        if self.lines.len() >= MAX_REPLY_LINES || self.text_len > MAX_REPLY_TEXT {
            return Err(ReplyParseError::TooLong);
        }
        self.code = Some(code);
        let text = String::from_utf8_lossy(text);
        let text = self.strip_enhanced(code, &text);
        self.lines.push(text);
        if !last {
            return Ok(None);
        }
        let reply = Reply {
            code,
            enhanced: self.enhanced,
            lines: std::mem::take(&mut self.lines),
        };
        self.reset();
        Ok(Some(reply))
    }

    /// Remove a leading enhanced code whose class matches the reply's first digit,
    /// remembering the first one seen.
    fn strip_enhanced(&mut self, code: u16, text: &str) -> String {
        let (token, rest) = text.split_once(' ').unwrap_or((text, ""));
        match token.parse::<EnhancedCode>() {
            Ok(e) if u16::from(e.class) == code / 100 => {
                self.enhanced.get_or_insert(e);
                rest.to_owned()
            }
            _ => text.to_owned(),
        }
    }
}

fn parse_reply_code(digits: &[u8]) -> Result<u16, ReplyParseError> {
    let mut code: u16 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(ReplyParseError::BadCode);
        }
        code = code
            .checked_mul(10)
            .and_then(|c| c.checked_add(u16::from(d - b'0')))
            .ok_or(ReplyParseError::BadCode)?;
    }
    if (200..600).contains(&code) {
        Ok(code)
    } else {
        Err(ReplyParseError::BadCode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ec(s: &str) -> Option<EnhancedCode> {
        s.parse().ok()
    }

    #[test]
    fn enhanced_code_parse_table() {
        let ok = [
            ("2.0.0", (2, 0, 0)),
            ("5.7.1", (5, 7, 1)),
            ("4.4.7", (4, 4, 7)),
            ("5.999.999", (5, 999, 999)),
            ("5.01.001", (5, 1, 1)),
        ];
        for (s, (c, sub, d)) in ok {
            assert_eq!(
                s.parse::<EnhancedCode>(),
                Ok(EnhancedCode::new(c, sub, d)),
                "{s}"
            );
        }
        let bad = [
            "", "5", "5.7", "5.7.1.1", "3.0.0", "1.0.0", "0.0.0", "6.0.0", "55.0.0", "5.1000.0",
            "5.0.1000", "+5.7.1", "5.+7.1", "5.7.+1", "5.7.", ".7.1", "5..1", " 5.7.1", "5.7.1 ",
            "5.7.a", "５.7.1", "5.-1.1",
        ];
        for s in bad {
            assert_eq!(s.parse::<EnhancedCode>(), Err(EnhancedCodeError), "{s:?}");
        }
    }

    #[test]
    fn enhanced_code_display() {
        assert_eq!(EnhancedCode::new(5, 7, 1).to_string(), "5.7.1");
        assert_eq!(EnhancedCode::new(2, 10, 100).to_string(), "2.10.100");
    }

    #[test]
    fn wire_form_table() {
        let cases: Vec<(Reply, &str)> = vec![
            (Reply::new(250, None, "OK"), "250 OK\r\n"),
            (Reply::new(250, ec("2.0.0"), "OK"), "250 2.0.0 OK\r\n"),
            (
                Reply::multiline(
                    250,
                    None,
                    vec!["mx".into(), "PIPELINING".into(), "8BITMIME".into()],
                ),
                "250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
            ),
            (
                Reply::multiline(550, ec("5.7.1"), vec!["a".into(), "b".into()]),
                "550-5.7.1 a\r\n550 5.7.1 b\r\n",
            ),
            (Reply::multiline(250, None, vec![]), "250\r\n"),
            (Reply::multiline(250, ec("2.0.0"), vec![]), "250 2.0.0\r\n"),
            (Reply::new(354, None, ""), "354\r\n"),
            (Reply::new(250, ec("2.0.0"), ""), "250 2.0.0\r\n"),
            (
                Reply::multiline(250, None, vec!["".into(), "x".into()]),
                "250-\r\n250 x\r\n",
            ),
            (
                Reply::new(550, None, "evil\r\n250 injected"),
                "550 evil  250 injected\r\n",
            ),
            (Reply::new(550, None, "a\rb\nc"), "550 a b c\r\n"),
        ];
        for (reply, wire) in cases {
            assert_eq!(
                String::from_utf8(reply.to_bytes()).unwrap(),
                wire,
                "{reply:?}"
            );
        }
    }

    #[test]
    fn display_is_one_line() {
        let r = Reply::multiline(550, ec("5.7.1"), vec!["a".into(), "b\r\nc".into()]);
        assert_eq!(r.to_string(), "550 5.7.1 a / b  c");
        assert_eq!(Reply::new(250, None, "OK").to_string(), "250 OK");
        assert_eq!(Reply::multiline(221, None, vec![]).to_string(), "221");
    }

    #[test]
    fn classes() {
        let table = [
            (220, true, false, false),
            (354, true, false, false),
            (421, false, true, false),
            (451, false, true, false),
            (500, false, false, true),
            (554, false, false, true),
        ];
        for (code, p, t, f) in table {
            let r = Reply::new(code, None, "");
            assert_eq!(
                (r.is_positive(), r.is_transient(), r.is_permanent()),
                (p, t, f)
            );
        }
    }

    fn parse_all(lines: &[&str]) -> Vec<Result<Option<Reply>, ReplyParseError>> {
        let mut p = ReplyParser::new();
        lines.iter().map(|l| p.feed_line(l.as_bytes())).collect()
    }

    #[test]
    fn parser_single_and_multi_line() {
        assert_eq!(
            parse_all(&["250 OK"]),
            vec![Ok(Some(Reply::new(250, None, "OK")))]
        );
        assert_eq!(
            parse_all(&["250"]),
            vec![Ok(Some(Reply::new(250, None, "")))]
        );
        assert_eq!(
            parse_all(&["250-mx.example", "250-SIZE 100", "250 8BITMIME"]),
            vec![
                Ok(None),
                Ok(None),
                Ok(Some(Reply::multiline(
                    250,
                    None,
                    vec!["mx.example".into(), "SIZE 100".into(), "8BITMIME".into()]
                )))
            ]
        );
        assert_eq!(
            parse_all(&["550-5.7.1 go", "550 5.7.1 away"]),
            vec![
                Ok(None),
                Ok(Some(Reply::multiline(
                    550,
                    ec("5.7.1"),
                    vec!["go".into(), "away".into()]
                )))
            ]
        );
    }

    #[test]
    fn parser_enhanced_code_only_when_class_matches() {
        let cases = [
            ("250 2.1.0 ok", ec("2.1.0"), "ok"),
            ("250 5.1.0 ok", None, "5.1.0 ok"),
            ("451 4.3.0", ec("4.3.0"), ""),
            ("550 5.1.1", ec("5.1.1"), ""),
            ("550 5.1 x", None, "5.1 x"),
            ("220 mx.example ESMTP", None, "mx.example ESMTP"),
        ];
        for (line, enhanced, text) in cases {
            let got = ReplyParser::new().feed_line(line.as_bytes());
            assert_eq!(
                got,
                Ok(Some(Reply::new(line[..3].parse().unwrap(), enhanced, text))),
                "{line}"
            );
        }
    }

    #[test]
    fn parser_errors() {
        let cases: [(&[&str], ReplyParseError); 9] = [
            (&[""], ReplyParseError::BadCode),
            (&["25"], ReplyParseError::BadCode),
            (&["2x0 ok"], ReplyParseError::BadCode),
            (&["199 ok"], ReplyParseError::BadCode),
            (&["600 ok"], ReplyParseError::BadCode),
            (&["250_ok"], ReplyParseError::BadSeparator),
            (&["2500 ok"], ReplyParseError::BadSeparator),
            (&["+25 ok"], ReplyParseError::BadCode),
            (
                &["250-a", "251 b"],
                ReplyParseError::CodeMismatch {
                    expected: 250,
                    found: 251,
                },
            ),
        ];
        for (lines, err) in cases {
            let got = parse_all(lines);
            assert_eq!(got.last(), Some(&Err(err)), "{lines:?}");
        }
    }

    #[test]
    fn parser_resets_after_error_and_bounds_lines() {
        let mut p = ReplyParser::new();
        assert_eq!(p.feed_line(b"250-a"), Ok(None));
        assert!(p.in_progress());
        assert!(p.feed_line(b"251 b").is_err());
        assert!(!p.in_progress());
        assert_eq!(
            p.feed_line(b"221 bye"),
            Ok(Some(Reply::new(221, None, "bye")))
        );

        let mut p = ReplyParser::new();
        let mut last = Ok(None);
        for _ in 0..=MAX_REPLY_LINES {
            last = p.feed_line(b"250-x");
            if last.is_err() {
                break;
            }
        }
        assert_eq!(last, Err(ReplyParseError::TooLong));
    }

    #[test]
    fn parser_accepts_invalid_utf8_lossily() {
        let got = ReplyParser::new().feed_line(b"550 caf\xe9");
        assert_eq!(got, Ok(Some(Reply::new(550, None, "caf\u{fffd}"))));
    }

    #[test]
    fn roundtrip_through_parser() {
        let replies = [
            Reply::new(250, None, "OK"),
            Reply::new(550, ec("5.7.1"), "Relaying denied"),
            Reply::multiline(250, ec("2.0.0"), vec!["a b".into(), "c".into(), "d".into()]),
            Reply::multiline(220, None, vec!["mx ESMTP".into(), "second".into()]),
        ];
        for r in replies {
            let wire = r.to_bytes();
            let mut p = ReplyParser::new();
            let mut got = None;
            for line in wire.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                got = p.feed_line(line.strip_suffix(b"\r").unwrap()).unwrap();
            }
            assert_eq!(got, Some(r));
        }
    }
}

#[cfg(test)]
mod sasl_tests {
    use super::*;

    #[test]
    fn empty_sasl_challenge_keeps_its_space() {
        assert_eq!(Reply::new(334, None, "").to_bytes(), b"334 \r\n");
        assert_eq!(Reply::new(250, None, "").to_bytes(), b"250\r\n");
    }
}
