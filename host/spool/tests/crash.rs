//! Crash test (RFC 5321 §6.1): a child process commits messages from several tasks
//! (some from spill files, see `from_file`), appends state records to some and
//! removes others, printing each id only after the call returned; its segments are
//! small and its janitor runs constantly, so rotation, deletion and compaction happen
//! under fire. The parent kills it with SIGKILL in the middle of the run, reopens the
//! spool and checks that every printed commit is queued and byte-identical to what
//! the child wrote (content is derived from the id), every printed state record is
//! there, and every printed removal stuck. The child is this same test executable,
//! re-run with `POSTERN_SPOOL_CRASH_CHILD` set. SIGKILL loses the process, not the
//! page cache: power loss is covered by the fdatasync protocol itself, which this
//! test cannot simulate.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{envelope_for, parts_for, small_config, spill};
use postern_spool::{QUEUE_ID_LEN, QueueId, Spool, SpoolConfig};

const CHILD_ENV: &str = "POSTERN_SPOOL_CRASH_CHILD";

/// About one message in 18 is large (over the segment size) and one in 4.5 small,
/// both committed from a spill file (`commit_file`: the committer copies the body
/// in), so kills also land in the middle of such a copy.
fn from_file(id: &QueueId) -> Option<bool> {
    match id.as_str().as_bytes()[QUEUE_ID_LEN - 1] {
        b'0' | b'1' => Some(true),
        b'2'..=b'9' => Some(false),
        _ => None,
    }
}

/// The message parts the child commits for `id` (derived from it alone).
fn crash_parts(id: &QueueId) -> [Vec<u8>; 3] {
    let mut parts = parts_for(id);
    if from_file(id) == Some(true) {
        let mut n = 0;
        while parts[2].len() < 300 << 10 {
            parts[2]
                .extend_from_slice(format!("{id} large {n} ......................\r\n").as_bytes());
            n += 1;
        }
    }
    parts
}

async fn crash_commit(spool: &Spool) -> QueueId {
    let id = QueueId::generate();
    let [received, added, original] = crash_parts(&id);
    if from_file(&id).is_some() {
        let file = spill(spool, &original);
        let len = original.len() as u64;
        spool
            .commit_file(&envelope_for(&id), &[&received, &added], file, len)
            .await
            .expect("commit_file");
    } else {
        spool
            .commit(&envelope_for(&id), &[&received, &added, &original])
            .await
            .expect("commit");
    }
    id
}

/// Assert `id` reads back exactly as the child wrote it.
fn assert_whole(spool: &Spool, id: &QueueId) {
    let (envelope, message) = spool.read(id).unwrap_or_else(|e| panic!("read {id}: {e}"));
    assert_eq!(envelope, envelope_for(id));
    assert!(
        message == crash_parts(id).concat(),
        "message of {id} differs"
    );
}
const CHILD_TASKS: usize = 8;

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        maintenance_interval: Duration::from_millis(10),
        compact_live_ratio: 0.6,
        ..small_config(dir, 256 << 10)
    }
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes()).unwrap();
    out.flush().unwrap();
}

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
        let (spool, _) = Spool::open(config(Path::new(&dir))).expect("child open");
        let spool = Arc::new(spool);
        let tasks: Vec<_> = (0..CHILD_TASKS)
            .map(|_| {
                let spool = Arc::clone(&spool);
                tokio::spawn(async move {
                    for n in 0u64.. {
                        let id = crash_commit(&spool).await;
                        say(format!("COMMITTED {id}\n"));
                        if n % 3 == 0 {
                            spool.append_state(&id, b"A 1 0\n").await.unwrap();
                            say(format!("STATE {id}\n"));
                        }
                        if n % 4 != 0 {
                            say(format!("REMOVING {id}\n"));
                            assert!(spool.remove(&id).await.unwrap());
                            say(format!("REMOVED {id}\n"));
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    });
}

#[derive(Default)]
struct Printed {
    committed: BTreeSet<QueueId>,
    states: BTreeSet<QueueId>,
    /// Removal started: the message may or may not be gone.
    removing: BTreeSet<QueueId>,
    /// Removal returned: the message must be gone.
    removed: BTreeSet<QueueId>,
}

/// Run one child until it committed `kill_after` messages, SIGKILL it, return what
/// it printed.
fn run_child_and_kill(dir: &Path, kill_after: usize) -> Printed {
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
    let mut printed = Printed::default();
    let mut killed = false;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        // A line cut short by the kill has no newline and was never a full report.
        let Some(line) = line.strip_suffix('\n') else {
            continue;
        };
        let Some((what, id)) = line.split_once(' ') else {
            continue;
        };
        let Ok(id) = id.parse::<QueueId>() else {
            continue;
        };
        match what {
            "COMMITTED" => printed.committed.insert(id),
            "STATE" => printed.states.insert(id),
            "REMOVING" => printed.removing.insert(id),
            "REMOVED" => printed.removed.insert(id),
            _ => false,
        };
        if !killed && printed.committed.len() >= kill_after {
            child.kill().unwrap(); // SIGKILL
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed,
        "child exited on its own ({status}) after {} ids",
        printed.committed.len()
    );
    printed
}

#[test]
fn committed_messages_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = Printed::default();
    let mut truncated = 0;
    let mut states_seen: BTreeMap<QueueId, usize> = BTreeMap::new();
    for kill_after in [40, 300, 1000, 3000] {
        let printed = run_child_and_kill(dir.path(), kill_after);
        assert!(printed.committed.len() >= kill_after);
        all.committed.extend(&printed.committed);
        all.states.extend(&printed.states);
        all.removing.extend(&printed.removing);
        all.removed.extend(&printed.removed);

        let (spool, report) = Spool::open(config(dir.path())).unwrap();
        truncated += report.truncated_bytes;
        // SIGKILL can only tear the tail of the log: nothing may be corrupt.
        assert!(
            report.quarantined.is_empty() && report.skipped.is_empty(),
            "{report:#?}"
        );
        let queued: BTreeSet<QueueId> = spool.list().unwrap().into_iter().collect();
        for id in &all.committed {
            if all.removed.contains(id) {
                assert!(!queued.contains(id), "removed {id} came back");
            } else if all.removing.contains(id) {
                // Interrupted removal: either way is right.
            } else {
                if !queued.contains(id) {
                    let kept = dir.keep();
                    panic!("acknowledged {id} lost; spool kept at {}", kept.display());
                }
                assert_whole(&spool, id);
            }
        }
        for id in all.states.difference(&all.removing) {
            let records = spool.state_records(id).unwrap();
            assert_eq!(records, vec![b"A 1 0\n".to_vec()], "state of {id}");
            states_seen.insert(*id, records.len());
        }
        // Committed-but-unreported messages are complete too (never acknowledged,
        // so delivering them is at worst a duplicate, which RFC 5321 §6.1 accepts).
        for id in &queued {
            assert_whole(&spool, id);
        }
        let stats = spool.stats();
        let deleted = stats.segments_deleted;
        eprintln!(
            "kill after {kill_after}: printed {} commits, {} removals; queued {}; torn tail cut {} bytes; {} segments ({deleted} deleted since open)",
            printed.committed.len(),
            printed.removed.len(),
            queued.len(),
            report.truncated_bytes,
            stats.segments
        );
        // The spool is dropped here, before the next child opens it.
    }
    eprintln!(
        "torn tails of in-flight appends cut over all rounds: {truncated} bytes; {} state records checked",
        states_seen.len()
    );
}
