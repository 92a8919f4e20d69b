//! Loads the non-Rust plugins (Python `greylist`, JavaScript
//! `header-filter`, built by `plugins/<name>/build.sh` into
//! `target/plugins/`) into the real runtime and drives their stages, to prove
//! that components from other guest toolchains link against the host and
//! behave. Also measures, and prints, each component's smallest workable
//! `max_memory` and its instantiate+init+call latency (no timing asserts).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_plugin::*;

mod common;
use common::{load, rcpt_verdict, runtime, services};

/// `target/plugins/<name>.wasm` at the repository root: build.sh writes there
/// whatever CARGO_TARGET_DIR says.
fn plugin_wasm(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let p = root.join("target/plugins").join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: build it first with `plugins/{name}/build.sh`",
        p.display()
    );
    p
}

fn spec(name: &str, file: &str, config: serde_json::Value, kv: bool) -> PluginSpec {
    PluginSpec {
        name: name.into(),
        path: plugin_wasm(file),
        config_json: config.to_string(),
        on_error: OnError::Tempfail,
        // Generous: these tests check behaviour, not speed (a debug build of
        // the host or a loaded CI machine is much slower than production).
        timeout: Duration::from_secs(5),
        max_memory: 128 << 20,
        capabilities: if kv { vec!["kv".into()] } else { vec![] },
        kv_namespace: None,
        mode: Mode::Enforce,
        reuse: true,
        breaker: Default::default(),
        files: Vec::new(),
    }
}

fn ctx(id: &str, client: &str) -> SessionContext {
    let mut c = SessionContext::new(
        id.into(),
        client.parse().unwrap(),
        "127.0.0.1:25".parse().unwrap(),
        "smtp".into(),
        "mx.test".into(),
    );
    c.helo = Some("client.test".into());
    c.esmtp = true;
    c
}

fn addr(a: &str) -> EnvelopeAddress {
    let (l, d) = a.split_once('@').unwrap_or((a, ""));
    EnvelopeAddress {
        address: a.into(),
        local_part: l.into(),
        domain: d.into(),
        params: vec![],
        is_local: d == "example.org",
    }
}

fn with_sender(mut c: SessionContext, from: &str) -> SessionContext {
    c.mail_from = Some(addr(from));
    c
}

fn defer_text(d: &Decision) -> String {
    match &d.verdict {
        Verdict::Defer(r) => {
            assert_eq!(
                (r.code, r.enhanced.as_deref()),
                (451, Some("4.7.1")),
                "{d:?}"
            );
            r.text.clone()
        }
        other => panic!("expected a 451 4.7.1 defer, got {other:?}"),
    }
}

/// Per-session cost: a fresh chain's first call (instantiate + init + call)
/// and a second call on the same instance (call only).
struct Latency {
    first: Vec<Duration>,
    again: Vec<Duration>,
}

impl Latency {
    fn new() -> Self {
        Latency {
            first: Vec::new(),
            again: Vec::new(),
        }
    }

    fn report(&mut self, what: &str) {
        fn stats(v: &mut [Duration]) -> String {
            v.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            let mean = v.iter().map(|d| ms(*d)).sum::<f64>() / v.len() as f64;
            format!(
                "median {:.2} ms, mean {:.2} ms, min {:.2} ms, max {:.2} ms (n={})",
                ms(v[v.len() / 2]),
                mean,
                ms(v[0]),
                ms(v[v.len() - 1]),
                v.len()
            )
        }
        println!(
            "[polyglot] {what}: a session's first call (recycled instance) {}",
            stats(&mut self.first)
        );
        println!(
            "[polyglot] {what}: call on a live instance {}",
            stats(&mut self.again)
        );
    }
}

/// `plugin` exports `recycle`: at least `sessions` sessions ran on reused
/// instances, and an instance waits for the next.
fn assert_reused(rt: &Runtime, generation: &Generation, plugin: &str, sessions: u64) {
    let stats = rt.stats().for_plugin(plugin);
    let reuses = stats.reuses.load(std::sync::atomic::Ordering::Relaxed);
    assert!(reuses >= sessions, "{plugin}: {reuses} reuses");
    let idle = generation.idle_instances();
    assert!(
        idle.iter().any(|(name, n)| name == plugin && *n >= 1),
        "{idle:?}"
    );
}

/// The smallest `max_memory` (in MiB) with which the plugin loads, inits and
/// answers `probe`; found by bisection over whole MiB.
async fn min_memory_mib<F, Fut>(rt: &Arc<Runtime>, base: &PluginSpec, probe: F) -> usize
where
    F: Fn(Arc<Generation>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let works = |mib: usize| {
        let mut s = base.clone();
        s.max_memory = mib << 20;
        let rt = rt.clone();
        let probe = &probe;
        async move {
            match Generation::load(&rt, 1, "mem".into(), vec![s], services()).await {
                Ok(g) => probe(Arc::new(g)).await,
                Err(_) => false,
            }
        }
    };
    let (mut lo, mut hi) = (1usize, 256usize);
    assert!(works(hi).await, "does not run even with {hi} MiB");
    while lo < hi {
        let mid = (lo + hi) / 2;
        if works(mid).await {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greylist_python() {
    let rt = runtime();
    let config = serde_json::json!({
        "delay": 1,
        "retry_window": 60,
        "whitelist_networks": ["127.0.0.0/8", "::1/128", "198.51.100.0/24"],
    });
    let started = Instant::now();
    let generation = load(
        &rt,
        vec![spec("greylist", "greylist", config.clone(), true)],
        services(),
    )
    .await;
    println!(
        "[polyglot] greylist: compile+load+init check {:.0} ms ({} bytes)",
        started.elapsed().as_secs_f64() * 1000.0,
        std::fs::metadata(plugin_wasm("greylist")).unwrap().len()
    );
    assert_eq!(generation.plugins()[0].stages, vec![Stage::RcptTo]);

    // First sight: 451 4.7.1 for `delay` seconds, from any address of the /24.
    let c = with_sender(ctx("g1", "192.0.2.7:4000"), "Sender@Remote.TEST");
    let mut chain = generation.session("g1".into());
    let d = chain.ask(&c, Ask::RcptTo(&addr("user@example.org"))).await;
    assert_eq!(d.decided_by.as_deref(), Some("greylist"));
    assert_eq!(defer_text(&d), "Greylisted, please try again in 1 seconds");
    let c2 = with_sender(ctx("g2", "192.0.2.200:4000"), "sender@remote.test");
    let mut chain2 = generation.session("g2".into());
    let d = chain2
        .ask(&c2, Ask::RcptTo(&addr("USER@example.org")))
        .await;
    assert!(defer_text(&d).starts_with("Greylisted"));
    // Whitelisted networks and authenticated sessions are never greylisted.
    for (client, user) in [
        ("198.51.100.5:4000", None),
        ("127.0.0.1:4000", None),
        ("[::1]:4000", None),
        ("203.0.113.9:4000", Some("alice")),
    ] {
        let mut c = with_sender(ctx("w", client), "a@remote.test");
        c.auth_user = user.map(String::from);
        let mut chain = generation.session("w".into());
        let d = chain.ask(&c, Ask::RcptTo(&addr("user@example.org"))).await;
        assert_eq!(d.verdict, Verdict::Pass, "{client} {user:?}: {d:?}");
    }
    // A retry after the delay passes (pass, not accept: relay control and
    // mailbox checks still apply), in a later session as in real life.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut chain = generation.session("g3".into());
    let d = chain.ask(&c, Ask::RcptTo(&addr("user@example.org"))).await;
    assert_eq!(d.verdict, Verdict::Pass, "{d:?}");
    // ...and so does the same triplet again, immediately.
    assert_eq!(
        rcpt_verdict(&mut chain, &c, &addr("user@example.org")).await,
        Verdict::Pass
    );
    // The null sender is its own triplet.
    let bounce = with_sender(ctx("g4", "192.0.2.7:4000"), "");
    assert!(
        defer_text(
            &chain
                .ask(&bounce, Ask::RcptTo(&addr("user@example.org")))
                .await
        )
        .starts_with("Greylisted")
    );
    drop((chain, chain2));

    // Without the kv capability: fail safe with a 4xx.
    let denied = load(
        &rt,
        vec![spec("greylist-nokv", "greylist", config.clone(), false)],
        services(),
    )
    .await;
    let mut chain = denied.session("n1".into());
    let d = chain.ask(&c, Ask::RcptTo(&addr("user@example.org"))).await;
    assert_eq!(defer_text(&d), "Greylisting temporarily unavailable");
    drop(chain);

    // Unknown configuration keys are refused, by name.
    let err = Generation::load(
        &rt,
        1,
        "t".into(),
        vec![spec(
            "gl",
            "greylist",
            serde_json::json!({"delay": 5, "dealy": 5}),
            true,
        )],
        services(),
    )
    .await
    .err()
    .expect("an unknown key must be refused");
    assert!(
        err.to_string()
            .contains("unknown configuration key(s): dealy"),
        "{err}"
    );

    // Latency: each session's first call and a second one.
    let mut lat = Latency::new();
    for i in 0..20 {
        let c = with_sender(ctx("l", &format!("10.{i}.0.1:4000")), "a@remote.test");
        let mut chain = generation.session(format!("l{i}").into());
        let t = Instant::now();
        let d = chain.ask(&c, Ask::RcptTo(&addr("user@example.org"))).await;
        lat.first.push(t.elapsed());
        assert!(matches!(d.verdict, Verdict::Defer(_)), "{d:?}");
        let t = Instant::now();
        chain.ask(&c, Ask::RcptTo(&addr("other@example.org"))).await;
        lat.again.push(t.elapsed());
    }
    lat.report("greylist (Python)");
    // greylist exports `recycle`: the sequential sessions above were served
    // by the instance loading had checked, not by new Python interpreters.
    assert_reused(&rt, &generation, "greylist", 20);

    let base = spec("greylist-mem", "greylist", config, true);
    let mib = min_memory_mib(&rt, &base, |g| async move {
        let c = with_sender(ctx("m", "192.0.2.9:4000"), "a@remote.test");
        let mut chain = g.session("m".into());
        matches!(
            rcpt_verdict(&mut chain, &c, &addr("user@example.org")).await,
            Verdict::Defer(ref r) if r.enhanced.as_deref() == Some("4.7.1")
        )
    })
    .await;
    println!("[polyglot] greylist (Python): smallest working max_memory {mib} MiB");
}

const GOOD_HEADERS: &str = "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\
    Message-ID: <1@remote.test>\r\n";

fn msg(headers: &str) -> Arc<MessageData> {
    Arc::new(MessageData::new(
        format!("{headers}\r\nHello.\r\n").into_bytes(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_filter_javascript() {
    let rt = runtime();
    let config = serde_json::json!({
        "local_domains": ["example.org"],
        "trusted_networks": ["127.0.0.0/8", "198.51.100.0/24"],
        "rules": [
            {"header": "Subject", "pattern": "^buy now", "flags": "i", "action": "reject", "text": "Spam subject"},
            {"header": "X-Mailer", "pattern": "bulk", "flags": "i", "text": "bulk mailer"},
        ],
    });
    let started = Instant::now();
    let generation = load(
        &rt,
        vec![spec(
            "header-filter",
            "header-filter",
            config.clone(),
            false,
        )],
        services(),
    )
    .await;
    println!(
        "[polyglot] header-filter: compile+load+init check {:.0} ms ({} bytes)",
        started.elapsed().as_secs_f64() * 1000.0,
        std::fs::metadata(plugin_wasm("header-filter"))
            .unwrap()
            .len()
    );
    assert_eq!(generation.plugins()[0].stages, vec![Stage::Data]);
    let stranger = with_sender(ctx("h1", "192.0.2.7:4000"), "a@remote.test");
    let mut chain = generation.session("h1".into());

    // No Date, no Message-ID: tagged, passed on.
    let d = chain
        .ask(
            &stranger,
            Ask::Data(&msg("From: a@remote.test\r\nSubject: hi\r\n")),
        )
        .await;
    assert_eq!(d.verdict, Verdict::Pass, "{d:?}");
    assert_eq!(
        d.headers,
        vec![(
            "X-Postern-Filter".to_string(),
            "missing Date header, missing Message-ID header".to_string()
        )]
    );
    // A clean message: nothing added.
    let clean = format!("From: a@remote.test\r\n{GOOD_HEADERS}Subject: hi\r\n");
    let d = chain.ask(&stranger, Ask::Data(&msg(&clean))).await;
    assert_eq!(
        (d.verdict.clone(), d.headers.len()),
        (Verdict::Pass, 0),
        "{d:?}"
    );
    // A rule with action "reject": 554 5.7.1.
    let spam = format!("From: a@remote.test\r\n{GOOD_HEADERS}Subject: BUY NOW\r\n cheap\r\n");
    let d = chain.ask(&stranger, Ask::Data(&msg(&spam))).await;
    assert_eq!(d.decided_by.as_deref(), Some("header-filter"));
    assert_eq!(
        d.verdict,
        Verdict::Reject(PluginReply {
            code: 554,
            enhanced: Some("5.7.1".into()),
            text: "Message rejected: Spam subject".into(),
        })
    );
    // A tagging rule on a folded header.
    let bulk = format!("From: a@remote.test\r\n{GOOD_HEADERS}X-Mailer: Super\r\n Bulk 2\r\n");
    let d = chain.ask(&stranger, Ask::Data(&msg(&bulk))).await;
    assert_eq!(
        d.headers,
        vec![("X-Postern-Filter".into(), "bulk mailer".into())]
    );
    // A local From domain from an unauthenticated, untrusted client.
    let spoof = format!("From: \"The Boss\" <boss@EXAMPLE.org>\r\n{GOOD_HEADERS}Subject: pay\r\n");
    let d = chain.ask(&stranger, Ask::Data(&msg(&spoof))).await;
    assert_eq!(d.verdict, Verdict::Pass, "{d:?}");
    assert_eq!(
        d.headers,
        vec![(
            "X-Postern-Filter".into(),
            "local sender domain example.org from an unauthenticated client".into()
        )]
    );
    drop(chain);
    // The same From is fine once authenticated, or from a trusted network.
    let mut authed = stranger.clone();
    authed.auth_user = Some("boss".into());
    let trusted = with_sender(ctx("h2", "198.51.100.7:4000"), "boss@example.org");
    for c in [authed, trusted] {
        let mut chain = generation.session("h2".into());
        let d = chain.ask(&c, Ask::Data(&msg(&spoof))).await;
        assert_eq!(
            (d.verdict.clone(), d.headers.len()),
            (Verdict::Pass, 0),
            "{d:?}"
        );
    }

    // With action = "reject" the built-in checks refuse.
    let mut strict = config.clone();
    strict["action"] = "reject".into();
    let g2 = load(
        &rt,
        vec![spec("hf-strict", "header-filter", strict, false)],
        services(),
    )
    .await;
    let mut chain = g2.session("h3".into());
    let d = chain.ask(&stranger, Ask::Data(&msg(&spoof))).await;
    assert_eq!(
        d.verdict,
        Verdict::Reject(PluginReply {
            code: 554,
            enhanced: Some("5.7.1".into()),
            text:
                "Message rejected: local sender domain example.org from an unauthenticated client"
                    .into(),
        })
    );
    drop(chain);

    // Invalid regexes and unknown keys are refused, by name.
    for (bad, want) in [
        (
            serde_json::json!({"rules": [{"header": "Subject", "pattern": "(unclosed"}]}),
            "rules[0].pattern is not a valid regular expression",
        ),
        (
            serde_json::json!({"require_dat": false}),
            "unknown configuration key(s): require_dat",
        ),
    ] {
        let err = Generation::load(
            &rt,
            1,
            "t".into(),
            vec![spec("hf", "header-filter", bad, false)],
            services(),
        )
        .await
        .err()
        .expect("a bad configuration must be refused");
        assert!(err.to_string().contains(want), "{err}");
    }

    let mut lat = Latency::new();
    let m = msg(&spoof);
    for i in 0..20 {
        let mut chain = generation.session(format!("l{i}").into());
        let t = Instant::now();
        let d = chain.ask(&stranger, Ask::Data(&m)).await;
        lat.first.push(t.elapsed());
        assert_eq!(d.headers.len(), 1, "{d:?}");
        let t = Instant::now();
        chain.ask(&stranger, Ask::Data(&m)).await;
        lat.again.push(t.elapsed());
    }
    lat.report("header-filter (JavaScript)");
    assert_reused(&rt, &generation, "header-filter", 20);

    let base = spec("hf-mem", "header-filter", config, false);
    let probe_msg = msg(&spoof);
    let mib = min_memory_mib(&rt, &base, |g| {
        let m = probe_msg.clone();
        let c = stranger.clone();
        async move {
            let mut chain = g.session("m".into());
            chain.ask(&c, Ask::Data(&m)).await.headers.len() == 1
        }
    })
    .await;
    println!("[polyglot] header-filter (JavaScript): smallest working max_memory {mib} MiB");
}
