//! The message lent to data-stage plugins (RFC 5322 §2.2 header fields,
//! §2.2.3 unfolding). Input: the message as received from the network, after
//! dot-unstuffing; untrusted, so parsing never fails — a malformed header
//! section simply ends where the first non-field line starts.

use std::sync::{Arc, OnceLock};

/// A received message: raw bytes plus a lazily parsed header index.
#[derive(Debug)]
pub struct MessageData {
    raw: Vec<u8>,
    index: OnceLock<HeaderIndex>,
}

#[derive(Debug)]
struct HeaderIndex {
    /// Offset of the first body byte.
    body_start: usize,
    /// (name, unfolded value) in order.
    fields: Vec<(String, String)>,
}

/// Reads are capped so a plugin cannot make the host copy huge buffers.
pub const MAX_READ: u32 = 1 << 20;

impl MessageData {
    pub fn new(raw: Vec<u8>) -> Self {
        MessageData {
            raw,
            index: OnceLock::new(),
        }
    }

    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    pub fn into_raw(self) -> Vec<u8> {
        self.raw
    }

    pub fn size(&self) -> u64 {
        self.raw.len() as u64
    }

    fn index(&self) -> &HeaderIndex {
        self.index.get_or_init(|| parse_headers(&self.raw))
    }

    pub fn body_start(&self) -> usize {
        self.index().body_start
    }

    pub fn body_size(&self) -> u64 {
        (self.raw.len() - self.body_start()) as u64
    }

    pub fn headers(&self) -> &[(String, String)] {
        &self.index().fields
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers()
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn read(&self, offset: u64, len: u32) -> Vec<u8> {
        slice_at(&self.raw, offset, len).to_vec()
    }

    pub fn read_body(&self, offset: u64, len: u32) -> Vec<u8> {
        slice_at(&self.raw[self.body_start()..], offset, len).to_vec()
    }
}

fn slice_at(bytes: &[u8], offset: u64, len: u32) -> &[u8] {
    let Ok(start) = usize::try_from(offset) else {
        return &[];
    };
    if start >= bytes.len() {
        return &[];
    }
    let len = len.min(MAX_READ) as usize;
    let end = start.saturating_add(len).min(bytes.len());
    &bytes[start..end]
}

/// The guest-visible resource: a shared reference to the message.
#[derive(Debug, Clone)]
pub struct MessageHandle(pub Arc<MessageData>);

fn parse_headers(raw: &[u8]) -> HeaderIndex {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    loop {
        if pos >= raw.len() {
            return HeaderIndex {
                body_start: raw.len(),
                fields,
            };
        }
        let line_end = find_crlf(raw, pos);
        let line = &raw[pos..line_end];
        let next = (line_end + 2).min(raw.len());
        if line.is_empty() {
            return HeaderIndex {
                body_start: next,
                fields,
            };
        }
        if line[0] == b' ' || line[0] == b'\t' {
            match fields.last_mut() {
                Some((_, value)) => value.push_str(&String::from_utf8_lossy(line)),
                None => {
                    return HeaderIndex {
                        body_start: pos,
                        fields,
                    };
                }
            }
        } else {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                return HeaderIndex {
                    body_start: pos,
                    fields,
                };
            };
            let name = &line[..colon];
            if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
                return HeaderIndex {
                    body_start: pos,
                    fields,
                };
            }
            let value = &line[colon + 1..];
            let value = value
                .strip_prefix(b" ")
                .or_else(|| value.strip_prefix(b"\t"))
                .unwrap_or(value);
            fields.push((
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            ));
        }
        pos = next;
    }
}

fn find_crlf(raw: &[u8], from: usize) -> usize {
    raw[from..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| from + p)
        .unwrap_or(raw.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_unfolds_headers() {
        let m = MessageData::new(
            b"Subject: hello\r\n world\r\nFrom: a@b\r\nX-Empty:\r\n\r\nbody\r\n".to_vec(),
        );
        assert_eq!(m.header("subject"), Some("hello world"));
        assert_eq!(m.header("FROM"), Some("a@b"));
        assert_eq!(m.header("x-empty"), Some(""));
        assert_eq!(m.header("missing"), None);
        assert_eq!(m.read_body(0, 100), b"body\r\n");
        assert_eq!(m.body_size(), 6);
    }

    #[test]
    fn header_section_ends_at_non_field_line() {
        let m = MessageData::new(b"A: 1\r\nnot a header\r\nB: 2\r\n".to_vec());
        assert_eq!(m.headers().len(), 1);
        assert_eq!(m.read_body(0, 100), b"not a header\r\nB: 2\r\n");
    }

    #[test]
    fn no_body_and_empty_message() {
        let m = MessageData::new(b"A: 1\r\n".to_vec());
        assert_eq!(m.header("a"), Some("1"));
        assert_eq!(m.body_size(), 0);
        let e = MessageData::new(Vec::new());
        assert!(e.headers().is_empty());
        assert_eq!(e.read(5, 10), b"");
    }

    #[test]
    fn reads_are_bounded() {
        let m = MessageData::new(vec![b'x'; 10]);
        assert_eq!(m.read(8, 10).len(), 2);
        assert_eq!(m.read(u64::MAX, 10).len(), 0);
        assert_eq!(m.read(0, u32::MAX).len(), 10);
        assert_eq!(m.header_all("x"), Vec::<String>::new());
    }

    #[test]
    fn multiple_fields_same_name() {
        let m = MessageData::new(b"Received: a\r\nReceived: b\r\n\r\n".to_vec());
        assert_eq!(m.header_all("received"), vec!["a", "b"]);
    }
}
