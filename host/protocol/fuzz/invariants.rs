//! Invariants of postern-protocol, shared by the cargo-fuzz targets
//! (`fuzz_targets/*.rs`) and by `cargo test` (`tests/fuzz_invariants.rs`, which
//! feeds them pseudo-random inputs). Trusts no input: `data` is arbitrary bytes;
//! every check panics only when the library breaks an invariant. Covers RFC 5321
//! §2.3.8 / §4.5.3.1.4 (line framing), §4.1 (commands, paths) and §4.1.1.4 /
//! §4.5.2 / §4.5.3.1.6 (DATA end, transparency, line limit).
#![allow(dead_code)]

use postern_protocol::{
    Command, DataOutcome, DataReader, LineEvent, LineFramer, MAX_COMMAND_LINE, MAX_TEXT_LINE,
    Mailbox, Reply, ReplyParser, parse_command,
};

/// `parse_command` and `LineFramer` never panic; parsed mailboxes re-parse from
/// their display form; error replies are well-formed.
pub fn check_command(data: &[u8]) {
    match parse_command(data) {
        Ok(Command::MailFrom { path, .. }) => {
            if let Some(m) = path.mailbox() {
                check_mailbox_roundtrip(m);
            }
        }
        Ok(Command::RcptTo { path, .. }) => {
            if let Some(m) = path.mailbox() {
                check_mailbox_roundtrip(m);
            }
        }
        Ok(_) => {}
        Err(e) => check_reply(&e.reply()),
    }
    check_framer(data, MAX_COMMAND_LINE);
    let small = data.first().map_or(0, |&b| usize::from(b % 16));
    check_framer(data, small);
}

fn check_mailbox_roundtrip(m: &Mailbox) {
    let text = m.to_string();
    assert_eq!(
        Mailbox::parse(&text).as_ref(),
        Ok(m),
        "display form {text:?} must re-parse"
    );
}

/// The reply is CRLF-framed without bare CR/LF and parses back to the same code.
fn check_reply(reply: &Reply) {
    let wire = reply.to_bytes();
    assert!(wire.ends_with(b"\r\n"));
    let mut parser = ReplyParser::new();
    let mut parsed = None;
    let mut lines = wire.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        if lines.peek().is_none() {
            assert!(line.is_empty());
            break;
        }
        let line = line
            .strip_suffix(b"\r")
            .expect("every LF is preceded by CR");
        assert!(!line.contains(&b'\r'), "bare CR in reply");
        parsed = parser.feed_line(line).expect("own replies parse");
    }
    let parsed = parsed.expect("reply complete");
    assert_eq!(parsed.code, reply.code);
    assert_eq!(parsed.enhanced, reply.enhanced);
}

/// Frame `data` all at once and byte by byte: identical events, every event
/// consumes input, lines contain no CR/LF and respect `max_len`.
fn check_framer(data: &[u8], max_len: usize) {
    let whole = frame(data, max_len, data.len().max(1));
    let bytewise = frame(data, max_len, 1);
    assert_eq!(whole, bytewise, "framing depends on chunking");
    for line in whole.iter().flatten() {
        assert!(!line.contains(&b'\r') && !line.contains(&b'\n'));
        assert!(line.len() + 2 <= max_len);
    }
}

fn frame(data: &[u8], max_len: usize, chunk: usize) -> Vec<Result<Vec<u8>, String>> {
    let mut framer = LineFramer::new(max_len);
    let mut buf: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let (consumed, event) = framer.next(&buf);
            assert!(consumed <= buf.len());
            let Some(event) = event else {
                buf.drain(..consumed);
                break;
            };
            assert!(consumed > 0, "an event must consume input");
            match event {
                LineEvent::Line(r) => {
                    assert!(r.end + 2 <= consumed);
                    events.push(Ok(buf[r].to_vec()));
                }
                LineEvent::Error(e) => events.push(Err(format!("{e:?}"))),
            }
            buf.drain(..consumed);
        }
        assert!(
            buf.len() <= max_len + 1,
            "framer must not make the caller buffer"
        );
    }
    events
}

/// (content, consumed, done, outcome, size)
type DataRun = (Vec<u8>, usize, bool, DataOutcome, u64);

fn feed_split(input: &[u8], max: u64, split: usize) -> DataRun {
    let mut reader = DataReader::new(max);
    let mut out = Vec::new();
    let first = reader.feed(&input[..split], &mut out);
    let mut consumed = first.consumed;
    if !first.done {
        assert_eq!(
            first.consumed, split,
            "input is consumed entirely unless done"
        );
        let second = reader.feed(&input[split..], &mut out);
        consumed += second.consumed;
        assert_eq!(second.done, reader.is_done());
    }
    (
        out,
        consumed,
        reader.is_done(),
        reader.outcome(),
        reader.size(),
    )
}

/// `data` as 2 bytes of split point, 1 byte of size limit (×8; 255: none)
/// and the input: (split point within the input, limit, input).
fn split_input(data: &[u8]) -> Option<(usize, u64, &[u8])> {
    let [s0, s1, m, input @ ..] = data else {
        return None;
    };
    let split = usize::from(u16::from_le_bytes([*s0, *s1])) % (input.len() + 1);
    let max = if *m == 255 {
        u64::MAX
    } else {
        u64::from(*m) * 8
    };
    Some((split, max, input))
}

/// A CR not followed by LF, or an LF not preceded by CR.
fn has_bare_line_end(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| {
        (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
            || (b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
    })
}

/// `data` = 2 bytes split point + 1 byte size limit + input. Chunking does not
/// matter; only CRLF.CRLF (or a leading ".CRLF") ends the data; the outcome and
/// content match a simple reference model.
pub fn check_data(data: &[u8]) {
    let Some((split, max, input)) = split_input(data) else {
        return;
    };
    let whole = feed_split(input, max, input.len());
    assert_eq!(feed_split(input, max, split), whole, "split at {split}");
    if input.len() <= 64 {
        let mut reader = DataReader::new(max);
        let mut out = Vec::new();
        let mut consumed = 0;
        for byte in input.chunks(1) {
            consumed += reader.feed(byte, &mut out).consumed;
        }
        let bytewise = (
            out,
            consumed,
            reader.is_done(),
            reader.outcome(),
            reader.size(),
        );
        assert_eq!(bytewise, whole, "byte by byte");
    }
    let (out, consumed, done, outcome, size) = whole;
    assert!(
        out.len() as u64 <= max,
        "content beyond the size limit was kept"
    );

    let end = if input.starts_with(b".\r\n") {
        Some(3)
    } else {
        input
            .windows(5)
            .position(|w| w == b"\r\n.\r\n")
            .map(|p| p + 5)
    };
    assert_eq!(done, end.is_some(), "done iff a real terminator is present");
    assert_eq!(consumed, end.unwrap_or(input.len()));
    let Some(end) = end else { return };
    let taken = &input[..consumed];
    assert!(taken == b".\r\n" || taken.ends_with(b"\r\n.\r\n"));

    let body = &input[..end - 3];
    let bare = has_bare_line_end(body);
    if bare {
        assert_eq!(outcome, DataOutcome::BareLineEnding);
        return;
    }
    if body.contains(&0) {
        assert_eq!(outcome, DataOutcome::Nul);
        return;
    }
    let mut unstuffed = Vec::new();
    let mut too_long = false;
    for line in body.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_prefix(b".").unwrap_or(line);
        too_long |= line.len() > MAX_TEXT_LINE;
        unstuffed.extend_from_slice(line);
    }
    let expected = if too_long {
        DataOutcome::LineTooLong
    } else if unstuffed.len() as u64 > max {
        DataOutcome::TooBig
    } else {
        DataOutcome::Complete
    };
    assert_eq!(outcome, expected);
    assert_eq!(size, unstuffed.len() as u64);
    if expected == DataOutcome::Complete {
        assert_eq!(out, unstuffed);
    } else {
        assert!(unstuffed.starts_with(&out));
    }
}

/// BDAT content (`DataReader::chunked`): split at any point, the same
/// outcome and content; the outcome is what a direct scan of the input says
/// (bare CR/LF first, then NUL, a line over 1000 octets, the size limit); a
/// complete message is the input, with CRLF added when it ends mid-line.
pub fn check_chunks(data: &[u8]) {
    let Some((split, max, input)) = split_input(data) else {
        return;
    };
    let chunked = |at: usize| {
        let mut r = DataReader::chunked(max);
        let mut out = Vec::new();
        for part in [&input[..at], &input[at..]] {
            let p = r.feed(part, &mut out);
            assert_eq!((p.consumed, p.done), (part.len(), false));
        }
        let outcome = r.finish_chunks(&mut out);
        (out, outcome)
    };
    let (out, outcome) = chunked(input.len());
    assert_eq!(chunked(split), (out.clone(), outcome), "split at {split}");
    let bare = has_bare_line_end(input);
    let mut whole = input.to_vec();
    if !whole.is_empty() && !whole.ends_with(b"\n") && !bare {
        whole.extend_from_slice(b"\r\n");
    }
    let expected = if bare {
        DataOutcome::BareLineEnding
    } else if input.contains(&0) {
        DataOutcome::Nul
    } else if whole
        .split_inclusive(|&b| b == b'\n')
        .any(|l| l.len() > MAX_TEXT_LINE)
    {
        DataOutcome::LineTooLong
    } else if whole.len() as u64 > max {
        DataOutcome::TooBig
    } else {
        DataOutcome::Complete
    };
    assert_eq!(outcome, expected);
    if expected == DataOutcome::Complete {
        assert_eq!(out, whole);
    }
}
