//! Host capabilities with friendlier signatures: logging (always allowed),
//! the clock, and `dns`/`kv` (answer `denied` unless the configuration grants
//! them). In a component each call goes to the host; in a native build (a
//! plugin's `cargo test`) `log`, `now_ms`, `dns` and `kv` go to this
//! thread's fake host, [`crate::testing::host`], so unit tests can script
//! and inspect them. `mail_auth` needs a message the host holds and has no
//! fake. Input: none beyond the plugin's own arguments.

pub use crate::wit::mail_auth;

/// Virus scanning by the host's scanner (`postern:policy/av-scan`, contract
/// 0.2; needs the "av-scan" capability and an `[av]` scanner in the host).
/// A 0.1 build answers `unavailable` (0.1 has no scanner). Not faked in
/// native tests: it needs a message the host holds.
pub mod av_scan {
    #[cfg(not(feature = "contract-0-1"))]
    pub use crate::wit::av_scan::{ScanError, ScanResult};

    #[cfg(feature = "contract-0-1")]
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum ScanResult {
        Clean,
        Infected(String),
    }
    #[cfg(feature = "contract-0-1")]
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum ScanError {
        Denied,
        Unavailable(String),
        TooLarge,
    }

    /// Scan the whole message.
    pub fn scan_message(message: &crate::Message) -> Result<ScanResult, ScanError> {
        #[cfg(not(feature = "contract-0-1"))]
        return crate::wit::av_scan::scan_message(message);
        #[cfg(feature = "contract-0-1")]
        {
            let _ = message;
            Err(ScanError::Unavailable(
                "no virus scanner in contract 0.1".into(),
            ))
        }
    }
}

/// Milliseconds since the Unix epoch (the fake host's clock in native builds).
pub fn now_ms() -> u64 {
    #[cfg(target_arch = "wasm32")]
    return crate::wit::clock::now_ms();
    #[cfg(not(target_arch = "wasm32"))]
    return crate::testing::host().now_ms();
}

/// DNS look-ups through the host's resolver (`postern:policy/dns`).
pub mod dns {
    pub use crate::wit::dns::{DnsError, Mx};

    #[cfg(not(target_arch = "wasm32"))]
    use crate::testing::fake_dns as imp;
    #[cfg(target_arch = "wasm32")]
    use crate::wit::dns as imp;

    /// IPv4 addresses of `name`, as text.
    pub fn lookup_a(name: &str) -> Result<Vec<String>, DnsError> {
        imp::lookup_a(name)
    }
    /// IPv6 addresses of `name`, as text.
    pub fn lookup_aaaa(name: &str) -> Result<Vec<String>, DnsError> {
        imp::lookup_aaaa(name)
    }
    /// MX records of `name`, sorted by preference (a null MX is one `"."`).
    pub fn lookup_mx(name: &str) -> Result<Vec<Mx>, DnsError> {
        imp::lookup_mx(name)
    }
    /// TXT records of `name`, each record's strings concatenated.
    pub fn lookup_txt(name: &str) -> Result<Vec<String>, DnsError> {
        imp::lookup_txt(name)
    }
    /// PTR names of the address `ip`.
    pub fn lookup_ptr(ip: &str) -> Result<Vec<String>, DnsError> {
        imp::lookup_ptr(ip)
    }
}

/// The shared key-value store (`postern:policy/kv`).
pub mod kv {
    pub use crate::wit::kv::KvError;

    #[cfg(not(target_arch = "wasm32"))]
    use crate::testing::fake_kv as imp;
    #[cfg(target_arch = "wasm32")]
    use crate::wit::kv as imp;

    /// The value at `key`, if present and not expired.
    pub fn get(key: &str) -> Result<Option<String>, KvError> {
        imp::get(key)
    }
    /// Store `value` at `key`, expiring after `ttl_ms` (never when `None`).
    pub fn set(key: &str, value: &str, ttl_ms: Option<u64>) -> Result<(), KvError> {
        imp::set(key, value, ttl_ms)
    }
    /// Store `value` at `key` only if the key is absent; `true` when stored.
    pub fn set_if_absent(key: &str, value: &str, ttl_ms: Option<u64>) -> Result<bool, KvError> {
        imp::set_if_absent(key, value, ttl_ms)
    }
    /// Remove `key`; `true` when it existed.
    pub fn delete(key: &str) -> Result<bool, KvError> {
        imp::delete(key)
    }
    /// Add `delta` to the counter at `key` and return the new value; a new
    /// (or expired) counter starts at zero and lives `window_ms` from then.
    pub fn increment(key: &str, delta: i64, window_ms: u64) -> Result<i64, KvError> {
        imp::increment(key, delta, window_ms)
    }
}

/// Structured logging into the host's log (tagged with plugin and session).
pub mod log {
    use crate::wit::log::Level;

    /// Log `message` with `fields`, lent to the host as they are (no copy
    /// in the guest).
    pub fn with(level: Level, message: &str, fields: &[(&str, &str)]) {
        #[cfg(target_arch = "wasm32")]
        crate::wit::log::log(level, message, fields);
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::host().record_log(
            level,
            message,
            fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
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
