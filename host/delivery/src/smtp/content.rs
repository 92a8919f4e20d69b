//! The content sent to one server: the spooled message as it is, or — for a
//! server without 8BITMIME (RFC 6152 §3) or without the SMTPUTF8 the message
//! asked for (RFC 6531 §3.2) — after a look at it: the header section for
//! non-ASCII fields, or the whole message, converted to 7 bit by
//! [`crate::downgrade`] when it has 8-bit bytes. Decided per server and per
//! attempt, from its capabilities; the spool is never changed. What was found
//! goes to `dialogue::precheck` as a [`ContentCheck`], which refuses the
//! message (5.6.7 / 5.6.3) before MAIL. Runs on the blocking pool (file reads,
//! conversion); input: the spooled message (untrusted content, bounded by the
//! server's size limit).

use std::borrow::Cow;
use std::io::{Read as _, Seek as _, SeekFrom};

use tokio::io::{AsyncRead, AsyncReadExt as _};

use crate::downgrade;
use crate::smtp::dialogue::{self, ContentCheck};
use crate::smtp::ehlo::Capabilities;

/// Which look at the content a server calls for.
#[derive(Clone, Copy)]
pub struct Check {
    /// The server takes only 7-bit content: convert 8-bit (RFC 6152 §3).
    pub seven_bit: bool,
    /// The message asked for SMTPUTF8, which the server does not offer:
    /// look for non-ASCII header fields (RFC 6531 §3.2).
    pub headers: bool,
}

impl Check {
    pub fn for_server(caps: &Capabilities, mail_params: &[String]) -> Check {
        let utf8 = dialogue::requests_smtputf8(mail_params);
        // A server offering SMTPUTF8 takes 8-bit content (RFC 6531 §3.1).
        let eight_bit_clean = caps.eightbitmime || (utf8 && caps.smtputf8);
        Check {
            seven_bit: !eight_bit_clean,
            headers: utf8 && !caps.smtputf8,
        }
    }
}

/// The content to send to one server, and what its check found.
pub struct Content {
    pub body: Box<dyn AsyncRead + Unpin + Send>,
    pub size: u64,
    pub check: ContentCheck,
    /// Converted to 7 bit: the original size.
    pub converted: Option<u64>,
}

/// Read the spooled message (on the blocking pool) as `check` asks: streamed
/// from the file when no check applies; its header section read first when
/// only the headers matter; for a server without 8BITMIME, scanned for 8-bit
/// bytes and streamed when it has none, else read whole and converted to 7
/// bit. The original and the converted copy are in memory for this attempt
/// only (about twice and a half the message's size at the peak): the spool
/// is never changed, and the next server (or attempt) decides again.
pub fn read(mut file: std::io::Take<std::fs::File>, check: Check) -> std::io::Result<Content> {
    let len = file.limit();
    if check.seven_bit && !has_8bit(&mut file, len)? {
        // All 7 bit (so no UTF-8 header either): streamed as it is.
        return Ok(Content {
            body: Box::new(tokio::fs::File::from_std(file.into_inner()).take(len)),
            size: len,
            check: ContentCheck::default(),
            converted: None,
        });
    }
    if check.seven_bit {
        let mut raw = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.read_to_end(&mut raw)?;
        let mut found = ContentCheck {
            utf8_headers: check.headers && downgrade::utf8_headers(&raw),
            unconvertible: None,
        };
        let converted = match downgrade::to_7bit(&raw) {
            Ok(Cow::Owned(v)) => Some(v),
            Ok(Cow::Borrowed(_)) => None,
            Err(e) => {
                found.unconvertible = Some(e.to_string());
                None
            }
        };
        let original = raw.len() as u64;
        let (bytes, converted) = match converted {
            Some(v) => (v, Some(original)),
            None => (raw, None),
        };
        return Ok(Content {
            size: bytes.len() as u64,
            body: Box::new(std::io::Cursor::new(bytes)),
            check: found,
            converted,
        });
    }
    if check.headers {
        // The header section (and whatever came with its last read).
        let mut head = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let n = file.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
            if empty_line(&head, head.len() - n) {
                break;
            }
        }
        let rest = file.limit();
        let found = ContentCheck {
            utf8_headers: downgrade::utf8_headers(&head),
            unconvertible: None,
        };
        let tail = tokio::fs::File::from_std(file.into_inner()).take(rest);
        return Ok(Content {
            body: Box::new(tokio::io::AsyncReadExt::chain(
                std::io::Cursor::new(head),
                tail,
            )),
            size: len,
            check: found,
            converted: None,
        });
    }
    Ok(Content {
        body: Box::new(tokio::fs::File::from_std(file.into_inner()).take(len)),
        size: len,
        check: ContentCheck::default(),
        converted: None,
    })
}

/// Whether the message's `len` octets have an 8-bit byte; reads up to the
/// first one and puts the file back where it was (limited to `len` again).
fn has_8bit(file: &mut std::io::Take<std::fs::File>, len: u64) -> std::io::Result<bool> {
    let start = file.get_mut().stream_position()?;
    let mut chunk = vec![0u8; 64 * 1024];
    let found = loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            break false;
        }
        if downgrade::has_8bit(&chunk[..n]) {
            break true;
        }
    };
    file.get_mut().seek(SeekFrom::Start(start))?;
    file.set_limit(len);
    Ok(found)
}

/// Whether `bytes` has an empty line (the end of a header section) ending at
/// or after `from` (so each read is looked at once, not the whole again).
fn empty_line(bytes: &[u8], from: usize) -> bool {
    let tail = &bytes[from.saturating_sub(2)..];
    bytes.starts_with(b"\n")
        || bytes.starts_with(b"\r\n")
        || tail.windows(2).any(|w| w == b"\n\n")
        || tail.windows(3).any(|w| w == b"\n\r\n")
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use tokio::io::AsyncReadExt;

    use super::*;

    /// `message` in a file after some other bytes, as a spool segment holds it.
    fn spooled(message: &[u8]) -> std::io::Take<std::fs::File> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"OTHER").unwrap();
        f.write_all(message).unwrap();
        f.write_all(b"NEXT").unwrap();
        f.seek(SeekFrom::Start(5)).unwrap();
        f.take(message.len() as u64)
    }

    fn caps(eightbitmime: bool, smtputf8: bool) -> Capabilities {
        Capabilities {
            esmtp: true,
            eightbitmime,
            smtputf8,
            ..Capabilities::default()
        }
    }

    async fn sent(c: &mut Content) -> Vec<u8> {
        let mut v = Vec::new();
        c.body.read_to_end(&mut v).await.unwrap();
        assert_eq!(v.len() as u64, c.size);
        v
    }

    const EIGHT: &[u8] = "Subject: x\r\n\r\nsmörgåsbord\r\n".as_bytes();
    const UTF8_HEADER: &[u8] = "Subject: Grüße\r\n\r\nsmörgåsbord\r\n".as_bytes();

    #[test]
    fn empty_lines() {
        assert!(empty_line(b"A: b\r\n\r\n", 0));
        assert!(empty_line(b"A: b\r\n\r\n", 7));
        assert!(empty_line(b"A: b\n\nx", 5));
        assert!(empty_line(b"\r\nbody", 2));
        assert!(!empty_line(b"A: b\r\nC: d\r\n", 0));
        // Split across reads: "\r\n" then "\r\n".
        assert!(empty_line(b"A: b\r\n\r\n", 6));
    }

    #[test]
    fn which_check() {
        let utf8 = vec!["SMTPUTF8".to_string()];
        let c = Check::for_server(&caps(true, false), &[]);
        assert!(!c.seven_bit && !c.headers);
        let c = Check::for_server(&caps(false, false), &[]);
        assert!(c.seven_bit && !c.headers);
        let c = Check::for_server(&caps(true, false), &utf8);
        assert!(!c.seven_bit && c.headers);
        let c = Check::for_server(&caps(false, true), &utf8);
        assert!(!c.seven_bit && !c.headers);
    }

    #[tokio::test]
    async fn streams_unchanged_when_nothing_to_check() {
        let check = Check::for_server(&caps(true, true), &[]);
        let mut c = read(spooled(EIGHT), check).unwrap();
        assert_eq!(sent(&mut c).await, EIGHT);
        assert_eq!(c.check, ContentCheck::default());
        assert_eq!(c.converted, None);
    }

    #[tokio::test]
    async fn converts_for_a_seven_bit_server() {
        let check = Check::for_server(&caps(false, false), &[]);
        let mut c = read(spooled(EIGHT), check).unwrap();
        let out = sent(&mut c).await;
        assert!(out.is_ascii());
        assert!(String::from_utf8(out).unwrap().contains("quoted-printable"));
        assert_eq!(c.converted, Some(EIGHT.len() as u64));
        assert_eq!(c.check, ContentCheck::default());
        // 7 bit: streamed from the file as it is, after the scan.
        let seven = b"Subject: x\r\n\r\nplain\r\n";
        let mut c = read(spooled(seven), check).unwrap();
        assert_eq!(sent(&mut c).await, seven);
        assert_eq!(c.converted, None);
        // 8-bit headers: nothing to send, the reason for precheck.
        let c = read(spooled(UTF8_HEADER), check).unwrap();
        assert!(c.check.unconvertible.is_some() && !c.check.utf8_headers);
    }

    #[tokio::test]
    async fn reads_only_the_headers_for_smtputf8() {
        let utf8 = vec!["SMTPUTF8".to_string()];
        let check = Check::for_server(&caps(true, false), &utf8);
        let mut c = read(spooled(UTF8_HEADER), check).unwrap();
        assert!(c.check.utf8_headers);
        assert_eq!(sent(&mut c).await, UTF8_HEADER);
        let mut c = read(spooled(EIGHT), check).unwrap();
        assert!(!c.check.utf8_headers);
        assert_eq!(sent(&mut c).await, EIGHT);
        // A large message: the header scan reads past the first chunk.
        let mut big = format!("X-Long: {}\r\nSubject: é\r\n\r\n", "a".repeat(40_000)).into_bytes();
        big.extend_from_slice(&vec![b'b'; 100_000]);
        let mut c = read(spooled(&big), check).unwrap();
        assert!(c.check.utf8_headers);
        assert_eq!(sent(&mut c).await, big);
    }
}
