//! Commit, list, read, read_envelope, open_message, state records and remove against
//! a real directory; the lock; read-only opens.

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;

use common::{assert_intact, commit_one, envelope_for, message_for, segments};
use postern_spool::{QueueId, Spool, SpoolConfig, SpoolError};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_list_read_remove() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("spool");
    let (spool, report) = Spool::open(SpoolConfig::new(&root)).unwrap();
    assert_eq!((report.kept, report.segments), (0, 0));
    assert_eq!(spool.dir(), root);
    for sub in ["log", "corrupt"] {
        assert_eq!(mode(&root.join(sub)), 0o700, "{sub}");
    }
    assert!(!root.join("queue").exists() && !root.join("tmp").exists());

    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(commit_one(&spool).await);
    }
    assert_eq!(spool.list().unwrap(), ids);
    for id in &ids {
        assert_intact(&spool, id);
        assert_eq!(spool.read_envelope(id).unwrap(), envelope_for(id));
    }
    // One segment file, private, holding everything: no file per message.
    let segs = segments(&root);
    assert_eq!(segs.len(), 1);
    assert_eq!(mode(&segs[0]), 0o600);

    let stats = spool.stats();
    assert_eq!((stats.messages, stats.commits, stats.segments), (5, 5, 1));
    assert!(stats.syncs >= 1 && stats.syncs <= 5);
    let on_disk = std::fs::metadata(&segs[0]).unwrap().len();
    assert_eq!(stats.log_bytes, on_disk);
    let payload: u64 = ids.iter().map(|id| message_for(id).len() as u64).sum();
    assert!(stats.bytes > payload && stats.bytes < on_disk);

    // Streaming access, both ways.
    let opened = spool.open_message(&ids[0]).unwrap();
    assert_eq!(opened.message_len, message_for(&ids[0]).len() as u64);
    let mut streamed = Vec::new();
    opened.reader().read_to_end(&mut streamed).unwrap();
    assert_eq!(streamed, message_for(&ids[0]));
    let mut from_file = Vec::new();
    opened
        .into_message_reader()
        .unwrap()
        .read_to_end(&mut from_file)
        .unwrap();
    assert_eq!(from_file, message_for(&ids[0]));

    let before = spool.stats().bytes;
    assert!(spool.remove(&ids[1]).await.unwrap());
    assert!(!spool.remove(&ids[1]).await.unwrap());
    assert!(matches!(spool.read(&ids[1]), Err(SpoolError::NotFound(_))));
    assert!(!spool.remove(&QueueId::generate()).await.unwrap());
    let expected: Vec<QueueId> = ids.iter().copied().filter(|id| *id != ids[1]).collect();
    assert_eq!(spool.list().unwrap(), expected);
    let stats = spool.stats();
    assert_eq!(stats.messages, 4);
    assert!(stats.bytes < before);

    // Reopen: the scan finds the same queue and counters.
    drop(spool);
    let (spool, report) = Spool::open(SpoolConfig::new(&root)).unwrap();
    assert_eq!((report.kept, report.segments), (4, 1));
    assert_eq!(report.truncated_bytes, 0);
    assert!(report.quarantined.is_empty() && report.skipped.is_empty());
    assert_eq!(spool.list().unwrap(), expected);
    assert_eq!(spool.stats().messages, 4);
    for id in &expected {
        assert_intact(&spool, id);
    }
    // It appends to the same segment.
    let more = commit_one(&spool).await;
    assert_eq!(segments(&root).len(), 1);
    drop(spool);
    let (spool, _) = Spool::open(SpoolConfig::new(&root)).unwrap();
    assert_intact(&spool, &more);
}

#[tokio::test(flavor = "current_thread")]
async fn works_on_current_thread_runtime_and_with_large_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    let id = QueueId::generate();
    let big = vec![b'a'; 3 << 20];
    spool
        .commit(&envelope_for(&id), &[b"Received: x\r\n", b"", &big])
        .await
        .unwrap();
    let (_, message) = spool.read(&id).unwrap();
    assert_eq!(message.len(), 13 + big.len());
    assert!(message.starts_with(b"Received: x\r\naaa"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_message_and_large_message_on_multi_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    let empty = QueueId::generate();
    spool.commit(&envelope_for(&empty), &[]).await.unwrap();
    assert_eq!(spool.read(&empty).unwrap().1, b"");
    let large = QueueId::generate();
    let big = vec![b'b'; 5 << 20];
    spool.commit(&envelope_for(&large), &[&big]).await.unwrap();
    assert_eq!(spool.read(&large).unwrap().1, big);
    drop(spool);
    let (spool, report) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    assert_eq!(report.kept, 2);
    assert_eq!(spool.read(&large).unwrap().1, big);
}

#[tokio::test]
async fn rejects_bad_and_duplicate_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    // A bad id cannot be committed because it cannot be made: not parsed,
    // not read from an envelope's JSON.
    assert!(matches!(
        "../../etc/passwd".parse::<QueueId>(),
        Err(SpoolError::BadId(_))
    ));
    let mut json = serde_json::to_value(envelope_for(&QueueId::generate())).unwrap();
    json["queue_id"] = "../../etc/passwd".into();
    let err = serde_json::from_value::<postern_spool::Envelope>(json).unwrap_err();
    assert!(err.to_string().contains("../../etc/passwd"), "{err}");

    let id = commit_one(&spool).await;
    let err = spool
        .commit(&envelope_for(&id), &[b"other"])
        .await
        .unwrap_err();
    assert!(matches!(err, SpoolError::IdInUse(_)), "{err}");
    // The first message is untouched.
    assert_intact(&spool, &id);
    assert_eq!(spool.stats().commits, 1);
}

#[tokio::test]
async fn a_second_open_is_refused_and_read_only_opens_share() {
    let dir = tempfile::tempdir().unwrap();
    // Read-only needs an existing spool.
    assert!(
        Spool::open(SpoolConfig {
            read_only: true,
            ..SpoolConfig::new(dir.path())
        })
        .is_err()
    );
    let (spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    let id = commit_one(&spool).await;
    let read_only = SpoolConfig {
        read_only: true,
        ..SpoolConfig::new(dir.path())
    };
    assert!(matches!(
        Spool::open(SpoolConfig::new(dir.path())),
        Err(SpoolError::Locked { .. })
    ));
    assert!(matches!(
        Spool::open(read_only.clone()),
        Err(SpoolError::Locked { .. })
    ));
    drop(spool);
    let (a, report) = Spool::open(read_only.clone()).unwrap();
    let (b, _) = Spool::open(read_only).unwrap();
    assert_eq!(report.kept, 1);
    assert!(a.is_read_only());
    assert_eq!(a.list().unwrap(), vec![id]);
    assert_intact(&b, &id);
    assert!(matches!(a.remove(&id).await, Err(SpoolError::ReadOnly)));
    assert!(matches!(
        a.append_state(&id, b"x").await,
        Err(SpoolError::ReadOnly)
    ));
    let other = QueueId::generate();
    assert!(matches!(
        a.commit(&envelope_for(&other), &[b"x"]).await,
        Err(SpoolError::ReadOnly)
    ));
    assert!(matches!(
        Spool::open(SpoolConfig::new(dir.path())),
        Err(SpoolError::Locked { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mode_syncs_once_per_commit() {
    let dir = tempfile::tempdir().unwrap();
    let config = SpoolConfig {
        group_commit: false,
        ..SpoolConfig::new(dir.path())
    };
    let (spool, _) = Spool::open(config).unwrap();
    for _ in 0..3 {
        commit_one(&spool).await;
    }
    let stats = spool.stats();
    assert_eq!((stats.commits, stats.syncs), (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_records_are_durable_ordered_and_go_with_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    let mut commits = spool.subscribe();
    let kept = commit_one(&spool).await;
    let gone = commit_one(&spool).await;
    let first = commits.recv().await.unwrap();
    assert_eq!(
        (first.id, first.envelope.queue_id.as_str()),
        (kept, kept.as_str())
    );
    assert!(first.message_len > 0);
    assert_eq!(commits.recv().await.map(|c| c.id), Some(gone));
    assert!(spool.state_records(&kept).unwrap().is_empty());
    for n in 0..5 {
        spool
            .append_state(&kept, format!("A {n} 0\n").as_bytes())
            .await
            .unwrap();
    }
    spool.append_state(&gone, b"D 0 1 x\n").await.unwrap();
    spool.append_state(&kept, b"").await.unwrap();
    let unknown = QueueId::generate();
    assert!(matches!(
        spool.append_state(&unknown, b"x").await,
        Err(SpoolError::NotFound(_))
    ));
    assert!(matches!(
        spool.state_records(&unknown),
        Err(SpoolError::NotFound(_))
    ));
    let want: Vec<Vec<u8>> = (0..5)
        .map(|n| format!("A {n} 0\n").into_bytes())
        .chain([Vec::new()])
        .collect();
    assert_eq!(spool.state_records(&kept).unwrap(), want);

    assert!(spool.remove(&gone).await.unwrap());
    assert!(matches!(
        spool.state_records(&gone),
        Err(SpoolError::NotFound(_))
    ));
    assert!(matches!(
        spool.append_state(&gone, b"x").await,
        Err(SpoolError::NotFound(_))
    ));
    drop(spool);
    let (spool, report) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    assert_eq!((report.kept, report.state_records), (1, 6));
    assert_eq!(spool.state_records(&kept).unwrap(), want);
    assert_eq!(spool.list().unwrap(), vec![kept]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stays_readable_while_it_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    let id = commit_one(&spool).await;
    let opened = spool.open_message(&id).unwrap();
    assert!(spool.remove(&id).await.unwrap());
    assert_eq!(opened.read_message().unwrap(), message_for(&id));
}
