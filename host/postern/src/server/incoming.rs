//! The content of one DATA command as it arrives (RFC 5321 §4.1.1.4), already
//! dot-unstuffed and size-checked by the protocol library's `DataReader`: held
//! in memory while it is small — most mail, with no system call added — and
//! written through to a spill file of the spool (unnamed, 0600, gone when
//! dropped) once it passes [`SPILL_AT`], so a session's memory does not grow
//! with the message. The first [`HEAD_KEEP`] bytes stay in memory for the
//! header look-ups of the data stage. `Authentication-Results` fields claiming
//! our authserv-id are removed from the header section before anything reads
//! it (RFC 8601 §5): when the content is complete, or before its first spill
//! (so a header section longer than [`SPILL_AT`] keeps those beyond it).
//! Input: untrusted content, bounded per read by the connection loop and in
//! total by `max_message_size`.

use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;

use postern_plugin::MessageData;
use postern_spool::Spool;

/// Content up to this size stays in memory; beyond it goes to a spill file.
pub const SPILL_AT: usize = 256 << 10;
/// Bytes of a spilled message kept in memory too (its header section, usually).
pub const HEAD_KEEP: usize = 64 << 10;
/// Content of a spilled message is written in blocks of about this size.
pub const WRITE_BLOCK: usize = 128 << 10;

/// DATA content being received.
pub struct Incoming {
    /// All of the content while it is in memory; after spilling, what is not
    /// written yet.
    buf: Vec<u8>,
    spill: Option<Spill>,
    /// Where spill files come from.
    spool: Arc<Spool>,
    /// Spilling failed: the rest is discarded and the message refused with 451.
    failed: Option<io::Error>,
    /// Our authserv-id (forged `Authentication-Results` claiming it go).
    authserv_id: String,
}

struct Spill {
    file: File,
    head: Vec<u8>,
    written: u64,
}

impl Incoming {
    pub fn new(spool: Arc<Spool>, authserv_id: &str) -> Incoming {
        Incoming {
            buf: Vec::with_capacity(8 * 1024),
            spill: None,
            spool,
            failed: None,
            authserv_id: authserv_id.to_string(),
        }
    }

    /// Remove the `Authentication-Results` fields claiming our authserv-id
    /// from the start of the content, which `buf` holds.
    fn strip_forged_results(&mut self) {
        use std::borrow::Cow;
        if let Cow::Owned(stripped) =
            postern_protocol::auth_results::strip_ours(&self.buf, &self.authserv_id)
        {
            self.buf = stripped;
        }
    }

    /// Where the `DataReader` appends content; call [`Incoming::settle`] after.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Content was appended: spill it, or write a full block, when due.
    pub fn settle(&mut self) {
        if self.failed.is_some() {
            self.buf.clear();
            return;
        }
        let due = match self.spill {
            None => self.buf.len() >= SPILL_AT,
            Some(_) => self.buf.len() >= WRITE_BLOCK,
        };
        if due && let Err(e) = in_place(|| self.write_out()) {
            tracing::error!(error = %e, "cannot write DATA to a spill file; the message will be refused");
            self.failed = Some(e);
            self.spill = None;
            self.buf = Vec::new();
        }
    }

    /// Move what is buffered to the spill file (creating it first).
    fn write_out(&mut self) -> io::Result<()> {
        let spill = match &mut self.spill {
            Some(spill) => spill,
            None => {
                self.strip_forged_results();
                let file = self.spool.spill_file().map_err(io::Error::other)?;
                let head = self.buf[..HEAD_KEEP.min(self.buf.len())].to_vec();
                self.spill.insert(Spill {
                    file,
                    head,
                    written: 0,
                })
            }
        };
        spill.file.write_all(&self.buf)?;
        spill.written += self.buf.len() as u64;
        if self.buf.capacity() > 2 * WRITE_BLOCK {
            // The in-memory phase's buffer: give it back for a block-sized one.
            self.buf = Vec::with_capacity(WRITE_BLOCK + 16 * 1024);
        } else {
            self.buf.clear();
        }
        Ok(())
    }

    /// The whole content, for the data stage and the spool: in memory, or the
    /// spill file once the last bytes are written to it.
    pub fn finish(mut self) -> io::Result<MessageData> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.spill.is_none() {
            self.strip_forged_results();
            return Ok(MessageData::new(self.buf));
        }
        in_place(|| {
            self.write_out()?;
            let Some(spill) = self.spill.take() else {
                return Err(io::ErrorKind::NotFound.into());
            };
            MessageData::from_file(Arc::new(spill.file), spill.written, spill.head)
        })
    }
}

/// Run blocking file I/O without stalling the other tasks of a runtime
/// worker (`block_in_place` where the runtime allows it).
fn in_place<R>(f: impl FnOnce() -> R) -> R {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_plugin::Stored;
    use postern_spool::SpoolConfig;

    fn spool() -> (tempfile::TempDir, Arc<Spool>) {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(SpoolConfig::new(dir.path().join("spool"))).unwrap();
        (dir, Arc::new(spool))
    }

    /// Feed `content` in `chunk`-sized pieces, as the connection loop does.
    fn receive(spool: &Arc<Spool>, content: &[u8], chunk: usize) -> MessageData {
        let mut incoming = Incoming::new(Arc::clone(spool), "mx.test");
        for piece in content.chunks(chunk) {
            incoming.buf().extend_from_slice(piece);
            incoming.settle();
            assert!(incoming.buf.len() < SPILL_AT + chunk, "buffer grew");
        }
        incoming.finish().unwrap()
    }

    #[test]
    fn small_content_stays_in_memory() {
        let (_dir, spool) = spool();
        let content = b"Subject: x\r\n\r\nhello\r\n".repeat(1000);
        let m = receive(&spool, &content, 4096);
        assert!(matches!(m.stored(), Stored::Memory(b) if b == &content[..]));
    }

    #[test]
    fn large_content_goes_to_a_spill_file_whole() {
        let (dir, spool) = spool();
        let mut content = b"Subject: big\r\n\r\n".to_vec();
        while content.len() < 3 * SPILL_AT + 12345 {
            content.extend_from_slice(format!("line {}\r\n", content.len()).as_bytes());
        }
        for chunk in [4096, 65536, 1] {
            if chunk == 1 && cfg!(debug_assertions) {
                continue;
            }
            let m = receive(&spool, &content, chunk);
            let Stored::File { file, len } = m.stored() else {
                panic!("not spilled");
            };
            assert_eq!(len, content.len() as u64);
            let mut back = vec![0u8; content.len()];
            std::os::unix::fs::FileExt::read_exact_at(&**file, &mut back, 0).unwrap();
            assert!(back == content, "chunk {chunk}: content differs");
            assert_eq!(m.header("subject"), Some("big"));
            assert_eq!(m.read(0, 20).unwrap(), content[..20]);
        }
        // Unnamed: nothing to clean up in the spill directory, ever.
        let spill_dir = dir.path().join("spool").join("spill");
        assert_eq!(std::fs::read_dir(spill_dir).unwrap().count(), 0);
    }

    #[test]
    fn a_spill_that_cannot_be_created_refuses_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("spool");
        let (spool, _) = Spool::open(SpoolConfig::new(&root)).unwrap();
        drop(spool);
        // Read-only: no spill files (as a full or broken disk would refuse them).
        let (spool, _) = Spool::open(SpoolConfig {
            read_only: true,
            ..SpoolConfig::new(&root)
        })
        .unwrap();
        let mut incoming = Incoming::new(Arc::new(spool), "mx.test");
        for _ in 0..(2 * SPILL_AT / 4096) {
            incoming.buf().extend_from_slice(&[b'x'; 4096]);
            incoming.settle();
        }
        assert!(incoming.buf.len() < 4096 * 2, "discarded after the failure");
        assert!(incoming.finish().is_err());
    }
}
