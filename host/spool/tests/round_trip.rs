//! Commit, list, read, read_envelope, open_message and remove against a real directory.

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;

use common::{assert_intact, commit_one, envelope_for, message_for};
use postern_spool::{QueueId, Spool, SpoolConfig, SpoolError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_list_read_remove() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, report) = Spool::open(SpoolConfig::new(dir.path().join("spool"))).unwrap();
    assert_eq!(report.kept, 0);
    assert_eq!(spool.dir(), dir.path().join("spool"));
    for sub in ["tmp", "queue", "corrupt"] {
        let mode = std::fs::metadata(spool.dir().join(sub))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{sub}");
    }

    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(commit_one(&spool).await);
    }
    assert_eq!(spool.list().unwrap(), ids);
    for id in &ids {
        assert_intact(&spool, id);
        assert_eq!(spool.read_envelope(id).unwrap(), envelope_for(id));
        let mode = std::fs::metadata(spool.path_of(id))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(
        std::fs::read_dir(spool.dir().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );

    let stats = spool.stats();
    assert_eq!(stats.messages, 5);
    assert_eq!(stats.commits, 5);
    let on_disk: u64 = ids
        .iter()
        .map(|id| std::fs::metadata(spool.path_of(id)).unwrap().len())
        .sum();
    assert_eq!(stats.bytes, on_disk);
    assert!(stats.dir_fsyncs >= 1);

    // Streaming access.
    let opened = spool.open_message(&ids[0]).unwrap();
    assert_eq!(opened.message_len, message_for(&ids[0]).len() as u64);
    let mut streamed = Vec::new();
    opened
        .into_message_reader()
        .unwrap()
        .read_to_end(&mut streamed)
        .unwrap();
    assert_eq!(streamed, message_for(&ids[0]));

    let removed_len = std::fs::metadata(spool.path_of(&ids[1])).unwrap().len();
    assert!(spool.remove(&ids[1]).await.unwrap());
    assert!(!spool.remove(&ids[1]).await.unwrap());
    assert!(matches!(spool.read(&ids[1]), Err(SpoolError::NotFound(_))));
    assert!(!spool.remove(&QueueId::generate()).await.unwrap());
    let expected: Vec<QueueId> = ids.iter().copied().filter(|id| *id != ids[1]).collect();
    assert_eq!(spool.list().unwrap(), expected);
    let stats = spool.stats();
    assert_eq!(stats.messages, 4);
    assert_eq!(stats.bytes, on_disk - removed_len);

    // Reopen: the scan finds the same queue and counters.
    drop(spool);
    let (spool, report) = Spool::open(SpoolConfig::new(dir.path().join("spool"))).unwrap();
    assert_eq!(report.kept, 4);
    assert!(report.quarantined.is_empty());
    assert_eq!(spool.list().unwrap(), expected);
    assert_eq!(spool.stats().messages, 4);
    for id in &expected {
        assert_intact(&spool, id);
    }
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
}

#[tokio::test]
async fn rejects_bad_and_duplicate_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    let mut envelope = envelope_for(&QueueId::generate());
    envelope.queue_id = "../../etc/passwd".into();
    assert!(matches!(
        spool.commit(&envelope, &[b"x"]).await,
        Err(SpoolError::BadId(_))
    ));

    let id = commit_one(&spool).await;
    let err = spool
        .commit(&envelope_for(&id), &[b"other"])
        .await
        .unwrap_err();
    assert!(matches!(err, SpoolError::IdInUse(_)), "{err}");
    // The first message is untouched and no temp file is left.
    assert_intact(&spool, &id);
    assert!(
        std::fs::read_dir(dir.path().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );
    assert_eq!(spool.stats().commits, 1);
}

#[tokio::test]
async fn list_ignores_sidecars_and_a_second_open_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    let id = commit_one(&spool).await;
    std::fs::write(dir.path().join(format!("queue/{id}.state")), b"journal").unwrap();
    assert_eq!(spool.list().unwrap(), vec![id]);
    assert!(matches!(
        Spool::open(SpoolConfig::new(dir.path())),
        Err(SpoolError::Locked { .. })
    ));
    drop(spool);
    let (spool, report) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    assert_eq!(report.kept, 1);
    assert!(report.quarantined.is_empty());
    assert!(dir.path().join(format!("queue/{id}.state")).exists());
    assert_eq!(spool.list().unwrap(), vec![id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mode_syncs_once_per_commit() {
    let dir = tempfile::tempdir().unwrap();
    let config = SpoolConfig {
        dir: dir.path().to_path_buf(),
        group_commit: false,
    };
    let (spool, _) = Spool::open(config).unwrap();
    for _ in 0..3 {
        commit_one(&spool).await;
    }
    let stats = spool.stats();
    assert_eq!((stats.commits, stats.dir_fsyncs), (3, 3));
}

#[tokio::test]
async fn remove_deletes_the_state_journal_and_open_collects_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    let mut commits = spool.subscribe();
    let kept = commit_one(&spool).await;
    let gone = commit_one(&spool).await;
    assert_eq!(commits.recv().await, Some(kept));
    assert_eq!(commits.recv().await, Some(gone));
    assert_eq!(
        spool.state_path(&kept),
        dir.path().join(format!("queue/{kept}.state"))
    );
    std::fs::write(spool.state_path(&kept), b"journal").unwrap();
    std::fs::write(spool.state_path(&gone), b"journal").unwrap();
    assert!(spool.remove(&gone).await.unwrap());
    assert!(!spool.state_path(&gone).exists());
    assert!(spool.state_path(&kept).exists());
    // A crash between the two unlinks leaves an orphan; the next open collects it.
    let orphan = QueueId::generate();
    std::fs::write(spool.state_path(&orphan), b"journal").unwrap();
    drop(spool);
    let (spool, report) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    assert!(report.quarantined.is_empty());
    assert!(!spool.state_path(&orphan).exists());
    assert!(spool.state_path(&kept).exists());
    assert_eq!(spool.list().unwrap(), vec![kept]);
}
