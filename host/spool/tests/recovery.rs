//! Start-up recovery: a torn tail of the last segment is cut (at every offset of the
//! last record, and after appended garbage), damage anywhere else is reported, the
//! valid records salvaged and the segment moved to `corrupt/` (never deleted), and a
//! version-1 spool is imported.

mod common;

use std::path::{Path, PathBuf};

use common::{
    assert_intact, commit_one, commit_until_segments, envelope_for, message_for, open_small,
    segments,
};
use postern_spool::format::{self, Kind, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use postern_spool::{QueueId, Spool, SpoolConfig, SpoolError};

/// (offset, kind, id) of every record of a segment file.
fn records(path: &Path) -> Vec<(usize, Kind, QueueId)> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < bytes.len() {
        let h = format::decode_record(&bytes[pos..]).unwrap();
        out.push((pos, h.kind, h.id));
        pos += h.record_len() as usize;
    }
    out
}

fn open(root: &Path) -> (Spool, postern_spool::RecoveryReport) {
    Spool::open(SpoolConfig::new(root)).unwrap()
}

async fn commit_small(spool: &Spool) -> QueueId {
    let id = QueueId::generate();
    spool
        .commit(&envelope_for(&id), &[b"Subject: s\r\n\r\nhi\r\n"])
        .await
        .unwrap();
    id
}

/// Commit `n` messages (as [`commit_one`]) to a fresh spool at `root` and close
/// it: their ids, and the one segment file that holds them.
async fn committed(root: &Path, n: usize) -> (Vec<QueueId>, PathBuf) {
    let (spool, _) = open(root);
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(commit_one(&spool).await);
    }
    drop(spool);
    (ids, segments(root).remove(0))
}

/// A spool at `root` with small segments (`segment_size`), filled (as
/// [`commit_one`]) until it has `count` of them: the spool and the ids.
async fn in_segments(root: &Path, segment_size: u64, count: usize) -> (Spool, Vec<QueueId>) {
    let (spool, _) = open_small(root, segment_size);
    let ids = commit_until_segments(&spool, root, count).await;
    (spool, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_record_is_cut_at_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (spool, _) = open(root);
    let first = commit_one(&spool).await;
    let second = commit_one(&spool).await;
    let last = commit_small(&spool).await;
    drop(spool);
    let seg = segments(root).remove(0);
    let full = std::fs::read(&seg).unwrap();
    let (start, kind, id) = *records(&seg).last().unwrap();
    assert_eq!((kind, id), (Kind::Message, last));

    for cut in start..full.len() {
        std::fs::write(&seg, &full[..cut]).unwrap();
        let (spool, report) = open(root);
        assert_eq!(report.kept, 2, "cut at {cut}");
        assert_eq!(report.truncated_bytes, (cut - start) as u64, "cut at {cut}");
        assert!(report.quarantined.is_empty() && report.skipped.is_empty());
        assert_eq!(spool.list().unwrap(), vec![first, second]);
        drop(spool);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), start as u64);
    }
    // The whole record is fine, of course; and appending continues after the cut.
    std::fs::write(&seg, &full[..start + 7]).unwrap();
    let (spool, _) = open(root);
    let next = commit_one(&spool).await;
    drop(spool);
    let (spool, report) = open(root);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(spool.list().unwrap(), vec![first, second, next]);
    for id in [first, second, next] {
        assert_intact(&spool, &id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_last_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (ids, seg) = committed(root, 2).await;
    let good = std::fs::read(&seg).unwrap();
    let record = good[records(&seg)[0].0..records(&seg)[1].0].to_vec();
    let garbage: Vec<Vec<u8>> = vec![
        vec![0u8; 4096],
        (0..3000u32).map(|i| (i * 7 + 3) as u8).collect(),
        b"PREC".repeat(100),
        record[..RECORD_HEADER_LEN].to_vec(),
        record[..record.len() - 1].to_vec(),
    ];
    for junk in &garbage {
        std::fs::write(&seg, [good.as_slice(), junk].concat()).unwrap();
        let (spool, report) = open(root);
        assert_eq!(report.kept, 2);
        assert_eq!(report.truncated_bytes, junk.len() as u64);
        assert!(report.skipped.is_empty());
        assert_eq!(spool.list().unwrap(), ids);
        drop(spool);
        assert_eq!(std::fs::read(&seg).unwrap(), good);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_last_record_with_a_bad_checksum_is_cut_but_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (ids, seg) = committed(root, 2).await;
    let (kept, damaged) = (ids[0], ids[1]);
    let mut bytes = std::fs::read(&seg).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();
    let (spool, report) = open(root);
    assert_eq!(spool.list().unwrap(), vec![kept]);
    assert!(report.truncated_bytes > 0);
    assert_eq!(report.quarantined.len(), 1, "{report:#?}");
    assert!(report.quarantined[0].1.contains(damaged.as_str()));
    let copy = root.join("corrupt").join(&report.quarantined[0].0);
    assert_eq!(
        std::fs::metadata(copy).unwrap().len(),
        report.truncated_bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_a_sealed_segment_is_reported_salvaged_and_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (spool, ids) = in_segments(root, 60_000, 3).await;
    let state_of = ids[0];
    spool.append_state(&state_of, b"A 1 0\n").await.unwrap();
    drop(spool);
    let segs = segments(root);
    let first = records(&segs[0]);
    assert!(first.len() >= 3, "{first:?}");
    // Flip a byte in the body of a message in the middle of the first segment.
    let (at, _, victim) = first[1];
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    bytes[at + RECORD_HEADER_LEN + 10] ^= 0x01;
    std::fs::write(&segs[0], &bytes).unwrap();

    let (spool, report) = open(root);
    assert_eq!(report.skipped.len(), 1, "{report:#?}");
    assert!(report.skipped[0].1.contains(victim.as_str()), "{report:#?}");
    assert!(report.skipped[0].1.contains("checksum"));
    assert_eq!(report.quarantined.len(), 1);
    let name = segs[0].file_name().unwrap().to_str().unwrap();
    assert_eq!(report.quarantined[0].0, name);
    assert_eq!(report.salvaged, first.len() - 1);
    // Moved aside, not deleted, with its reason; everything else is intact.
    assert!(!segs[0].exists());
    let aside = root.join("corrupt").join(name);
    assert_eq!(std::fs::read(&aside).unwrap(), bytes);
    let note = std::fs::read_to_string(root.join("corrupt").join(format!("{name}.reason")));
    assert!(note.unwrap().contains("valid records copied"));
    let expected: Vec<QueueId> = ids.iter().copied().filter(|id| *id != victim).collect();
    assert_eq!(spool.list().unwrap(), expected);
    for id in &expected {
        assert_intact(&spool, id);
    }
    assert_eq!(
        spool.state_records(&state_of).unwrap(),
        vec![b"A 1 0\n".to_vec()]
    );

    // The salvage is durable: the next open is clean and finds the same.
    drop(spool);
    let (spool, report) = open(root);
    assert!(report.skipped.is_empty() && report.quarantined.is_empty());
    assert_eq!(spool.list().unwrap(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_followed_by_valid_records_in_the_last_segment_is_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (ids, seg) = committed(root, 3).await;
    let recs = records(&seg);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[recs[1].0] = b'X'; // the magic of the middle record
    std::fs::write(&seg, &bytes).unwrap();
    let (spool, report) = open(root);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(report.skipped.len(), 1, "{report:#?}");
    assert_eq!(report.quarantined.len(), 1);
    assert_eq!(spool.list().unwrap(), vec![ids[0], ids[2]]);
    assert_intact(&spool, &ids[2]);
    assert_eq!(segments(root).len(), 1, "a fresh active segment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_creation_and_strays() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (spool, ids) = in_segments(root, 10_000, 2).await;
    drop(spool);
    let segs = segments(root);
    // A sealed segment whose header was damaged: its records are still found.
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    bytes[3] ^= 0xff;
    std::fs::write(&segs[0], &bytes).unwrap();
    // A segment whose creation was interrupted (no complete header).
    let next = segs[1].with_file_name(format!("{:016x}.seg", segs.len() + 1));
    std::fs::write(&next, b"PSTN").unwrap();
    // Strays.
    std::fs::write(root.join("log").join("notes.txt"), b"stray").unwrap();
    std::fs::create_dir(root.join("log").join("subdir")).unwrap();

    let (spool, report) = open(root);
    assert_eq!(report.truncated_bytes, 4);
    assert!(!next.exists());
    let names: Vec<&str> = report.quarantined.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "notes.txt",
        "subdir",
        segs[0].file_name().unwrap().to_str().unwrap(),
    ] {
        assert!(names.contains(&want), "{want} not in {report:#?}");
    }
    assert!(report.skipped[0].1.contains("segment header"));
    assert_eq!(spool.list().unwrap(), ids);
    for id in &ids {
        assert_intact(&spool, id);
    }
    assert!(root.join("corrupt/notes.txt.reason").exists());
}

#[tokio::test]
async fn reading_a_damaged_record_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let id = commit_one(&spool).await;
    let seg = segments(dir.path()).remove(0);
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() - 5;
    bytes[at] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    let err = spool.read(&id).unwrap_err();
    assert!(matches!(err, SpoolError::Corrupt { .. }), "{err}");
    // The envelope alone is still fine.
    assert_eq!(spool.read_envelope(&id).unwrap(), envelope_for(&id));
    // Damage the envelope: a precise error too.
    let env_at = SEGMENT_HEADER_LEN + RECORD_HEADER_LEN;
    bytes[env_at] = b'[';
    std::fs::write(&seg, &bytes).unwrap();
    assert!(matches!(
        spool.read_envelope(&id),
        Err(SpoolError::Corrupt { .. })
    ));
}

fn v1_file(id: &QueueId, message: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(&envelope_for(id)).unwrap();
    [
        format!("POSTERN-SPOOL 1 {} {}\n", json.len(), message.len()).as_bytes(),
        &json,
        b"\n",
        message,
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_spool_is_imported_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let queue: PathBuf = root.join("queue");
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&queue).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    let ids: Vec<QueueId> = (0..3).map(|_| QueueId::generate()).collect();
    for id in &ids {
        std::fs::write(queue.join(id.as_str()), v1_file(id, &message_for(id))).unwrap();
    }
    // A journal with a torn last line, an orphaned journal, a half-written temp
    // file, a damaged message.
    std::fs::write(queue.join(format!("{}.state", ids[1])), b"A 1 0\nN 5\nA 2").unwrap();
    std::fs::write(
        queue.join(format!("{}.state", QueueId::generate())),
        b"A 1 0\n",
    )
    .unwrap();
    std::fs::write(tmp.join(QueueId::generate().as_str()), b"POSTERN-SPOOL 1").unwrap();
    let bad = QueueId::generate();
    let mut damaged = v1_file(&bad, b"hello");
    damaged.pop();
    std::fs::write(queue.join(bad.as_str()), &damaged).unwrap();

    let (spool, report) = open(root);
    assert_eq!(report.imported, 3);
    assert_eq!(report.kept, 3);
    assert_eq!(report.quarantined.len(), 1, "{report:#?}");
    assert_eq!(report.quarantined[0].0, bad.as_str());
    assert!(!queue.exists() && !tmp.exists());
    assert_eq!(
        std::fs::read(root.join("corrupt").join(bad.as_str())).unwrap(),
        damaged
    );
    assert_eq!(spool.list().unwrap(), ids);
    for id in &ids {
        assert_intact(&spool, id);
    }
    assert_eq!(
        spool.state_records(&ids[1]).unwrap(),
        vec![b"A 1 0\nN 5\n".to_vec()]
    );
    drop(spool);
    let (spool, report) = open(root);
    assert_eq!((report.imported, report.kept), (0, 3));
    assert_eq!(spool.list().unwrap(), ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_interrupted_after_the_log_sync_is_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let id = QueueId::generate();
    std::fs::create_dir_all(root.join("queue")).unwrap();
    let file = v1_file(&id, &message_for(&id));
    std::fs::write(root.join("queue").join(id.as_str()), &file).unwrap();
    let (spool, report) = open(root);
    assert_eq!(report.imported, 1);
    drop(spool);
    // As if the crash came before the v1 file was deleted.
    std::fs::create_dir_all(root.join("queue")).unwrap();
    std::fs::write(root.join("queue").join(id.as_str()), &file).unwrap();
    let (spool, report) = open(root);
    assert_eq!((report.imported, report.kept), (0, 1));
    assert!(!root.join("queue").exists());
    assert_eq!(records(&segments(root)[0]).len(), 1);
    assert_intact(&spool, &id);
}
