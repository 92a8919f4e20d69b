//! MTA-STS (RFC 8461) for outbound SMTP: a recipient domain publishes, in a
//! TXT record `_mta-sts.<domain>` and a policy file served over HTTPS from
//! `mta-sts.<domain>`, which MX hosts may receive its mail and that they
//! must present a certificate valid for their name. In `enforce` mode,
//! Postern delivers only to matching MX hosts over verified TLS (else it
//! defers); in `testing` mode it delivers as without a policy and reports
//! what would have failed (TLS-RPT, [`crate::tlsrpt`]).
//!
//! Policies are cached (in memory and in a JSON file in the data directory,
//! so a restart does not forget them, RFC 8461 §5.1) until their `max_age`;
//! the TXT record is checked again at most every [`RECHECK`], and a changed
//! `id` fetches the policy again. A failed fetch or DNS look-up keeps the
//! cached policy; without one the domain has no policy (the sender then
//! uses its own TLS setting, as the RFC requires: MTA-STS is
//! trust-on-first-use).
//!
//! Input: the TXT answers and the policy file are the recipient domain's,
//! untrusted: sizes are bounded (64 KiB body), parsing is strict, redirects
//! are not followed (§3.3), and the HTTPS certificate must verify for
//! `mta-sts.<domain>` against the webpki roots or `delivery.tls_ca_file`
//! (the same trust as `verify`). Trusted: the operator's settings.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use postern_capability::{DnsAnswer, DnsBackend, DnsFailure, DnsQuery};
use serde::{Deserialize, Serialize};

use crate::now_ms;
use crate::tls::{TlsClient, server_name};

/// How often the TXT record of a domain with a cached policy (or none) is
/// looked up again.
pub const RECHECK: Duration = Duration::from_secs(300);
/// The largest policy file read (RFC 8461 §3.3 suggests 64 KiB).
const MAX_BODY: usize = 64 * 1024;
/// RFC 8461 §3.2: max_age is at most 31557600 seconds (about a year).
const MAX_AGE_LIMIT: u64 = 31_557_600;
/// A time-out for the whole fetch (§3.3 suggests at least a minute for the
/// connection; a delivery waits for it, so Postern keeps it shorter).
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Policies are served on the HTTPS port (RFC 8461 §3.3).
const HTTPS_PORT: u16 = 443;

/// What a policy asks of senders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

/// One domain's policy, as fetched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The policy domain (the recipient's domain).
    pub domain: String,
    /// The TXT record's `id` it was fetched for.
    pub id: String,
    pub mode: Mode,
    /// MX host patterns: a host name, or `*.` and a parent domain (one label).
    pub mx: Vec<String>,
    /// Seconds the policy may be cached.
    pub max_age: u64,
    pub fetched_ms: u64,
    /// The policy's lines as served (TLS-RPT's `policy-string`).
    pub text: Vec<String>,
}

impl Policy {
    /// Parse a policy file (RFC 8461 §3.2): `key: value` lines; `version`,
    /// `mode` and `max_age` once each, `mx` at least once unless the mode is
    /// `none`; unknown keys are ignored.
    pub fn parse(domain: &str, id: &str, body: &str, fetched_ms: u64) -> Result<Policy, String> {
        let (mut version, mut mode, mut max_age) = (None, None, None);
        let mut mx = Vec::new();
        let mut text = Vec::new();
        for line in body.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                continue;
            }
            text.push(line.to_string());
            let Some((key, value)) = line.split_once(':') else {
                return Err(format!("line {line:?} is not \"key: value\""));
            };
            let value = value.trim();
            let once = |slot: &mut Option<String>| match slot {
                Some(_) => Err(format!("{key} is given twice")),
                None => {
                    *slot = Some(value.to_string());
                    Ok(())
                }
            };
            match key {
                "version" => once(&mut version)?,
                "mode" => once(&mut mode)?,
                "max_age" => once(&mut max_age)?,
                "mx" => mx.push(value.trim_end_matches('.').to_ascii_lowercase()),
                _ => {}
            }
        }
        if version.as_deref() != Some("STSv1") {
            return Err(format!("version is {version:?}, not STSv1"));
        }
        let mode = match mode.as_deref() {
            Some("enforce") => Mode::Enforce,
            Some("testing") => Mode::Testing,
            Some("none") => Mode::None,
            other => return Err(format!("mode is {other:?}, not enforce, testing or none")),
        };
        let max_age = match max_age {
            Some(v) if !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()) => {
                v.parse::<u64>().unwrap_or(u64::MAX).min(MAX_AGE_LIMIT)
            }
            other => return Err(format!("max_age is {other:?}, not a number of seconds")),
        };
        if mode != Mode::None && mx.is_empty() {
            return Err("no mx pattern".into());
        }
        if let Some(bad) = mx.iter().find(|p| !valid_pattern(p)) {
            return Err(format!("mx {bad:?} is not a host name or *.domain"));
        }
        Ok(Policy {
            domain: domain.to_string(),
            id: id.to_string(),
            mode,
            mx,
            max_age,
            fetched_ms,
            text,
        })
    }

    /// Whether MX host `host` is one the policy names (RFC 8461 §4.1): an
    /// exact name, or `*.parent` for a name one label below `parent`.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|p| match p.strip_prefix("*.") {
            Some(parent) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => *p == host,
        })
    }

    pub fn expires_ms(&self) -> u64 {
        self.fetched_ms
            .saturating_add(self.max_age.saturating_mul(1000))
    }
}

fn valid_pattern(p: &str) -> bool {
    let name = p.strip_prefix("*.").unwrap_or(p);
    !name.is_empty()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The `id` of a domain's `_mta-sts` TXT record (RFC 8461 §3.1), if exactly
/// one record starts with `v=STSv1` and it is well formed.
pub fn txt_id(records: &[String]) -> Result<String, String> {
    let sts: Vec<&String> = records
        .iter()
        .filter(|r| r.starts_with("v=STSv1"))
        .collect();
    let record = match sts.as_slice() {
        [] => return Err("no v=STSv1 record".into()),
        [one] => *one,
        _ => return Err("more than one v=STSv1 record".into()),
    };
    let mut fields = record.split(';').map(str::trim).filter(|f| !f.is_empty());
    if fields.next() != Some("v=STSv1") {
        return Err(format!("{record:?} does not start with v=STSv1;"));
    }
    for f in fields {
        if let Some(id) = f.strip_prefix("id=") {
            let id = id.trim();
            if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(format!("id {id:?} is not 1 to 32 letters and digits"));
            }
            return Ok(id.to_string());
        }
    }
    Err(format!("{record:?} has no id"))
}

/// What the cache knows of a domain for one delivery.
#[derive(Clone, Debug)]
pub enum Found {
    /// A policy in force (fresh or cached).
    Policy(Arc<Policy>),
    /// The domain publishes no policy.
    None,
    /// The domain announces a policy that could not be fetched or parsed,
    /// and none is cached: delivery goes on without one (RFC 8461 §5), and
    /// TLS-RPT reports the reason.
    Failed(FetchFailure),
}

/// Why a policy announced in DNS could not be used (TLS-RPT result types).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchFailure {
    /// `sts-policy-fetch-error`: no connection, no 200, a time-out.
    Fetch(String),
    /// `sts-webpki-invalid`: the HTTPS certificate did not verify.
    Webpki(String),
    /// `sts-policy-invalid`: the file did not parse.
    Invalid(String),
}

impl FetchFailure {
    pub fn reason(&self) -> &str {
        match self {
            FetchFailure::Fetch(r) | FetchFailure::Webpki(r) | FetchFailure::Invalid(r) => r,
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    policy: Option<Arc<Policy>>,
    checked_ms: u64,
}

/// The policy cache, shared by every delivery worker.
pub struct StsCache {
    entries: Mutex<HashMap<String, Entry>>,
    /// Where policies are kept across restarts (`None`: memory only).
    file: Option<PathBuf>,
}

impl StsCache {
    /// A cache kept in `file` (read now if it exists; a damaged file is
    /// logged and ignored: it is only a cache).
    pub fn new(file: Option<PathBuf>) -> StsCache {
        let mut entries = HashMap::new();
        if let Some(path) = &file {
            match std::fs::read(path) {
                Ok(bytes) => match serde_json::from_slice::<Vec<Policy>>(&bytes) {
                    Ok(list) => {
                        for p in list {
                            entries.insert(
                                p.domain.clone(),
                                Entry {
                                    policy: Some(Arc::new(p)),
                                    checked_ms: 0,
                                },
                            );
                        }
                    }
                    Err(e) => tracing::warn!(file = %path.display(), error = %e,
                        "MTA-STS policy cache unreadable; starting empty"),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(file = %path.display(), error = %e,
                    "MTA-STS policy cache unreadable; starting empty"),
            }
        }
        StsCache {
            entries: Mutex::new(entries),
            file,
        }
    }

    /// The policy for mail to `domain` now, looking it up when due.
    pub async fn lookup(&self, domain: &str, dns: &dyn DnsBackend, tls: &TlsClient) -> Found {
        let now = now_ms();
        let cached = self.entries.lock().unwrap().get(domain).cloned();
        let live = |e: &Option<Entry>| {
            e.as_ref()
                .and_then(|e| e.policy.clone())
                .filter(|p| p.expires_ms() > now)
        };
        if let Some(e) = &cached
            && now.saturating_sub(e.checked_ms) < RECHECK.as_millis() as u64
        {
            return match live(&cached) {
                Some(p) => Found::Policy(p),
                None => Found::None,
            };
        }
        let id = match dns
            .lookup(DnsQuery::Txt(format!("_mta-sts.{domain}")))
            .await
        {
            Ok(DnsAnswer::Txt(records)) => txt_id(&records).ok(),
            Ok(_) | Err(DnsFailure::NxDomain | DnsFailure::NoRecords | DnsFailure::Invalid(_)) => {
                None
            }
            Err(DnsFailure::Temporary(e)) => {
                // Keep what is cached; look again on the next delivery.
                tracing::debug!(%domain, error = %e, "MTA-STS TXT look-up failed");
                return match live(&cached) {
                    Some(p) => Found::Policy(p),
                    None => Found::None,
                };
            }
        };
        let current = live(&cached);
        let Some(id) = id else {
            // RFC 8461 §5.1: without a TXT record a cached policy stays in force.
            self.remember(domain, current.clone(), now);
            return current.map_or(Found::None, Found::Policy);
        };
        if let Some(p) = current.as_ref().filter(|p| p.id == id) {
            self.remember(domain, Some(p.clone()), now);
            return Found::Policy(p.clone());
        }
        match self.fetch(domain, &id, dns, tls).await {
            Ok(p) => {
                tracing::info!(%domain, id = %p.id, mode = ?p.mode, max_age = p.max_age,
                    "MTA-STS policy fetched");
                let p = Arc::new(p);
                self.remember(domain, Some(p.clone()), now);
                self.save();
                Found::Policy(p)
            }
            Err(failure) => {
                tracing::warn!(%domain, reason = failure.reason(), "MTA-STS policy fetch failed");
                // Not fetched again before RECHECK: a dead policy host must not
                // hold up every message to the domain.
                self.remember(domain, current.clone(), now);
                match current {
                    Some(p) => Found::Policy(p),
                    None => Found::Failed(failure),
                }
            }
        }
    }

    fn remember(&self, domain: &str, policy: Option<Arc<Policy>>, now: u64) {
        self.entries.lock().unwrap().insert(
            domain.to_string(),
            Entry {
                policy,
                checked_ms: now,
            },
        );
    }

    /// Write the live policies to the cache file (atomically; a failure is
    /// only logged).
    fn save(&self) {
        let Some(path) = &self.file else { return };
        let now = now_ms();
        let list: Vec<Policy> = self
            .entries
            .lock()
            .unwrap()
            .values()
            .filter_map(|e| e.policy.as_deref())
            .filter(|p| p.expires_ms() > now)
            .cloned()
            .collect();
        let tmp = path.with_extension("tmp");
        let result = serde_json::to_vec_pretty(&list)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            tracing::warn!(file = %path.display(), error = %e, "cannot save the MTA-STS policy cache");
        }
    }

    /// Fetch and parse `https://mta-sts.<domain>/.well-known/mta-sts.txt`.
    async fn fetch(
        &self,
        domain: &str,
        id: &str,
        dns: &dyn DnsBackend,
        tls: &TlsClient,
    ) -> Result<Policy, FetchFailure> {
        let host = format!("mta-sts.{domain}");
        let body = tokio::time::timeout(FETCH_TIMEOUT, get(&host, dns, tls))
            .await
            .map_err(|_| FetchFailure::Fetch(format!("https://{host}: timed out")))??;
        let body = std::str::from_utf8(&body)
            .map_err(|_| FetchFailure::Invalid(format!("https://{host}: policy is not UTF-8")))?;
        Policy::parse(domain, id, body, now_ms())
            .map_err(|e| FetchFailure::Invalid(format!("https://{host}: {e}")))
    }
}

/// GET the well-known policy path from `host` over verified HTTPS.
async fn get(host: &str, dns: &dyn DnsBackend, tls: &TlsClient) -> Result<Bytes, FetchFailure> {
    let fetch = |e: String| FetchFailure::Fetch(format!("https://{host}: {e}"));
    let addrs = crate::mx::addresses(dns, host)
        .await
        .map_err(|e| fetch(format!("cannot resolve: {e}")))?;
    let name = server_name(host).ok_or_else(|| fetch("not a valid TLS server name".into()))?;
    let mut last = String::from("no address");
    for ip in addrs {
        let tcp = match tokio::net::TcpStream::connect(SocketAddr::new(ip, HTTPS_PORT)).await {
            Ok(t) => t,
            Err(e) => {
                last = format!("{ip}: {e}");
                continue;
            }
        };
        let stream = match tls.connector(true).connect(name.clone(), tcp).await {
            Ok(s) => s,
            Err(e) => {
                return Err(match crate::tls::certificate_problem(&e) {
                    Some(_) => FetchFailure::Webpki(format!("https://{host}: {e}")),
                    None => fetch(format!("{ip}: TLS handshake: {e}")),
                });
            }
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| fetch(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = hyper::Request::get("/.well-known/mta-sts.txt")
            .header(hyper::header::HOST, host)
            .header(hyper::header::USER_AGENT, "Postern MTA-STS")
            .header(hyper::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| fetch(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| fetch(e.to_string()))?;
        // §3.3: only 200 counts; redirects are not followed.
        if response.status() != hyper::StatusCode::OK {
            return Err(fetch(format!("HTTP status {}", response.status())));
        }
        let text_plain = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/plain"))
            });
        if !text_plain {
            return Err(FetchFailure::Invalid(format!(
                "https://{host}: the policy is not served as text/plain"
            )));
        }
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| fetch(format!("reading the policy: {e}")))?;
        return Ok(body.to_bytes());
    }
    Err(fetch(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Result<Policy, String> {
        Policy::parse("example.com", "id1", text, 0)
    }

    #[test]
    fn parses_the_rfc_example() {
        let p = policy(
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 604800);
        assert_eq!(p.mx.len(), 3);
        assert_eq!(p.text.len(), 6);
        assert!(p.matches("mail.example.com"));
        assert!(p.matches("MAIL.example.com."));
        assert!(p.matches("mx1.example.net"));
        assert!(!p.matches("a.b.example.net"), "* is one label");
        assert!(!p.matches("example.net"));
        assert!(!p.matches("evil.example.com"));
    }

    #[test]
    fn refuses_malformed_policies() {
        for (text, why) in [
            ("mode: enforce\nmx: a.test\nmax_age: 1\n", "version"),
            (
                "version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n",
                "version",
            ),
            (
                "version: STSv1\nmode: strict\nmx: a.test\nmax_age: 1\n",
                "mode",
            ),
            ("version: STSv1\nmode: enforce\nmx: a.test\n", "max_age"),
            (
                "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -1\n",
                "max_age",
            ),
            ("version: STSv1\nmode: enforce\nmax_age: 86400\n", "no mx"),
            ("version: STSv1\nmode: enforce\nmx: a b\nmax_age: 1\n", "mx"),
            (
                "version: STSv1\nmode: enforce\nmode: testing\nmx: a.test\nmax_age: 1\n",
                "twice",
            ),
            ("version: STSv1\ngarbage\n", "key: value"),
        ] {
            let e = policy(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
        // mode none needs no mx; max_age is capped at a year; unknown keys pass.
        let p = policy("version: STSv1\nmode: none\nmax_age: 99999999999\nfoo: bar\n");
        assert!(p.is_err(), "more than 10 digits");
        let p = policy("version: STSv1\nmode: none\nmax_age: 9999999999\nfoo: bar\n").unwrap();
        assert_eq!(p.max_age, MAX_AGE_LIMIT);
    }

    /// A resolver answering TXT records from a table (anything else: no
    /// such name), or failing every look-up temporarily.
    struct Txt(std::sync::Mutex<Option<Vec<String>>>, bool);

    impl DnsBackend for Txt {
        fn lookup(
            &self,
            q: DnsQuery,
        ) -> postern_capability::BoxFuture<'_, Result<DnsAnswer, DnsFailure>> {
            let answer = match (&q, self.1, self.0.lock().unwrap().clone()) {
                (_, true, _) => Err(DnsFailure::Temporary("down".into())),
                (DnsQuery::Txt(_), false, Some(r)) => Ok(DnsAnswer::Txt(r)),
                _ => Err(DnsFailure::NxDomain),
            };
            Box::pin(async move { answer })
        }
    }

    fn txt(records: Option<&[&str]>, down: bool) -> Txt {
        let r = records.map(|r| r.iter().map(|s| s.to_string()).collect());
        Txt(std::sync::Mutex::new(r), down)
    }

    fn enforce(id: &str, fetched_ms: u64) -> Policy {
        Policy::parse(
            "a.test",
            id,
            "version: STSv1\nmode: enforce\nmx: mx.a.test\nmax_age: 86400\n",
            fetched_ms,
        )
        .unwrap()
    }

    /// A cache file holding `p`, and a cache read from it (as after a
    /// restart: the TXT record is due at once).
    fn restarted_with(p: &Policy) -> (tempfile::TempDir, StsCache) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mta-sts.json");
        std::fs::write(&file, serde_json::to_vec(&[p]).unwrap()).unwrap();
        (dir, StsCache::new(Some(file)))
    }

    fn tls() -> TlsClient {
        TlsClient::new(&crate::Settings::new(
            "mx.test",
            &[],
            std::path::Path::new("/d"),
        ))
        .unwrap()
    }

    #[tokio::test]
    async fn a_cached_policy_outlives_dns_and_fetch_failures() {
        let p = enforce("1", now_ms());
        // Same id in DNS: the cached policy, no fetch.
        let (_d, cache) = restarted_with(&p);
        let found = cache
            .lookup("a.test", &txt(Some(&["v=STSv1; id=1"]), false), &tls())
            .await;
        assert!(matches!(found, Found::Policy(q) if *q == p));
        // No TXT record any more, or DNS down: still the cached policy (§5.1).
        let (_d, cache) = restarted_with(&p);
        let found = cache.lookup("a.test", &txt(None, false), &tls()).await;
        assert!(matches!(found, Found::Policy(_)));
        let (_d, cache) = restarted_with(&p);
        let found = cache.lookup("a.test", &txt(None, true), &tls()).await;
        assert!(matches!(found, Found::Policy(_)));
        // A new id whose policy cannot be fetched (mta-sts.a.test does not
        // resolve): the cached one stays in force.
        let (_d, cache) = restarted_with(&p);
        let found = cache
            .lookup("a.test", &txt(Some(&["v=STSv1; id=2"]), false), &tls())
            .await;
        assert!(matches!(found, Found::Policy(q) if q.id == "1"));
    }

    #[tokio::test]
    async fn without_a_cached_policy_a_failed_fetch_is_reported_once() {
        let cache = StsCache::new(None);
        let dns = txt(Some(&["v=STSv1; id=7"]), false);
        let found = cache.lookup("b.test", &dns, &tls()).await;
        let Found::Failed(FetchFailure::Fetch(why)) = found else {
            panic!("{found:?}")
        };
        assert!(why.contains("mta-sts.b.test"), "{why}");
        // Not fetched again before RECHECK: no policy, nothing new to report.
        assert!(matches!(
            cache.lookup("b.test", &dns, &tls()).await,
            Found::None
        ));
        // No record at all: no policy.
        let cache = StsCache::new(None);
        assert!(matches!(
            cache.lookup("c.test", &txt(None, false), &tls()).await,
            Found::None
        ));
    }

    #[tokio::test]
    async fn an_expired_policy_is_not_used() {
        let mut p = enforce("1", 0);
        p.max_age = 1;
        let (_d, cache) = restarted_with(&p);
        let found = cache.lookup("a.test", &txt(None, false), &tls()).await;
        assert!(matches!(found, Found::None), "{found:?}");
        // A damaged cache file is only a cache: ignored.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.json"), b"{not json").unwrap();
        let cache = StsCache::new(Some(dir.path().join("c.json")));
        assert!(matches!(
            cache.lookup("a.test", &txt(None, false), &tls()).await,
            Found::None
        ));
    }

    #[test]
    fn reads_the_txt_id() {
        let r = |v: &[&str]| txt_id(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            r(&["v=STSv1; id=20160831085700Z;"]).unwrap(),
            "20160831085700Z"
        );
        assert_eq!(r(&["other", "v=STSv1;id=abc"]).unwrap(), "abc");
        assert!(r(&[]).is_err());
        assert!(r(&["v=STSv1; id=a", "v=STSv1; id=b"]).is_err());
        assert!(r(&["v=STSv1; id=not-alnum"]).is_err());
        assert!(r(&["v=STSv1;"]).is_err());
        assert!(r(&["v=STSv10; id=a"]).is_err());
    }
}
