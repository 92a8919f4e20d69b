//! Benchmark (not a test): the cost of one plugin call, of a session's first
//! call on a fresh instance and on a recycled one, with the real runtime and
//! real components.
//!
//! Columns: instantiation plus `init`; a session's first call on a fresh
//! instance; its first call on an instance an earlier session used (checkout,
//! `recycle()` and the call; fresh again for plugins that do not export
//! `recycle`); a later call on a live instance with a bare session (just
//! connected); the same with the session of a real transaction (EHLO, MAIL
//! FROM and one recipient lowered into the guest on every call).
//! `BENCH_ONLY=<component>` runs one row; `BENCH_NEXT_ONLY=1` skips the
//! fresh and reused loops (to profile steady-state calls alone).
//!
//! ```sh
//! make plugins
//! cargo run --release -p postern-plugin --example plugin_bench [-- ITERATIONS]
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_plugin::*;

fn wasm(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    for p in [
        target
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_"))),
        root.join("target/plugins").join(format!("{name}.wasm")),
    ] {
        if p.exists() {
            return p;
        }
    }
    panic!("{name}.wasm not built: run `make plugins`");
}

fn spec(name: &str, config: &str) -> PluginSpec {
    PluginSpec {
        name: name.into(),
        path: wasm(name),
        config_json: config.into(),
        on_error: OnError::Tempfail,
        timeout: Duration::from_secs(2),
        max_memory: 64 << 20,
        capabilities: vec!["kv".into()],
        kv_namespace: None,
        mode: Mode::Enforce,
        reuse: true,
        breaker: Default::default(),
        files: Vec::new(),
    }
}

fn ctx(id: &str) -> SessionContext {
    SessionContext::new(
        id.into(),
        "192.0.2.7:4000".parse().unwrap(),
        "127.0.0.1:25".parse().unwrap(),
        "smtp".into(),
        "mx.test".into(),
    )
}

/// The session as a RCPT hook sees it in a real transaction: after EHLO,
/// MAIL FROM and one accepted recipient (the host lowers every field of it
/// into the guest on each call).
fn mid_transaction(id: &str) -> SessionContext {
    let mut c = ctx(id);
    c.helo = Some("client.example.org".into());
    c.esmtp = true;
    c.mail_from = Some(EnvelopeAddress {
        address: "alice@example.org".into(),
        local_part: "alice".into(),
        domain: "example.org".into(),
        params: vec![("SIZE".into(), Some("4096".into()))],
        is_local: false,
    });
    c.recipients = vec![rcpt()];
    c
}

fn rcpt() -> EnvelopeAddress {
    EnvelopeAddress {
        address: "bob@example.test".into(),
        local_part: "bob".into(),
        domain: "example.test".into(),
        params: vec![],
        is_local: true,
    }
}

async fn stage_call(
    chain: &mut SessionChain,
    name: &str,
    c: &SessionContext,
    r: &EnvelopeAddress,
) -> Decision {
    if name == "header-filter" {
        let m = Arc::new(MessageData::new(
            b"From: a@b.test\r\nSubject: hi\r\n\r\nbody\r\n".to_vec(),
        ));
        chain.ask(c, Ask::Data(&m)).await
    } else {
        chain.ask(c, Ask::RcptTo(r)).await
    }
}

fn per(d: Duration, n: u32) -> String {
    format!("{:>9.2} µs", d.as_secs_f64() * 1e6 / n as f64)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let services = Services {
        dns: Arc::new(NoDns),
        kv: Arc::new(MemoryKv::default()),
        mail_auth: Arc::new(postern_plugin::NoMailAuth),
        av: Arc::new(postern_plugin::NoAv),
    };
    let mut cases = vec![
        ("test-rcpt-only", r#"{"blocked":["x"]}"#.to_string()),
        // The same trivial RCPT check, but exporting `recycle`.
        (
            "example-rcpt-blocklist",
            r#"{"blocked":["x@y.test"]}"#.to_string(),
        ),
        ("test-probe", r#"{"tag":"b"}"#.to_string()),
    ];
    for extra in ["greylist", "header-filter"] {
        if std::panic::catch_unwind(|| wasm(extra)).is_ok() {
            let cfg = if extra == "greylist" {
                r#"{"delay":0}"#
            } else {
                "{}"
            };
            cases.push((extra, cfg.to_string()));
        }
    }
    if let Ok(only) = std::env::var("BENCH_ONLY") {
        cases.retain(|(name, _)| *name == only);
    }
    println!("{n} iterations per row, 2 worker threads\n");
    println!(
        "{:<22} {:>12} {:>14} {:>14} {:>14} {:>14}",
        "component", "instantiate", "first (fresh)", "first (reused)", "next call", "next (in txn)"
    );
    for (name, config) in cases {
        let load = |reuse: bool| {
            let mut spec = spec(name, &config);
            spec.reuse = reuse;
            let (rt, services) = (rt.clone(), services.clone());
            async move {
                Arc::new(
                    Generation::load(&rt, 1, "bench".into(), vec![spec], services)
                        .await
                        .unwrap(),
                )
            }
        };
        let generation = load(false).await;
        let c = ctx("s");
        let r = rcpt();
        let rounds = if name == "greylist" || name == "header-filter" {
            n / 10
        } else {
            n
        };
        let rounds_fresh = if std::env::var_os("BENCH_NEXT_ONLY").is_some() {
            1
        } else {
            rounds
        };
        // Instantiation (+ init) and the first call on a fresh instance.
        let mut first = Duration::ZERO;
        let started = Instant::now();
        for i in 0..rounds_fresh {
            let mut chain = generation.session(format!("s{i}").into());
            let t = Instant::now();
            let _ = stage_call(&mut chain, name, &c, &r).await;
            first += t.elapsed();
        }
        let total = started.elapsed();
        // The first call of a session on an instance an earlier session used
        // (when the plugin exports `recycle`; otherwise fresh again).
        let recycled = load(true).await;
        let mut reused = Duration::ZERO;
        for i in 0..rounds_fresh {
            let mut chain = recycled.session(format!("r{i}").into());
            let t = Instant::now();
            let _ = stage_call(&mut chain, name, &c, &r).await;
            reused += t.elapsed();
        }
        // Calls on one live instance.
        let mut chain = generation.session("warm".into());
        let _ = stage_call(&mut chain, name, &c, &r).await;
        let started = Instant::now();
        for _ in 0..rounds {
            let _ = stage_call(&mut chain, name, &c, &r).await;
        }
        let next = started.elapsed();
        let full = mid_transaction("warm");
        let started = Instant::now();
        for _ in 0..rounds {
            let _ = stage_call(&mut chain, name, &full, &r).await;
        }
        let next_full = started.elapsed();
        let stats = rt.stats().for_plugin(name);
        let inst = &stats.instantiate_latency;
        let inst_mean = Duration::from_nanos(
            inst.sum_ns.load(std::sync::atomic::Ordering::Relaxed)
                / inst.count.load(std::sync::atomic::Ordering::Relaxed).max(1),
        );
        println!(
            "{:<22} {:>12} {} {} {} {}   ({} fresh sessions in {:.2?})",
            name,
            format!("{:.2} µs", inst_mean.as_secs_f64() * 1e6),
            per(first, rounds),
            per(reused, rounds),
            per(next, rounds),
            per(next_full, rounds),
            rounds,
            total
        );
    }
}
