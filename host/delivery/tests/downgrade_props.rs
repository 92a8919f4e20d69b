//! Properties of the 8BITMIME down-conversion (`downgrade::to_7bit`) over
//! pseudo-random input, the same bar as the protocol crate's fuzz invariants:
//!
//! - generated MIME trees (nested multiparts, message/rfc822, 8-bit text and
//!   binary leaves, labelled 8bit, 7bit or not at all) always convert; the
//!   result is 7-bit, no line is longer than RFC 5322's 998 octets, lines end
//!   in CRLF, and every leaf decodes to the same bytes as before;
//! - arbitrary bytes with MIME-looking pieces never panic, and whatever
//!   converts is 7-bit.
//!
//! `POSTERN_FUZZ_ITERS` and `POSTERN_FUZZ_SEED` change the run.

use mail_parser::{MessageParser, PartType};
use postern_delivery::downgrade::{Unconvertible, to_7bit};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

fn iterations(default: usize) -> usize {
    std::env::var("POSTERN_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rng() -> Rng {
    let seed = std::env::var("POSTERN_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x005e_ed0f_8b17);
    Rng(seed | 1)
}

/// Text with 8-bit UTF-8 words, long lines, trailing spaces, `=` and dots.
fn text_body(r: &mut Rng) -> Vec<u8> {
    let words = [
        "Grüße",
        "naïve",
        "日本語",
        "plain",
        "=3D",
        "end.",
        " ",
        "tab\there",
        "€",
        "ünïcödé",
        ".",
        "x",
    ];
    let mut out = Vec::new();
    for _ in 0..1 + r.below(12) {
        let len = r.below(40);
        let mut line = String::new();
        for _ in 0..len {
            line.push_str(r.pick(&words));
            if r.below(3) == 0 {
                line.push(' ');
            }
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Binary-ish bytes (no CR or LF, so the part's lines stay the generator's).
fn binary_body(r: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..1 + r.below(6) {
        for _ in 0..r.below(300) {
            let b = (r.next() & 0xff) as u8;
            out.push(if b == b'\r' || b == b'\n' { 0x80 } else { b });
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn label(r: &mut Rng) -> &'static str {
    r.pick(&[
        "Content-Transfer-Encoding: 8bit\r\n",
        "Content-Transfer-Encoding: 8BIT\r\n",
        "Content-Transfer-Encoding: 7bit\r\n",
        "",
    ])
}

/// One MIME entity (headers, blank line, body), `depth` levels deep at most.
fn entity(r: &mut Rng, depth: usize, n: &mut usize) -> Vec<u8> {
    *n += 1;
    let kind = if depth == 0 { r.below(2) } else { r.below(4) };
    let mut out = Vec::new();
    match kind {
        0 => {
            out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
            out.extend_from_slice(label(r).as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&text_body(r));
        }
        1 => {
            out.extend_from_slice(b"Content-Type: application/octet-stream\r\n");
            out.extend_from_slice(label(r).as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&binary_body(r));
        }
        2 => {
            let boundary = format!("b{}x{}", depth, *n);
            let sub = r.pick(&["mixed", "alternative", "related"]);
            out.extend_from_slice(
                format!("Content-Type: multipart/{sub}; boundary=\"{boundary}\"\r\n").as_bytes(),
            );
            if r.below(2) == 0 {
                out.extend_from_slice(b"Content-Transfer-Encoding: 8bit\r\n");
            }
            out.extend_from_slice(b"\r\nThis is a multi-part message.\r\n");
            for _ in 0..1 + r.below(3) {
                out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
                out.extend_from_slice(&entity(r, depth - 1, n));
            }
            out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        }
        _ => {
            out.extend_from_slice(b"Content-Type: message/rfc822\r\n");
            if r.below(2) == 0 {
                out.extend_from_slice(b"Content-Transfer-Encoding: 8bit\r\n");
            }
            out.extend_from_slice(b"\r\nFrom: inner@example.test\r\nSubject: inner\r\n");
            out.extend_from_slice(b"MIME-Version: 1.0\r\n");
            out.extend_from_slice(&entity(r, depth - 1, n));
        }
    }
    out
}

fn message(r: &mut Rng) -> Vec<u8> {
    let mut out = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: props\r\n".to_vec();
    if r.below(4) != 0 {
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    }
    let mut n = 0;
    out.extend_from_slice(&entity(r, 3, &mut n));
    out
}

/// The decoded bytes of every leaf, in order.
fn leaves(raw: &[u8]) -> Vec<Vec<u8>> {
    let m = MessageParser::new().parse(raw).expect("parses");
    m.parts
        .iter()
        .filter(|p| matches!(p.body, PartType::Text(_) | PartType::Binary(_)))
        .map(|p| p.contents().to_vec())
        .collect()
}

#[test]
fn generated_mime_trees_convert_faithfully() {
    let mut r = rng();
    let n = iterations(2_000);
    let mut refused = 0;
    for i in 0..n {
        let raw = message(&mut r);
        let text = String::from_utf8_lossy(&raw);
        let out = match to_7bit(&raw) {
            Ok(out) => out,
            // What the parser cannot split the same way is refused whole
            // (5.6.3), never sent half-converted: allowed, but rare.
            Err(Unconvertible::Structure(_)) => {
                refused += 1;
                continue;
            }
            Err(e) => panic!("case {i}: {e}\n{text}"),
        };
        assert!(out.is_ascii(), "case {i}: 8-bit left\n{text}");
        for line in out.split(|&b| b == b'\n') {
            assert!(line.len() <= 998, "case {i}: a {}-octet line", line.len());
        }
        let bare_lf = out.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r');
        assert!(!bare_lf, "case {i}: a bare LF\n{text}");
        assert_eq!(
            leaves(&raw),
            leaves(&out),
            "case {i}: a leaf changed\n{text}"
        );
    }
    eprintln!("{refused} of {n} generated messages refused");
    assert!(
        refused * 50 <= n,
        "{refused} of {n} generated messages refused"
    );
}

#[test]
fn arbitrary_bytes_never_panic_and_convert_only_to_7bit() {
    let pieces: [&[u8]; 14] = [
        b"Content-Type: multipart/mixed; boundary=\"b\"\r\n",
        b"Content-Type: message/rfc822\r\n",
        b"Content-Type: text/plain\r\n",
        b"Content-Transfer-Encoding: 8bit\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"MIME-Version: 1.0\r\n",
        b"\r\n",
        b"--b\r\n",
        b"--b--\r\n",
        b"\xc3\xa9t\xc3\xa9\r\n",
        b"\xff\xfe\x00\x80",
        b"=\r\n",
        b"plain text\r\n",
    ];
    let mut r = rng();
    for _ in 0..iterations(5_000) {
        let mut raw = b"Subject: x\r\n".to_vec();
        for _ in 0..r.below(40) {
            if r.below(5) == 0 {
                raw.push((r.next() & 0xff) as u8);
            } else {
                raw.extend_from_slice(r.pick(&pieces));
            }
        }
        match to_7bit(&raw) {
            Ok(out) => assert!(out.is_ascii()),
            Err(Unconvertible::EightBitHeader | Unconvertible::Structure(_)) => {}
        }
    }
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let mut raw = b"Subject: deep\r\nMIME-Version: 1.0\r\n".to_vec();
    for i in 0..5_000 {
        raw.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=\"{i}\"\r\n\r\n--{i}\r\n").as_bytes(),
        );
    }
    raw.extend_from_slice(b"Content-Type: text/plain\r\n\r\n\xc3\xa9\r\n");
    assert!(matches!(to_7bit(&raw), Err(Unconvertible::Structure(_))));
}
