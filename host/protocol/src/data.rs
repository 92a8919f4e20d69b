//! DATA content reader: finds the end-of-data marker, removes dot-stuffing and
//! enforces line and size limits, incrementally and independent of how the input
//! is chunked. Trusts no input: only CR LF "." CR LF after a real line end ends the
//! data, and bare CR / bare LF are flagged, never treated as line ends (SMTP
//! smuggling defence). A NUL octet is flagged too: neither 7bit nor 8bit
//! content may carry one (RFC 5322 §2.1, RFC 6152 §3, RFC 2045 §2.8), and NUL
//! is a known smuggling trick (`CR LF NUL . CR LF`). Implements RFC 5321
//! §4.1.1.4 (DATA), §4.5.2 (transparency), §4.5.3.1.6 (1000-octet text lines)
//! and §2.3.8 (CRLF-only line ends). The same reader, in chunked mode,
//! checks the content of BDAT chunks (RFC 3030): no dot-stuffing and no end
//! marker, the same rules for the assembled message whatever the chunk
//! boundaries (a CR ending one chunk and an LF starting the next are one
//! CRLF).

/// Longest text line in octets, CRLF included (RFC 5321 §4.5.3.1.6).
pub const MAX_TEXT_LINE: usize = 1000;

/// How the message ended; anything but `Complete` must be refused by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataOutcome {
    /// Well-formed and within the size limit.
    Complete,
    /// Content exceeded the size limit (RFC 5321 §4.5.3.1.10: 552).
    TooBig,
    /// A bare CR or bare LF was seen (possible SMTP smuggling).
    BareLineEnding,
    /// A NUL octet was seen (not allowed in 7bit or 8bit content).
    Nul,
    /// A line exceeded [`MAX_TEXT_LINE`] octets.
    LineTooLong,
}

/// Result of one [`DataReader::feed`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataProgress {
    /// Input bytes used; all of them unless `done`.
    pub consumed: usize,
    /// The end-of-data marker was consumed; the rest of the input is the next command.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (after a real CRLF, or at the start of the data).
    LineStart,
    /// A "." at the start of a line, not yet known to be stuffing or the end marker.
    Dot,
    /// ".\r" at the start of a line.
    DotCr,
    /// Inside a line.
    Mid,
    /// A CR inside a line, waiting for its LF.
    Cr,
    /// The end-of-data marker has been consumed.
    Done,
}

/// Incremental reader of the DATA content that follows a 354 reply.
#[derive(Debug, Clone)]
pub struct DataReader {
    state: State,
    max_size: u64,
    size: u64,
    /// Octets of the current line so far, CRLF included, stuffing dot excluded.
    line_len: usize,
    bare: bool,
    nul: bool,
    too_long: bool,
    too_big: bool,
    /// BDAT content: no stuffing, no end marker (see `chunked`).
    chunked: bool,
}

impl DataReader {
    /// A reader positioned at the start of the content; `max_size` limits the
    /// unstuffed content in octets (CRLFs counted).
    pub fn new(max_size: u64) -> Self {
        Self {
            state: State::LineStart,
            max_size,
            size: 0,
            line_len: 0,
            bare: false,
            nul: false,
            too_long: false,
            too_big: false,
            chunked: false,
        }
    }

    /// A reader for the content of BDAT chunks: every octet given is
    /// content (a "." at a line start too), `feed` consumes all of it, and
    /// `finish_chunks` ends the message.
    pub fn chunked(max_size: u64) -> Self {
        Self {
            chunked: true,
            ..Self::new(max_size)
        }
    }

    /// `BDAT … LAST` was read: the message ends here. A final CR without
    /// its LF is bare; a last line without a line end gets CRLF (the
    /// message is stored with CRLF line ends, as DATA's always are).
    pub fn finish_chunks(&mut self, out: &mut Vec<u8>) -> DataOutcome {
        match self.state {
            State::Cr => self.bare = true,
            State::Mid => {
                for b in *b"\r\n" {
                    self.line_octet();
                    self.emit(b, out);
                }
            }
            _ => {}
        }
        self.state = State::Done;
        self.outcome()
    }

    /// Consume input, appending unstuffed content to `out` while the message is
    /// still acceptable. Stops right after the end-of-data marker.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> DataProgress {
        let mut i = 0;
        while self.state != State::Done {
            let Some(rest) = input.get(i..) else { break };
            if self.state == State::Mid {
                // CR, LF and NUL need the state machine; everything else is
                // copied in bulk.
                let run = memchr::memchr3(b'\r', b'\n', 0, rest).unwrap_or(rest.len());
                if run > 0 {
                    self.content_run(rest.get(..run).unwrap_or_default(), out);
                    i = i.saturating_add(run);
                    continue;
                }
            }
            let Some(&b) = rest.first() else { break };
            i = i.saturating_add(1);
            self.step(b, out);
        }
        DataProgress {
            consumed: i,
            done: self.state == State::Done,
        }
    }

    /// True once the end-of-data marker has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The verdict (final once done): BareLineEnding > Nul > LineTooLong >
    /// TooBig > Complete.
    pub fn outcome(&self) -> DataOutcome {
        if self.bare {
            DataOutcome::BareLineEnding
        } else if self.nul {
            DataOutcome::Nul
        } else if self.too_long {
            DataOutcome::LineTooLong
        } else if self.too_big {
            DataOutcome::TooBig
        } else {
            DataOutcome::Complete
        }
    }

    /// Octets of unstuffed content seen, including those past the limit.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn problem(&self) -> bool {
        self.bare || self.nul || self.too_long || self.too_big
    }

    /// Count one octet of the current line.
    fn line_octet(&mut self) {
        self.line_len = self.line_len.saturating_add(1);
        if self.line_len > MAX_TEXT_LINE {
            self.too_long = true;
        }
    }

    /// One content octet: counted, and appended while the message is acceptable.
    fn emit(&mut self, b: u8, out: &mut Vec<u8>) {
        self.size = self.size.saturating_add(1);
        if self.size > self.max_size {
            self.too_big = true;
        }
        if !self.problem() {
            out.push(b);
        }
    }

    /// A run of ordinary octets (no CR, LF or NUL) inside a line: the same effect as
    /// `line_octet` + `emit` for each, in bulk.
    fn content_run(&mut self, run: &[u8], out: &mut Vec<u8>) {
        if !self.problem() {
            let by_line = MAX_TEXT_LINE.saturating_sub(self.line_len);
            let by_size = self.max_size.saturating_sub(self.size);
            let by_size = usize::try_from(by_size).unwrap_or(usize::MAX);
            let n = run.len().min(by_line).min(by_size);
            out.extend_from_slice(run.get(..n).unwrap_or_default());
        }
        let len = u64::try_from(run.len()).unwrap_or(u64::MAX);
        self.line_len = self.line_len.saturating_add(run.len());
        self.size = self.size.saturating_add(len);
        if self.line_len > MAX_TEXT_LINE {
            self.too_long = true;
        }
        if self.size > self.max_size {
            self.too_big = true;
        }
    }

    fn step(&mut self, b: u8, out: &mut Vec<u8>) {
        // A stuffing dot is transport framing, not part of the line's length.
        let stuffing = !self.chunked && self.state == State::LineStart && b == b'.';
        if !stuffing {
            self.line_octet();
        }
        self.state = match (self.state, b) {
            (State::Done, _) => State::Done,
            (State::LineStart, b'.') if stuffing => State::Dot,
            (State::Dot, b'\r') => State::DotCr,
            (State::DotCr, b'\n') => State::Done,
            (State::Cr, b'\n') => {
                self.emit(b'\r', out);
                self.emit(b'\n', out);
                self.line_len = 0;
                State::LineStart
            }
            // A CR that was not followed by LF is bare; the new byte is then
            // handled as inside a line (it may itself be a CR).
            (State::Cr | State::DotCr, _) => {
                self.bare = true;
                self.emit(b'\r', out);
                self.inside_line(b, out)
            }
            (State::LineStart | State::Mid | State::Dot, _) => self.inside_line(b, out),
        };
    }

    /// Handle `b` inside a line (a stuffing dot already dropped).
    fn inside_line(&mut self, b: u8, out: &mut Vec<u8>) -> State {
        match b {
            b'\r' => State::Cr,
            b'\n' => {
                self.bare = true;
                self.emit(b'\n', out);
                State::Mid
            }
            _ => {
                if b == 0 {
                    self.nul = true;
                }
                self.emit(b, out);
                State::Mid
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (content, consumed, done, outcome, size) feeding `input` in the given chunks.
    type Run = (Vec<u8>, usize, bool, DataOutcome, u64);

    fn run_chunks(input: &[u8], max: u64, splits: &[usize]) -> Run {
        let mut reader = DataReader::new(max);
        let mut out = Vec::new();
        let mut consumed = 0;
        let mut bounds = splits.to_vec();
        bounds.push(input.len());
        for &end in &bounds {
            if reader.is_done() || end < consumed {
                continue;
            }
            let p = reader.feed(&input[consumed..end], &mut out);
            if !p.done {
                assert_eq!(consumed + p.consumed, end, "must consume all unless done");
            }
            consumed += p.consumed;
        }
        (
            out,
            consumed,
            reader.is_done(),
            reader.outcome(),
            reader.size(),
        )
    }

    fn run(input: &[u8], max: u64) -> Run {
        run_chunks(input, max, &[])
    }

    /// `input` is read to its end (the terminating dot included) and refused
    /// with `want`, however it is chunked; returns what was kept.
    fn assert_refused_whole(input: &[u8], want: DataOutcome) -> Vec<u8> {
        let (out, consumed, done, outcome, _) = run(input, BIG);
        assert_eq!(
            (consumed, done, outcome),
            (input.len(), true, want),
            "{input:?}"
        );
        assert_chunking_invariant(input, BIG);
        out
    }

    /// Every way of splitting into 2 chunks, 3 chunks (short inputs) and single bytes.
    fn assert_chunking_invariant(input: &[u8], max: u64) {
        let whole = run(input, max);
        for k in 0..=input.len() {
            assert_eq!(
                run_chunks(input, max, &[k]),
                whole,
                "split at {k} of {input:?}"
            );
        }
        if input.len() <= 40 {
            for a in 0..=input.len() {
                for b in a..=input.len() {
                    assert_eq!(run_chunks(input, max, &[a, b]), whole, "split {a},{b}");
                }
            }
        }
        let singles: Vec<usize> = (1..input.len()).collect();
        assert_eq!(run_chunks(input, max, &singles), whole, "byte by byte");
    }

    const BIG: u64 = 1 << 20;

    #[test]
    fn terminator_and_unstuffing_table() {
        use DataOutcome::*;
        let cases: Vec<(&[u8], &[u8], usize, bool)> = vec![
            (b".\r\n", b"", 3, true),
            (b".\r\nQUIT\r\n", b"", 3, true),
            (b"\r\n.\r\n", b"\r\n", 5, true),
            (b"Hello\r\n.\r\n", b"Hello\r\n", 10, true),
            (b"Hello\r\n.\r\nQUIT\r\n", b"Hello\r\n", 10, true),
            (b"..\r\n.\r\n", b".\r\n", 7, true),
            (b"..hidden\r\n.\r\n", b".hidden\r\n", 13, true),
            (b"a\r\n.b\r\n.\r\n", b"a\r\nb\r\n", 10, true),
            (b"a\r\n...\r\n.\r\n", b"a\r\n..\r\n", 11, true),
            (b"a.\r\n.\r\n", b"a.\r\n", 7, true),
            (b"a\r\n. \r\n.\r\n", b"a\r\n \r\n", 10, true),
            (b"Hello", b"Hello", 5, false),
            (b"Hello\r\n", b"Hello\r\n", 7, false),
            (b"Hello\r\n.", b"Hello\r\n", 8, false),
            (b"Hello\r\n.\r", b"Hello\r\n", 9, false),
            (b"", b"", 0, false),
        ];
        for (input, content, consumed, done) in cases {
            let got = run(input, BIG);
            assert_eq!(
                got,
                (
                    content.to_vec(),
                    consumed,
                    done,
                    Complete,
                    content.len() as u64
                ),
                "{input:?}"
            );
            assert_chunking_invariant(input, BIG);
        }
    }

    #[test]
    fn smuggling_sequences_never_end_data() {
        let sequences: [&[u8]; 7] = [
            b"\n.\n",
            b"\n.\r\n",
            b"\r.\r",
            b"\r.\r\n",
            b"\r\n.\n",
            b"\r\n.\r",
            b"\r\n\x00.\r\n",
        ];
        for seq in sequences {
            let mut input = b"Subject: x\r\n\r\nbody".to_vec();
            input.extend_from_slice(seq);
            input.extend_from_slice(b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<v@x>\r\nDATA\r\n");
            // never done: no real CRLF.CRLF anywhere
            let (_, consumed, done, outcome, _) = run(&input, BIG);
            assert!(!done, "{seq:?} ended DATA");
            assert_eq!(consumed, input.len());
            let nul = seq.contains(&0);
            let expected = if nul {
                DataOutcome::Nul
            } else {
                DataOutcome::BareLineEnding
            };
            assert_eq!(outcome, expected, "{seq:?}");
            // then the real terminator ends it, with the verdict kept
            input.extend_from_slice(b"\r\n.\r\n");
            let (_, consumed, done, outcome, _) = run(&input, BIG);
            assert!(done);
            assert_eq!(consumed, input.len());
            assert_eq!(outcome, expected);
            assert_chunking_invariant(&input, BIG);
        }
    }

    #[test]
    fn bare_line_endings_table() {
        let cases: [&[u8]; 10] = [
            b"a\nb\r\n.\r\n",
            b"a\rb\r\n.\r\n",
            b"\n.\r\n.\r\n",
            b"\r\r\n.\r\n",
            b".\r.\r\n.\r\n",
            b".\n.\r\n.\r\n",
            b"a\r\n.\r\r\n.\r\n",
            b"a\r\n\n.\r\n.\r\n",
            b"\r.\r\n.\r\n",
            b"a\r\n\r\r\n.\r\n",
        ];
        for input in cases {
            let out = assert_refused_whole(input, DataOutcome::BareLineEnding);
            assert!(!out.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
        }
    }

    fn line_of(len_with_crlf: usize, stuffed: bool) -> Vec<u8> {
        let mut v = Vec::new();
        if stuffed {
            v.push(b'.');
        }
        v.extend(std::iter::repeat_n(b'x', len_with_crlf - 2));
        v.extend_from_slice(b"\r\n.\r\n");
        v
    }

    #[test]
    fn line_length_boundaries() {
        use DataOutcome::*;
        let cases = [
            (line_of(MAX_TEXT_LINE, false), Complete),
            (line_of(MAX_TEXT_LINE + 1, false), LineTooLong),
            (line_of(MAX_TEXT_LINE, true), Complete),
            (line_of(MAX_TEXT_LINE + 1, true), LineTooLong),
            (line_of(5000, false), LineTooLong),
        ];
        for (input, outcome) in cases {
            let (out, consumed, done, got, size) = run(&input, BIG);
            assert_eq!(
                (consumed, done, got),
                (input.len(), true, outcome),
                "len {}",
                input.len()
            );
            if outcome == LineTooLong {
                assert!(out.len() <= MAX_TEXT_LINE, "stops appending at the limit");
                assert!(size > MAX_TEXT_LINE as u64);
            }
        }
        assert_chunking_invariant(&line_of(MAX_TEXT_LINE + 1, true), BIG);
        // a long line that is split by bare CRs is still one line
        let mut input = vec![b'x'; 600];
        input.push(b'\r');
        input.extend(vec![b'x'; 600]);
        input.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(run(&input, BIG).3, BareLineEnding);
    }

    #[test]
    fn size_limit() {
        use DataOutcome::*;
        type Case<'a> = (&'a [u8], u64, &'a [u8], DataOutcome, u64);
        let cases: [Case; 6] = [
            (b"123\r\n.\r\n", 5, b"123\r\n", Complete, 5),
            (b"1234\r\n.\r\n", 5, b"1234\r", TooBig, 6),
            (b"12345678\r\n.\r\n", 5, b"12345", TooBig, 10),
            (b".\r\n", 0, b"", Complete, 0),
            (b"..\r\n.\r\n", 3, b".\r\n", Complete, 3),
            (b"a\nbcdefgh\r\n.\r\n", 3, b"a", BareLineEnding, 11),
        ];
        for (input, max, content, outcome, size) in cases {
            assert_eq!(
                run(input, max),
                (content.to_vec(), input.len(), true, outcome, size),
                "{input:?}"
            );
            assert_chunking_invariant(input, max);
        }
        let mut input = [vec![b'x'; MAX_TEXT_LINE - 2], b"\r\n".to_vec()]
            .concat()
            .repeat(50);
        input.extend_from_slice(b".\r\n");
        let (out, _, done, outcome, size) = run(&input, 10_000);
        assert_eq!(
            (out.len(), done, outcome, size),
            (10_000, true, TooBig, 50_000)
        );
    }

    #[test]
    fn nul_is_refused_wherever_it_is() {
        let cases: [&[u8]; 5] = [
            b"a\r\n\x00.\r\n.\r\n",
            b"\x00\r\n.\r\n",
            b"Subject: x\x00y\r\n\r\nbody\r\n.\r\n",
            b"body\r\n.\x00\r\n.\r\n",
            b"..\x00\r\n.\r\n",
        ];
        for input in cases {
            assert_refused_whole(input, DataOutcome::Nul);
        }
        // a bare line ending outranks it
        assert_eq!(run(b"\x00\n\r\n.\r\n", BIG).3, DataOutcome::BareLineEnding);
    }

    #[test]
    fn priority_of_outcomes() {
        let mut input = vec![b'x'; 2000];
        input.extend_from_slice(b"\n\r\n.\r\n");
        assert_eq!(run(&input, 10).3, DataOutcome::BareLineEnding);
        let mut input = vec![b'x'; 2000];
        input.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(run(&input, 10).3, DataOutcome::LineTooLong);
    }

    #[test]
    fn nothing_consumed_after_done() {
        let mut reader = DataReader::new(BIG);
        let mut out = Vec::new();
        assert_eq!(
            reader.feed(b".\r\nNOOP\r\n", &mut out),
            DataProgress {
                consumed: 3,
                done: true
            }
        );
        assert_eq!(
            reader.feed(b"NOOP\r\n", &mut out),
            DataProgress {
                consumed: 0,
                done: true
            }
        );
        assert_eq!(
            reader.feed(b"", &mut out),
            DataProgress {
                consumed: 0,
                done: true
            }
        );
        assert!(out.is_empty());
    }

    #[test]
    fn mixed_inputs_are_chunking_invariant() {
        let inputs: [&[u8]; 8] = [
            b"From: a\r\nTo: b\r\n\r\n..x\r\n.\r\n\r\n.\r\nrest",
            b"\r\r\r\n\n\n.\r\n..\r\n.\r\n",
            b"x\r\n.\r",
            b"x\r\n.\rx\r\n.\r\n",
            b"x\r\n.\r\r\n\r\n.\r\n",
            b".\r\r\n.\r\n",
            b"..\r\n...\r\n.\r\n.\r\n",
            b"\x00\xff\xfe.\r\n.\r\n",
        ];
        for input in inputs {
            for max in [0, 3, 7, BIG] {
                assert_chunking_invariant(input, max);
            }
        }
    }

    /// Chunked (BDAT) content: the outcome and the content do not depend on
    /// where the chunks split it.
    #[test]
    fn chunked_content_table() {
        let cases: &[(&[u8], &[u8], DataOutcome)] = &[
            (
                b"Subject: x\r\n\r\nbody\r\n",
                b"Subject: x\r\n\r\nbody\r\n",
                DataOutcome::Complete,
            ),
            // No stuffing, no end marker: dots are content.
            (
                b"a\r\n.\r\n..b\r\n",
                b"a\r\n.\r\n..b\r\n",
                DataOutcome::Complete,
            ),
            // A last line without its line end gets CRLF.
            (b"a\r\nno end", b"a\r\nno end\r\n", DataOutcome::Complete),
            (b"", b"", DataOutcome::Complete),
            (b"a\nb\r\n", b"", DataOutcome::BareLineEnding),
            (b"a\rb\r\n", b"", DataOutcome::BareLineEnding),
            (b"a\r\n\r", b"", DataOutcome::BareLineEnding),
            (b"a\r\n.\n", b"", DataOutcome::BareLineEnding),
            (b"a\0b\r\n", b"", DataOutcome::Nul),
        ];
        for (input, want, outcome) in cases {
            for split in 0..=input.len() {
                let mut r = DataReader::chunked(1000);
                let mut out = Vec::new();
                for part in [&input[..split], &input[split..]] {
                    let p = r.feed(part, &mut out);
                    assert_eq!((p.consumed, p.done), (part.len(), false));
                }
                assert_eq!(
                    r.finish_chunks(&mut out),
                    *outcome,
                    "{input:?} split at {split}"
                );
                if *outcome == DataOutcome::Complete {
                    assert_eq!(&out, want, "{input:?} split at {split}");
                }
            }
        }
        let mut r = DataReader::chunked(5);
        let mut out = Vec::new();
        r.feed(b"abc\r\nd", &mut out);
        assert_eq!(r.finish_chunks(&mut out), DataOutcome::TooBig);
        let mut r = DataReader::chunked(100_000);
        r.feed(&[b'x'; MAX_TEXT_LINE], &mut out);
        assert_eq!(r.finish_chunks(&mut out), DataOutcome::LineTooLong);
    }
}
