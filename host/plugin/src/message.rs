//! The message lent to data-stage plugins (RFC 5322 §2.2 header fields,
//! §2.2.3 unfolding). Input: the message as received from the network, after
//! dot-unstuffing; untrusted, so parsing never fails — a malformed header
//! section simply ends where the first non-field line starts. A small message
//! is held in memory; a large one lies in a file (the spool's spill file) with
//! its first bytes also in memory, and is read with positioned reads, so a
//! plugin copies only what it asks for and memory does not follow message size.

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, OnceLock};

/// A received message: its bytes (in memory or in a file) plus a parsed header
/// index (lazily for messages in memory).
#[derive(Debug)]
pub struct MessageData {
    content: Content,
    index: OnceLock<HeaderIndex>,
}

#[derive(Debug)]
enum Content {
    Memory(Vec<u8>),
    /// The whole message is bytes `0..len` of `file`; `head` is a copy of its
    /// first bytes (reads within it make no system call).
    File {
        file: Arc<File>,
        len: u64,
        head: Vec<u8>,
    },
}

/// Where a message's bytes are (for storing it).
#[derive(Debug, Clone, Copy)]
pub enum Stored<'a> {
    Memory(&'a [u8]),
    /// Bytes `0..len` of `file`.
    File {
        file: &'a Arc<File>,
        len: u64,
    },
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

/// Bytes read from the file at a time while looking for the end of a header
/// section that is longer than the in-memory head (doubling as it grows).
const HEADER_READ: usize = 64 << 10;

impl MessageData {
    pub fn new(raw: Vec<u8>) -> Self {
        MessageData {
            content: Content::Memory(raw),
            index: OnceLock::new(),
        }
    }

    /// A message that is bytes `0..len` of `file`, whose first bytes `head`
    /// holds (a prefix of the file: reads within it are served from memory).
    /// The header section is indexed now, reading past `head` only when it is
    /// longer (it is kept in memory, as for any message).
    pub fn from_file(file: Arc<File>, len: u64, mut head: Vec<u8>) -> io::Result<Self> {
        head.truncate(usize::try_from(len).unwrap_or(usize::MAX));
        let index = index_file(&file, len, &head)?;
        let message = MessageData {
            content: Content::File { file, len, head },
            index: OnceLock::new(),
        };
        let _ = message.index.set(index);
        Ok(message)
    }

    /// The message's bytes, for the spool.
    pub fn stored(&self) -> Stored<'_> {
        match &self.content {
            Content::Memory(raw) => Stored::Memory(raw),
            Content::File { file, len, .. } => Stored::File { file, len: *len },
        }
    }

    /// The whole message in memory: borrowed when it is there, read from its
    /// spill file otherwise (for host code that needs it whole, such as DKIM
    /// verification and signing: a transient copy of a large message).
    pub fn whole(&self) -> io::Result<std::borrow::Cow<'_, [u8]>> {
        match &self.content {
            Content::Memory(raw) => Ok(std::borrow::Cow::Borrowed(raw)),
            Content::File { file, len, .. } => {
                use std::os::unix::fs::FileExt;
                let len = usize::try_from(*len).map_err(|_| io::ErrorKind::InvalidInput)?;
                let mut bytes = vec![0u8; len];
                file.read_exact_at(&mut bytes, 0)?;
                Ok(std::borrow::Cow::Owned(bytes))
            }
        }
    }

    pub fn size(&self) -> u64 {
        match &self.content {
            Content::Memory(raw) => raw.len() as u64,
            Content::File { len, .. } => *len,
        }
    }

    fn index(&self) -> &HeaderIndex {
        self.index.get_or_init(|| match &self.content {
            Content::Memory(raw) => parse_complete(raw),
            // Indexed by `from_file`; the head is the best there is otherwise.
            Content::File { head, .. } => parse_complete(head),
        })
    }

    pub fn body_start(&self) -> usize {
        self.index().body_start
    }

    pub fn body_size(&self) -> u64 {
        self.size().saturating_sub(self.body_start() as u64)
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

    /// Up to `len` (at most [`MAX_READ`]) bytes of the message at `offset`;
    /// fewer at the end, none past it. An error only when the file behind a
    /// large message cannot be read.
    pub fn read(&self, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        match &self.content {
            Content::Memory(raw) => Ok(slice_at(raw, offset, len).to_vec()),
            Content::File {
                file,
                len: size,
                head,
            } => read_file(file, *size, head, offset, len),
        }
    }

    /// Like [`MessageData::read`], with `offset` counted from the body's start.
    pub fn read_body(&self, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        match (self.body_start() as u64).checked_add(offset) {
            Some(at) => self.read(at, len),
            None => Ok(Vec::new()),
        }
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

/// A bounded positioned read of a file-backed message.
fn read_file(file: &File, size: u64, head: &[u8], offset: u64, len: u32) -> io::Result<Vec<u8>> {
    if offset >= size {
        return Ok(Vec::new());
    }
    let n = u64::from(len.min(MAX_READ)).min(size - offset);
    if offset + n <= head.len() as u64 {
        return Ok(slice_at(head, offset, n as u32).to_vec());
    }
    let mut buf = vec![0u8; n as usize];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// The header index of bytes `0..len` of `file`, starting from its copy `head`
/// and reading more only while the header section has not ended.
fn index_file(file: &File, len: u64, head: &[u8]) -> io::Result<HeaderIndex> {
    let mut bytes = Cow::Borrowed(head);
    loop {
        let complete = bytes.len() as u64 >= len;
        if let Some(index) = parse_headers(&bytes, complete) {
            return Ok(index);
        }
        let mut grown = bytes.into_owned();
        let at = grown.len();
        let more = (at.max(HEADER_READ) as u64).min(len - at as u64) as usize;
        grown.resize(at + more, 0);
        file.read_exact_at(&mut grown[at..], at as u64)?;
        bytes = Cow::Owned(grown);
    }
}

/// The guest-visible resource: a shared reference to the message.
#[derive(Debug, Clone)]
pub struct MessageHandle(pub Arc<MessageData>);

/// The header index of a whole message.
fn parse_complete(raw: &[u8]) -> HeaderIndex {
    parse_headers(raw, true).unwrap_or(HeaderIndex {
        body_start: raw.len(),
        fields: Vec::new(),
    })
}

/// The header index of `raw`, the message's first bytes (`complete`: all of
/// them). `None` when the header section may go on past `raw`: every decision
/// is taken on whole lines only, so the result is the same as for the whole
/// message.
fn parse_headers(raw: &[u8], complete: bool) -> Option<HeaderIndex> {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    loop {
        if pos >= raw.len() {
            return complete.then_some(HeaderIndex {
                body_start: raw.len(),
                fields,
            });
        }
        let line_end = match find_crlf(raw, pos) {
            Some(end) => end,
            None if complete => raw.len(),
            None => return None,
        };
        let line = &raw[pos..line_end];
        let next = (line_end + 2).min(raw.len());
        if line.is_empty() {
            return Some(HeaderIndex {
                body_start: next,
                fields,
            });
        }
        if line[0] == b' ' || line[0] == b'\t' {
            match fields.last_mut() {
                Some((_, value)) => value.push_str(&String::from_utf8_lossy(line)),
                None => {
                    return Some(HeaderIndex {
                        body_start: pos,
                        fields,
                    });
                }
            }
        } else {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                return Some(HeaderIndex {
                    body_start: pos,
                    fields,
                });
            };
            let name = &line[..colon];
            if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
                return Some(HeaderIndex {
                    body_start: pos,
                    fields,
                });
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

fn find_crlf(raw: &[u8], from: usize) -> Option<usize> {
    raw[from..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| from + p)
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
        assert_eq!(m.read_body(0, 100).unwrap(), b"body\r\n");
        assert_eq!(m.body_size(), 6);
    }

    #[test]
    fn header_section_ends_at_non_field_line() {
        let m = MessageData::new(b"A: 1\r\nnot a header\r\nB: 2\r\n".to_vec());
        assert_eq!(m.headers().len(), 1);
        assert_eq!(m.read_body(0, 100).unwrap(), b"not a header\r\nB: 2\r\n");
    }

    #[test]
    fn no_body_and_empty_message() {
        let m = MessageData::new(b"A: 1\r\n".to_vec());
        assert_eq!(m.header("a"), Some("1"));
        assert_eq!(m.body_size(), 0);
        let e = MessageData::new(Vec::new());
        assert!(e.headers().is_empty());
        assert_eq!(e.read(5, 10).unwrap(), b"");
    }

    #[test]
    fn reads_are_bounded() {
        let m = MessageData::new(vec![b'x'; 10]);
        assert_eq!(m.read(8, 10).unwrap().len(), 2);
        assert_eq!(m.read(u64::MAX, 10).unwrap().len(), 0);
        assert_eq!(m.read(0, u32::MAX).unwrap().len(), 10);
        assert_eq!(m.read_body(u64::MAX, 10).unwrap().len(), 0);
        assert_eq!(m.header_all("x"), Vec::<String>::new());
    }

    #[test]
    fn multiple_fields_same_name() {
        let m = MessageData::new(b"Received: a\r\nReceived: b\r\n\r\n".to_vec());
        assert_eq!(m.header_all("received"), vec!["a", "b"]);
    }

    /// A file holding `bytes`, as the session's spill file does.
    fn file_with(bytes: &[u8]) -> Arc<File> {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        Arc::new(f)
    }

    /// Every observable of `m` equals that of the in-memory message `raw`.
    fn assert_same(m: &MessageData, raw: &[u8], what: &str) {
        let r = MessageData::new(raw.to_vec());
        assert_eq!(m.size(), r.size(), "{what}");
        assert_eq!(m.headers(), r.headers(), "{what}");
        assert_eq!(m.body_start(), r.body_start(), "{what}");
        assert_eq!(m.body_size(), r.body_size(), "{what}");
        for offset in [
            0,
            1,
            7,
            63,
            64,
            65,
            raw.len() as u64 - 1,
            raw.len() as u64,
            u64::MAX,
        ] {
            for len in [0, 1, 10, 100, u32::MAX] {
                assert_eq!(
                    m.read(offset, len).unwrap(),
                    r.read(offset, len).unwrap(),
                    "{what}: read({offset}, {len})"
                );
                assert_eq!(
                    m.read_body(offset, len).unwrap(),
                    r.read_body(offset, len).unwrap(),
                    "{what}: read_body({offset}, {len})"
                );
            }
        }
    }

    #[test]
    fn a_file_backed_message_reads_like_one_in_memory_whatever_its_head() {
        let long_header: Vec<u8> = (0..3000)
            .flat_map(|n| format!("X-Field-{n}: value {n}\r\n\tfolded\r\n").into_bytes())
            .chain(*b"\r\nthe body\r\n")
            .collect();
        let samples: Vec<Vec<u8>> = vec![
            b"Subject: hello\r\n world\r\nFrom: a@b\r\n\r\nbody\r\nmore\r\n".to_vec(),
            b"A: 1\r\nnot a header\r\nB: 2\r\n".to_vec(),
            b"A: 1\r\nB: 2".to_vec(),
            b"\r\nbody only\r\n".to_vec(),
            b" continuation first\r\n\r\n".to_vec(),
            b"A: 1\r\nB: 2\r\n".to_vec(),
            long_header,
        ];
        for raw in &samples {
            let file = file_with(raw);
            for head in [0, 1, 5, 6, 7, 8, 30, 64, raw.len(), raw.len() + 10] {
                let head = raw[..head.min(raw.len())].to_vec();
                let what = format!("{} bytes, head of {}", raw.len(), head.len());
                let m = MessageData::from_file(Arc::clone(&file), raw.len() as u64, head).unwrap();
                assert_same(&m, raw, &what);
                assert!(matches!(m.stored(), Stored::File { len, .. } if len == raw.len() as u64));
            }
        }
    }

    #[test]
    fn reads_beyond_the_head_come_from_the_file_and_fail_loudly() {
        let raw: Vec<u8> = b"Subject: big\r\n\r\n"
            .iter()
            .copied()
            .chain((0..3_000_000u32).map(|n| b'a' + (n % 26) as u8))
            .collect();
        let m =
            MessageData::from_file(file_with(&raw), raw.len() as u64, raw[..100].to_vec()).unwrap();
        assert_eq!(m.header("subject"), Some("big"));
        assert_eq!(m.read(0, u32::MAX).unwrap().len(), MAX_READ as usize);
        assert_eq!(m.read(2_000_000, 16).unwrap(), raw[2_000_000..2_000_016]);
        // A file shorter than the message claims: an error, never short data.
        let short = MessageData::from_file(
            file_with(&raw[..1000]),
            raw.len() as u64,
            raw[..100].to_vec(),
        )
        .unwrap();
        assert!(short.read(900, 200).is_err());
        assert!(MessageData::from_file(file_with(b"A: 1\r\n"), 50, Vec::new()).is_err());
    }
}
