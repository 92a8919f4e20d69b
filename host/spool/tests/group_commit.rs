//! Group commit: many concurrent commits share fdatasyncs of the log, and every one
//! of them is durable and readable afterwards.

mod common;

use std::sync::Arc;

use common::{assert_intact, commit_one};
use postern_spool::{Spool, SpoolConfig};

const COMMITS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_share_fdatasyncs() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    let spool = Arc::new(spool);
    let tasks: Vec<_> = (0..COMMITS)
        .map(|_| {
            let spool = Arc::clone(&spool);
            tokio::spawn(async move { commit_one(&spool).await })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.sort();

    let stats = spool.stats();
    eprintln!(
        "{COMMITS} concurrent commits used {} fdatasyncs",
        stats.syncs
    );
    assert_eq!(stats.commits, COMMITS as u64);
    assert_eq!(stats.messages, COMMITS as u64);
    assert!(stats.syncs >= 1);
    assert!(
        stats.syncs <= COMMITS as u64 / 2,
        "group commit did not batch: {} fsyncs for {COMMITS} commits",
        stats.syncs
    );
    assert_eq!(stats.dir_fsyncs, 0, "no per-message directory work");
    assert_eq!(spool.list().unwrap(), ids);
    for id in &ids {
        assert_intact(&spool, id);
    }

    // Concurrent removes are batched the same way.
    let before = spool.stats().syncs;
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let spool = Arc::clone(&spool);
            let id = *id;
            tokio::spawn(async move { spool.remove(&id).await.unwrap() })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap());
    }
    let stats = spool.stats();
    assert_eq!((stats.messages, stats.bytes), (0, 0));
    assert!(stats.syncs - before <= COMMITS as u64 / 2);
    assert!(spool.list().unwrap().is_empty());
}
