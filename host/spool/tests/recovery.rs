//! Start-up recovery: temp files are removed, damaged queue files are quarantined to
//! `corrupt/` with a reason (never deleted), good ones and sidecars are kept.

mod common;

use std::path::Path;

use common::{assert_intact, commit_one};
use postern_spool::{QueueId, Spool, SpoolConfig};

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_cleans_temp_and_quarantines_damage() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (spool, _) = Spool::open(SpoolConfig::new(root)).unwrap();
    let mut good = Vec::new();
    for _ in 0..3 {
        good.push(commit_one(&spool).await);
    }
    drop(spool);

    let queue = root.join("queue");
    let sample = std::fs::read(queue.join(good[0].as_str())).unwrap();
    let header_end = sample.iter().position(|&b| b == b'\n').unwrap() + 1;

    // Half-written temp files of an interrupted commit.
    write(
        &root.join("tmp").join(QueueId::generate().as_str()),
        &sample[..10],
    );
    write(&root.join("tmp").join("leftover"), b"");

    let mut expect_bad: Vec<(String, &str)> = Vec::new();
    let mut bad = |contents: &[u8], reason: &'static str| {
        let id = QueueId::generate();
        write(&queue.join(id.as_str()), contents);
        expect_bad.push((id.to_string(), reason));
    };
    bad(&sample[..sample.len() / 2], "file is");
    bad(
        b"hello world\r\nthis is not a spool file\r\n",
        "header does not start",
    );
    bad(
        &[sample.as_slice(), b"trailing"].concat(),
        "but its header announces",
    );
    bad(b"", "empty file");
    bad(b"POSTERN-SPOOL 1 12345678901234567890", "no header line");
    bad(b"POSTERN-SPOOL 7 1 1\n{}\nx", "unsupported format version");
    // Right lengths, broken separator / JSON / id.
    let mut no_separator = sample.clone();
    let sep = sample.len() - common::message_for(&good[0]).len() - 1;
    no_separator[sep] = b' ';
    bad(&no_separator, "missing newline");
    let mut broken_json = sample.clone();
    broken_json[header_end] = b'[';
    bad(&broken_json, "envelope is not valid JSON");
    bad(&sample, "does not match file name");
    write(&queue.join("notes.txt"), b"stray");
    expect_bad.push(("notes.txt".into(), "unexpected file name"));
    std::fs::create_dir(queue.join("subdir")).unwrap();
    expect_bad.push(("subdir".into(), "unexpected file name"));
    let sidecar = queue.join(format!("{}.state", good[1]));
    write(&sidecar, b"delivery journal");

    let (spool, report) = Spool::open(SpoolConfig::new(root)).unwrap();
    assert_eq!(report.kept, 3);
    assert_eq!(report.removed_temp, 2);
    assert_eq!(report.quarantined.len(), expect_bad.len(), "{report:#?}");
    for (name, reason) in &expect_bad {
        let found = report
            .quarantined
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} not quarantined: {report:#?}"));
        assert!(
            found.1.contains(reason),
            "{name}: {:?} lacks {reason:?}",
            found.1
        );
        // Moved, not deleted, with the reason beside it.
        assert!(!queue.join(name).exists());
        assert!(root.join("corrupt").join(name).exists());
        let note = std::fs::read_to_string(root.join("corrupt").join(format!("{name}.reason")));
        assert!(note.unwrap().contains(reason));
    }
    assert!(
        std::fs::read_dir(root.join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );
    assert!(sidecar.exists());
    assert_eq!(spool.list().unwrap(), good);
    for id in &good {
        assert_intact(&spool, id);
    }
    let stats = spool.stats();
    assert_eq!(stats.messages, 3);
    let bytes: u64 = good
        .iter()
        .map(|id| std::fs::metadata(spool.path_of(id)).unwrap().len())
        .sum();
    assert_eq!(stats.bytes, bytes);

    // A second bad file with a name already in corrupt/ gets a fresh name there.
    drop(spool);
    write(&queue.join("notes.txt"), b"stray again");
    let (_spool, report) = Spool::open(SpoolConfig::new(root)).unwrap();
    assert_eq!(report.kept, 3);
    assert_eq!(report.quarantined.len(), 1);
    assert_eq!(
        std::fs::read(root.join("corrupt/notes.txt")).unwrap(),
        b"stray"
    );
    assert_eq!(
        std::fs::read(root.join("corrupt/notes.txt.1")).unwrap(),
        b"stray again"
    );
}

#[tokio::test]
async fn reading_a_damaged_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    let id = commit_one(&spool).await;
    let path = spool.path_of(&id);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let err = spool.read(&id).unwrap_err();
    assert!(
        matches!(err, postern_spool::SpoolError::Corrupt { .. }),
        "{err}"
    );
    assert!(spool.read_envelope(&id).is_err());
}
