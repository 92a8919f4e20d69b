//! 8BITMIME down-conversion (RFC 6152 §3, RFC 1652 §3): a message with 8-bit
//! bytes, going to a next hop that does not offer 8BITMIME, is converted to 7 bit
//! before it is sent. The MIME tree is walked with `mail-parser`; every leaf part
//! whose body has 8-bit bytes is re-encoded — quoted-printable for `text/*`
//! (and parts without a Content-Type, RFC 2045 §5.2's text/plain default), base64
//! for everything else (RFC 2045 §6.7, §6.8) — and its Content-Transfer-Encoding
//! field replaced (or added before the blank line). Multipart and message/rfc822
//! containers may only be labelled 7bit, 8bit or binary (RFC 2045 §6.4, RFC 2046
//! §5.2.1): one that said 8bit or binary is relabelled 7bit, its leaves converted.
//! A message without MIME-Version gets "MIME-Version: 1.0" (RFC 2045 §4: the
//! new encoding field means nothing without it). Every other byte — header
//! fields, boundaries, preambles, 7-bit parts — is kept as it is, and a message
//! without 8-bit bytes is returned borrowed, not copied.
//!
//! What cannot be converted is refused, never guessed at: 8-bit bytes in any
//! header field (raw UTF-8 headers, RFC 6532, need SMTPUTF8: there is no faithful
//! 7-bit form to give them here), an 8-bit message/rfc822 or multipart/* that the
//! parser could not split, a part already labelled base64 or quoted-printable
//! that holds 8-bit bytes, and 8-bit bytes outside every part (a preamble or
//! epilogue). The caller fails the recipients with X.6.3 ("conversion required
//! but not supported", RFC 3463), or X.6.7 for an SMTPUTF8 transaction (RFC 6531
//! §3.2).
//!
//! Input: the spooled message as accepted (untrusted content, already bounded by
//! the server's size limit): the parser is lenient, so the result is checked
//! again at the end — a converted message that still has an 8-bit byte is
//! refused. Line ends in the output are CRLF where the encoders write them;
//! dot-stuffing and bare-LF normalisation stay with the SMTP client's
//! `DotStuffer`, which runs afterwards. Pure: no I/O. Memory: the converted copy
//! is built in memory (about the message's size plus a third for base64 parts),
//! and `mail-parser` decodes parts while it walks.

use std::borrow::Cow;
use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mail_parser::{Encoding, Message, MessageParser, MessagePart, MimeHeaders, PartType};

/// Why a message could not be converted to 7 bit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unconvertible {
    /// A header field (of the message or of a body part) has 8-bit bytes.
    #[error("a header field has 8-bit characters")]
    EightBitHeader,
    /// 8-bit bytes where no conversion applies.
    #[error("8-bit data cannot be converted: {0}")]
    Structure(&'static str),
}

/// Longest encoded line (RFC 2045 §6.7 rule 5, §6.8).
pub const LINE: usize = 76;

/// Most mentions of "multipart/" or "message/" a message may have to be
/// converted: a bound on the nesting the parser and [`walk`] recurse
/// through (a hostile message nests thousands of levels in a few hundred
/// kilobytes, and deep enough it overflows a thread's stack).
pub const MAX_CONTAINERS: usize = 256;

/// How often "multipart/" or "message/" (any case) occurs in `raw`: at least
/// the number of container parts, however their headers are folded.
fn container_mentions(raw: &[u8]) -> usize {
    let ends_with = |end: usize, word: &[u8]| {
        end >= word.len() && raw[end - word.len()..end].eq_ignore_ascii_case(word)
    };
    raw.iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'/' && (ends_with(i, b"multipart") || ends_with(i, b"message")))
        .count()
}

/// Whether `bytes` has any byte above 127.
pub fn has_8bit(bytes: &[u8]) -> bool {
    !bytes.is_ascii()
}

/// The header section of a message: everything before the first empty line
/// (CRLF CRLF or LF LF), or `None` when no empty line was found in `bytes`.
pub fn header_section(bytes: &[u8]) -> Option<&[u8]> {
    let mut start = 0;
    while start < bytes.len() {
        let end = match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(i) => start + i,
            None => return None,
        };
        let line = &bytes[start..end];
        if line.is_empty() || line == b"\r" {
            return Some(&bytes[..start]);
        }
        start = end + 1;
    }
    None
}

/// Whether some header field of the message (its top-level header section;
/// all of `bytes` when no empty line ends it) has non-ASCII bytes: RFC 6532
/// internationalised headers, which need SMTPUTF8 (RFC 6531 §3.2).
pub fn utf8_headers(bytes: &[u8]) -> bool {
    has_8bit(header_section(bytes).unwrap_or(bytes))
}

/// The message in 7 bit: borrowed unchanged when it has no 8-bit byte,
/// converted otherwise (see the module docs).
pub fn to_7bit(raw: &[u8]) -> Result<Cow<'_, [u8]>, Unconvertible> {
    if !has_8bit(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    if utf8_headers(raw) {
        return Err(Unconvertible::EightBitHeader);
    }
    if container_mentions(raw) > MAX_CONTAINERS {
        return Err(Unconvertible::Structure(
            "too many multipart or message parts",
        ));
    }
    let message = MessageParser::new()
        .parse(raw)
        .ok_or(Unconvertible::Structure("the message cannot be parsed"))?;
    let mut edits = Vec::new();
    walk(&message, raw, &mut edits)?;
    if let Some(top) = message.parts.first()
        && !edits.is_empty()
        && !top
            .headers
            .iter()
            .any(|h| h.name.as_str().eq_ignore_ascii_case("MIME-Version"))
    {
        // The new Content-Transfer-Encoding means something only in a MIME
        // message (RFC 2045 §4).
        let head = &raw[top.offset_header as usize..top.offset_body as usize];
        let mut field = b"MIME-Version: 1.0".to_vec();
        field.extend_from_slice(eol_of(head));
        add_field(top, raw, field, &mut edits);
    }
    edits.sort_by_key(|e| (e.range.start, e.range.end));
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 3);
    let mut at = 0;
    for e in &edits {
        if e.range.start < at || e.range.end > raw.len() {
            return Err(Unconvertible::Structure("overlapping MIME parts"));
        }
        out.extend_from_slice(&raw[at..e.range.start]);
        out.extend_from_slice(&e.with);
        at = e.range.end;
    }
    out.extend_from_slice(&raw[at..]);
    if has_8bit(&out) {
        return Err(Unconvertible::Structure("8-bit data outside any MIME part"));
    }
    Ok(Cow::Owned(out))
}

/// Replace `range` of the raw message with `with`.
struct Edit {
    range: Range<usize>,
    with: Vec<u8>,
}

fn walk(message: &Message<'_>, raw: &[u8], edits: &mut Vec<Edit>) -> Result<(), Unconvertible> {
    for part in &message.parts {
        let head = part.offset_header as usize..part.offset_body as usize;
        let body = part.offset_body as usize..(part.offset_end as usize).max(head.end);
        let (Some(head_bytes), Some(body_bytes)) = (raw.get(head.clone()), raw.get(body.clone()))
        else {
            return Err(Unconvertible::Structure(
                "a MIME part lies outside the message",
            ));
        };
        if has_8bit(head_bytes) {
            return Err(Unconvertible::EightBitHeader);
        }
        if !has_8bit(body_bytes) {
            continue;
        }
        match &part.body {
            PartType::Multipart(_) => relabel_container(part, raw, edits)?,
            PartType::Message(nested) if part.encoding == Encoding::None => {
                relabel_container(part, raw, edits)?;
                walk(nested, raw, edits)?;
            }
            _ => convert_leaf(part, raw, body, body_bytes, edits)?,
        }
    }
    Ok(())
}

/// The MIME type of a part, lowercase ("text/plain" when it has none).
fn mime_type(part: &MessagePart<'_>) -> (String, String) {
    match part.content_type() {
        Some(ct) => (
            ct.ctype().to_ascii_lowercase(),
            ct.subtype().unwrap_or("").to_ascii_lowercase(),
        ),
        None => ("text".into(), "plain".into()),
    }
}

/// The Content-Transfer-Encoding fields of a part: each field's whole range
/// (name to the end of its last continuation line) and its value, trimmed.
fn cte_fields(part: &MessagePart<'_>, raw: &[u8]) -> Vec<(Range<usize>, String)> {
    let head_end = part.offset_body as usize;
    part.headers
        .iter()
        .filter(|h| {
            h.name
                .as_str()
                .eq_ignore_ascii_case("Content-Transfer-Encoding")
        })
        .map(|h| {
            let start = h.offset_field as usize;
            let end = field_end(raw, h.offset_start as usize, head_end);
            let value = raw
                .get(h.offset_start as usize..end)
                .map(|v| String::from_utf8_lossy(v).trim().to_ascii_lowercase())
                .unwrap_or_default();
            (start..end, value)
        })
        .collect()
}

/// The end (after its line end) of the header field whose value starts at
/// `from`: the first line end not followed by folding white space.
fn field_end(raw: &[u8], from: usize, limit: usize) -> usize {
    let limit = limit.min(raw.len());
    let mut i = from.min(limit);
    while i < limit {
        if raw[i] == b'\n' && !matches!(raw.get(i + 1), Some(b' ' | b'\t')) {
            return i + 1;
        }
        i += 1;
    }
    limit
}

/// The line end the part's header section uses ("\r\n", or "\n").
fn eol_of(head: &[u8]) -> &'static [u8] {
    if head.ends_with(b"\r\n") || !head.contains(&b'\n') {
        b"\r\n"
    } else {
        b"\n"
    }
}

/// Set the part's Content-Transfer-Encoding to `value`: replace the first
/// field, drop any repeats, or add one before the blank line.
fn set_cte(part: &MessagePart<'_>, raw: &[u8], value: &str, edits: &mut Vec<Edit>) {
    let head = &raw[part.offset_header as usize..part.offset_body as usize];
    let eol = eol_of(head);
    let mut field = format!("Content-Transfer-Encoding: {value}").into_bytes();
    field.extend_from_slice(eol);
    let fields = cte_fields(part, raw);
    if fields.is_empty() {
        add_field(part, raw, field, edits);
        return;
    }
    for (k, (range, _)) in fields.into_iter().enumerate() {
        edits.push(Edit {
            range,
            with: if k == 0 { field.clone() } else { Vec::new() },
        });
    }
}

/// Add `field` (with its line end) at the end of the part's header section,
/// before the empty line that ends it (adding one if there is none).
fn add_field(part: &MessagePart<'_>, raw: &[u8], mut field: Vec<u8>, edits: &mut Vec<Edit>) {
    let head = &raw[part.offset_header as usize..part.offset_body as usize];
    let body = part.offset_body as usize;
    let at = if head.ends_with(b"\r\n\r\n") || head == b"\r\n" {
        body - 2
    } else if head.ends_with(b"\n\n") || head == b"\n" {
        body - 1
    } else {
        field.extend_from_slice(eol_of(head));
        body
    };
    edits.push(Edit {
        range: at..at,
        with: field,
    });
}

/// A multipart or message/rfc822 whose leaves are being converted: relabel
/// 8bit / binary as 7bit (the only other identity encoding, RFC 2045 §6.4).
fn relabel_container(
    part: &MessagePart<'_>,
    raw: &[u8],
    edits: &mut Vec<Edit>,
) -> Result<(), Unconvertible> {
    let fields = cte_fields(part, raw);
    match fields.first().map(|(_, v)| v.as_str()) {
        None | Some("7bit") => Ok(()),
        Some("8bit" | "binary") => {
            set_cte(part, raw, "7bit", edits);
            Ok(())
        }
        Some(_) => Err(Unconvertible::Structure(
            "a multipart or message part with an encoding other than 7bit, 8bit or binary",
        )),
    }
}

fn convert_leaf(
    part: &MessagePart<'_>,
    raw: &[u8],
    body: Range<usize>,
    bytes: &[u8],
    edits: &mut Vec<Edit>,
) -> Result<(), Unconvertible> {
    let declared = cte_fields(part, raw);
    let encoded = |v: &str| v == "base64" || v == "quoted-printable";
    if part.encoding != Encoding::None || declared.iter().any(|(_, v)| encoded(v)) {
        return Err(Unconvertible::Structure(
            "a base64 or quoted-printable part holds 8-bit bytes",
        ));
    }
    let (ctype, subtype) = mime_type(part);
    let global = ctype == "message" && subtype.starts_with("global");
    if ctype == "multipart" || (ctype == "message" && !global) {
        // RFC 2046 §5.2.1: message/rfc822 (and multipart) cannot be encoded;
        // the parser did not split this one into parts we could convert.
        return Err(Unconvertible::Structure(
            "an 8-bit multipart or message part that cannot be parsed",
        ));
    }
    let (cte, encoded) = if ctype == "text" {
        ("quoted-printable", quoted_printable_text(bytes))
    } else {
        ("base64", base64_lines(bytes))
    };
    set_cte(part, raw, cte, edits);
    edits.push(Edit {
        range: body,
        with: encoded,
    });
    Ok(())
}

/// Quoted-printable for text (RFC 2045 §6.7): line breaks stay CRLF line
/// breaks (a bare LF is taken as one), lines are at most [`LINE`] long.
fn quoted_printable_text(bytes: &[u8]) -> Vec<u8> {
    let crlf: Cow<'_, [u8]> = if bare_lf(bytes) {
        let mut v = Vec::with_capacity(bytes.len() + bytes.len() / 32);
        let mut prev = 0u8;
        for &b in bytes {
            if b == b'\n' && prev != b'\r' {
                v.push(b'\r');
            }
            v.push(b);
            prev = b;
        }
        Cow::Owned(v)
    } else {
        Cow::Borrowed(bytes)
    };
    quoted_printable::encode_with_options(
        &*crlf,
        quoted_printable::Options::default()
            .input_mode(quoted_printable::InputMode::Text)
            .line_length_limit(LINE),
    )
    .into_bytes()
}

fn bare_lf(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
}

/// Base64 in CRLF-ended lines of [`LINE`] characters (RFC 2045 §6.8).
fn base64_lines(bytes: &[u8]) -> Vec<u8> {
    let text = B64.encode(bytes);
    let mut out = Vec::with_capacity(text.len() + 2 * (text.len() / LINE + 1));
    for line in text.as_bytes().chunks(LINE) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::stuff::DotStuffer;

    fn convert(raw: &[u8]) -> Vec<u8> {
        match to_7bit(raw).unwrap() {
            Cow::Owned(v) => v,
            Cow::Borrowed(_) => panic!("not converted"),
        }
    }

    fn text(v: &[u8]) -> &str {
        std::str::from_utf8(v).unwrap()
    }

    fn lines_ok(out: &[u8]) {
        assert!(out.is_ascii());
        for line in out.split(|&b| b == b'\n') {
            assert!(line.len() <= LINE + 1, "long line {:?}", text(line));
        }
        // Only CRLF line ends.
        for (i, &b) in out.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(out[i - 1], b'\r', "bare LF at {i}");
            }
        }
    }

    fn qp_decode(v: &[u8]) -> Vec<u8> {
        quoted_printable::decode(v, quoted_printable::ParseMode::Strict).unwrap()
    }

    #[test]
    fn seven_bit_is_borrowed() {
        let raw = b"Subject: hi\r\n\r\nplain ascii\r\n";
        assert!(matches!(to_7bit(raw), Ok(Cow::Borrowed(b)) if std::ptr::eq(b, raw)));
        assert!(!utf8_headers(raw));
    }

    #[test]
    fn eight_bit_text_becomes_quoted_printable() {
        let long = "é".repeat(60);
        let raw = format!(
            "From: a@x.test\r\nSubject: hi\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln = ok \r\n{long}\r\n.dot\r\n"
        );
        let out = convert(raw.as_bytes());
        lines_ok(&out);
        let (head, body) = text(&out).split_once("\r\n\r\n").unwrap();
        assert_eq!(
            head,
            "From: a@x.test\r\nSubject: hi\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: quoted-printable\r\nMIME-Version: 1.0"
        );
        assert!(
            body.starts_with("Gr=C3=BC=C3=9Fe aus K=C3=B6ln =3D ok=20\r\n"),
            "{body}"
        );
        assert_eq!(
            qp_decode(body.as_bytes()),
            raw.split_once("\r\n\r\n").unwrap().1.as_bytes()
        );
        // The SMTP client dot-stuffs the converted message as any other.
        let mut wire = Vec::new();
        let mut stuffer = DotStuffer::default();
        stuffer.feed(&out, &mut wire);
        stuffer.finish(&mut wire);
        assert!(text(&wire).contains("\r\n..dot\r\n"));
        assert!(text(&wire).ends_with("\r\n.\r\n"));
    }

    #[test]
    fn missing_cte_is_added_and_bare_lf_kept_as_line_breaks() {
        let raw = "Subject: x\n\nsmörgåsbord\nline two\n".as_bytes();
        let out = convert(raw);
        assert_eq!(
            text(&out),
            "Subject: x\nContent-Transfer-Encoding: quoted-printable\nMIME-Version: 1.0\n\n\
             sm=C3=B6rg=C3=A5sbord\r\nline two\r\n"
        );
    }

    #[test]
    fn multipart_converts_only_its_8bit_leaves() {
        let binary: Vec<u8> = (0u8..=255).cycle().take(300).collect();
        let mut raw = b"From: a@x.test\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"BB\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
preamble\r\n--BB\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nseven bit part\r\n\
--BB\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
na\xc3\xafve caf\xc3\xa9\r\n--BB\r\nContent-Type: application/octet-stream\r\n\
Content-Transfer-Encoding: binary\r\n\r\n"
            .to_vec();
        raw.extend_from_slice(&binary);
        raw.extend_from_slice(b"\r\n--BB--\r\nepilogue\r\n");
        let out = convert(&raw);
        lines_ok(&out);
        let s = text(&out);
        assert!(s.starts_with(
            "From: a@x.test\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"BB\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n\
preamble\r\n--BB\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nseven bit part\r\n--BB\r\n"
        ));
        assert!(s.contains(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
na=C3=AFve caf=C3=A9\r\n--BB\r\n"
        ));
        let (_, b64) = s
            .split_once("Content-Transfer-Encoding: base64\r\n\r\n")
            .unwrap();
        let (b64, tail) = b64.split_once("\r\n--BB--").unwrap();
        assert_eq!(tail, "\r\nepilogue\r\n");
        assert_eq!(B64.decode(b64.replace("\r\n", "")).unwrap(), binary);
        // Python's email package (and any MIME reader) sees the same tree.
        assert_eq!(s.matches("--BB").count(), 4);
    }

    #[test]
    fn nested_message_rfc822() {
        let raw = "From: a@x.test\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n\
--outer\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
--outer\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
From: b@y.test\r\nSubject: inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
Ünïcödé inside\r\n--outer--\r\n";
        let out = convert(raw.as_bytes());
        lines_ok(&out);
        let s = text(&out);
        assert!(
            s.contains(
                "--outer\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\n\
From: b@y.test\r\nSubject: inner\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\n\
=C3=9Cn=C3=AFc=C3=B6d=C3=A9 inside\r\n--outer--\r\n"
            ),
            "{s}"
        );
    }

    #[test]
    fn long_lines_are_wrapped_within_76() {
        let raw = format!(
            "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
            "aé".repeat(200)
        );
        let out = convert(raw.as_bytes());
        lines_ok(&out);
        let body = text(&out).split_once("\r\n\r\n").unwrap().1;
        assert!(body.lines().count() > 5);
        assert_eq!(
            qp_decode(body.as_bytes()),
            format!("{}\r\n", "aé".repeat(200)).as_bytes()
        );
    }

    #[test]
    fn eight_bit_headers_cannot_be_downgraded() {
        let raw = "From: a@x.test\r\nSubject: Grüße\r\n\r\nbody é\r\n".as_bytes();
        assert!(utf8_headers(raw));
        assert_eq!(to_7bit(raw), Err(Unconvertible::EightBitHeader));
        // In a body part's header too.
        let part = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
Content-Type: text/plain; name=\"résumé.txt\"\r\n\r\nx\r\n--b--\r\n";
        assert!(!utf8_headers(part.as_bytes()));
        assert_eq!(to_7bit(part.as_bytes()), Err(Unconvertible::EightBitHeader));
    }

    #[test]
    fn refuses_what_it_cannot_convert() {
        let encoded =
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n\xff\xfe\r\n";
        assert!(matches!(to_7bit(encoded), Err(Unconvertible::Structure(_))));
        let preamble = "Content-Type: multipart/mixed; boundary=b\r\n\r\npré\r\n--b\r\n\
Content-Type: text/plain\r\n\r\nx\r\n--b--\r\n";
        assert!(matches!(
            to_7bit(preamble.as_bytes()),
            Err(Unconvertible::Structure(_))
        ));
    }

    #[test]
    fn deep_nesting_is_refused_not_recursed() {
        for multipart in [false, true] {
            let mut raw = b"Subject: x\r\n".to_vec();
            for i in 0..100_000 {
                if multipart {
                    raw.extend_from_slice(
                        format!("Content-Type: Multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n")
                            .as_bytes(),
                    );
                } else {
                    raw.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
                }
            }
            raw.extend_from_slice("Subject: y\r\n\r\nbody \u{e9}\r\n".as_bytes());
            assert!(matches!(to_7bit(&raw), Err(Unconvertible::Structure(_))));
        }
        // Up to the limit, on a small (2 MiB) stack like the blocking pool's.
        for multipart in [false, true] {
            let mut raw = b"Subject: x\r\n".to_vec();
            for i in 0..MAX_CONTAINERS {
                let level = if multipart {
                    format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n")
                } else {
                    "Content-Type: message/rfc822\r\n\r\n".to_string()
                };
                raw.extend_from_slice(level.as_bytes());
            }
            raw.extend_from_slice("Subject: y\r\n\r\nbody \u{e9}\r\n".as_bytes());
            let out = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || to_7bit(&raw).map(|c| c.into_owned()))
                .unwrap()
                .join()
                .unwrap()
                .unwrap();
            assert!(text(&out).contains("body =C3=A9\r\n"), "{multipart}");
        }
    }

    #[test]
    fn header_sections() {
        assert_eq!(header_section(b"A: b\r\n\r\nx"), Some(&b"A: b\r\n"[..]));
        assert_eq!(header_section(b"A: b\n\nx"), Some(&b"A: b\n"[..]));
        assert_eq!(header_section(b"\r\nbody"), Some(&b""[..]));
        assert_eq!(header_section(b"A: b\r\nC: d"), None);
        assert!(utf8_headers("A: b\r\nC: ü".as_bytes()));
    }
}
