//! Loads the real test components (built for wasm32-wasip2 by `make
//! plugins`) into the runtime and drives the chain directly.

use std::sync::Arc;
use std::time::Duration;

use postern_plugin::*;

mod common;
use common::{ctx, load, rcpt_verdict, runtime, services, wasm};

fn spec(name: &str, file: &str, config: serde_json::Value) -> PluginSpec {
    PluginSpec {
        name: name.into(),
        path: wasm(file),
        config_json: config.to_string(),
        on_error: OnError::Tempfail,
        timeout: Duration::from_millis(200),
        max_memory: 32 << 20,
        capabilities: vec![],
        kv_namespace: None,
        mode: Mode::Enforce,
        reuse: true,
        breaker: Default::default(),
        files: Vec::new(),
    }
}

fn rcpt(a: &str) -> EnvelopeAddress {
    let (l, d) = a.split_once('@').unwrap();
    EnvelopeAddress {
        address: a.into(),
        local_part: l.into(),
        domain: d.into(),
        params: vec![],
        is_local: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_order_exports_and_errors() {
    let rt = runtime();
    let specs = vec![
        spec(
            "blocker",
            "test_rcpt_only",
            serde_json::json!({"blocked": ["bad"]}),
        ),
        spec(
            "probe",
            "test_probe",
            serde_json::json!({
                "tag": "p",
                "rules": [{"stage": "rcpt-to", "contains": "deny", "kind": "reject", "code": 550, "enhanced": "5.7.1", "text": "denied by probe"}],
                "fail": [
                    {"stage": "rcpt-to", "contains": "trap", "kind": "trap"},
                    {"stage": "rcpt-to", "contains": "loop", "kind": "loop"},
                    {"stage": "rcpt-to", "contains": "alloc", "kind": "alloc"}
                ],
                "headers": [["X-Probe", "yes"]]
            }),
        ),
    ];
    let generation = load(&rt, specs, services()).await;
    let infos = generation.plugins();
    assert_eq!(infos[0].stages, vec![Stage::RcptTo]);
    // The probe exports every SMTP-session stage (not the delivery side).
    let session_stages: Vec<Stage> = Stage::ALL
        .into_iter()
        .filter(|s| !s.is_delivery())
        .collect();
    assert_eq!(infos[1].stages, session_stages);
    let mut chain = generation.session("s1".into());
    let c = ctx();
    assert_eq!(chain.ask(&c, Ask::Connect).await.verdict, Verdict::Pass);
    // First plugin decides.
    let d = chain.ask(&c, Ask::RcptTo(&rcpt("bad@example.org"))).await;
    assert_eq!(d.decided_by.as_deref(), Some("blocker"));
    assert!(matches!(d.verdict, Verdict::Reject(ref r) if r.code == 550));
    // Second plugin decides.
    let d = chain.ask(&c, Ask::RcptTo(&rcpt("deny@example.org"))).await;
    assert_eq!(d.decided_by.as_deref(), Some("probe"));
    // Trap, loop and memory hog each cost a 451 and leave the chain usable.
    for what in ["trap", "loop", "alloc"] {
        let started = std::time::Instant::now();
        let d = chain
            .ask(&c, Ask::RcptTo(&rcpt(&format!("{what}@example.org"))))
            .await;
        assert!(
            matches!(d.verdict, Verdict::Defer(ref r) if r.code == 451),
            "{what}: {d:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what} took too long"
        );
        assert_eq!(
            rcpt_verdict(&mut chain, &c, &rcpt("fine@example.org")).await,
            Verdict::Pass
        );
    }
    let stats = rt.stats().for_plugin("probe");
    let errs = &stats.stages[Stage::RcptTo as usize].errors;
    let count = |k: &str| {
        errs[ERROR_KINDS.iter().position(|x| *x == k).unwrap()]
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(
        (count("trap"), count("timeout"), count("memory")),
        (1, 1, 1)
    );
    // Data stage: the header is added.
    let msg = Arc::new(MessageData::new(b"Subject: hi\r\n\r\nbody\r\n".to_vec()));
    let d = chain.ask(&c, Ask::Data(&msg)).await;
    assert_eq!(d.headers, vec![("X-Probe".to_string(), "yes".to_string())]);
    drop(chain);
    assert_eq!(generation.active_sessions(), 0);
    // `export_plugin!` without `recycle`: the blocker never reuses an instance.
    let reuses = rt
        .stats()
        .for_plugin("blocker")
        .reuses
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(reuses, 0);
    assert_eq!(generation.idle_instances()[0], ("blocker".to_string(), 0));
}

fn counts(rt: &Runtime, plugin: &str) -> (u64, u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = rt.stats().for_plugin(plugin);
    (
        s.instantiations.load(Relaxed),
        s.reuses.load(Relaxed),
        s.recycle_refusals.load(Relaxed),
    )
}

/// Runs one short session (connect, one recipient) on `generation`.
async fn session(generation: &Arc<Generation>, id: &str, to: &str) -> Verdict {
    let mut chain = generation.session(id.into());
    let c = ctx();
    assert_eq!(chain.ask(&c, Ask::Connect).await.verdict, Verdict::Pass);
    rcpt_verdict(&mut chain, &c, &rcpt(to)).await
}

/// `n` sessions open at once on `generation` (ids `{prefix}0`, `{prefix}1`…),
/// each past connect.
async fn connected_sessions(
    generation: &Arc<Generation>,
    c: &SessionContext,
    prefix: &str,
    n: usize,
) -> Vec<SessionChain> {
    let mut chains = Vec::new();
    for i in 0..n {
        let mut chain = generation.session(format!("{prefix}{i}").into());
        assert_eq!(chain.ask(c, Ask::Connect).await.verdict, Verdict::Pass);
        chains.push(chain);
    }
    chains
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_are_recycled_only_when_allowed() {
    let rt = runtime();
    let fail =
        serde_json::json!({"fail": [{"stage": "rcpt-to", "contains": "trap", "kind": "trap"}]});
    let mut fresh = spec("fresh", "test_probe", fail.clone());
    fresh.reuse = false;
    let specs = vec![
        spec("reused", "test_probe", fail.clone()),
        fresh,
        spec(
            "refusing",
            "test_probe",
            serde_json::json!({"refuse_recycle": true}),
        ),
    ];
    let generation = load(&rt, specs, services()).await;
    // Loading instantiated each plugin once to check `init`; a reusable
    // plugin keeps that instance for the first session.
    let idle = |g: &Generation| {
        g.idle_instances()
            .into_iter()
            .map(|(_, n)| n)
            .collect::<Vec<_>>()
    };
    assert_eq!(idle(&generation), vec![1, 0, 1]);
    for i in 0..5 {
        assert_eq!(
            session(&generation, &format!("s{i}"), "a@example.org").await,
            Verdict::Pass
        );
    }
    // Five sequential sessions: one instance served them all.
    assert_eq!(counts(&rt, "reused"), (1, 5, 0));
    // reuse = false: one fresh instance per session (plus the init check).
    assert_eq!(counts(&rt, "fresh"), (6, 0, 0));
    // `recycle` answered false: each pooled instance was discarded.
    assert_eq!(counts(&rt, "refusing"), (6, 0, 5));
    assert_eq!(idle(&generation), vec![1, 0, 1]);

    // Two sessions at once need two instances; both go back to the pool.
    let mut a = generation.session("a".into());
    let mut b = generation.session("b".into());
    let c = ctx();
    a.ask(&c, Ask::Connect).await;
    b.ask(&c, Ask::Connect).await;
    assert_eq!(counts(&rt, "reused"), (2, 6, 0));
    drop((a, b));
    assert_eq!(idle(&generation)[0], 2);

    // A trapped instance is never handed on: the session continues on the
    // other pooled instance, and only that one goes back to the pool.
    let mut chain = generation.session("t".into());
    chain.ask(&c, Ask::Connect).await;
    let d = chain.ask(&c, Ask::RcptTo(&rcpt("trap@example.org"))).await;
    assert!(
        matches!(d.verdict, Verdict::Defer(ref r) if r.code == 451),
        "{d:?}"
    );
    assert_eq!(
        rcpt_verdict(&mut chain, &c, &rcpt("ok@example.org")).await,
        Verdict::Pass
    );
    drop(chain);
    assert_eq!(counts(&rt, "reused"), (2, 8, 0));
    assert_eq!(idle(&generation)[0], 1);

    // An abandoned call (the session's future dropped mid-call) leaves the
    // instance in an unknown state: it is dropped, not pooled.
    let loops =
        serde_json::json!({"fail": [{"stage": "rcpt-to", "contains": "loop", "kind": "loop"}]});
    let generation = Arc::new(
        Generation::load(
            &rt,
            2,
            "test".into(),
            vec![spec("looper", "test_probe", loops)],
            services(),
        )
        .await
        .unwrap(),
    );
    assert_eq!(idle(&generation), vec![1]);
    let g = generation.clone();
    let abandoned = tokio::time::timeout(Duration::from_millis(50), async move {
        session(&g, "x", "loop@example.org").await
    })
    .await;
    assert!(
        abandoned.is_err(),
        "the looping call should still be running"
    );
    assert_eq!(generation.active_sessions(), 0);
    assert_eq!(idle(&generation), vec![0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_give_way_when_the_allocator_is_full() {
    // Room for 16 instances at once.
    let rt = Runtime::new(RuntimeConfig {
        max_instances: 16,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let specs = vec![
        spec("a", "test_probe", serde_json::json!({})),
        spec("b", "test_rcpt_only", serde_json::json!({"blocked": []})),
    ];
    let generation = load(&rt, specs, services()).await;
    let c = ctx();
    // 15 sessions at once on "a" (only it hooks connect), then all end: 15
    // idle instances of "a" hold 15 of the 16 slots.
    drop(connected_sessions(&generation, &c, "a", 15).await);
    assert_eq!(generation.idle_instances()[0], ("a".to_string(), 15));
    // Two sessions at RCPT TO need "a" (pooled) and "b" (fresh) each: the
    // second "b" finds no free slot until the idle instances are dropped.
    let mut one = generation.session("r1".into());
    let mut two = generation.session("r2".into());
    assert_eq!(
        rcpt_verdict(&mut one, &c, &rcpt("x@example.org")).await,
        Verdict::Pass
    );
    let d = two.ask(&c, Ask::RcptTo(&rcpt("y@example.org"))).await;
    assert_eq!(d.verdict, Verdict::Pass, "{d:?}");
    assert_eq!(generation.idle_instances()[0], ("a".to_string(), 0));
    let errors = &rt.stats().for_plugin("b").stages[Stage::RcptTo as usize].errors;
    assert!(
        errors
            .iter()
            .all(|e| e.load(std::sync::atomic::Ordering::Relaxed) == 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_expire_after_the_idle_timeout() {
    let ttl = Duration::from_secs(1);
    let rt = Runtime::new(RuntimeConfig {
        idle_timeout: ttl,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let specs = vec![spec("a", "test_probe", serde_json::json!({}))];
    let generation = load(&rt, specs, services()).await;
    let c = ctx();
    let idle = |g: &Generation| g.idle_instances()[0].1;
    // Three sessions at once (the first takes the init check's instance),
    // then all end: three idle instances.
    drop(connected_sessions(&generation, &c, "s", 3).await);
    assert_eq!(counts(&rt, "a"), (3, 1, 0));
    // The sweep leaves instances younger than the timeout alone...
    assert_eq!(generation.expire_idle(), 0);
    assert_eq!(idle(&generation), 3);
    // ...and drops them once they are older, with no session involved.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    assert_eq!(generation.expire_idle(), 3);
    assert_eq!(idle(&generation), 0);
    // A session uses a fresh instance and gives it back; a session after
    // the timeout does not get that stale one but a fresh one.
    session(&generation, "t1", "a@example.org").await;
    assert_eq!(idle(&generation), 1);
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    session(&generation, "t2", "a@example.org").await;
    assert_eq!(idle(&generation), 1);
    assert_eq!(counts(&rt, "a"), (5, 1, 0));
}

/// Why loading the one plugin `s` fails (it must).
async fn load_error(rt: &Arc<Runtime>, s: PluginSpec) -> LoadError {
    Generation::load(rt, 1, "t".into(), vec![s], services())
        .await
        .err()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_refusal_and_bad_files() {
    let rt = runtime();
    let err = load_error(
        &rt,
        spec("p", "test_probe", serde_json::json!({"refuse": "nope"})),
    )
    .await;
    assert!(
        err.to_string().contains("refused its configuration: nope"),
        "{err}"
    );
    let err = load_error(
        &rt,
        spec("b", "test_rcpt_only", serde_json::json!({"blockd": []})),
    )
    .await;
    assert!(err.to_string().contains("unknown field `blockd`"), "{err}");
    let dir = std::env::temp_dir().join(format!("postern-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.wasm");
    std::fs::write(&garbage, b"hello world").unwrap();
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    for (file, want) in [
        (garbage, "not a WebAssembly file"),
        (core, "core WebAssembly module"),
    ] {
        let mut s = spec("x", "test_probe", serde_json::json!({}));
        s.path = file;
        let err = load_error(&rt, s).await;
        assert!(err.to_string().contains(want), "{err}");
    }
    // A component naming a contract version this host does not serve, and
    // one mixing the two it does.
    let bytes = std::fs::read(wasm("test_rcpt_only")).unwrap();
    let patched = replace_all(
        &bytes,
        b"postern:policy/rcpt-to-hook@0.2.0",
        b"postern:policy/rcpt-to-hook@0.9.0",
    );
    let mixed = replace_all(
        &bytes,
        b"postern:policy/rcpt-to-hook@0.2.0",
        b"postern:policy/rcpt-to-hook@0.1.0",
    );
    for (name, data, want) in [
        ("v9", patched, "rcpt-to-hook@0.9.0"),
        ("mixed", mixed, "mixes contract versions"),
    ] {
        let path = dir.join(format!("{name}.wasm"));
        std::fs::write(&path, data).unwrap();
        let mut s = spec(name, "test_rcpt_only", serde_json::json!({"blocked": []}));
        s.path = path;
        let err = load_error(&rt, s).await;
        assert!(err.to_string().contains(want), "{err}");
    }
}

fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = hay.to_vec();
    let mut i = 0;
    let mut n = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            n += 1;
        }
        i += 1;
    }
    assert!(n > 0);
    out
}
