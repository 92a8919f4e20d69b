//! Shared helpers for the spool tests: envelopes and messages derived entirely from
//! the queue id, so a test (or a crash-test parent) can recompute what was written.
#![allow(dead_code)]

use postern_spool::{Client, Envelope, QueueId, Recipient};

/// The envelope a test commits for `id`.
pub fn envelope_for(id: &QueueId) -> Envelope {
    let seed = seed(id);
    Envelope {
        queue_id: *id,
        received_at_unix_ms: (id.timestamp_us() / 1000) as u64,
        client: Client {
            client_ip: format!("192.0.2.{}", seed % 250),
            client_port: (seed % 60_000) as u16 + 1024,
            helo: Some("client.example".into()),
            auth_user: (seed.is_multiple_of(2)).then(|| "alice".to_string()),
            tls: seed.is_multiple_of(3),
        },
        mail_from: if seed.is_multiple_of(5) {
            String::new()
        } else {
            "sender@example.org".into()
        },
        mail_params: vec!["SIZE=1000".into(), "BODY=8BITMIME".into()],
        recipients: (0..1 + seed % 3)
            .map(|n| Recipient {
                address: format!("rcpt{n}@example.net"),
                params: vec!["NOTIFY=FAILURE,DELAY".into()],
            })
            .collect(),
        session_id: format!("sess-{id}"),
        quarantine: None,
    }
}

/// The three message parts a test commits for `id` (Received, added header, message).
pub fn parts_for(id: &QueueId) -> [Vec<u8>; 3] {
    let seed = seed(id);
    let received = format!("Received: from client.example; id {id}\r\n").into_bytes();
    let added = b"X-Spool-Test: yes\r\n".to_vec();
    let mut original = format!("Message-ID: <{id}@test>\r\nSubject: test\r\n\r\n").into_bytes();
    let lines = seed % 400;
    for n in 0..lines {
        original.extend_from_slice(
            format!("{id} line {n} .............................\r\n").as_bytes(),
        );
    }
    [received, added, original]
}

/// The whole message bytes expected back for `id`.
pub fn message_for(id: &QueueId) -> Vec<u8> {
    parts_for(id).concat()
}

fn seed(id: &QueueId) -> u64 {
    // FNV-1a: stable across processes, unlike std's RandomState.
    id.as_str().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Commit the id-derived message for a fresh id.
pub async fn commit_one(spool: &postern_spool::Spool) -> QueueId {
    let id = QueueId::generate();
    let parts = parts_for(&id);
    let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    spool
        .commit(&envelope_for(&id), &slices)
        .await
        .expect("commit");
    id
}

/// Commit the id-derived message for a fresh id the way a large message is
/// committed: its original part written to a spill file, the rest in memory.
pub async fn commit_one_file(spool: &postern_spool::Spool) -> QueueId {
    let id = QueueId::generate();
    let [received, added, original] = parts_for(&id);
    commit_spilled(spool, &id, &[&received, &added], &original).await;
    id
}

/// Commit `id` with its test envelope the way a large message is committed:
/// `head` in memory, then `original` from a spill file.
pub async fn commit_spilled(
    spool: &postern_spool::Spool,
    id: &QueueId,
    head: &[&[u8]],
    original: &[u8],
) {
    let file = spill(spool, original);
    spool
        .commit_file(&envelope_for(id), head, file, original.len() as u64)
        .await
        .expect("commit_file");
}

/// A spill file of `spool` holding `content`.
pub fn spill(spool: &postern_spool::Spool, content: &[u8]) -> std::sync::Arc<std::fs::File> {
    use std::io::Write;
    let mut file = spool.spill_file().expect("spill file");
    file.write_all(content).expect("write spill file");
    std::sync::Arc::new(file)
}

/// The segment files of the spool at `root`, in log order.
pub fn segments(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(root.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    out.sort();
    out
}

/// Commit messages (as [`commit_one`]) until the spool at `root` has `count`
/// segment files; their ids, in order.
pub async fn commit_until_segments(
    spool: &postern_spool::Spool,
    root: &std::path::Path,
    count: usize,
) -> Vec<QueueId> {
    let mut ids = Vec::new();
    while segments(root).len() < count {
        ids.push(commit_one(spool).await);
    }
    ids
}

/// A config for `root` with small segments and immediate compaction, for tests.
pub fn small_config(root: &std::path::Path, segment_size: u64) -> postern_spool::SpoolConfig {
    postern_spool::SpoolConfig {
        segment_size,
        compact_min_age: std::time::Duration::ZERO,
        maintenance_interval: std::time::Duration::from_secs(3600),
        ..postern_spool::SpoolConfig::new(root)
    }
}

/// A spool opened at `root` with [`small_config`], and that config (to open it
/// again).
pub fn open_small(
    root: &std::path::Path,
    segment_size: u64,
) -> (postern_spool::Spool, postern_spool::SpoolConfig) {
    let config = small_config(root, segment_size);
    let (spool, _) = postern_spool::Spool::open(config.clone()).expect("open spool");
    (spool, config)
}

/// Assert `id` reads back exactly as written.
pub fn assert_intact(spool: &postern_spool::Spool, id: &QueueId) {
    let (envelope, message) = spool.read(id).unwrap_or_else(|e| panic!("read {id}: {e}"));
    assert_eq!(envelope, envelope_for(id));
    assert!(message == message_for(id), "message of {id} differs");
}
