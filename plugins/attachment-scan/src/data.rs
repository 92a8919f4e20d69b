//! The data stage: reads the message through the host's resource in chunks
//! of at most 1 MiB (the contract's cap per read), up to `max_scan_size`,
//! scans it and turns a finding into the configured verdict. Trusts the
//! host's size and reads; the content is hostile.

use postern_sdk::{DataResult, Level, Verdict, defer, pass, reject};

use crate::config::{Action, OnOversize, Settings};
use crate::scan::scan;

/// The message and the log, as the data stage needs them.
pub trait Source {
    fn size(&self) -> u64;
    /// Up to `len` bytes of the raw message at `offset`.
    fn read(&self, offset: u64, len: u32) -> Vec<u8>;
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]);
}

/// The largest read asked of the host.
pub const CHUNK: u32 = 1 << 20;

pub const OVERSIZE_TEXT: &str = "Message too large to scan, try again later";
pub const TAG_HEADER: &str = "X-Postern-Scan";

/// The whole message (`size` bytes at most), read chunk by chunk.
pub fn read_all(source: &impl Source, size: u64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    while (buf.len() as u64) < size {
        let want = (size - buf.len() as u64).min(u64::from(CHUNK)) as u32;
        let chunk = source.read(buf.len() as u64, want);
        if chunk.is_empty() {
            break;
        }
        buf.extend_from_slice(&chunk[..chunk.len().min(want as usize)]);
    }
    buf
}

/// Decide on a received message.
pub fn on_data(settings: &Settings, source: &impl Source) -> DataResult {
    let size = source.size();
    if size > settings.max_scan_size {
        let (size_s, max_s) = (size.to_string(), settings.max_scan_size.to_string());
        source.log(
            Level::Info,
            "message larger than max_scan_size; not scanned",
            &[("size", &size_s), ("max_scan_size", &max_s)],
        );
        return match settings.on_oversize {
            OnOversize::Pass => pass().into(),
            OnOversize::Defer => defer(451, "4.7.0", OVERSIZE_TEXT).into(),
        };
    }
    let raw = read_all(source, size);
    let Some(finding) = scan(&raw, settings) else {
        return pass().into();
    };
    let reason = finding.to_string();
    source.log(
        Level::Info,
        "attachment scan finding",
        &[("reason", &reason)],
    );
    match settings.action {
        Action::Reject => reject(554, "5.7.0", format!("Message rejected: {reason}")).into(),
        Action::Tag => DataResult::verdict(Verdict::Pass).add_header(TAG_HEADER, reason),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;
    use crate::eicar::EICAR;

    /// A message in memory that also records the reads asked of it.
    struct Mem {
        data: Vec<u8>,
        reads: Cell<usize>,
        largest: Cell<u32>,
        logs: RefCell<Vec<String>>,
    }

    impl Mem {
        fn new(data: Vec<u8>) -> Mem {
            Mem {
                data,
                reads: Cell::new(0),
                largest: Cell::new(0),
                logs: RefCell::new(Vec::new()),
            }
        }
    }

    impl Source for Mem {
        fn size(&self) -> u64 {
            self.data.len() as u64
        }
        fn read(&self, offset: u64, len: u32) -> Vec<u8> {
            self.reads.set(self.reads.get() + 1);
            self.largest.set(self.largest.get().max(len));
            // Like the host: capped at 1 MiB, and here even shorter reads,
            // to prove the loop copes with short answers.
            let len = len.min(CHUNK).min(700_000) as usize;
            let start = (offset as usize).min(self.data.len());
            let end = (start + len).min(self.data.len());
            self.data[start..end].to_vec()
        }
        fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
            self.logs
                .borrow_mut()
                .push(format!("{level:?} {message} {fields:?}"));
        }
    }

    fn settings(json: &str) -> Settings {
        postern_sdk::parse_config::<crate::config::Config>(json)
            .and_then(|c| c.validate())
            .unwrap()
    }

    fn reply(r: &DataResult) -> Option<(u16, String, String)> {
        match &r.verdict {
            Verdict::Reject(x) | Verdict::Defer(x) => Some((
                x.code,
                x.enhanced.clone().unwrap_or_default(),
                x.text.clone(),
            )),
            _ => None,
        }
    }

    fn eicar_message() -> Vec<u8> {
        let mut m = b"Subject: test\r\n\r\n".to_vec();
        m.extend_from_slice(EICAR);
        m.extend_from_slice(b"\r\n");
        m
    }

    #[test]
    fn reads_everything_in_bounded_chunks() {
        let mut big = b"Subject: big\r\n\r\n".to_vec();
        big.resize(3 * (1 << 20) + 12345, b'a');
        let tail = big.len() - 100;
        big[tail..tail + 68].copy_from_slice(EICAR);
        let m = Mem::new(big.clone());
        assert_eq!(read_all(&m, big.len() as u64), big);
        assert!(m.largest.get() <= CHUNK);
        assert!(m.reads.get() >= 4);
        let r = on_data(&Settings::default(), &Mem::new(big));
        assert_eq!(
            reply(&r),
            Some((
                554,
                "5.7.0".into(),
                "Message rejected: virus EICAR-Test-File found".into()
            ))
        );
    }

    #[test]
    fn read_stops_when_the_host_runs_dry() {
        let m = Mem::new(b"short".to_vec());
        assert_eq!(read_all(&m, 1000), b"short");
    }

    #[test]
    fn reject_and_tag() {
        let r = on_data(&Settings::default(), &Mem::new(eicar_message()));
        assert_eq!(
            reply(&r),
            Some((
                554,
                "5.7.0".into(),
                "Message rejected: virus EICAR-Test-File found".into()
            ))
        );
        assert!(r.add_headers.is_empty());
        let tag = settings(r#"{"action": "tag"}"#);
        let m = Mem::new(eicar_message());
        let r = on_data(&tag, &m);
        assert!(matches!(r.verdict, Verdict::Pass));
        assert_eq!(r.add_headers.len(), 1);
        assert_eq!(r.add_headers[0].name, "X-Postern-Scan");
        assert_eq!(r.add_headers[0].value, "virus EICAR-Test-File found");
        assert!(m.logs.borrow()[0].contains("attachment scan finding"));
        let clean = on_data(&tag, &Mem::new(b"Subject: hi\r\n\r\nhello\r\n".to_vec()));
        assert!(matches!(clean.verdict, Verdict::Pass));
        assert!(clean.add_headers.is_empty());
    }

    #[test]
    fn oversize() {
        let pass_big = settings(r#"{"max_scan_size": 50}"#);
        let m = Mem::new(eicar_message());
        let r = on_data(&pass_big, &m);
        assert!(matches!(r.verdict, Verdict::Pass));
        assert_eq!(m.reads.get(), 0, "not even read");
        assert!(m.logs.borrow()[0].contains("not scanned"));
        let defer_big = settings(r#"{"max_scan_size": 50, "on_oversize": "defer"}"#);
        let r = on_data(&defer_big, &Mem::new(eicar_message()));
        assert_eq!(reply(&r), Some((451, "4.7.0".into(), OVERSIZE_TEXT.into())));
        assert!(matches!(r.verdict, Verdict::Defer(_)));
        // Exactly at the limit is scanned.
        let exact = settings(&format!(
            r#"{{"max_scan_size": {}}}"#,
            eicar_message().len()
        ));
        assert!(matches!(
            on_data(&exact, &Mem::new(eicar_message())).verdict,
            Verdict::Reject(_)
        ));
    }
}
