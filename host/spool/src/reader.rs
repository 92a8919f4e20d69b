//! Reading queue files back. Trusts nothing on disk: the header is parsed and the
//! announced lengths are checked against the real file size before any buffer is
//! sized from them (see `format`); every defect becomes `SpoolError::Corrupt`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::envelope::Envelope;
use crate::error::SpoolError;
use crate::format::{self, FormatError, Layout, MAX_HEADER_LEN};

/// An open, verified queue file: its envelope is decoded, its message not yet read.
#[derive(Debug)]
pub struct QueuedMessage {
    pub envelope: Envelope,
    /// Offset of the first message byte in the file.
    pub message_offset: u64,
    /// Length of the message in bytes.
    pub message_len: u64,
    /// Size of the whole queue file.
    pub file_len: u64,
    file: File,
}

impl QueuedMessage {
    /// Read the whole message into memory.
    pub fn read_message(&self) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.message_len)
            .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "message too large"))?;
        let mut message = vec![0u8; len];
        self.file.read_exact_at(&mut message, self.message_offset)?;
        Ok(message)
    }

    /// A reader over exactly the message bytes, for streaming delivery.
    pub fn into_message_reader(mut self) -> io::Result<io::Take<File>> {
        self.file.seek(SeekFrom::Start(self.message_offset))?;
        Ok(self.file.take(self.message_len))
    }
}

/// Open `path` (whose file name is `name`) and verify header, size and envelope.
/// A missing file is `NotFound(name)`.
pub(crate) fn open_message(path: &Path, name: &str) -> Result<QueuedMessage, SpoolError> {
    let io_err = |e: io::Error| {
        if e.kind() == io::ErrorKind::NotFound {
            SpoolError::NotFound(name.to_owned())
        } else {
            SpoolError::io(path, e)
        }
    };
    let corrupt = |e: FormatError| SpoolError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = File::open(path).map_err(io_err)?;
    let metadata = file.metadata().map_err(io_err)?;
    if !metadata.is_file() {
        return Err(SpoolError::Corrupt {
            path: path.to_path_buf(),
            reason: "not a regular file".to_owned(),
        });
    }
    let file_len = metadata.len();
    let mut prefix = [0u8; MAX_HEADER_LEN];
    let prefix_len = usize::try_from(file_len).map_or(MAX_HEADER_LEN, |n| n.min(MAX_HEADER_LEN));
    file.read_exact_at(&mut prefix[..prefix_len], 0)
        .map_err(io_err)?;
    let layout = format::parse_header(&prefix[..prefix_len]).map_err(corrupt)?;
    format::check_size(&layout, file_len).map_err(corrupt)?;
    let envelope = read_envelope(&file, &layout, name).map_err(|e| match e {
        Ok(format_error) => corrupt(format_error),
        Err(io_error) => io_err(io_error),
    })?;
    Ok(QueuedMessage {
        envelope,
        message_offset: layout.message_offset(),
        message_len: layout.message_len,
        file_len,
        file,
    })
}

/// Read and decode the envelope; the outer `Err` is a format defect (`Ok`) or an
/// I/O failure (`Err`). The size was checked, so `envelope_len` fits in the file.
fn read_envelope(
    file: &File,
    layout: &Layout,
    name: &str,
) -> Result<Envelope, Result<FormatError, io::Error>> {
    let len = usize::try_from(layout.envelope_len)
        .ok()
        .and_then(|n| n.checked_add(1))
        .ok_or_else(|| {
            Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "envelope too large",
            ))
        })?;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, layout.envelope_offset())
        .map_err(Err)?;
    format::decode_envelope(&bytes, name).map_err(Ok)
}
