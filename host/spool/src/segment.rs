//! Segment files of the log: creating one durably (header written and fdatasync'ed,
//! then the `log/` directory fsync'ed, before any record goes in), appending batches
//! of records with vectored writes (a large message's body copied in from its spill
//! file), and the shared read handle every reader preads
//! through. Trusts its callers (the committer and recovery) for what they append;
//! readers verify what they read (see `format`).

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::format;
use crate::fsio;
use crate::paths::SpoolPaths;

/// Most slices handed to one `writev` (Linux refuses more than 1024).
const MAX_IOV: usize = 512;

/// Buffer of a file-to-segment copy where `copy_file_range` cannot be used.
const COPY_BUFFER: usize = 256 << 10;

/// The read side of one segment, shared by the index and every open message.
#[derive(Debug)]
pub(crate) struct SegFile {
    pub seq: u64,
    pub path: PathBuf,
    pub file: File,
}

impl SegFile {
    pub fn open(path: &Path, seq: u64) -> io::Result<SegFile> {
        Ok(SegFile {
            seq,
            path: path.to_path_buf(),
            file: File::open(path)?,
        })
    }

    /// Read exactly `buf.len()` bytes at `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
}

/// The append side of the active segment; owned by one thread at a time.
pub(crate) struct SegWriter {
    pub seq: u64,
    file: File,
    /// Length of the valid log in this file (the next record's offset).
    pub end: u64,
    pub shared: Arc<SegFile>,
}

impl SegWriter {
    /// Create segment `seq` (0600, must not exist), write and sync its header, and
    /// fsync `log/` so the file itself survives a crash.
    pub fn create(paths: &SpoolPaths, seq: u64) -> io::Result<SegWriter> {
        let path = paths.segment(seq);
        let mut file = fsio::create_new_private(&path)?;
        let header = format::encode_segment_header(seq);
        let written = fsio::write_all_vectored(&mut file, &mut [IoSlice::new(&header)])
            .and_then(|()| file.sync_data())
            .and_then(|()| fsio::sync_dir(&paths.log));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(SegWriter {
            seq,
            file,
            end: format::SEGMENT_HEADER_LEN as u64,
            shared: Arc::new(SegFile::open(&path, seq)?),
        })
    }

    /// Continue appending to an existing segment whose valid log ends at `end`
    /// (recovery already cut off anything after it and made that durable).
    pub fn reopen(shared: Arc<SegFile>, end: u64) -> io::Result<SegWriter> {
        let mut file = OpenOptions::new().write(true).open(&shared.path)?;
        file.seek(SeekFrom::Start(end))?;
        Ok(SegWriter {
            seq: shared.seq,
            file,
            end,
            shared,
        })
    }

    /// Append `records` back to back at `end`; returns the offset of the first one.
    /// Not durable until [`SegWriter::sync`]. On error the file may hold part of the
    /// batch after `end` (see [`SegWriter::discard_tail`]); `end` is unchanged.
    pub fn append(&mut self, records: &[&[u8]]) -> io::Result<u64> {
        let start = self.end;
        let mut written = 0u64;
        for chunk in records.chunks(MAX_IOV) {
            let mut slices: Vec<IoSlice<'_>> = chunk
                .iter()
                .filter(|r| !r.is_empty())
                .map(|r| IoSlice::new(r))
                .collect();
            fsio::write_all_vectored(&mut self.file, &mut slices)?;
            written += chunk.iter().map(|r| r.len() as u64).sum::<u64>();
        }
        self.end = start + written;
        Ok(start)
    }

    /// Append `len` bytes of `src` starting at `offset` at `end` (the tail of a
    /// record whose head [`SegWriter::append`] just wrote): in the kernel with
    /// `copy_file_range` where it can, else through a bounded buffer. Same contract as
    /// `append`: not durable until synced; on error `end` is unchanged and the file
    /// may hold part of the copy after it.
    pub fn append_file(&mut self, src: &File, offset: u64, len: u64) -> io::Result<()> {
        self.copy_from(src, offset, len, true)?;
        self.end += len;
        Ok(())
    }

    fn copy_from(
        &mut self,
        src: &File,
        mut offset: u64,
        len: u64,
        in_kernel: bool,
    ) -> io::Result<()> {
        let mut left = len;
        if in_kernel {
            while left > 0 {
                match fsio::copy_range(src, offset, &self.file, left) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => {
                        offset += n;
                        left -= n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Unsupported => break,
                    Err(e) => return Err(e),
                }
            }
        }
        if left > 0 {
            let mut buf = vec![0u8; COPY_BUFFER.min(usize::try_from(left).unwrap_or(COPY_BUFFER))];
            while left > 0 {
                let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                src.read_exact_at(&mut buf[..n], offset)?;
                self.file.write_all(&buf[..n])?;
                offset += n as u64;
                left -= n as u64;
            }
        }
        Ok(())
    }

    /// fdatasync: every record appended so far is on stable storage when this returns.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// After a failed append or sync: cut the file back to `end` and sync that, so a
    /// half-written batch is not left between acknowledged records.
    pub fn discard_tail(&mut self, end: u64) -> io::Result<()> {
        self.end = end;
        self.file.set_len(end)?;
        self.file.seek(SeekFrom::Start(end))?;
        self.file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_append_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let paths = SpoolPaths::new(dir.path());
        std::fs::create_dir(&paths.log).unwrap();
        let mut w = SegWriter::create(&paths, 3).unwrap();
        assert!(SegWriter::create(&paths, 3).is_err());
        let header_len = format::SEGMENT_HEADER_LEN as u64;
        assert_eq!(w.end, header_len);
        let many: Vec<Vec<u8>> = (0..1500).map(|i| vec![b'a' + (i % 26) as u8; 3]).collect();
        let refs: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
        assert_eq!(w.append(&refs).unwrap(), header_len);
        assert_eq!(w.append(&[b"", b"xyz"]).unwrap(), header_len + 4500);
        w.sync().unwrap();
        let bytes = std::fs::read(paths.segment(3)).unwrap();
        assert!(format::decode_segment_header(&bytes, 3).is_ok());
        assert_eq!(bytes.len() as u64, header_len + 4503);
        let mut buf = [0u8; 3];
        w.shared.read_at(&mut buf, header_len + 3).unwrap();
        assert_eq!(&buf, b"bbb");
        w.discard_tail(header_len + 3).unwrap();
        assert_eq!(w.append(&[b"zz"]).unwrap(), header_len + 3);
        assert_eq!(
            std::fs::metadata(paths.segment(3)).unwrap().len(),
            header_len + 5
        );
        let mut again = SegWriter::reopen(w.shared.clone(), header_len + 5).unwrap();
        assert_eq!(again.append(&[b"!"]).unwrap(), header_len + 5);
    }

    #[test]
    fn file_tails_are_copied_in_the_kernel_or_through_a_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let paths = SpoolPaths::new(dir.path());
        std::fs::create_dir(&paths.log).unwrap();
        let src_path = dir.path().join("src");
        let content: Vec<u8> = (0..(COPY_BUFFER * 2 + 1234))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&src_path, &content).unwrap();
        let src = File::open(&src_path).unwrap();
        let mut w = SegWriter::create(&paths, 1).unwrap();
        let header_len = format::SEGMENT_HEADER_LEN as u64;
        w.append(&[b"head"]).unwrap();
        w.append_file(&src, 10, content.len() as u64 - 10).unwrap();
        w.append(&[b"mid"]).unwrap();
        w.copy_from(&src, 0, content.len() as u64, false).unwrap();
        w.end += content.len() as u64;
        w.append(&[b"end"]).unwrap();
        let expected = [b"head", &content[10..], b"mid", &content[..], b"end"].concat();
        assert_eq!(w.end, header_len + expected.len() as u64);
        let bytes = std::fs::read(paths.segment(1)).unwrap();
        assert!(bytes[header_len as usize..] == expected[..]);
        // A source shorter than claimed is an error, not a short record.
        let end = w.end;
        assert!(w.append_file(&src, 5, content.len() as u64).is_err());
        assert_eq!(w.end, end);
    }
}
