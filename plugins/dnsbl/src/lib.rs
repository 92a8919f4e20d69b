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

/// The whole plugin against the SDK's fake host: the look-up goes through
/// `postern:policy/dns`, the answer is cached in `postern:policy/kv`.
#[cfg(test)]
mod tests {
    use super::*;
    use postern_sdk::testing;

    fn plugin(json: &str) -> Dnsbl {
        Dnsbl::new(postern_sdk::parse_config(json).unwrap()).unwrap()
    }

    #[test]
    fn listed_client_refused_then_answered_from_the_kv_cache() {
        let host = testing::host();
        host.dns_a("2.2.0.192.bl.example.test", &["127.0.0.2"]);
        let p = plugin(r#"{"zones": [{"zone": "bl.example.test"}], "cache_ttl": 60}"#);
        let listed = testing::session().client_ip("192.0.2.2").build();
        let clean = testing::session().client_ip("192.0.2.3").build();
        assert_eq!(testing::summary(&p.on_connect(&listed)).1, 554);
        assert_eq!(testing::summary(&p.on_connect(&clean)).0, "pass");
        assert_eq!(host.dns_queries().len(), 2);
        assert!(host.kv_keys().len() == 2 && host.logged("listed"));
        // Within cache_ttl the kv answers; after it the DNS is asked again.
        assert_eq!(testing::summary(&p.on_connect(&listed)).1, 554);
        assert_eq!(host.dns_queries().len(), 2);
        host.advance_ms(60_000);
        assert_eq!(testing::summary(&p.on_connect(&listed)).1, 554);
        assert_eq!(host.dns_queries().len(), 3);
    }

    #[test]
    fn dns_trouble_defers_and_kv_trouble_only_skips_the_cache() {
        let host = testing::host();
        let p = plugin(r#"{"zones": [{"zone": "bl.example.test"}]}"#);
        let s = testing::session().client_ip("192.0.2.9").build();
        host.fail_kv(Some(KvError::Unavailable("down".into())));
        assert_eq!(testing::summary(&p.on_connect(&s)).0, "pass");
        host.fail_dns(Some(DnsError::Temporary("timeout".into())));
        assert_eq!(testing::summary(&p.on_connect(&s)).0, "pass");
        let strict = plugin(
            r#"{"zones": [{"zone": "bl.example.test", "on_dns_error": "defer"}], "cache_ttl": 0}"#,
        );
        assert_eq!(testing::summary(&strict.on_connect(&s)).1, 451);
    }
}
