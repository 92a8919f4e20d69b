//! dnsbl: refuses (or defers, or logs) clients whose address is listed in a
//! DNS blocklist (RFC 5782), at connect, so the greeting becomes the refusal.
//! Trusts the host's client address; DNS answers are classified, never
//! believed blindly; results are cached in the host KV.

use postern_sdk::prelude::*;

pub mod check;
pub mod config;
pub mod query;

use config::{Config, Settings};

/// The plugin: validated settings only (nothing of a session), so its
/// instances are recycled from one session to the next.
pub struct Dnsbl(Settings);

impl Plugin for Dnsbl {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        config.validate().map(Dnsbl)
    }
}

/// The host's resolver, KV store and log.
struct HostServices;

impl check::Host for HostServices {
    fn lookup_a(&self, name: &str) -> Result<Vec<String>, DnsError> {
        dns::lookup_a(name)
    }
    fn kv_get(&self, key: &str) -> Result<Option<String>, KvError> {
        kv::get(key)
    }
    fn kv_set(&self, key: &str, value: &str, ttl_ms: u64) -> Result<(), KvError> {
        kv::set(key, value, Some(ttl_ms))
    }
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        log::with(level, message, fields);
    }
}

impl Connect for Dnsbl {
    fn on_connect(&self, session: &Session) -> Verdict {
        check::on_connect(&self.0, session, &HostServices)
    }
}

export_plugin!(Dnsbl, [connect], recycle);
