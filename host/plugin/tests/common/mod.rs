//! Helpers shared by the runtime's integration tests: the embedded services,
//! a small runtime, the built test components and a session context.

#![allow(dead_code, reason = "each test file uses a subset")]

use std::path::PathBuf;
use std::sync::Arc;

use postern_plugin::{
    Ask, EnvelopeAddress, Generation, MemoryKv, NoDns, PluginSpec, Runtime, RuntimeConfig,
    Services, SessionChain, SessionContext, StageContext, Verdict,
};

pub fn services() -> Services {
    Services {
        dns: Arc::new(NoDns),
        kv: Arc::new(MemoryKv::default()),
        mail_auth: Arc::new(postern_plugin::NoMailAuth),
        av: Arc::new(postern_plugin::NoAv),
    }
}

pub fn runtime() -> Arc<Runtime> {
    Runtime::new(RuntimeConfig {
        max_instances: 64,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

/// A Rust test component built for wasm32-wasip2 (`make plugins`).
pub fn wasm(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let p = target
        .join("wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: build the test plugins first (`make plugins`)",
        p.display()
    );
    p
}

/// Session "s1" from 192.0.2.7:4000 on the listener "smtp" of mx.test.
pub fn ctx() -> SessionContext {
    SessionContext::new(
        "s1".into(),
        "192.0.2.7:4000".parse().unwrap(),
        "127.0.0.1:25".parse().unwrap(),
        "smtp".into(),
        "mx.test".into(),
    )
}

/// The verdict of `chain` on the recipient `to`.
pub async fn rcpt_verdict(
    chain: &mut SessionChain,
    c: &impl StageContext,
    to: &EnvelopeAddress,
) -> Verdict {
    chain.ask(c, Ask::RcptTo(to)).await.verdict
}

/// Load `specs` as generation 1 of `rt` (from source "test"), which must succeed.
pub async fn load(
    rt: &Arc<Runtime>,
    specs: Vec<PluginSpec>,
    services: Services,
) -> Arc<Generation> {
    Arc::new(
        Generation::load(rt, 1, "test".into(), specs, services)
            .await
            .unwrap_or_else(|e| panic!("loading failed: {e}")),
    )
}
