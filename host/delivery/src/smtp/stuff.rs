//! Transparency for DATA (RFC 5321 §4.5.2): a line starting with "." gets a second
//! one, the content ends with CRLF "." CRLF. Line ends are normalised on the way:
//! a bare CR or bare LF becomes CRLF, so only CRLF ever reaches the wire (§2.3.8,
//! no SMTP smuggling through us). Streaming: works across chunk boundaries.

/// Streaming dot-stuffer.
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
    pending_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer {
            at_line_start: true,
            pending_cr: false,
        }
    }
}

impl DotStuffer {
    /// Append the stuffed form of `input` to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 64 + 4);
        for &b in input {
            if self.pending_cr {
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.at_line_start = true;
                }
                _ => {
                    if self.at_line_start && b == b'.' {
                        out.push(b'.');
                    }
                    out.push(b);
                    self.at_line_start = false;
                }
            }
        }
    }

    /// End the content: complete the last line if needed, then the "." line.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.extend_from_slice(b"\r\n");
            self.at_line_start = true;
        }
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.at_line_start = true;
    }
}

/// Stuff a whole message (tests and small messages).
pub fn stuff(message: &[u8]) -> Vec<u8> {
    let mut s = DotStuffer::default();
    let mut out = Vec::new();
    s.feed(message, &mut out);
    s.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffing_table() {
        let table: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"..x\r\n.\r\ny.\r\n", b"...x\r\n..\r\ny.\r\n.\r\n"),
            (b"a\r\n.b", b"a\r\n..b\r\n.\r\n"),
            // Bare LF and bare CR become CRLF; a dot after them is stuffed.
            (b"a\n.b\r.c\r", b"a\r\n..b\r\n..c\r\n.\r\n"),
            (b"\r\n\r\n", b"\r\n\r\n.\r\n"),
        ];
        for (input, want) in table {
            assert_eq!(
                String::from_utf8_lossy(&stuff(input)),
                String::from_utf8_lossy(want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn chunk_boundaries_do_not_matter() {
        let message = b"Subject: x\r\n\r\n.one\r\n..two\r\nthree\r\n.\r\nend";
        let whole = stuff(message);
        for split in 0..message.len() {
            let mut s = DotStuffer::default();
            let mut out = Vec::new();
            s.feed(&message[..split], &mut out);
            s.feed(&message[split..], &mut out);
            s.finish(&mut out);
            assert_eq!(out, whole, "split at {split}");
        }
    }
}
