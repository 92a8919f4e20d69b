//! The `dns` and `kv` host interfaces as a plugin sees them, through the test
//! probe's `calls` (it rejects with what each call returned): a silent name
//! server costs a look-up `temporary("timeout")` within the plugin's call
//! deadline, an ungranted capability answers exactly `denied`, and kv keys
//! are private to a plugin unless it shares a `kv_namespace`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_plugin::*;
use serde_json::json;

mod common;
use common::{ctx, runtime, services, wasm};

/// A probe making `calls` at MAIL FROM and rejecting with their outcomes
/// when `report` is set.
fn probe(name: &str, calls: serde_json::Value, report: bool, caps: &[&str]) -> PluginSpec {
    PluginSpec {
        name: name.into(),
        path: wasm("test_probe"),
        config_json: json!({"tag": name, "calls": calls, "report_calls": report}).to_string(),
        on_error: OnError::Tempfail,
        timeout: Duration::from_millis(600),
        max_memory: 32 << 20,
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        kv_namespace: None,
        mode: Mode::Enforce,
        reuse: true,
        breaker: Default::default(),
        files: Vec::new(),
    }
}

/// A name server that never answers.
struct Silent;

impl DnsBackend for Silent {
    fn lookup(&self, _query: DnsQuery) -> BoxFuture<'_, Result<DnsAnswer, DnsFailure>> {
        Box::pin(std::future::pending())
    }
}

fn sender() -> EnvelopeAddress {
    EnvelopeAddress {
        address: "a@client.test".into(),
        local_part: "a".into(),
        domain: "client.test".into(),
        params: vec![],
        is_local: false,
    }
}

/// The text of the MAIL FROM rejection (or the verdict, when it is not one).
async fn mail_from(generation: &Arc<Generation>) -> Result<String, Verdict> {
    let mut chain = generation.session("s1".into());
    match chain.ask(&ctx(), Ask::MailFrom(&sender())).await.verdict {
        Verdict::Reject(r) if r.code == 550 => Ok(r.text),
        other => Err(other),
    }
}

async fn load(specs: Vec<PluginSpec>, services: Services) -> Arc<Generation> {
    common::load(&runtime(), specs, services).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_name_server_times_out_the_lookup_not_the_call() {
    let mut s = services();
    s.dns = Arc::new(Silent);
    let calls = json!([{"stage": "mail-from", "op": "dns-a", "arg": "slow.test"},
                       {"stage": "mail-from", "op": "dns-mx", "arg": "slow.test"}]);
    let g = load(vec![probe("p", calls, true, &["dns"])], s).await;
    let started = Instant::now();
    let got = mail_from(&g).await;
    let took = started.elapsed();
    // The first look-up takes 90% of the call's time, the second gets what
    // is left minus the margin: none.
    assert_eq!(
        got.as_deref(),
        Ok("dns-a(slow.test)=temporary(timeout); dns-mx(slow.test)=temporary(timeout)")
    );
    // (A call that ran out of time would have been a 451 4.3.0 instead.)
    assert!(took >= Duration::from_millis(450), "took {took:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_capability_every_call_is_denied() {
    let calls = json!([{"stage": "mail-from", "op": "kv-set", "arg": "k", "value": "v"},
                       {"stage": "mail-from", "op": "kv-get", "arg": "k"},
                       {"stage": "mail-from", "op": "dns-a", "arg": "example.test"},
                       {"stage": "mail-from", "op": "dns-ptr", "arg": "192.0.2.1"}]);
    let g = load(vec![probe("p", calls.clone(), true, &[])], services()).await;
    assert_eq!(
        mail_from(&g).await.as_deref(),
        Ok(
            "kv-set(k)=denied; kv-get(k)=denied; dns-a(example.test)=denied; dns-ptr(192.0.2.1)=denied"
        )
    );
    let g = load(vec![probe("p", calls, true, &["kv", "dns"])], services()).await;
    assert_eq!(
        mail_from(&g).await.as_deref(),
        Ok("kv-set(k)=ok; kv-get(k)=some(v); \
            dns-a(example.test)=temporary(no resolver configured); \
            dns-ptr(192.0.2.1)=temporary(no resolver configured)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_keys_are_private_unless_the_namespace_is_shared() {
    let set = json!([{"stage": "mail-from", "op": "kv-set", "arg": "k", "value": "from-a"}]);
    let get = json!([{"stage": "mail-from", "op": "kv-get", "arg": "k"}]);
    let specs = |ns: Option<&str>| {
        let mut a = probe("a", set.clone(), false, &["kv"]);
        let mut b = probe("b", get.clone(), true, &["kv"]);
        a.kv_namespace = ns.map(str::to_string);
        b.kv_namespace = ns.map(str::to_string);
        vec![a, b]
    };
    let g = load(specs(None), services()).await;
    assert_eq!(mail_from(&g).await.as_deref(), Ok("kv-get(k)=none"));
    let g = load(specs(Some("shared")), services()).await;
    assert_eq!(mail_from(&g).await.as_deref(), Ok("kv-get(k)=some(from-a)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_grant_is_read_only_and_nothing_else_is_visible() {
    // Short paths: the probe's report is one reply text of at most 300 bytes.
    let root = std::path::PathBuf::from(format!("/tmp/pf{}", std::process::id()));
    let granted = root.join("g");
    std::fs::create_dir_all(&granted).unwrap();
    std::fs::write(granted.join("k"), "secret").unwrap();
    std::fs::write(root.join("o"), "other").unwrap();
    let (g_dir, r_dir) = (granted.display(), root.display());
    let calls = json!([
        {"stage": "mail-from", "op": "file-read", "arg": format!("{g_dir}/k")},
        {"stage": "mail-from", "op": "file-read", "arg": format!("{r_dir}/o")},
        {"stage": "mail-from", "op": "file-read", "arg": format!("{g_dir}/../o")},
        {"stage": "mail-from", "op": "file-write", "arg": format!("{g_dir}/k"), "value": "x"},
        {"stage": "mail-from", "op": "file-write", "arg": format!("{g_dir}/n"), "value": "x"},
    ]);
    let mut spec = probe("p", calls.clone(), true, &[]);
    spec.files = vec![granted.clone()];
    let g = load(vec![spec], services()).await;
    let got = mail_from(&g).await.map_err(|v| format!("{v:?}")).unwrap();
    let outcomes: Vec<&str> = got
        .split("; ")
        .map(|c| c.split_once('=').unwrap().1)
        .collect();
    assert_eq!(outcomes[0], "ok(6)", "{got}");
    for (i, o) in outcomes.iter().enumerate().skip(1) {
        assert!(o.starts_with("err("), "call {i}: {got}");
    }
    assert_eq!(
        std::fs::read_to_string(granted.join("k")).unwrap(),
        "secret"
    );
    assert!(!granted.join("n").exists());
    // Without the grant, not even the key is visible.
    let g = load(vec![probe("p", calls, true, &[])], services()).await;
    assert!(mail_from(&g).await.unwrap().starts_with("file-read"));
    assert!(!mail_from(&g).await.unwrap().contains("ok("));
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_auth_needs_its_grant() {
    let calls = json!([{"stage": "mail-from", "op": "mail-auth-spf", "arg": "a@example.test"}]);
    let g = load(vec![probe("p", calls.clone(), true, &[])], services()).await;
    assert_eq!(
        mail_from(&g).await.as_deref(),
        Ok("mail-auth-spf(a@example.test)=denied")
    );
    // Granted: the (test) backend answers; NoMailAuth says temperror.
    let g = load(vec![probe("p", calls, true, &["mail-auth"])], services()).await;
    assert_eq!(
        mail_from(&g).await.as_deref(),
        Ok("mail-auth-spf(a@example.test)=ok(AuthResult::Temperror)")
    );
}
