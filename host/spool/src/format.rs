//! The on-disk format of the spool log (version 2), as pure encode/decode functions.
//! Trusts nothing it decodes: every length is bounded and checked against the bytes
//! actually present before it is used, both checksums are verified, and no malformed
//! input panics. All integers are little-endian; checksums are CRC-32 (IEEE, the
//! zlib polynomial, so any language's standard library can verify them).
//!
//! A segment file `log/<seq>.seg` starts with a 32-byte header, followed by records
//! back to back:
//!
//! ```text
//! segment header (32 bytes)
//!   0  8  magic "PSTNLOG2"
//!   8  4  format version (2)
//!  12  4  header length (32)
//!  16  8  segment sequence number (equals the file name)
//!  24  4  reserved, zero
//!  28  4  CRC-32 of bytes 0..28
//!
//! record (56-byte header, then envelope, then payload)
//!   0  4  magic "PREC"
//!   4  1  kind: 1 message, 2 state, 3 tombstone
//!   5  3  reserved, zero
//!   8  8  log sequence number (LSN): unique, increasing in append order, kept
//!         when compaction copies the record into a newer segment
//!  16 20  queue id (20 ASCII characters of [0-9A-Z])
//!  36  4  envelope length (message records: the envelope JSON; others 0)
//!  40  8  payload length (message: the message bytes; state: the state bytes)
//!  48  4  CRC-32 of envelope ++ payload
//!  52  4  CRC-32 of bytes 0..52 of this header
//!  56     envelope JSON, then payload
//! ```
//!
//! A record is position-independent: compaction copies it verbatim.

use crate::id::{QUEUE_ID_LEN, QueueId};

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"PSTNLOG2";
/// The format version this crate writes and reads.
pub const VERSION: u32 = 2;
/// Length of the segment header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// First bytes of every record.
pub const RECORD_MAGIC: [u8; 4] = *b"PREC";
/// Length of a record header.
pub const RECORD_HEADER_LEN: usize = 56;
/// Largest envelope accepted (a healthy one is well under 64 KiB).
pub const MAX_ENVELOPE_LEN: u64 = 16 << 20;
/// Largest payload accepted when decoding (bounds what a corrupt length can claim).
pub const MAX_PAYLOAD_LEN: u64 = 1 << 40;

/// What a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A queued message: envelope JSON and message bytes.
    Message = 1,
    /// A delivery-state record of a queued message (opaque bytes of the queue manager).
    State = 2,
    /// The message left the queue.
    Tombstone = 3,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Message),
            2 => Some(Kind::State),
            3 => Some(Kind::Tombstone),
            _ => None,
        }
    }
}

/// The decoded header of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: Kind,
    pub lsn: u64,
    pub id: QueueId,
    pub envelope_len: u32,
    pub payload_len: u64,
    pub body_crc: u32,
}

impl RecordHeader {
    /// Length of the whole record (header, envelope, payload).
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.envelope_len) + self.payload_len
    }
}

/// Why bytes are not a valid segment header or record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("truncated: {needed} bytes needed, {available} present")]
    Truncated { needed: u64, available: u64 },
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u32),
    #[error("header checksum mismatch")]
    HeaderChecksum,
    #[error("body checksum mismatch")]
    BodyChecksum,
    #[error("unknown record kind {0}")]
    BadKind(u8),
    #[error("invalid queue id in record")]
    BadId,
    #[error("implausible length: envelope {envelope}, payload {payload}")]
    BadLength { envelope: u64, payload: u64 },
    #[error("segment number {found} does not match the file name ({expected})")]
    WrongSequence { expected: u64, found: u64 },
}

fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The header of segment `seq`.
pub fn encode_segment_header(seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    let sum = crc(&h[0..28]);
    h[28..32].copy_from_slice(&sum.to_le_bytes());
    h
}

/// What segment and record headers have in common: `len` bytes at least,
/// starting with `magic`, and the CRC-32 of the bytes before `checksum_at`
/// stored at `checksum_at`.
fn check_header(
    bytes: &[u8],
    len: usize,
    magic: &[u8],
    checksum_at: usize,
) -> Result<(), FormatError> {
    if bytes.len() < len {
        return Err(FormatError::Truncated {
            needed: len as u64,
            available: bytes.len() as u64,
        });
    }
    if !bytes.starts_with(magic) {
        return Err(FormatError::BadMagic);
    }
    if crc(&bytes[..checksum_at]) != u32_at(bytes, checksum_at) {
        return Err(FormatError::HeaderChecksum);
    }
    Ok(())
}

/// Check a segment header and that it names segment `expected`.
pub fn decode_segment_header(bytes: &[u8], expected: u64) -> Result<(), FormatError> {
    check_header(bytes, SEGMENT_HEADER_LEN, &SEGMENT_MAGIC, 28)?;
    let version = u32_at(bytes, 8);
    if version != VERSION || u32_at(bytes, 12) != SEGMENT_HEADER_LEN as u32 {
        return Err(FormatError::UnsupportedVersion(version));
    }
    let found = u64_at(bytes, 16);
    if found != expected {
        return Err(FormatError::WrongSequence { expected, found });
    }
    Ok(())
}

/// A complete record with a zero LSN and no header checksum yet: the committer
/// fills both with [`seal`] when it assigns the record its place in the log. The
/// body (and its checksum) is built by the caller, off the committer's thread.
pub fn build_record(kind: Kind, id: &QueueId, envelope: &[u8], payload: &[&[u8]]) -> Vec<u8> {
    let mut r = record_start(envelope, payload);
    let body_crc = crc(&r[RECORD_HEADER_LEN..]);
    let payload_len = r.len() - RECORD_HEADER_LEN - envelope.len();
    fill_header(
        &mut r,
        kind,
        id,
        envelope.len(),
        payload_len as u64,
        body_crc,
    );
    r
}

/// The first bytes of a record whose payload does not fit in memory: header,
/// envelope and the leading payload parts, after which the committer appends the
/// last `tail_len` payload bytes from a file (see `Spool::commit_file`).
/// `body_crc` is the CRC-32 of envelope ++ every payload byte, the tail included
/// (the caller reads the tail once to compute it). Seal it like any record.
pub fn build_record_head(
    kind: Kind,
    id: &QueueId,
    envelope: &[u8],
    payload: &[&[u8]],
    tail_len: u64,
    body_crc: u32,
) -> Vec<u8> {
    let mut r = record_start(envelope, payload);
    let payload_len = (r.len() - RECORD_HEADER_LEN - envelope.len()) as u64 + tail_len;
    fill_header(&mut r, kind, id, envelope.len(), payload_len, body_crc);
    r
}

/// A zeroed header followed by `envelope` and `payload`.
fn record_start(envelope: &[u8], payload: &[&[u8]]) -> Vec<u8> {
    let payload_len: usize = payload.iter().map(|p| p.len()).sum();
    let mut r = Vec::with_capacity(RECORD_HEADER_LEN + envelope.len() + payload_len);
    r.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
    r.extend_from_slice(envelope);
    for part in payload {
        r.extend_from_slice(part);
    }
    r
}

/// Every header field but the LSN and the header checksum (see [`seal`]).
fn fill_header(
    r: &mut [u8],
    kind: Kind,
    id: &QueueId,
    envelope_len: usize,
    payload_len: u64,
    body_crc: u32,
) {
    r[0..4].copy_from_slice(&RECORD_MAGIC);
    r[4] = kind as u8;
    r[16..36].copy_from_slice(id.as_str().as_bytes());
    r[36..40].copy_from_slice(&(envelope_len as u32).to_le_bytes());
    r[40..48].copy_from_slice(&payload_len.to_le_bytes());
    r[48..52].copy_from_slice(&body_crc.to_le_bytes());
}

/// The body checksum [`build_record`] put into `record`.
pub fn unsealed_body_crc(record: &[u8]) -> u32 {
    u32_at(record, 48)
}

/// Set the LSN of a record built by [`build_record`] and checksum its header.
pub fn seal(record: &mut [u8], lsn: u64) {
    record[8..16].copy_from_slice(&lsn.to_le_bytes());
    let sum = crc(&record[0..52]);
    record[52..56].copy_from_slice(&sum.to_le_bytes());
}

/// Decode and verify a record header (not its body).
pub fn decode_header(bytes: &[u8]) -> Result<RecordHeader, FormatError> {
    check_header(bytes, RECORD_HEADER_LEN, &RECORD_MAGIC, 52)?;
    let kind = Kind::from_byte(bytes[4]).ok_or(FormatError::BadKind(bytes[4]))?;
    let id = std::str::from_utf8(&bytes[16..16 + QUEUE_ID_LEN])
        .ok()
        .and_then(|s| s.parse::<QueueId>().ok())
        .ok_or(FormatError::BadId)?;
    let envelope_len = u32_at(bytes, 36);
    let payload_len = u64_at(bytes, 40);
    let plausible = match kind {
        Kind::Message => u64::from(envelope_len) <= MAX_ENVELOPE_LEN,
        Kind::State => envelope_len == 0,
        Kind::Tombstone => envelope_len == 0 && payload_len == 0,
    } && payload_len <= MAX_PAYLOAD_LEN;
    if !plausible {
        return Err(FormatError::BadLength {
            envelope: envelope_len.into(),
            payload: payload_len,
        });
    }
    Ok(RecordHeader {
        kind,
        lsn: u64_at(bytes, 8),
        id,
        envelope_len,
        payload_len,
        body_crc: u32_at(bytes, 48),
    })
}

/// Decode the record at the start of `bytes`, verifying both checksums.
pub fn decode_record(bytes: &[u8]) -> Result<RecordHeader, FormatError> {
    let header = decode_header(bytes)?;
    let len = header.record_len();
    if (bytes.len() as u64) < len {
        return Err(FormatError::Truncated {
            needed: len,
            available: bytes.len() as u64,
        });
    }
    check_body(&header, &bytes[RECORD_HEADER_LEN..len as usize])?;
    Ok(header)
}

/// Verify a record's body (envelope ++ payload) against its header.
pub fn check_body(header: &RecordHeader, body: &[u8]) -> Result<(), FormatError> {
    if crc(body) == header.body_crc {
        Ok(())
    } else {
        Err(FormatError::BodyChecksum)
    }
}

/// The checksum of `parts` read back in pieces (e.g. envelope then message).
pub fn body_crc(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// The offset of the first valid record at or after `from` in `bytes`, if any:
/// how recovery finds its footing again after a damaged region.
pub fn resync(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at + RECORD_HEADER_LEN <= bytes.len() {
        let rest = &bytes[at..];
        let i = rest.windows(4).position(|w| w == RECORD_MAGIC)?;
        at += i;
        if decode_record(&bytes[at..]).is_ok() {
            return Some(at);
        }
        at += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> QueueId {
        "0123456789ABCDEFGHIJ".parse().unwrap()
    }

    fn sealed(kind: Kind, env: &[u8], payload: &[&[u8]], lsn: u64) -> Vec<u8> {
        let mut r = build_record(kind, &id(), env, payload);
        seal(&mut r, lsn);
        r
    }

    #[test]
    fn segment_header_round_trip_and_defects() {
        let h = encode_segment_header(7);
        assert!(decode_segment_header(&h, 7).is_ok());
        assert_eq!(
            decode_segment_header(&h, 8),
            Err(FormatError::WrongSequence {
                expected: 8,
                found: 7
            })
        );
        assert!(matches!(
            decode_segment_header(&h[..31], 7),
            Err(FormatError::Truncated { .. })
        ));
        let mut bad = h;
        bad[17] ^= 1;
        assert_eq!(
            decode_segment_header(&bad, 7),
            Err(FormatError::HeaderChecksum)
        );
        let mut bad = h;
        bad[0] = b'X';
        assert_eq!(decode_segment_header(&bad, 7), Err(FormatError::BadMagic));
    }

    #[test]
    fn record_round_trip() {
        let r = sealed(Kind::Message, b"{}", &[b"ab", b"", b"cde"], 42);
        assert_eq!(r.len(), RECORD_HEADER_LEN + 2 + 5);
        let h = decode_record(&r).unwrap();
        assert_eq!(
            (h.kind, h.lsn, h.id, h.envelope_len, h.payload_len),
            (Kind::Message, 42, id(), 2, 5)
        );
        assert_eq!(h.record_len(), r.len() as u64);
        assert_eq!(h.body_crc, body_crc(&[b"{}", b"abcde"]));
        let t = sealed(Kind::Tombstone, b"", &[], 43);
        assert_eq!(decode_record(&t).unwrap().kind, Kind::Tombstone);
        // Trailing bytes belong to the next record.
        let both = [r.clone(), t.clone()].concat();
        assert_eq!(decode_record(&both).unwrap().lsn, 42);
    }

    #[test]
    fn a_record_head_and_its_tail_make_the_whole_record() {
        let env = b"{\"e\":1}";
        let whole = sealed(Kind::Message, env, &[b"Received: x\r\n", b"body\r\n"], 5);
        let crc = body_crc(&[env, b"Received: x\r\n", b"body\r\n"]);
        let mut head = build_record_head(Kind::Message, &id(), env, &[b"Received: x\r\n"], 6, crc);
        seal(&mut head, 5);
        head.extend_from_slice(b"body\r\n");
        assert_eq!(head, whole);
        assert_eq!(decode_record(&head).unwrap().payload_len, 19);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let r = sealed(Kind::State, b"", &[b"A 1 2\n"], 9);
        for byte in 0..r.len() {
            for bit in 0..8 {
                let mut bad = r.clone();
                bad[byte] ^= 1 << bit;
                assert!(decode_record(&bad).is_err(), "flip {byte}.{bit} undetected");
            }
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let r = sealed(Kind::Message, b"{\"a\":1}", &[b"hello\r\n"], 1);
        for len in 0..r.len() {
            assert!(
                matches!(decode_record(&r[..len]), Err(FormatError::Truncated { .. })),
                "{len}"
            );
        }
    }

    #[test]
    fn implausible_headers_are_refused() {
        let mut r = sealed(Kind::Tombstone, b"", &[], 1);
        r[40..48].copy_from_slice(&5u64.to_le_bytes());
        seal(&mut r, 1);
        assert!(matches!(
            decode_header(&r),
            Err(FormatError::BadLength { .. })
        ));
        let mut r = sealed(Kind::State, b"", &[b"x"], 1);
        r[4] = 9;
        seal(&mut r, 1);
        assert_eq!(decode_header(&r), Err(FormatError::BadKind(9)));
        let mut r = sealed(Kind::State, b"", &[b"x"], 1);
        r[16] = b'a';
        seal(&mut r, 1);
        assert_eq!(decode_header(&r), Err(FormatError::BadId));
    }

    #[test]
    fn resync_skips_garbage() {
        let a = sealed(Kind::State, b"", &[b"one\n"], 1);
        let b = sealed(Kind::State, b"", &[b"two\n"], 2);
        let mut bytes = a.clone();
        bytes.extend_from_slice(b"PREC garbage PRE");
        let at = bytes.len();
        bytes.extend_from_slice(&b);
        assert_eq!(resync(&bytes, 1), Some(at));
        assert_eq!(resync(&bytes, 0), Some(0));
        assert_eq!(resync(&bytes[..bytes.len() - 1], 1), None);
    }
}
