//! Crash test (RFC 5321 §6.1): a child process commits messages from several tasks and
//! prints each id only after `commit` returned; the parent kills it with SIGKILL in the
//! middle of the run, reopens the spool and checks that every printed id is queued and
//! byte-identical to what the child wrote (content is derived from the id). The child
//! is this same test executable, re-run with `POSTERN_SPOOL_CRASH_CHILD` set.
//! SIGKILL loses the process, not the page cache: power loss is covered by the fsync
//! protocol itself, which this test cannot simulate.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::{assert_intact, commit_one};
use postern_spool::{QueueId, Spool, SpoolConfig};

const CHILD_ENV: &str = "POSTERN_SPOOL_CRASH_CHILD";
const CHILD_TASKS: usize = 8;

/// The child's body; a no-op in a normal test run (the variable is unset).
#[test]
fn crash_child_mode() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (spool, _) = Spool::open(SpoolConfig::new(dir)).expect("child open");
        let spool = Arc::new(spool);
        let tasks: Vec<_> = (0..CHILD_TASKS)
            .map(|_| {
                let spool = Arc::clone(&spool);
                tokio::spawn(async move {
                    loop {
                        let id = commit_one(&spool).await;
                        let mut out = std::io::stdout().lock();
                        out.write_all(format!("COMMITTED {id}\n").as_bytes())
                            .unwrap();
                        out.flush().unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    });
}

/// Run one child until it printed `kill_after` ids, SIGKILL it, return every id it printed.
fn run_child_and_kill(dir: &Path, kill_after: usize) -> Vec<QueueId> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_mode",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut printed = Vec::new();
    let mut killed = false;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        // A line cut short by the kill has no newline and was never a full report.
        if let Some(id) = line
            .strip_prefix("COMMITTED ")
            .and_then(|l| l.strip_suffix('\n'))
        {
            printed.push(id.parse::<QueueId>().unwrap());
        }
        if !killed && printed.len() >= kill_after {
            child.kill().unwrap(); // SIGKILL
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed,
        "child exited on its own ({status}) after {} ids",
        printed.len()
    );
    printed
}

#[test]
fn committed_messages_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut all_printed = BTreeSet::new();
    let mut removed_temp = 0;
    for kill_after in [40, 300, 1000] {
        let printed = run_child_and_kill(dir.path(), kill_after);
        assert!(printed.len() >= kill_after);
        all_printed.extend(printed.iter().copied());

        let (spool, report) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
        removed_temp += report.removed_temp;
        // A renamed file is always complete, so nothing can be corrupt.
        assert!(report.quarantined.is_empty(), "{report:#?}");
        let queued: BTreeSet<QueueId> = spool.list().unwrap().into_iter().collect();
        for id in &all_printed {
            assert!(queued.contains(id), "acknowledged {id} lost");
            assert_intact(&spool, id);
        }
        // Committed-but-unreported messages are complete too (never acknowledged,
        // so delivering them is at worst a duplicate, which RFC 5321 §6.1 accepts).
        for id in &queued {
            assert_intact(&spool, id);
        }
        eprintln!(
            "kill after {kill_after}: printed {}, queued {}, temp files removed {}",
            printed.len(),
            queued.len(),
            report.removed_temp
        );
    }
    eprintln!("temp files of in-flight commits removed over all rounds: {removed_temp}");
}
