//! Commit throughput benchmark: `commit_bench <dir> <concurrency> <count> [message_bytes]`
//! runs `count` commits from `concurrency` concurrent tasks into a fresh spool under
//! `<dir>`, once with group commit and once with one directory fsync per commit, and
//! prints commits/s. Trusts its arguments only after parsing them; writes only below
//! `<dir>/commit-bench-*`, which it removes afterwards.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use postern_spool::{Envelope, QueueId, Recipient, Spool, SpoolConfig};

struct Args {
    dir: PathBuf,
    concurrency: usize,
    count: usize,
    message_bytes: usize,
}

fn parse_args() -> Result<Args, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 || args.len() > 4 {
        return Err("usage: commit_bench <dir> <concurrency> <count> [message_bytes]".into());
    }
    let number = |text: &str, what: &str| {
        text.parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{what} must be a positive integer, got {text:?}"))
    };
    Ok(Args {
        dir: PathBuf::from(&args[0]),
        concurrency: number(&args[1], "concurrency")?,
        count: number(&args[2], "count")?,
        message_bytes: args
            .get(3)
            .map_or(Ok(4096), |text| number(text, "message_bytes"))?,
    })
}

fn envelope(id: &QueueId) -> Envelope {
    Envelope {
        queue_id: id.to_string(),
        received_at_unix_ms: (id.timestamp_us() / 1000) as u64,
        client_ip: "127.0.0.1".into(),
        client_port: 40000,
        helo: Some("bench.example".into()),
        auth_user: None,
        tls: false,
        mail_from: "bench@example.org".into(),
        mail_params: vec![],
        recipients: vec![Recipient {
            address: "sink@example.net".into(),
            params: vec![],
        }],
        session_id: "bench".into(),
    }
}

async fn run(args: &Args, group_commit: bool, body: Arc<Vec<u8>>) -> Result<(), String> {
    let dir = args.dir.join(if group_commit {
        "commit-bench-group"
    } else {
        "commit-bench-direct"
    });
    remove(&dir)?;
    let config = SpoolConfig {
        dir: dir.clone(),
        group_commit,
    };
    let (spool, _) = Spool::open(config).map_err(|e| e.to_string())?;
    let spool = Arc::new(spool);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
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
    println!(
        "group_commit={:<5} concurrency={} messages={} x {} B: {:.3} s, {:.0} commits/s, {} dir fsyncs ({:.1} commits per fsync)",
        group_commit,
        args.concurrency,
        stats.commits,
        args.message_bytes,
        elapsed,
        stats.commits as f64 / elapsed,
        stats.dir_fsyncs,
        stats.commits as f64 / stats.dir_fsyncs.max(1) as f64,
    );
    drop(spool);
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
    for group_commit in [true, false] {
        if let Err(message) = run(&args, group_commit, Arc::clone(&body)).await {
            eprintln!("commit_bench: {message}");
            return std::process::ExitCode::FAILURE;
        }
    }
    std::process::ExitCode::SUCCESS
}
