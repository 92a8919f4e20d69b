//! Keeps mail-parser from recursing: it parses an *encoded* message/rfc822
//! (or message/global) part, and a digest child (RFC 2046 §5.1.5, whose
//! default type is message/rfc822), by calling itself and deep-copying the
//! result recursively, so hostile nesting inside base64 could exhaust the
//! stack. Before parsing, such parts are renamed in a copy — "message/" to
//! "xessage/" when their header block declares base64 or quoted-printable
//! (RFC 2045 §6), "multipart/digest" to "multipart/xigest" — so the parser
//! sees opaque leaves, and the scanner decodes and descends into them itself
//! under its own depth limit. Header names are matched the way mail-parser
//! reads them (case- and whitespace-insensitive). Trusts nothing.

use std::borrow::Cow;

/// The parser reads at most this many name characters.
const MAX_NAME: usize = 34;

/// The header name starting a line at `at` (lower-case, whitespace removed)
/// and the index after its colon.
fn header_name(data: &[u8], at: usize) -> Option<(Vec<u8>, usize)> {
    let mut name = Vec::new();
    let mut i = at;
    while let Some(&b) = data.get(i) {
        match b {
            b':' if !name.is_empty() => return Some((name, i + 1)),
            b'\n' => return None,
            b if b.is_ascii_whitespace() => {}
            _ => {
                if name.len() > MAX_NAME {
                    return None;
                }
                name.push(b.to_ascii_lowercase());
            }
        }
        i += 1;
    }
    None
}

/// Whether the header name starting a line at `at` begins with `prefix`
/// (lower-case ASCII), read the same way as `header_name`, without
/// allocating.
fn name_starts_with(data: &[u8], at: usize, prefix: &[u8]) -> bool {
    let mut seen = 0;
    let mut i = at;
    while let Some(&b) = data.get(i) {
        match b {
            b':' | b'\n' => return false,
            b if b.is_ascii_whitespace() => {}
            _ => {
                if prefix.get(seen) != Some(&b.to_ascii_lowercase()) {
                    return false;
                }
                seen += 1;
                if seen == prefix.len() {
                    return true;
                }
            }
        }
        i += 1;
    }
    false
}

/// Whether any line of `data` is a `Content-*` header field (RFC 2045 §3),
/// anywhere, as the parser would read it. Without one there is no MIME
/// structure: no parts, no file names, no encodings — only text.
pub fn has_mime_headers(data: &[u8]) -> bool {
    line_starts(data).any(|l| name_starts_with(data, l, b"content-"))
}

/// The longest comment skipped; past it the value is left alone (the
/// parser's own recursion limit then applies, and a stack overflow there is
/// a plugin error, which the host answers with a 4xx by default).
const MAX_COMMENT: usize = 4096;

/// Skip spaces, folding (a line end followed by a space or tab) and
/// comments (nested parentheses, backslash escapes) within one field.
fn skip_cfws(data: &[u8], mut i: usize) -> usize {
    let fold = |i: usize| match data.get(i) {
        Some(b'\r')
            if data.get(i + 1) == Some(&b'\n') && matches!(data.get(i + 2), Some(b' ' | b'\t')) =>
        {
            3
        }
        Some(b'\n') if matches!(data.get(i + 1), Some(b' ' | b'\t')) => 2,
        _ => 0,
    };
    loop {
        match data.get(i) {
            Some(b' ' | b'\t') => i += 1,
            Some(b'\r' | b'\n') if fold(i) > 0 => i += fold(i),
            Some(b'(') => {
                let limit = i.saturating_add(MAX_COMMENT).min(data.len());
                let mut depth = 0usize;
                while i < limit {
                    match data[i] {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        b'\r' | b'\n' if fold(i) == 0 => return i,
                        _ => {}
                    }
                    i += 1;
                }
                if i >= limit {
                    return limit;
                }
            }
            _ => return i,
        }
    }
}

/// The token at `i`: (start, end).
fn token(data: &[u8], i: usize) -> (usize, usize) {
    let i = i.min(data.len());
    let end = data[i..]
        .iter()
        .position(|&b| b.is_ascii_whitespace() || b"/;()\"".contains(&b))
        .map_or(data.len(), |p| i + p);
    (i, end.max(i))
}

fn is(data: &[u8], (s, e): (usize, usize), word: &[u8]) -> bool {
    data[s..e].eq_ignore_ascii_case(word)
}

/// Starts of every line.
fn line_starts(data: &[u8]) -> impl Iterator<Item = usize> + '_ {
    std::iter::once(0).chain(
        data.iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .map(|(i, _)| i + 1)
            .filter(move |&i| i < data.len()),
    )
}

fn is_blank_line(data: &[u8], at: usize) -> bool {
    matches!(data.get(at), Some(b'\n'))
        || (data.get(at) == Some(&b'\r') && data.get(at + 1) == Some(&b'\n'))
}

/// Whether a Content-Transfer-Encoding value is base64 or quoted-printable.
fn is_encoding(data: &[u8], value: usize) -> bool {
    let t = token(data, skip_cfws(data, value));
    is(data, t, b"base64") || is(data, t, b"quoted-printable")
}

/// Lines whose header name is Content-Type, as the parser would read them.
pub fn content_type_lines(data: &[u8]) -> usize {
    line_starts(data)
        .filter(|&l| header_name(data, l).is_some_and(|(n, _)| n == b"content-type"))
        .count()
}

/// The renamed copy, or the input when nothing needs renaming. One pass:
/// a header block never holds a blank line, so a part's Content-Type and
/// Content-Transfer-Encoding fall between the same blank lines.
pub fn neutralize(data: &[u8]) -> Cow<'_, [u8]> {
    let mut edits = Vec::new();
    // Message types seen in the current block, renamed if it is encoded.
    let mut pending = Vec::new();
    let mut encoded = false;
    let end_block = |pending: &mut Vec<usize>, encoded: &mut bool, edits: &mut Vec<usize>| {
        if *encoded {
            edits.append(pending);
        }
        pending.clear();
        *encoded = false;
    };
    for l in line_starts(data) {
        if is_blank_line(data, l) {
            end_block(&mut pending, &mut encoded, &mut edits);
            continue;
        }
        let Some((name, value)) = header_name(data, l) else {
            continue;
        };
        if name == b"content-transfer-encoding" {
            encoded |= is_encoding(data, value);
        } else if name == b"content-type" {
            let ty = token(data, skip_cfws(data, value));
            let slash = skip_cfws(data, ty.1);
            if data.get(slash) != Some(&b'/') {
                continue;
            }
            let sub = token(data, skip_cfws(data, slash + 1));
            if is(data, ty, b"multipart") && is(data, sub, b"digest") {
                edits.push(sub.0);
            } else if is(data, ty, b"message") {
                pending.push(ty.0);
            }
        }
    }
    end_block(&mut pending, &mut encoded, &mut edits);
    if edits.is_empty() {
        return Cow::Borrowed(data);
    }
    let mut copy = data.to_vec();
    for at in edits {
        copy[at] = b'x';
    }
    Cow::Owned(copy)
}

#[cfg(test)]
mod tests {

    #[test]
    fn mime_header_detection() {
        // Conservative: such a line anywhere (even in a body) means a full parse.
        assert!(has_mime_headers(
            b"Subject: x\r\n\r\nContent-Type: in the body\r\n"
        ));
        assert!(!has_mime_headers(
            b"Subject: x\r\nFrom: a@b\r\n\r\nhello\r\n"
        ));
        assert!(has_mime_headers(
            b"Subject: x\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        ));
        assert!(has_mime_headers(
            b"Subject: x\r\nCONTENT - disposition: attachment\r\n\r\n"
        ));
        assert!(has_mime_headers(
            b"Content-Transfer-Encoding: base64\r\n\r\n"
        ));
        assert!(!has_mime_headers(b"Contents: no\r\nContent: no\r\n\r\n"));
    }

    use super::*;

    fn n(s: &str) -> String {
        String::from_utf8(neutralize(s.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn renames_only_what_recurses() {
        let table = [
            // Unencoded message parts are parsed iteratively: untouched.
            (
                "Content-Type: message/rfc822\r\n\r\nx",
                "Content-Type: message/rfc822\r\n\r\nx",
            ),
            (
                "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nx",
                "Content-Type: xessage/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nx",
            ),
            (
                "Content-Transfer-Encoding:\r\n\tQuoted-Printable\r\nCONTENT-TYPE : (c) Message / global\r\n\r\nx",
                "Content-Transfer-Encoding:\r\n\tQuoted-Printable\r\nCONTENT-TYPE : (c) xessage / global\r\n\r\nx",
            ),
            (
                "C ontent-Type:\r\n message/rfc822\nContent-Transfer-Encoding: base64\n\nx",
                "C ontent-Type:\r\n xessage/rfc822\nContent-Transfer-Encoding: base64\n\nx",
            ),
            // The encoding of another block does not count.
            (
                "Content-Transfer-Encoding: base64\r\n\r\nContent-Type: message/rfc822\r\n\r\nx",
                "Content-Transfer-Encoding: base64\r\n\r\nContent-Type: message/rfc822\r\n\r\nx",
            ),
            (
                "Content-Type: multipart/digest; boundary=d\r\n\r\n",
                "Content-Type: multipart/xigest; boundary=d\r\n\r\n",
            ),
            (
                "Content-Type: multipart/mixed; boundary=d\r\n\r\n",
                "Content-Type: multipart/mixed; boundary=d\r\n\r\n",
            ),
            (
                "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n",
                "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            ),
            ("", ""),
            ("Content-Type:", "Content-Type:"),
            ("Content-Type: message", "Content-Type: message"),
            ("Content-Type: (unterminated", "Content-Type: (unterminated"),
            ("Content-Type: (esc\\", "Content-Type: (esc\\"),
        ];
        for (input, want) in table {
            assert_eq!(n(input), want, "{input:?}");
        }
        assert!(matches!(
            neutralize(b"Subject: x\r\n\r\nbody"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn counts_content_type_lines_like_the_parser() {
        assert_eq!(
            content_type_lines(b"Content-Type: a\r\ncontent-TYPE: b\r\nX: content-type\r\n"),
            2
        );
        assert_eq!(
            content_type_lines(b"Con tent-Type: a\nContent-Typo: b\n"),
            1
        );
        assert_eq!(content_type_lines(b""), 0);
    }

    #[test]
    fn comments_stay_within_their_field() {
        // An unterminated comment ends with its field: the next field is
        // still read.
        let m = "Content-Type: (open\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n";
        assert_eq!(
            n(m),
            "Content-Type: (open\r\nContent-Type: xessage/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        );
        let folded = "Content-Type: (a\r\n (b) c) message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n";
        assert!(n(folded).contains("xessage/rfc822"));
        // Overlong comments are given up on.
        let long = format!(
            "Content-Type: ({}) message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            "x".repeat(5000)
        );
        assert!(n(&long).contains(" message/rfc822"));
    }

    #[test]
    fn linear_on_hostile_input() {
        // Many candidates in one huge block, and many lines: one pass.
        let mut m = String::new();
        for _ in 0..20_000 {
            m.push_str("Content-Type: message/rfc822\r\n");
        }
        m.push_str("Content-Transfer-Encoding: base64\r\n\r\n");
        let out = n(&m);
        assert_eq!(out.matches("xessage").count(), 20_000);
        let blank_lines = "\n".repeat(1 << 20);
        assert!(matches!(
            neutralize(blank_lines.as_bytes()),
            Cow::Borrowed(_)
        ));
    }
}
