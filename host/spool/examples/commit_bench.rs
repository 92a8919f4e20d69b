//! Commit throughput benchmark:
//! `commit_bench <dir> <concurrency[,concurrency...]> <count> [message_bytes]` runs
//! `count` commits from `concurrency` concurrent tasks into a fresh spool under
//! `<dir>`, once with group commit and once with one fdatasync per commit, and prints
//! commits/s and fsyncs (log fdatasyncs plus directory fsyncs) per commit, for each
//! concurrency given, and how long reopening (recovery) takes. Trusts its arguments
//! only after parsing them; writes only below `<dir>/commit-bench-*`, which it
//! removes afterwards.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use postern_spool::{Client, Envelope, QueueId, Recipient, Spool, SpoolConfig};

struct Args {
    dir: PathBuf,
    concurrency: Vec<usize>,
    count: usize,
    message_bytes: usize,
}

fn parse_args() -> Result<Args, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 || args.len() > 4 {
        return Err(
            "usage: commit_bench <dir> <concurrency[,concurrency...]> <count> [message_bytes]"
                .into(),
        );
    }
    let number = |text: &str, what: &str| {
        text.parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{what} must be a positive integer, got {text:?}"))
    };
    Ok(Args {
        dir: PathBuf::from(&args[0]),
        concurrency: args[1]
            .split(',')
            .map(|c| number(c, "concurrency"))
            .collect::<Result<_, _>>()?,
        count: number(&args[2], "count")?,
        message_bytes: args
            .get(3)
            .map_or(Ok(4096), |text| number(text, "message_bytes"))?,
    })
}

fn envelope(id: &QueueId) -> Envelope {
    Envelope {
        queue_id: *id,
        received_at_unix_ms: (id.timestamp_us() / 1000) as u64,
        client: Client {
            helo: Some("bench.example".into()),
            ..Client::at("127.0.0.1", 40000)
        },
        mail_from: "bench@example.org".into(),
        mail_params: vec![],
        recipients: vec![Recipient {
            address: "sink@example.net".into(),
            params: vec![],
        }],
        session_id: "bench".into(),
        quarantine: None,
    }
}

async fn run(
    args: &Args,
    concurrency: usize,
    group_commit: bool,
    body: Arc<Vec<u8>>,
) -> Result<(), String> {
    let dir = args.dir.join(if group_commit {
        "commit-bench-group"
    } else {
        "commit-bench-direct"
    });
    remove(&dir)?;
    let config = SpoolConfig {
        group_commit,
        ..SpoolConfig::new(&dir)
    };
    let (spool, _) = Spool::open(config).map_err(|e| e.to_string())?;
    let spool = Arc::new(spool);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (spool, next, body) = (Arc::clone(&spool), Arc::clone(&next), Arc::clone(&body));
            let count = args.count;
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let id = QueueId::generate();
                    let received = format!("Received: from bench; id {id}\r\n");
                    spool
                        .commit(&envelope(&id), &[received.as_bytes(), &body])
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for worker in workers {
        worker.await.map_err(|e| e.to_string())??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = spool.stats();
    let fsyncs = stats.syncs + stats.dir_fsyncs;
    println!(
        "group_commit={:<5} concurrency={:<4} messages={} x {} B: {:.3} s, {:>6.0} commits/s, {} fsyncs ({:.3} fsyncs per commit, {:.1} commits per fsync)",
        group_commit,
        concurrency,
        stats.commits,
        args.message_bytes,
        elapsed,
        stats.commits as f64 / elapsed,
        fsyncs,
        fsyncs as f64 / stats.commits.max(1) as f64,
        stats.commits as f64 / fsyncs.max(1) as f64,
    );
    drop(spool);
    if group_commit {
        // Recovery reads and verifies every record again.
        let started = Instant::now();
        let (spool, report) = Spool::open(SpoolConfig::new(&dir)).map_err(|e| e.to_string())?;
        println!(
            "  reopen: {} messages in {} segments ({:.0} MiB) recovered in {:.0} ms",
            report.kept,
            report.segments,
            spool.stats().log_bytes as f64 / (1 << 20) as f64,
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    remove(&dir)
}

fn remove(dir: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {}: {e}", dir.display())),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return std::process::ExitCode::from(2);
        }
    };
    let body = Arc::new(vec![b'x'; args.message_bytes]);
    for &concurrency in &args.concurrency {
        for group_commit in [true, false] {
            if let Err(message) = run(&args, concurrency, group_commit, Arc::clone(&body)).await {
                eprintln!("commit_bench: {message}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    std::process::ExitCode::SUCCESS
}
