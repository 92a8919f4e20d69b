//! Host capabilities with friendlier signatures: logging (always allowed),
//! the clock, and `dns`/`kv` (answer `denied` unless the configuration grants
//! them). Input: none beyond the plugin's own arguments.

pub use crate::wit::dns;
pub use crate::wit::kv;
pub use crate::wit::mail_auth;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    crate::wit::clock::now_ms()
}

/// Structured logging into the host's log (tagged with plugin and session).
pub mod log {
    use crate::wit::log::{Level, log};

    pub fn with(level: Level, message: &str, fields: &[(&str, &str)]) {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        log(level, message, &fields);
    }
    pub fn debug(message: &str) {
        with(Level::Debug, message, &[]);
    }
    pub fn info(message: &str) {
        with(Level::Info, message, &[]);
    }
    pub fn warn(message: &str) {
        with(Level::Warn, message, &[]);
    }
    pub fn error(message: &str) {
        with(Level::Error, message, &[]);
    }
}
