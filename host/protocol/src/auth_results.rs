//! Removal of forged `Authentication-Results` header fields (RFC 8601 §5):
//! an incoming field whose authserv-id is this server's could make a later
//! reader believe checks we never made, so it is deleted before the message
//! is judged and spooled. Input: a received message (hostile); the header
//! section ends at the first empty line or the first line that is neither a
//! field nor a continuation, as in RFC 5322 §2.2 and §3.5.

use std::borrow::Cow;

const NAME: &[u8] = b"authentication-results";

/// `message` without the `Authentication-Results` fields that claim
/// `authserv_id` (compared case-insensitively, RFC 8601 §2.5). Borrowed when
/// there is nothing to remove.
pub fn strip_ours<'a>(message: &'a [u8], authserv_id: &str) -> Cow<'a, [u8]> {
    let fields = field_spans(message);
    let drop: Vec<(usize, usize)> = fields
        .into_iter()
        .filter(|&(start, end)| {
            let field = message.get(start..end).unwrap_or_default();
            claims(field, authserv_id)
        })
        .collect();
    if drop.is_empty() {
        return Cow::Borrowed(message);
    }
    let mut out = Vec::with_capacity(message.len());
    let mut at = 0;
    for (start, end) in drop {
        out.extend_from_slice(message.get(at..start).unwrap_or_default());
        at = end;
    }
    out.extend_from_slice(message.get(at..).unwrap_or_default());
    Cow::Owned(out)
}

/// (start, end) of every header field, continuation lines and the final
/// line end included.
fn field_spans(message: &[u8]) -> Vec<(usize, usize)> {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0;
    while pos < message.len() {
        let rest = message.get(pos..).unwrap_or_default();
        let line_len = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let line = rest.get(..line_len).unwrap_or_default();
        let content = trim_eol(line);
        if content.is_empty() {
            break;
        }
        let first = content.first().copied().unwrap_or(b' ');
        if first == b' ' || first == b'\t' {
            match spans.last_mut() {
                Some(last) => last.1 = pos + line_len,
                None => break,
            }
        } else if is_field_start(content) {
            spans.push((pos, pos + line_len));
        } else {
            break;
        }
        pos += line_len;
    }
    spans
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// RFC 5322 §3.6.8: a field name is printable ASCII but ':' then ':'.
fn is_field_start(line: &[u8]) -> bool {
    match line.iter().position(|&b| b == b':') {
        Some(0) | None => false,
        Some(i) => line
            .get(..i)
            .unwrap_or_default()
            .iter()
            .all(|&b| (33..=126).contains(&b)),
    }
}

/// True when `field` is an Authentication-Results field whose authserv-id
/// (the first token of its value, after comments) is `authserv_id`.
fn claims(field: &[u8], authserv_id: &str) -> bool {
    let Some(colon) = field.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = field.get(..colon).unwrap_or_default();
    if !name.eq_ignore_ascii_case(NAME) {
        return false;
    }
    let value = field.get(colon + 1..).unwrap_or_default();
    let id = first_token(value);
    !id.is_empty() && id.eq_ignore_ascii_case(authserv_id.as_bytes())
}

/// The first token of an RFC 8601 value: whitespace and (nested) comments
/// skipped, ending at whitespace, ';' or '('.
fn first_token(value: &[u8]) -> &[u8] {
    let mut i = 0;
    let mut depth = 0u32;
    while let Some(&b) = value.get(i) {
        match b {
            b'(' => depth += 1,
            b')' if depth > 0 => depth -= 1,
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ if depth > 0 => {}
            _ => break,
        }
        i += 1;
    }
    let rest = value.get(i..).unwrap_or_default();
    let end = rest
        .iter()
        .position(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b';' | b'('))
        .unwrap_or(rest.len());
    rest.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_only_our_fields() {
        let id = "mx.example.org";
        let cases: &[(&str, &str)] = &[
            // Ours, theirs, folded, commented, case, none.
            (
                "Authentication-Results: mx.example.org; spf=pass\r\nSubject: x\r\n\r\nbody\r\n",
                "Subject: x\r\n\r\nbody\r\n",
            ),
            (
                "Authentication-Results: other.example; spf=pass\r\n\r\nb\r\n",
                "Authentication-Results: other.example; spf=pass\r\n\r\nb\r\n",
            ),
            (
                "A: 1\r\nauthentication-results:\r\n  MX.Example.ORG;\r\n dkim=pass\r\nB: 2\r\n\r\n",
                "A: 1\r\nB: 2\r\n\r\n",
            ),
            (
                "Authentication-Results: (forged (nested)) mx.example.org 1; none\r\n\r\n",
                "\r\n",
            ),
            (
                "Authentication-Results: mx.example.org.evil; none\r\n\r\n",
                "Authentication-Results: mx.example.org.evil; none\r\n\r\n",
            ),
            (
                "Authentication-Results: mx.example.org(c); none\r\nX: y\r\n",
                "X: y\r\n",
            ),
            // In the body it is text, not a field.
            (
                "S: 1\r\n\r\nAuthentication-Results: mx.example.org; none\r\n",
                "S: 1\r\n\r\nAuthentication-Results: mx.example.org; none\r\n",
            ),
            // Header section ends at a line that is not a field.
            (
                "S: 1\r\nnot a field\r\nAuthentication-Results: mx.example.org; none\r\n",
                "S: 1\r\nnot a field\r\nAuthentication-Results: mx.example.org; none\r\n",
            ),
            (
                "ARC-Authentication-Results: i=1; mx.example.org; none\r\n\r\n",
                "ARC-Authentication-Results: i=1; mx.example.org; none\r\n\r\n",
            ),
            (
                "Authentication-Results:\r\n\r\n",
                "Authentication-Results:\r\n\r\n",
            ),
            ("", ""),
            (
                "Authentication-Results: mx.example.org; a\r\nAuthentication-Results: mx.example.org; b",
                "",
            ),
        ];
        for (input, want) in cases {
            let got = strip_ours(input.as_bytes(), id);
            assert_eq!(String::from_utf8_lossy(&got), *want, "input {input:?}");
        }
    }

    #[test]
    fn borrowed_when_untouched() {
        assert!(matches!(
            strip_ours(b"Subject: hi\r\n\r\nx", "mx"),
            Cow::Borrowed(_)
        ));
    }
}
