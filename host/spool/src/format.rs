//! The on-disk format of one queue file, as pure encode/parse functions. Trusts
//! nothing it parses: every length is checked against the real file size before any
//! buffer is sized from it, and no malformed input panics.
//!
//! ```text
//! POSTERN-SPOOL 1 <envelope_len> <message_len>\n     header line, decimal byte counts
//! <envelope: one JSON object, exactly envelope_len bytes>
//! \n
//! <message: exactly message_len bytes, CRLF line endings as received (RFC 5321 §2.3.8)>
//! ```
//!
//! A file is well-formed only if its size is exactly
//! `header_len + envelope_len + 1 + message_len`, the byte after the envelope is `\n`,
//! the envelope parses, and its `queue_id` equals the file name. Anything else is
//! corrupt and gets quarantined, never deleted.

use crate::envelope::Envelope;

/// First word of every queue file.
pub const MAGIC: &str = "POSTERN-SPOOL";
/// The format version this crate writes and reads.
pub const VERSION: u32 = 1;
/// Longest header line accepted, newline included (the longest valid one is 58 bytes).
pub const MAX_HEADER_LEN: usize = 64;

/// Where the parts of a queue file lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Length of the header line including its `\n`.
    pub header_len: u64,
    pub envelope_len: u64,
    pub message_len: u64,
}

impl Layout {
    /// Offset of the first envelope byte.
    pub fn envelope_offset(&self) -> u64 {
        self.header_len
    }

    /// Offset of the first message byte.
    pub fn message_offset(&self) -> u64 {
        self.header_len + self.envelope_len + 1
    }

    /// The file size this layout requires, or `None` if it overflows.
    pub fn total_len(&self) -> Option<u64> {
        self.header_len
            .checked_add(self.envelope_len)?
            .checked_add(1)?
            .checked_add(self.message_len)
    }
}

/// Why a queue file is not well-formed.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("empty file")]
    Empty,
    #[error("no header line within the first {MAX_HEADER_LEN} bytes")]
    NoHeaderLine,
    #[error("header does not start with {MAGIC}")]
    BadMagic,
    #[error("unsupported format version {0:?}")]
    UnsupportedVersion(String),
    #[error("malformed header line")]
    MalformedHeader,
    #[error("bad {field} length {value:?}")]
    BadLength { field: &'static str, value: String },
    #[error("file is {actual} bytes but its header announces {expected}")]
    SizeMismatch { expected: String, actual: u64 },
    #[error("missing newline between envelope and message")]
    MissingSeparator,
    #[error("envelope is not valid JSON: {0}")]
    BadEnvelope(#[source] serde_json::Error),
    #[error("envelope queue_id {envelope:?} does not match file name {file:?}")]
    IdMismatch { file: String, envelope: String },
}

/// The header line for a file with these part lengths.
pub fn encode_header(envelope_len: u64, message_len: u64) -> Vec<u8> {
    format!("{MAGIC} {VERSION} {envelope_len} {message_len}\n").into_bytes()
}

/// Parse the header line from the first bytes of a file (up to `MAX_HEADER_LEN`).
pub fn parse_header(prefix: &[u8]) -> Result<Layout, FormatError> {
    if prefix.is_empty() {
        return Err(FormatError::Empty);
    }
    let window = &prefix[..prefix.len().min(MAX_HEADER_LEN)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        return Err(if window.starts_with(MAGIC.as_bytes()) {
            FormatError::NoHeaderLine
        } else {
            FormatError::BadMagic
        });
    };
    let line = std::str::from_utf8(&window[..newline]).map_err(|_| FormatError::BadMagic)?;
    let mut fields = line.split(' ');
    if fields.next() != Some(MAGIC) {
        return Err(FormatError::BadMagic);
    }
    match fields.next() {
        Some("1") => {}
        Some(other) => return Err(FormatError::UnsupportedVersion(other.to_owned())),
        None => return Err(FormatError::MalformedHeader),
    }
    let envelope_len = parse_len("envelope", fields.next())?;
    let message_len = parse_len("message", fields.next())?;
    if fields.next().is_some() {
        return Err(FormatError::MalformedHeader);
    }
    Ok(Layout {
        header_len: newline as u64 + 1,
        envelope_len,
        message_len,
    })
}

fn parse_len(field: &'static str, text: Option<&str>) -> Result<u64, FormatError> {
    let text = text.ok_or(FormatError::MalformedHeader)?;
    let bad = || FormatError::BadLength {
        field,
        value: text.to_owned(),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    text.parse::<u64>().map_err(|_| bad())
}

/// Check that a file of `actual` bytes has exactly the size `layout` announces.
pub fn check_size(layout: &Layout, actual: u64) -> Result<(), FormatError> {
    match layout.total_len() {
        Some(expected) if expected == actual => Ok(()),
        Some(expected) => Err(FormatError::SizeMismatch {
            expected: expected.to_string(),
            actual,
        }),
        None => Err(FormatError::SizeMismatch {
            expected: "more than 2^64".to_owned(),
            actual,
        }),
    }
}

/// Decode the envelope bytes followed by their `\n` separator, and check that the
/// envelope names the file it was read from.
pub fn decode_envelope(
    bytes_with_separator: &[u8],
    file_name: &str,
) -> Result<Envelope, FormatError> {
    let Some((&b'\n', json)) = bytes_with_separator.split_last() else {
        return Err(FormatError::MissingSeparator);
    };
    let envelope: Envelope = serde_json::from_slice(json).map_err(FormatError::BadEnvelope)?;
    if envelope.queue_id != file_name {
        return Err(FormatError::IdMismatch {
            file: file_name.to_owned(),
            envelope: envelope.queue_id,
        });
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let header = encode_header(123, 4567);
        assert_eq!(header, b"POSTERN-SPOOL 1 123 4567\n");
        let layout = parse_header(&header).unwrap();
        assert_eq!(
            layout,
            Layout {
                header_len: 25,
                envelope_len: 123,
                message_len: 4567
            }
        );
        assert_eq!(layout.message_offset(), 25 + 123 + 1);
        assert_eq!(layout.total_len(), Some(25 + 123 + 1 + 4567));
        let longest = encode_header(u64::MAX, u64::MAX);
        assert!(longest.len() <= MAX_HEADER_LEN);
        assert!(parse_header(&longest).is_ok());
    }

    #[test]
    fn header_parse_table() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty file"),
            (b"hello world\n", "header does not start"),
            (b"POSTERN-SPOOL 1 1 1", "no header line"),
            (b"POSTERN-SPOOL 2 1 1\n", "unsupported format version"),
            (b"POSTERN-SPOOL\n", "malformed"),
            (b"POSTERN-SPOOL 1 1\n", "malformed"),
            (b"POSTERN-SPOOL 1 1 1 1\n", "malformed"),
            (b"POSTERN-SPOOL 1 -1 1\n", "bad envelope length"),
            (b"POSTERN-SPOOL 1 +1 1\n", "bad envelope length"),
            (b"POSTERN-SPOOL 1 1 x\n", "bad message length"),
            (b"POSTERN-SPOOL 1 1  1\n", "bad message length"),
            (
                b"POSTERN-SPOOL 1 99999999999999999999 1\n",
                "bad envelope length",
            ),
            (b"POSTERN-SPOOL 1 1 1\r\n", "bad message length"),
            (b"\xff\xfe\n", "header does not start"),
        ];
        for (input, want) in cases {
            let err = parse_header(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input:?}: {err}");
        }
    }

    #[test]
    fn size_checks() {
        let layout = parse_header(b"POSTERN-SPOOL 1 2 3\n").unwrap();
        assert!(check_size(&layout, 20 + 2 + 1 + 3).is_ok());
        assert!(check_size(&layout, 25).is_err());
        assert!(check_size(&layout, 27).is_err());
        let huge = Layout {
            header_len: 10,
            envelope_len: u64::MAX,
            message_len: 1,
        };
        assert!(
            check_size(&huge, 100)
                .unwrap_err()
                .to_string()
                .contains("2^64")
        );
    }

    #[test]
    fn envelope_decoding() {
        let json = br#"{"queue_id":"A","received_at_unix_ms":1,"client_ip":"::1","client_port":2,"helo":null,"auth_user":null,"tls":false,"mail_from":"","mail_params":[],"recipients":[],"session_id":"s"}"#;
        let mut with_sep = json.to_vec();
        with_sep.push(b'\n');
        assert_eq!(decode_envelope(&with_sep, "A").unwrap().client_port, 2);
        assert!(matches!(
            decode_envelope(&with_sep, "B"),
            Err(FormatError::IdMismatch { .. })
        ));
        assert!(matches!(
            decode_envelope(json, "A"),
            Err(FormatError::MissingSeparator)
        ));
        assert!(matches!(
            decode_envelope(b"{\n", "A"),
            Err(FormatError::BadEnvelope(_))
        ));
        assert!(matches!(
            decode_envelope(b"", "A"),
            Err(FormatError::MissingSeparator)
        ));
    }
}
