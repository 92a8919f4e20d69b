//! Reading queued messages back out of the log. Trusts the index for where a
//! record lies, nothing on disk: the envelope must parse and name the message, and a
//! whole-message read verifies the record's checksum. Readers hold the segment's
//! file open, so a message being read stays readable even if compaction moves it
//! and deletes the segment meanwhile.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use crate::envelope::Envelope;
use crate::segment::SegFile;

/// One queued message: its envelope decoded, its bytes not yet read.
#[derive(Debug)]
pub struct QueuedMessage {
    pub envelope: Envelope,
    /// Length of the message in bytes.
    pub message_len: u64,
    segment: Arc<SegFile>,
    /// Offset of the first message byte in the segment.
    message_offset: u64,
    envelope_bytes: Vec<u8>,
    body_crc: u32,
}

impl QueuedMessage {
    pub(crate) fn new(
        envelope: Envelope,
        envelope_bytes: Vec<u8>,
        message_len: u64,
        segment: Arc<SegFile>,
        message_offset: u64,
        body_crc: u32,
    ) -> QueuedMessage {
        QueuedMessage {
            envelope,
            message_len,
            segment,
            message_offset,
            envelope_bytes,
            body_crc,
        }
    }

    /// Read the whole message into memory, verifying the record's checksum
    /// (`InvalidData` if it does not match).
    pub fn read_message(&self) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.message_len)
            .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "message too large"))?;
        let mut message = vec![0u8; len];
        self.segment.read_at(&mut message, self.message_offset)?;
        if crate::format::body_crc(&[&self.envelope_bytes, &message]) != self.body_crc {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "spool record checksum mismatch",
            ));
        }
        Ok(message)
    }

    /// A reader over exactly the message bytes (positioned reads on the shared
    /// segment file; no file is opened).
    pub fn reader(&self) -> MessageReader {
        MessageReader {
            segment: Arc::clone(&self.segment),
            pos: self.message_offset,
            end: self.message_offset + self.message_len,
        }
    }

    /// A file of its own, positioned at the message and limited to it, for callers
    /// that need a `std::fs::File` (e.g. to hand to an async runtime).
    pub fn into_message_reader(self) -> io::Result<io::Take<File>> {
        let mut file = crate::fsio::reopen(&self.segment.file, &self.segment.path)?;
        file.seek(SeekFrom::Start(self.message_offset))?;
        Ok(file.take(self.message_len))
    }

    /// The segment file the message lies in (for error messages).
    pub fn segment_path(&self) -> &Path {
        &self.segment.path
    }
}

/// Reads one message's bytes out of its segment with positioned reads.
#[derive(Debug)]
pub struct MessageReader {
    segment: Arc<SegFile>,
    pos: u64,
    end: u64,
}

impl Read for MessageReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.pos;
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n =
            std::os::unix::fs::FileExt::read_at(&self.segment.file, &mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.pos += n as u64;
        Ok(n)
    }
}
