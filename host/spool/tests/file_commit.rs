//! `commit_file`: a message whose body lies in a spill file is stored byte for byte
//! as `commit` would store it (same record, same checksum), readable before and
//! after a reopen; spill files are unnamed and stale ones are removed by `open`.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;

use common::{
    assert_intact, commit_one, commit_one_file, commit_spilled, envelope_for, segments, spill,
};
use postern_spool::{QueueId, Spool, SpoolConfig, SpoolError};

/// A large pseudo-random message body (deterministic, lines of 78 octets).
fn large_body(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 80);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while out.len() < len {
        for _ in 0..76 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.push(b'!' + (x % 94) as u8);
        }
        out.extend_from_slice(b"\r\n");
    }
    out.truncate(len);
    out
}

fn read_streamed(spool: &Spool, id: &QueueId) -> Vec<u8> {
    let mut back = Vec::new();
    spool
        .open_message(id)
        .unwrap()
        .reader()
        .read_to_end(&mut back)
        .unwrap();
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_backed_message_round_trips_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("spool");
    let body = large_body(24 << 20);
    let received = b"Received: from client.example; id X\r\n".to_vec();
    let added = b"X-Added: yes\r\n".to_vec();
    let id = QueueId::generate();
    {
        let (spool, _) = Spool::open(SpoolConfig::new(&root)).unwrap();
        commit_spilled(&spool, &id, &[&received, &added], &body).await;
        let expected = [&received[..], &added[..], &body[..]].concat();
        let (envelope, whole) = spool.read(&id).unwrap(); // checksum verified
        assert_eq!(envelope, envelope_for(&id));
        assert!(whole == expected, "read back differs");
        assert!(
            read_streamed(&spool, &id) == expected,
            "streamed read differs"
        );
        assert_eq!(
            spool.open_message(&id).unwrap().message_len,
            expected.len() as u64
        );
        let stats = spool.stats();
        assert_eq!((stats.messages, stats.commits), (1, 1));
    }
    // Recovery verifies every record's checksums: the copied record is whole.
    let (spool, report) = Spool::open(SpoolConfig::new(&root)).unwrap();
    assert_eq!((report.kept, report.truncated_bytes), (1, 0), "{report:#?}");
    assert!(report.quarantined.is_empty() && report.skipped.is_empty());
    let (_, whole) = spool.read(&id).unwrap();
    assert!(whole[received.len() + added.len()..] == body[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_backed_and_in_memory_commits_share_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    let spool = Arc::new(spool);
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let spool = Arc::clone(&spool);
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..20 {
                    ids.push(if n % 2 == 0 {
                        commit_one_file(&spool).await
                    } else {
                        commit_one(&spool).await
                    });
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    for id in &ids {
        assert_intact(&spool, id);
    }
    let stats = spool.stats();
    assert_eq!(stats.commits, 320);
    assert!(stats.syncs < 320, "no batch formed: {stats:?}");
    drop(spool);
    let (spool, report) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    assert_eq!(report.kept, 320);
    for id in &ids {
        assert_intact(&spool, id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_shorter_than_claimed_is_refused_and_nothing_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    let id = QueueId::generate();
    let file = spill(&spool, b"only this\r\n");
    let err = spool
        .commit_file(&envelope_for(&id), &[b"R: x\r\n"], file, 1000)
        .await
        .unwrap_err();
    assert!(matches!(err, SpoolError::Io { .. }), "{err}");
    assert!(spool.list().unwrap().is_empty());
    // The id is free again, and the log holds nothing of the attempt.
    let file = spill(&spool, b"now whole\r\n");
    spool
        .commit_file(&envelope_for(&id), &[], file, 11)
        .await
        .unwrap();
    assert_eq!(spool.read(&id).unwrap().1, b"now whole\r\n");
    assert_eq!(segments(dir.path()).len(), 1);
}

#[test]
fn spill_files_are_unnamed_and_stale_ones_go_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let spill_dir = dir.path().join("spill");
    {
        let (spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
        let mut file = spool.spill_file().unwrap();
        file.write_all(b"content").unwrap();
        assert_eq!(std::fs::read_dir(&spill_dir).unwrap().count(), 0);
    }
    // What a crash between create and unlink (no O_TMPFILE) would leave.
    std::fs::write(spill_dir.join("0123456789abcdef.spill"), b"stale").unwrap();
    let (spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    assert_eq!(std::fs::read_dir(&spill_dir).unwrap().count(), 0);
    drop(spool);
    // A read-only open neither creates nor cleans anything, and makes no spill files.
    std::fs::write(spill_dir.join("fedcba9876543210.spill"), b"stale").unwrap();
    let (reader, _) = Spool::open(SpoolConfig {
        read_only: true,
        ..SpoolConfig::new(dir.path())
    })
    .unwrap();
    assert!(matches!(reader.spill_file(), Err(SpoolError::ReadOnly)));
    assert_eq!(std::fs::read_dir(&spill_dir).unwrap().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_cut_short_by_a_crash_is_a_torn_tail_that_recovery_cuts() {
    let dir = tempfile::tempdir().unwrap();
    let body = large_body(1 << 20);
    let (kept, torn) = {
        let (spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
        let kept = commit_one(&spool).await;
        let torn = QueueId::generate();
        commit_spilled(&spool, &torn, &[b"R: x\r\n"], &body).await;
        (kept, torn)
    };
    // What a crash in the middle of copying the body in would leave behind.
    let segment = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&segment).unwrap().len();
    let cut = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    cut.set_len(len - body.len() as u64 / 2).unwrap();
    drop(cut);
    let (spool, report) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    assert!(report.truncated_bytes > 0, "{report:#?}");
    assert!(report.quarantined.is_empty() && report.skipped.is_empty());
    assert_eq!(spool.list().unwrap(), vec![kept]);
    assert_intact(&spool, &kept);
    assert!(matches!(spool.read(&torn), Err(SpoolError::NotFound(_))));
    // The log goes on from the cut.
    let again = commit_one_file(&spool).await;
    assert_intact(&spool, &again);
}
