//! message-limits: per client class limits on message size (RFC 1870 SIZE,
//! RFC 5321 §4.5.3.1), recipients per message, messages and connections per
//! time window. Trusts the host's session (client address, authenticated
//! user) and KV; ESMTP parameters are client-supplied. Counters live in the
//! host KV so they span sessions and Postern nodes.

use postern_sdk::prelude::*;

pub mod class;
pub mod config;
pub mod limits;
#[cfg(test)]
mod testutil;

use class::Settings;
use config::Config;

/// The plugin: validated settings only (nothing of a session), so its
/// instances are recycled from one session to the next.
pub struct MessageLimits(Settings);

impl Plugin for MessageLimits {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        config.validate().map(MessageLimits)
    }
}

/// The host's KV store and log.
struct HostKv;

impl limits::Store for HostKv {
    fn increment(&self, key: &str, delta: i64, window_ms: u64) -> Result<i64, KvError> {
        kv::increment(key, delta, window_ms)
    }
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        log::with(level, message, fields);
    }
}

impl Connect for MessageLimits {
    fn on_connect(&self, session: &Session) -> Verdict {
        limits::on_connect(&self.0, session, &HostKv)
    }
}

impl MailFrom for MessageLimits {
    fn on_mail_from(&self, session: &Session, sender: &EnvelopeAddress) -> Verdict {
        limits::on_mail_from(&self.0, session, sender, &HostKv)
    }
}

impl RcptTo for MessageLimits {
    fn on_rcpt_to(&self, session: &Session, _recipient: &EnvelopeAddress) -> Verdict {
        limits::on_rcpt_to(&self.0, session)
    }
}

impl Data for MessageLimits {
    fn on_data(&self, session: &Session, message: &Message) -> DataResult {
        limits::on_data(&self.0, session, message.size()).into()
    }
}

export_plugin!(MessageLimits, [connect, mail_from, rcpt_to, data], recycle);

/// The whole plugin against the SDK's fake host: counters in
/// `postern:policy/kv`, windows by its clock.
#[cfg(test)]
mod tests {
    use super::*;
    use postern_sdk::testing;

    fn plugin(json: &str) -> MessageLimits {
        MessageLimits::new(postern_sdk::parse_config(json).unwrap()).unwrap()
    }

    #[test]
    fn connection_rate_counts_in_the_host_kv_per_window() {
        let host = testing::host();
        let p = plugin(r#"{"window": 10, "default": {"max_connections_rate": 2}}"#);
        let s = testing::session().client_ip("192.0.2.7").build();
        assert_eq!(testing::summary(&p.on_connect(&s)).0, "pass");
        assert_eq!(testing::summary(&p.on_connect(&s)).0, "pass");
        let over = testing::summary(&p.on_connect(&s));
        assert_eq!(
            (over.0, over.1, over.2.as_str()),
            ("disconnect", 421, "4.7.0")
        );
        assert_eq!(host.kv_value("conn:192.0.2.7").as_deref(), Some("3"));
        host.advance_ms(10_000);
        assert_eq!(testing::summary(&p.on_connect(&s)).0, "pass");
    }

    #[test]
    fn kv_outage_follows_on_kv_error() {
        let host = testing::host();
        host.fail_kv(Some(KvError::Unavailable("redis down".into())));
        let s = testing::session().build();
        let strict = plugin(r#"{"default": {"max_connections_rate": 2}}"#);
        assert_eq!(testing::summary(&strict.on_connect(&s)).2, "4.3.0");
        let lenient = plugin(r#"{"on_kv_error": "allow", "default": {"max_connections_rate": 2}}"#);
        assert_eq!(testing::summary(&lenient.on_connect(&s)).0, "pass");
        assert!(!host.logs().is_empty());
    }
}
