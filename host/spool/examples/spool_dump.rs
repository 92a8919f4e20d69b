//! Print every record of a spool's log without opening the spool (no lock, no
//! repair): `spool_dump <spool dir>`. One line per record — segment, offset, kind,
//! LSN, queue id, envelope and payload lengths — and the first defect of each
//! segment. Trusts nothing it reads (see `postern_spool::format`).

use std::path::PathBuf;

use postern_spool::format::{self, SEGMENT_HEADER_LEN};

fn main() -> std::process::ExitCode {
    let Some(dir) = std::env::args().nth(1).map(PathBuf::from) else {
        eprintln!("usage: spool_dump <spool dir>");
        return std::process::ExitCode::from(2);
    };
    let log = dir.join("log");
    let mut names: Vec<_> = match std::fs::read_dir(&log) {
        Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(e) => {
            eprintln!("spool_dump: {}: {e}", log.display());
            return std::process::ExitCode::FAILURE;
        }
    };
    names.sort();
    for path in names {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                println!("{name}: {e}");
                continue;
            }
        };
        println!("{name}: {} bytes", bytes.len());
        let mut pos = SEGMENT_HEADER_LEN;
        while pos < bytes.len() {
            match format::decode_record(&bytes[pos..]) {
                Ok(h) => {
                    println!(
                        "  {pos:>10} {:<9} lsn {:>8} {} env {:>5} payload {:>8}",
                        format!("{:?}", h.kind),
                        h.lsn,
                        h.id,
                        h.envelope_len,
                        h.payload_len
                    );
                    pos += h.record_len() as usize;
                }
                Err(e) => {
                    println!("  {pos:>10} defect: {e} ({} bytes left)", bytes.len() - pos);
                    break;
                }
            }
        }
    }
    std::process::ExitCode::SUCCESS
}
