//! Test helpers: sessions, addresses, verdict inspection and a fake KV.

use std::cell::RefCell;
use std::collections::HashMap;

use postern_sdk::{EnvelopeAddress, KvError, Level, Session, SessionData, Verdict};

use crate::class::Settings;
use crate::limits::Store;

pub fn settings(json: &str) -> Settings {
    postern_sdk::parse_config::<crate::config::Config>(json)
        .and_then(|c| c.validate())
        .unwrap()
}

pub fn session(ip: &str) -> Session {
    session_with(ip, |_| {})
}

/// A session from `ip`, changed by `f` first.
pub fn session_with(ip: &str, f: impl FnOnce(&mut SessionData)) -> Session {
    let mut d = SessionData {
        id: "s1".into(),
        client_ip: ip.into(),
        helo: Some("client.example".into()),
        esmtp: true,
        ..SessionData::default()
    };
    f(&mut d);
    d.into()
}

/// A sender with an optional SIZE= parameter.
pub fn sender(size: Option<&str>) -> EnvelopeAddress {
    let a = postern_sdk::testing::address("a@example.net");
    match size {
        Some(v) => a.param("SIZE", Some(v)).build(),
        None => a.build(),
    }
}

pub fn is_pass(v: &Verdict) -> bool {
    matches!(v, Verdict::Pass)
}

pub fn reply_of(v: &Verdict) -> Option<(u16, &str, &str)> {
    match v {
        Verdict::Reject(r) | Verdict::Defer(r) | Verdict::Disconnect(r) => {
            Some((r.code, r.enhanced.as_deref().unwrap_or(""), r.text.as_str()))
        }
        _ => None,
    }
}

/// Counters without expiry (windows recorded for inspection), or a store
/// that always fails.
#[derive(Default)]
pub struct FakeKv {
    counters: RefCell<HashMap<String, (i64, u64)>>,
    fail: Option<KvError>,
    logs: RefCell<Vec<String>>,
}

impl FakeKv {
    pub fn failing(e: KvError) -> FakeKv {
        FakeKv {
            fail: Some(e),
            ..FakeKv::default()
        }
    }
    pub fn value_of(&self, key: &str) -> Option<i64> {
        self.counters.borrow().get(key).map(|c| c.0)
    }
    pub fn window_of(&self, key: &str) -> Option<u64> {
        self.counters.borrow().get(key).map(|c| c.1)
    }
    pub fn logged(&self, needle: &str) -> bool {
        self.logs.borrow().iter().any(|l| l.contains(needle))
    }
}

impl Store for FakeKv {
    fn increment(&self, key: &str, delta: i64, window_ms: u64) -> Result<i64, KvError> {
        if let Some(e) = &self.fail {
            return Err(e.clone());
        }
        let mut c = self.counters.borrow_mut();
        let entry = c.entry(key.to_string()).or_insert((0, window_ms));
        entry.0 += delta;
        Ok(entry.0)
    }
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        self.logs
            .borrow_mut()
            .push(format!("{level:?} {message} {fields:?}"));
    }
}
