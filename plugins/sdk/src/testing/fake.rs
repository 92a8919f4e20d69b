//! The fake host behind [`crate::host`] in native builds: one per thread
//! (each `#[test]` runs on its own thread, so tests do not see each other's
//! state), created on first use with every capability granted, an empty kv
//! store, no DNS data, no logs and the clock at [`START_MS`]. Input: the
//! plugin's host calls and the test's scripting (both trusted).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use crate::wit::dns::{DnsError, Mx};
use crate::wit::kv::KvError;
use crate::wit::log::Level;

/// Where the fake clock starts: 2023-11-14T22:13:20Z.
pub const START_MS: u64 = 1_700_000_000_000;

/// Largest key and value the real host accepts (`host/kv`).
const MAX_KEY: usize = 1024;
const MAX_VALUE: usize = 64 * 1024;

/// One `log` call a plugin made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub level: Level,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

impl LogRecord {
    /// The value of field `key`, if the call had one.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A DNS record type the fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordType {
    A,
    Aaaa,
    Mx,
    Txt,
    Ptr,
}

#[derive(Debug, Clone)]
enum Answer {
    Texts(Vec<String>),
    Mxs(Vec<Mx>),
    Error(DnsError),
}

struct Entry {
    value: String,
    expires_at_ms: Option<u64>,
}

struct State {
    now_ms: u64,
    kv: BTreeMap<String, Entry>,
    kv_granted: bool,
    kv_failure: Option<KvError>,
    dns: HashMap<(RecordType, String), Answer>,
    dns_granted: bool,
    dns_failure: Option<DnsError>,
    queries: Vec<(RecordType, String)>,
    logs: Vec<LogRecord>,
}

impl Default for State {
    fn default() -> Self {
        State {
            now_ms: START_MS,
            kv: BTreeMap::new(),
            kv_granted: true,
            kv_failure: None,
            dns: HashMap::new(),
            dns_granted: true,
            dns_failure: None,
            queries: Vec::new(),
            logs: Vec::new(),
        }
    }
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

/// This thread's fake host: what `log`, `now_ms`, `dns` and `kv` reach in a
/// native build.
///
/// ```
/// use postern_sdk::host::{dns, kv};
/// use postern_sdk::testing;
///
/// let host = testing::host();
/// host.dns_a("mx.example.test", &["192.0.2.7"]);
/// assert_eq!(dns::lookup_a("mx.example.test").unwrap(), ["192.0.2.7"]);
/// kv::set("k", "v", Some(1_000)).unwrap();
/// host.advance_ms(1_000);
/// assert_eq!(kv::get("k").unwrap(), None);
/// ```
pub fn host() -> FakeHost {
    FakeHost(())
}

/// A handle to this thread's fake host (see [`host`]); cheap to copy.
#[derive(Debug, Clone, Copy)]
pub struct FakeHost(());

impl FakeHost {
    /// Back to the initial state: everything granted, no data, no logs,
    /// the clock at [`START_MS`].
    pub fn reset(&self) {
        with(|s| *s = State::default());
    }

    // ---- clock ----

    /// What `now_ms()` answers.
    pub fn now_ms(&self) -> u64 {
        with(|s| s.now_ms)
    }
    pub fn set_now_ms(&self, ms: u64) {
        with(|s| s.now_ms = ms);
    }
    /// Move the clock on (kv entries expire by it).
    pub fn advance_ms(&self, ms: u64) {
        with(|s| s.now_ms = s.now_ms.saturating_add(ms));
    }

    // ---- kv ----

    /// Grant or withdraw the "kv" capability (withdrawn: every call answers
    /// `denied`, as the real host does without the grant).
    pub fn grant_kv(&self, granted: bool) {
        with(|s| s.kv_granted = granted);
    }
    /// Make every kv call fail with `error` (`None`: work again), e.g.
    /// `KvError::Unavailable("redis down".into())`.
    pub fn fail_kv(&self, error: Option<KvError>) {
        with(|s| s.kv_failure = error);
    }
    /// Look at a stored value (expired entries are gone), without the grant
    /// or failure checks a plugin's call goes through.
    pub fn kv_value(&self, key: &str) -> Option<String> {
        with(|s| live(s, key).map(|e| e.value.clone()))
    }
    /// How long `key` has left, if it is stored with a time to live.
    pub fn kv_ttl_ms(&self, key: &str) -> Option<u64> {
        with(|s| {
            let now = s.now_ms;
            live(s, key).and_then(|e| e.expires_at_ms.map(|t| t - now))
        })
    }
    /// Store a value as if an earlier call had (setting up a test).
    pub fn kv_put(&self, key: &str, value: &str, ttl_ms: Option<u64>) {
        with(|s| {
            let expires_at_ms = ttl_ms.map(|t| s.now_ms.saturating_add(t));
            s.kv.insert(key.into(), entry(value, expires_at_ms));
        });
    }
    /// The live keys, sorted.
    pub fn kv_keys(&self) -> Vec<String> {
        with(|s| {
            let now = s.now_ms;
            s.kv.iter()
                .filter(|(_, e)| e.expires_at_ms.is_none_or(|t| t > now))
                .map(|(k, _)| k.clone())
                .collect()
        })
    }

    // ---- dns ----

    /// Grant or withdraw the "dns" capability.
    pub fn grant_dns(&self, granted: bool) {
        with(|s| s.dns_granted = granted);
    }
    /// Make every look-up fail with `error` (`None`: answer again).
    pub fn fail_dns(&self, error: Option<DnsError>) {
        with(|s| s.dns_failure = error);
    }
    pub fn dns_a(&self, name: &str, addresses: &[&str]) {
        self.script(RecordType::A, name, texts(addresses));
    }
    pub fn dns_aaaa(&self, name: &str, addresses: &[&str]) {
        self.script(RecordType::Aaaa, name, texts(addresses));
    }
    /// MX records as `(preference, exchange)`; answered sorted by preference.
    pub fn dns_mx(&self, name: &str, records: &[(u16, &str)]) {
        let mut mxs: Vec<Mx> = records
            .iter()
            .map(|&(preference, exchange)| Mx {
                preference,
                exchange: exchange.into(),
            })
            .collect();
        mxs.sort_by_key(|m| m.preference);
        self.script(RecordType::Mx, name, Answer::Mxs(mxs));
    }
    pub fn dns_txt(&self, name: &str, records: &[&str]) {
        self.script(RecordType::Txt, name, texts(records));
    }
    /// PTR names of the address `ip` (as the plugin passes it).
    pub fn dns_ptr(&self, ip: &str, names: &[&str]) {
        self.script(RecordType::Ptr, ip, texts(names));
    }
    /// Answer look-ups of `record` at `name` with `error` (e.g. a
    /// `DnsError::Temporary` for one name only).
    pub fn dns_error(&self, record: RecordType, name: &str, error: DnsError) {
        self.script(record, name, Answer::Error(error));
    }
    /// The look-ups made so far, in order.
    pub fn dns_queries(&self) -> Vec<(RecordType, String)> {
        with(|s| s.queries.clone())
    }

    fn script(&self, record: RecordType, name: &str, answer: Answer) {
        with(|s| s.dns.insert((record, dns_key(name)), answer));
    }

    // ---- log ----

    /// Every `log` call so far.
    pub fn logs(&self) -> Vec<LogRecord> {
        with(|s| s.logs.clone())
    }
    /// Whether some log message contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        with(|s| s.logs.iter().any(|l| l.message.contains(needle)))
    }
    pub fn clear_logs(&self) {
        with(|s| s.logs.clear());
    }

    pub(crate) fn record_log(&self, level: Level, message: &str, fields: Vec<(String, String)>) {
        with(|s| {
            s.logs.push(LogRecord {
                level,
                message: message.into(),
                fields,
            })
        });
    }
}

fn entry(value: &str, expires_at_ms: Option<u64>) -> Entry {
    Entry {
        value: value.into(),
        expires_at_ms,
    }
}

fn texts(items: &[&str]) -> Answer {
    Answer::Texts(items.iter().map(|t| t.to_string()).collect())
}

/// Names compare case-insensitively and with or without the final dot.
fn dns_key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn live<'a>(s: &'a mut State, key: &str) -> Option<&'a Entry> {
    let now = s.now_ms;
    if s.kv
        .get(key)
        .is_some_and(|e| e.expires_at_ms.is_some_and(|t| t <= now))
    {
        s.kv.remove(key);
    }
    s.kv.get(key)
}

/// The `postern:policy/kv` calls as the host answers them.
pub(crate) mod fake_kv {
    use super::*;

    fn call<R>(
        key: &str,
        value: Option<&str>,
        f: impl FnOnce(&mut State) -> R,
    ) -> Result<R, KvError> {
        with(|s| {
            if !s.kv_granted {
                return Err(KvError::Denied);
            }
            if let Some(e) = &s.kv_failure {
                return Err(e.clone());
            }
            if key.is_empty() || key.len() > MAX_KEY {
                return Err(KvError::Invalid(format!(
                    "key length {} not in 1..={MAX_KEY}",
                    key.len()
                )));
            }
            if let Some(v) = value.filter(|v| v.len() > MAX_VALUE) {
                return Err(KvError::Invalid(format!(
                    "value length {} exceeds {MAX_VALUE}",
                    v.len()
                )));
            }
            Ok(f(s))
        })
    }

    pub fn get(key: &str) -> Result<Option<String>, KvError> {
        call(key, None, |s| live(s, key).map(|e| e.value.clone()))
    }
    pub fn set(key: &str, value: &str, ttl_ms: Option<u64>) -> Result<(), KvError> {
        call(key, Some(value), |s| {
            let expires = ttl_ms.map(|t| s.now_ms.saturating_add(t));
            s.kv.insert(key.into(), entry(value, expires));
        })
    }
    pub fn set_if_absent(key: &str, value: &str, ttl_ms: Option<u64>) -> Result<bool, KvError> {
        call(key, Some(value), |s| {
            if live(s, key).is_some() {
                return false;
            }
            let expires = ttl_ms.map(|t| s.now_ms.saturating_add(t));
            s.kv.insert(key.into(), entry(value, expires));
            true
        })
    }
    pub fn delete(key: &str) -> Result<bool, KvError> {
        call(key, None, |s| {
            let existed = live(s, key).is_some();
            s.kv.remove(key);
            existed
        })
    }
    /// A stored value that is not a number counts as 0, as in the host.
    pub fn increment(key: &str, delta: i64, window_ms: u64) -> Result<i64, KvError> {
        call(key, None, |s| {
            let now = s.now_ms;
            let (value, expires) = match live(s, key) {
                Some(e) => (
                    e.value.parse::<i64>().unwrap_or(0).saturating_add(delta),
                    e.expires_at_ms,
                ),
                None => (delta, Some(now.saturating_add(window_ms))),
            };
            s.kv.insert(key.into(), entry(&value.to_string(), expires));
            value
        })
    }
}

/// The `postern:policy/dns` calls: scripted answers; a name with nothing
/// scripted is NXDOMAIN, a name with other record types scripted is NODATA.
pub(crate) mod fake_dns {
    use super::*;

    fn lookup(record: RecordType, name: &str) -> Result<Answer, DnsError> {
        with(|s| {
            if !s.dns_granted {
                return Err(DnsError::Denied);
            }
            s.queries.push((record, name.to_string()));
            if let Some(e) = &s.dns_failure {
                return Err(e.clone());
            }
            let key = dns_key(name);
            match s.dns.get(&(record, key.clone())) {
                Some(Answer::Error(e)) => Err(e.clone()),
                Some(answer) => Ok(answer.clone()),
                None if s.dns.keys().any(|(_, n)| *n == key) => Err(DnsError::NoRecords),
                None => Err(DnsError::NxDomain),
            }
        })
    }

    fn texts(record: RecordType, name: &str) -> Result<Vec<String>, DnsError> {
        match lookup(record, name)? {
            Answer::Texts(t) => Ok(t),
            _ => Err(DnsError::NoRecords),
        }
    }

    pub fn lookup_a(name: &str) -> Result<Vec<String>, DnsError> {
        texts(RecordType::A, name)
    }
    pub fn lookup_aaaa(name: &str) -> Result<Vec<String>, DnsError> {
        texts(RecordType::Aaaa, name)
    }
    pub fn lookup_txt(name: &str) -> Result<Vec<String>, DnsError> {
        texts(RecordType::Txt, name)
    }
    pub fn lookup_ptr(ip: &str) -> Result<Vec<String>, DnsError> {
        texts(RecordType::Ptr, ip)
    }
    pub fn lookup_mx(name: &str) -> Result<Vec<Mx>, DnsError> {
        match lookup(RecordType::Mx, name)? {
            Answer::Mxs(m) => Ok(m),
            _ => Err(DnsError::NoRecords),
        }
    }
}
