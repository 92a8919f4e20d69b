//! Command-line framing: splits the client's byte stream into CRLF-terminated
//! command lines. Trusts no input: bare CR, bare LF and over-long lines are
//! reported as errors, never as line ends (SMTP smuggling defence): a bare LF
//! ends a bad line, and a bare CR makes everything up to the next LF part of
//! the bad line, so no command ever starts after a bare CR. Implements
//! RFC 5321 §2.3.8 (lines end in CRLF only) and §4.5.3.1.4 (512-octet command line).

use std::ops::Range;

/// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;

/// Longest AUTH command or SASL response line, CRLF included (RFC 4954 §4).
pub const MAX_AUTH_LINE: usize = 12288;

/// Whether `line` (without CRLF) is an AUTH command, the one command allowed
/// to exceed [`MAX_COMMAND_LINE`] (up to [`MAX_AUTH_LINE`]).
pub fn is_auth_command(line: &[u8]) -> bool {
    line.get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"AUTH "))
}

/// A framing problem in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    /// More than `max_len` octets without a line end.
    TooLong,
    /// An LF not preceded by CR.
    BareLf,
    /// A CR not followed by LF.
    BareCr,
}

/// What [`LineFramer::next`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEvent {
    /// A complete line; the range indexes into the buffer given to `next` and
    /// excludes the CRLF.
    Line(Range<usize>),
    /// A framing error; the offending bytes have been consumed.
    Error(LineError),
}

/// Incremental CRLF line splitter with a length limit.
#[derive(Debug, Clone)]
pub struct LineFramer {
    max_len: usize,
    discarding: bool,
}

impl LineFramer {
    /// A framer accepting lines of at most `max_len` octets including the CRLF.
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len,
            discarding: false,
        }
    }

    /// The configured limit, CRLF included.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// True while the rest of an over-long line is being skipped.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }

    /// Look at the unconsumed input `buf`; the caller drains the returned number of
    /// bytes from its front afterwards. `Some(event)` when a line or an error was
    /// found, `None` when more input is needed (bytes of an over-long line being
    /// discarded may still be consumed). Every `Some` consumes at least one byte.
    pub fn next(&mut self, buf: &[u8]) -> (usize, Option<LineEvent>) {
        let mut start = 0;
        if self.discarding {
            match find_lf(buf, 0) {
                Some(end) => {
                    self.discarding = false;
                    start = end;
                }
                None => return (buf.len(), None),
            }
        }
        let mut i = start;
        while let Some(&b) = buf.get(i) {
            let next = i.saturating_add(1);
            match b {
                b'\n' => return (next, Some(LineEvent::Error(LineError::BareLf))),
                b'\r' => match buf.get(next) {
                    None => break,
                    Some(b'\n') => {
                        let end = next.saturating_add(1);
                        let event = if end.saturating_sub(start) <= self.max_len {
                            LineEvent::Line(start..i)
                        } else {
                            LineEvent::Error(LineError::TooLong)
                        };
                        return (end, Some(event));
                    }
                    Some(_) => {
                        // Everything up to the next LF belongs to the bad line:
                        // no command may start after a bare CR.
                        let consumed = self.skip_rest_of_line(buf, next);
                        return (consumed, Some(LineEvent::Error(LineError::BareCr)));
                    }
                },
                _ if i.saturating_sub(start) >= self.max_len => {
                    // This byte makes max_len + 1 octets without a line end.
                    let consumed = self.skip_rest_of_line(buf, next);
                    return (consumed, Some(LineEvent::Error(LineError::TooLong)));
                }
                _ => {}
            }
            i = next;
        }
        (start, None)
    }

    /// How much of `buf` a bad line found at `from` consumes: through the
    /// next LF, or all of it, skipping the rest of the line as it arrives.
    fn skip_rest_of_line(&mut self, buf: &[u8], from: usize) -> usize {
        match find_lf(buf, from) {
            Some(end) => end,
            None => {
                self.discarding = true;
                buf.len()
            }
        }
    }
}

/// Index just past the first LF at or after `from`.
fn find_lf(buf: &[u8], from: usize) -> Option<usize> {
    let tail = buf.get(from..)?;
    let pos = tail.iter().position(|&b| b == b'\n')?;
    Some(from.saturating_add(pos).saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Events = Vec<Result<Vec<u8>, LineError>>;

    /// Events with line contents, feeding `input` in chunks of `chunk` bytes and
    /// draining consumed bytes like a real caller.
    fn frame(max_len: usize, input: &[u8], chunk: usize) -> Events {
        let mut framer = LineFramer::new(max_len);
        let mut buf = Vec::new();
        let mut events = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                let (consumed, event) = framer.next(&buf);
                assert!(consumed <= buf.len());
                match event {
                    Some(LineEvent::Line(r)) => events.push(Ok(buf[r].to_vec())),
                    Some(LineEvent::Error(e)) => events.push(Err(e)),
                    None => {
                        buf.drain(..consumed);
                        break;
                    }
                }
                assert!(consumed > 0);
                buf.drain(..consumed);
            }
        }
        events
    }

    fn ok(s: &str) -> Result<Vec<u8>, LineError> {
        Ok(s.as_bytes().to_vec())
    }

    #[test]
    fn framing_table() {
        use LineError::*;
        let cases: Vec<(&[u8], Events)> = vec![
            (b"EHLO x\r\n", vec![ok("EHLO x")]),
            (b"\r\n", vec![ok("")]),
            (b"A\r\nB\r\n", vec![ok("A"), ok("B")]),
            (b"A\r\nB", vec![ok("A")]),
            (b"A\r", vec![]),
            (b"A\nB\r\n", vec![Err(BareLf), ok("B")]),
            (b"\n", vec![Err(BareLf)]),
            (b"A\rB\r\n", vec![Err(BareCr)]),
            (b"A\rB\r\nC\r\n", vec![Err(BareCr), ok("C")]),
            (b"A\r\rB\r\n", vec![Err(BareCr)]),
            (b"A\r\r\n", vec![Err(BareCr)]),
            (
                b"NOOP\rMAIL FROM:<x>\r\nQUIT\r\n",
                vec![Err(BareCr), ok("QUIT")],
            ),
            (b"A\rB\nC\r\n", vec![Err(BareCr), ok("C")]),
            (b"DATA\n.\n", vec![Err(BareLf), Err(BareLf)]),
            (b"x\r\n.\rQUIT\r\n", vec![ok("x"), Err(BareCr)]),
            (
                b"x\r\n.\rQUIT\r\nNOOP\r\n",
                vec![ok("x"), Err(BareCr), ok("NOOP")],
            ),
        ];
        for (input, expected) in cases {
            for chunk in 1..=input.len() {
                assert_eq!(
                    frame(512, input, chunk),
                    expected,
                    "{input:?} chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn length_limit_boundaries() {
        use LineError::*;
        let max = 10;
        let exact = b"12345678\r\n"; // 10 octets including CRLF
        let over = b"123456789\r\n"; // 11 octets
        let long = b"1234567890123456789\r\nNEXT\r\n";
        let long_bare_lf = b"1234567890123\nNEXT\r\n";
        let cases: Vec<(&[u8], Events)> = vec![
            (exact, vec![ok("12345678")]),
            (over, vec![Err(TooLong)]),
            (long, vec![Err(TooLong), ok("NEXT")]),
            (long_bare_lf, vec![Err(TooLong), ok("NEXT")]),
            (b"12345678901\r\r\nOK\r\n", vec![Err(TooLong), ok("OK")]),
            (b"1234567890\r\n", vec![Err(TooLong)]),
            (b"1234567890\rX\r\n", vec![Err(BareCr)]),
            (b"1234567890\rX\r\nY\r\n", vec![Err(BareCr), ok("Y")]),
        ];
        for (input, expected) in cases {
            for chunk in 1..=input.len() {
                assert_eq!(
                    frame(max, input, chunk),
                    expected,
                    "{input:?} chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn auth_command_recognised() {
        for (line, yes) in [
            (&b"AUTH PLAIN AGFsaWNl"[..], true),
            (b"auth login", true),
            (b"AUTH", false),
            (b"AUTHX PLAIN", false),
            (b"MAIL FROM:<a@b>", false),
        ] {
            assert_eq!(is_auth_command(line), yes, "{line:?}");
        }
    }

    #[test]
    fn real_limit() {
        let mut line = vec![b'a'; MAX_COMMAND_LINE - 2];
        line.extend_from_slice(b"\r\n");
        assert_eq!(frame(MAX_COMMAND_LINE, &line, 4096).len(), 1);
        assert!(frame(MAX_COMMAND_LINE, &line, 4096)[0].is_ok());
        let mut long = vec![b'a'; MAX_COMMAND_LINE - 1];
        long.extend_from_slice(b"\r\n");
        assert_eq!(
            frame(MAX_COMMAND_LINE, &long, 4096),
            vec![Err(LineError::TooLong)]
        );
    }

    #[test]
    fn discarding_consumes_without_events() {
        let mut f = LineFramer::new(4);
        assert_eq!(
            f.next(b"abcdefgh"),
            (8, Some(LineEvent::Error(LineError::TooLong)))
        );
        assert!(f.is_discarding());
        assert_eq!(f.next(b"more junk"), (9, None));
        assert_eq!(f.next(b"end\r\nOK\r\n"), (9, Some(LineEvent::Line(5..7))));
        assert!(!f.is_discarding());
    }

    #[test]
    fn tiny_limits_never_panic() {
        for max in 0..4 {
            let got = frame(max, b"\r\nab\r\n\n\r", 1);
            assert!(got.iter().all(|e| e.is_err() || max >= 2), "{max} {got:?}");
        }
    }

    #[test]
    fn range_indexes_caller_buffer() {
        let mut f = LineFramer::new(512);
        let buf = b"NOOP\r\nQUIT\r\n";
        assert_eq!(f.next(buf), (6, Some(LineEvent::Line(0..4))));
        assert_eq!(f.next(&buf[6..]), (6, Some(LineEvent::Line(0..4))));
        assert_eq!(f.next(b""), (0, None));
    }
}
