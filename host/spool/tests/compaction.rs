//! Space: segments rotate at their size limit, a sealed segment with nothing live is
//! deleted, a mostly-dead one is compacted (its live records copied, in order, into
//! the active segment), and neither ever brings a removed message back.

mod common;

use common::{
    assert_intact, commit_one, commit_until_segments, open_small, segments, small_config,
};
use postern_spool::format::{self, SEGMENT_HEADER_LEN};
use postern_spool::{QueueId, Spool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_deletion_of_dead_segments() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut config = small_config(root, 30_000);
    config.compact_live_ratio = 0.0; // deletion only
    let (spool, _) = Spool::open(config.clone()).unwrap();
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(commit_one(&spool).await);
    }
    let segs = segments(root);
    assert!(segs.len() >= 5, "{} segments", segs.len());
    assert_eq!(spool.stats().segments, segs.len() as u64);
    for path in &segs[..segs.len() - 1] {
        let len = std::fs::metadata(path).unwrap().len();
        assert!((30_000..30_000 + 25_000).contains(&len), "{len}");
    }
    // Nothing is dead yet.
    assert_eq!(spool.maintain().await.unwrap().segments_deleted, 0);

    // Remove the first half: the segments that held only those go.
    for id in &ids[..20] {
        assert!(spool.remove(id).await.unwrap());
    }
    let done = spool.maintain().await.unwrap();
    assert!(done.segments_deleted >= 2, "{done:?}");
    let left = segments(root);
    // (The tombstones may have filled the active segment: one more then.)
    assert!(left.len() <= segs.len() + 1 - done.segments_deleted);
    assert_eq!(left.len() as u64, spool.stats().segments);
    assert_eq!(spool.stats().segments_deleted, done.segments_deleted as u64);
    assert_eq!(spool.list().unwrap(), &ids[20..]);
    drop(spool);

    // Nothing removed comes back, nothing kept is lost.
    let (spool, report) = Spool::open(config).unwrap();
    assert_eq!(report.kept, 20);
    assert_eq!(spool.list().unwrap(), &ids[20..]);
    for id in &ids[20..] {
        assert_intact(&spool, id);
    }
    // Remove the rest: every sealed segment goes, the active one stays.
    for id in &ids[20..] {
        spool.remove(id).await.unwrap();
    }
    spool.maintain().await.unwrap();
    assert_eq!(segments(root).len(), 1);
    assert_eq!(spool.stats().messages, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_moves_a_long_deferred_message_and_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (spool, config) = open_small(root, 40_000);
    let deferred = QueueId::generate();
    let body: &[u8] = b"Subject: deferred\r\n\r\nlater\r\n";
    spool
        .commit(&common::envelope_for(&deferred), &[body])
        .await
        .unwrap();
    spool
        .append_state(&deferred, b"T 0 1 first\n")
        .await
        .unwrap();
    let others = commit_until_segments(&spool, root, 3).await;
    spool.append_state(&deferred, b"A 1 99\n").await.unwrap();
    // Everything else in the first segment is delivered.
    for id in &others {
        spool.remove(id).await.unwrap();
    }
    let first = segments(root)[0].clone();
    let done = spool.maintain().await.unwrap();
    assert_eq!(done.segments_compacted, 1, "{done:?}");
    assert_eq!(
        done.records_copied, 2,
        "the message and its first state record"
    );
    assert!(!first.exists(), "the compacted segment is deleted");
    assert_eq!(spool.stats().records_compacted, 2);
    assert_eq!(spool.read(&deferred).unwrap().1, body);
    let states = vec![b"T 0 1 first\n".to_vec(), b"A 1 99\n".to_vec()];
    assert_eq!(spool.state_records(&deferred).unwrap(), states);
    // A maintenance round with nothing to do.
    let idle = spool.maintain().await.unwrap();
    assert_eq!(idle.records_copied, 0);
    drop(spool);

    let (spool, report) = Spool::open(config).unwrap();
    assert_eq!((report.kept, report.state_records), (1, 2));
    assert_eq!(spool.list().unwrap(), vec![deferred]);
    assert_eq!(spool.read(&deferred).unwrap().1, body);
    assert_eq!(spool.state_records(&deferred).unwrap(), states);
    assert!(spool.remove(&deferred).await.unwrap());
    spool.maintain().await.unwrap();
    assert_eq!(segments(root).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_young_or_busy_segment_is_not_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut config = small_config(root, 40_000);
    config.compact_min_age = std::time::Duration::from_secs(3600);
    let (spool, _) = Spool::open(config).unwrap();
    let keep = commit_one(&spool).await;
    let others = commit_until_segments(&spool, root, 2).await;
    for id in &others {
        spool.remove(id).await.unwrap();
    }
    let done = spool.maintain().await.unwrap();
    assert_eq!(done.segments_compacted, 0);
    assert_eq!(segments(root).len(), 2);
    assert_intact(&spool, &keep);
}

/// The tombstone of a message whose segment still exists must outlive compaction
/// and deletion of its own segment, or the message would come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_pinned_by_older_segments_survive() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut config = small_config(root, 30_000);
    // Segments of tombstones get compacted, segment 1 (holding b) does not.
    config.compact_live_ratio = 0.05;
    let (spool, _) = Spool::open(config.clone()).unwrap();
    // Segment 1: a (removed later) and b, large (kept for a while).
    let a = commit_one(&spool).await;
    let b = QueueId::generate();
    let big = vec![b'b'; 20_000];
    spool
        .commit(&common::envelope_for(&b), &[&big])
        .await
        .unwrap();
    commit_until_segments(&spool, root, 2).await;
    let in_two = commit_until_segments(&spool, root, 3).await;
    let filler: Vec<QueueId> = spool
        .list()
        .unwrap()
        .into_iter()
        .filter(|id| *id != a && *id != b && !in_two.contains(id))
        .collect();
    for id in &filler {
        spool.remove(id).await.unwrap();
    }
    // a's tombstone lands in segment 3; then everything of segment 2 goes, and
    // segment 3 fills up so it is sealed too.
    assert!(spool.remove(&a).await.unwrap());
    for id in &in_two {
        spool.remove(id).await.unwrap();
    }
    let in_four = commit_until_segments(&spool, root, 4).await;
    let in_four_only = commit_until_segments(&spool, root, 5).await;
    for id in in_four.iter().chain(&in_four_only) {
        spool.remove(id).await.unwrap();
    }
    // Rounds until nothing changes: segment 1 stays (b), so a's tombstone must too.
    let mut compacted = 0;
    for _ in 0..4 {
        compacted += spool.maintain().await.unwrap().segments_compacted;
    }
    assert!(compacted >= 1, "a segment of tombstones was compacted");
    assert!(segments(root)[0].ends_with("0000000000000001.seg"));
    assert_eq!(spool.list().unwrap(), vec![b]);
    drop(spool);
    let (spool, report) = Spool::open(config.clone()).unwrap();
    assert_eq!(spool.list().unwrap(), vec![b], "{report:#?}");
    // Now b goes: segment 1 is deleted and a's tombstone is no longer needed.
    assert!(spool.remove(&b).await.unwrap());
    for _ in 0..4 {
        spool.maintain().await.unwrap();
    }
    assert_eq!(segments(root).len(), 1);
    drop(spool);
    let (spool, report) = Spool::open(config).unwrap();
    assert_eq!(report.kept, 0);
    assert!(spool.list().unwrap().is_empty());
}

/// A crash between a compaction copy and the deletion of the old segment leaves
/// two copies of a record: recovery keeps one, and removing the message later
/// keeps its tombstone until the stale copy is gone too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_copies_from_an_interrupted_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (spool, config) = open_small(root, 30_000);
    let id = commit_one(&spool).await;
    spool.append_state(&id, b"A 1 5\n").await.unwrap();
    commit_until_segments(&spool, root, 2).await;
    drop(spool);
    // Copy the first segment's first two records verbatim to the end of the log.
    let segs = segments(root);
    let old = std::fs::read(&segs[0]).unwrap();
    let mut pos = SEGMENT_HEADER_LEN;
    let mut copy = Vec::new();
    for _ in 0..2 {
        let h = format::decode_record(&old[pos..]).unwrap();
        copy.extend_from_slice(&old[pos..pos + h.record_len() as usize]);
        pos += h.record_len() as usize;
    }
    let last = segs.last().unwrap();
    let mut bytes = std::fs::read(last).unwrap();
    bytes.extend_from_slice(&copy);
    std::fs::write(last, &bytes).unwrap();

    let (spool, report) = Spool::open(config.clone()).unwrap();
    assert!(report.skipped.is_empty());
    assert_eq!(
        spool.list().unwrap().iter().filter(|i| **i == id).count(),
        1
    );
    assert_intact(&spool, &id);
    assert_eq!(spool.state_records(&id).unwrap(), vec![b"A 1 5\n".to_vec()]);
    // Remove it and everything else; compact and delete what can go.
    for other in spool.list().unwrap() {
        spool.remove(&other).await.unwrap();
    }
    for _ in 0..4 {
        spool.maintain().await.unwrap();
    }
    drop(spool);
    let (spool, report) = Spool::open(config).unwrap();
    assert_eq!(report.kept, 0, "{report:#?}");
    assert!(spool.list().unwrap().is_empty());
}

/// Removals racing compaction: the janitor reads a segment's live records, then
/// some of those messages are removed before its copies reach the committer. A
/// copy of a removed message must never be written (no tombstone would pin it:
/// once the tombstone is released, a recovery would bring the message back).
/// Many rounds, each ending with a reopen that must list only what was kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removals_racing_compaction_never_come_back() {
    let dir = tempfile::tempdir().unwrap();
    // Tiny segments: a tombstone and a later copy often land in different ones.
    let mut config = small_config(dir.path(), 2 << 10);
    config.compact_live_ratio = 0.95;
    config.maintenance_interval = std::time::Duration::from_secs(3600);
    let mut kept: Vec<QueueId> = Vec::new();
    for round in 0..16 {
        let (spool, _) = Spool::open(config.clone()).unwrap();
        assert_eq!(spool.list().unwrap(), kept, "round {round}: after reopen");
        let spool = std::sync::Arc::new(spool);
        let mut ids = Vec::new();
        for _ in 0..80 {
            ids.push(commit_one(&spool).await);
        }
        // Remove three in four, one by one, while compaction runs round after round.
        let (keep, remove): (Vec<_>, Vec<_>) =
            ids.iter().enumerate().partition(|(i, _)| i % 4 == 0);
        let removers: Vec<_> = (0..4)
            .map(|k| {
                let spool = spool.clone();
                let mine: Vec<QueueId> = remove
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % 4 == k)
                    .map(|(_, (_, id))| **id)
                    .collect();
                tokio::spawn(async move {
                    for id in mine {
                        assert!(spool.remove(&id).await.unwrap());
                    }
                })
            })
            .collect();
        while removers.iter().any(|r| !r.is_finished()) {
            spool.maintain().await.unwrap();
        }
        for r in removers {
            r.await.unwrap();
        }
        for _ in 0..4 {
            spool.maintain().await.unwrap();
        }
        kept.extend(keep.into_iter().map(|(_, id)| *id));
        kept.sort();
        assert_eq!(spool.list().unwrap(), kept, "round {round}: in memory");
        // On disk: every record of a removed message is covered by a newer
        // tombstone, so no crash from here on could bring it back.
        let records = log_records(dir.path());
        for (id, lsn) in records
            .iter()
            .filter(|r| r.0 == format::Kind::Message)
            .map(|r| (r.1, r.2))
        {
            if kept.contains(&id) {
                continue;
            }
            assert!(
                records
                    .iter()
                    .any(|r| r.0 == format::Kind::Tombstone && r.1 == id && r.2 > lsn),
                "round {round}: a record of removed {id} (lsn {lsn}) has no tombstone on disk"
            );
        }
        drop(spool);
    }
    let (spool, report) = Spool::open(config).unwrap();
    assert!(report.quarantined.is_empty(), "{report:#?}");
    assert_eq!(spool.list().unwrap(), kept);
    for id in &kept {
        assert_intact(&spool, id);
    }
}

/// (kind, id, lsn) of every whole record in the log's segments.
fn log_records(root: &std::path::Path) -> Vec<(format::Kind, QueueId, u64)> {
    let mut out = Vec::new();
    for path in segments(root) {
        let bytes = std::fs::read(&path).unwrap();
        let mut at = SEGMENT_HEADER_LEN;
        while at + format::RECORD_HEADER_LEN <= bytes.len() {
            let Ok(h) = format::decode_header(&bytes[at..]) else {
                break;
            };
            out.push((h.kind, h.id, h.lsn));
            at += h.record_len() as usize;
        }
    }
    out
}
