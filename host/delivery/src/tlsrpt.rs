//! SMTP TLS Reporting (RFC 8460): for every recipient domain whose mail went
//! out under an MTA-STS evaluation ([`crate::sts`]) or to a DANE host
//! ([`crate::dane`], policy type `tlsa`), the TLS sessions that
//! succeeded and the ones that failed, and why, counted per reporting period
//! and written at its end as one RFC 8460 §4 JSON report per policy domain,
//! in `delivery.tls_report_dir`, named as §5.3 names the attachment
//! (`receiver!policy-domain!begin!end.json`). Sending the reports by mail
//! to the domain's `rua` is left to the operator for now.
//!
//! Input: results of Postern's own sessions (trusted) and names and policy
//! text from the remote domain (untrusted, only copied into JSON by
//! serde_json). Files are written to a temporary name, then renamed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use crate::now_ms;
use crate::sts::{FetchFailure, Policy};

/// RFC 8460 §4.3 result types Postern reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResultType {
    StarttlsNotSupported,
    CertificateHostMismatch,
    CertificateExpired,
    CertificateNotTrusted,
    ValidationFailure,
    StsPolicyFetchError,
    StsPolicyInvalid,
    StsWebpkiInvalid,
}

impl ResultType {
    pub fn name(self) -> &'static str {
        match self {
            ResultType::StarttlsNotSupported => "starttls-not-supported",
            ResultType::CertificateHostMismatch => "certificate-host-mismatch",
            ResultType::CertificateExpired => "certificate-expired",
            ResultType::CertificateNotTrusted => "certificate-not-trusted",
            ResultType::ValidationFailure => "validation-failure",
            ResultType::StsPolicyFetchError => "sts-policy-fetch-error",
            ResultType::StsPolicyInvalid => "sts-policy-invalid",
            ResultType::StsWebpkiInvalid => "sts-webpki-invalid",
        }
    }

    /// The result type of a policy that could not be fetched.
    pub fn of_fetch(f: &FetchFailure) -> ResultType {
        match f {
            FetchFailure::Fetch(_) => ResultType::StsPolicyFetchError,
            FetchFailure::Webpki(_) => ResultType::StsWebpkiInvalid,
            FetchFailure::Invalid(_) => ResultType::StsPolicyInvalid,
        }
    }
}

/// The policy a session was judged by (RFC 8460 §4.3 policy types).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Applied {
    pub domain: String,
    pub kind: PolicyKind,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PolicyKind {
    /// `no-policy-found`.
    None,
    /// `sts`: the policy's lines and its MX patterns.
    Sts { text: Vec<String>, mx: Vec<String> },
    /// `tlsa`: the MX host's TLSA records, in presentation form.
    Tlsa {
        mx_host: String,
        records: Vec<String>,
    },
}

impl Applied {
    pub fn sts(p: &Policy) -> Applied {
        Applied {
            domain: p.domain.clone(),
            kind: PolicyKind::Sts {
                text: p.text.clone(),
                mx: p.mx.clone(),
            },
        }
    }

    pub fn none(domain: &str) -> Applied {
        Applied {
            domain: domain.to_string(),
            kind: PolicyKind::None,
        }
    }

    /// DANE for MX host `mx_host` of `domain`, with its TLSA `records`.
    pub fn tlsa(domain: &str, mx_host: &str, records: Vec<String>) -> Applied {
        Applied {
            domain: domain.to_string(),
            kind: PolicyKind::Tlsa {
                mx_host: mx_host.to_string(),
                records,
            },
        }
    }
}

/// One failure row (§4.3 failure details) and its count.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct FailureKey {
    result: ResultType,
    mx_host: Option<String>,
    ip: Option<IpAddr>,
    reason: String,
}

#[derive(Default)]
struct Counts {
    success: u64,
    failures: BTreeMap<FailureKey, u64>,
}

struct Period {
    start_ms: u64,
    policies: BTreeMap<Applied, Counts>,
}

/// The counts of the current period, shared by every delivery worker.
pub struct TlsReporter {
    period: Mutex<Period>,
    /// Where reports are written.
    pub dir: PathBuf,
    /// Length of a reporting period (a day by default, RFC 8460 §4.1).
    pub interval: Duration,
    /// `organization-name` and the receiver part of file names.
    pub hostname: String,
}

impl TlsReporter {
    pub fn new(dir: PathBuf, interval: Duration, hostname: &str) -> TlsReporter {
        TlsReporter {
            period: Mutex::new(Period {
                start_ms: period_start(now_ms(), interval),
                policies: BTreeMap::new(),
            }),
            dir,
            interval,
            hostname: hostname.to_string(),
        }
    }

    /// A session under `applied` that completed its TLS requirements.
    pub fn success(&self, applied: &Applied) {
        self.count(applied, |c| c.success += 1);
    }

    /// A session under `applied` that failed for `result`.
    pub fn failure(
        &self,
        applied: &Applied,
        result: ResultType,
        mx_host: Option<&str>,
        ip: Option<IpAddr>,
        reason: &str,
    ) {
        let key = FailureKey {
            result,
            mx_host: mx_host.map(str::to_string),
            ip,
            reason: reason.chars().take(200).collect(),
        };
        self.count(applied, |c| *c.failures.entry(key).or_default() += 1);
    }

    /// Add to the current period's counts for `applied` with `add`, the
    /// period written out first if it has ended (the count belongs to a new
    /// one): one lock while the period runs.
    fn count(&self, applied: &Applied, add: impl FnOnce(&mut Counts)) {
        let now = now_ms();
        let mut p = self.period.lock().unwrap();
        if now >= p.start_ms + self.interval.as_millis() as u64 {
            drop(p);
            self.flush(now, false);
            p = self.period.lock().unwrap();
        }
        // The policy (its text, its records) is copied once per period.
        match p.policies.get_mut(applied) {
            Some(c) => add(c),
            None => add(p.policies.entry(applied.clone()).or_default()),
        }
    }

    /// Write the current period's reports and start the next period, when
    /// the period has run its length, or at once when `early` (at
    /// shutdown: that report ends now). Returns the files written.
    pub fn flush(&self, now: u64, early: bool) -> Vec<PathBuf> {
        let interval = self.interval.as_millis() as u64;
        let (start, end, policies) = {
            let mut p = self.period.lock().unwrap();
            let start = p.start_ms;
            let (end, next) = match now >= start + interval {
                // The period ran its length: the next one is now's.
                true => (start + interval, period_start(now, self.interval)),
                false if early => (now.max(start), now.max(start)),
                false => return Vec::new(),
            };
            p.start_ms = next;
            (start, end, std::mem::take(&mut p.policies))
        };
        let mut written = Vec::new();
        let mut by_domain: BTreeMap<&str, Vec<(&Applied, &Counts)>> = BTreeMap::new();
        for (applied, counts) in &policies {
            by_domain
                .entry(applied.domain.as_str())
                .or_default()
                .push((applied, counts));
        }
        for (domain, list) in by_domain {
            match self.write(domain, start, end, &list) {
                Ok(path) => written.push(path),
                Err(e) => tracing::warn!(dir = %self.dir.display(), %domain, error = %e,
                    "cannot write a TLS report"),
            }
        }
        written
    }

    fn write(
        &self,
        domain: &str,
        start: u64,
        end: u64,
        list: &[(&Applied, &Counts)],
    ) -> std::io::Result<PathBuf> {
        let policies: Vec<_> = list
            .iter()
            .map(|(applied, counts)| {
                let policy = match &applied.kind {
                    PolicyKind::Sts { text, mx } => json!({
                        "policy-type": "sts",
                        "policy-string": text,
                        "policy-domain": domain,
                        "mx-host": mx,
                    }),
                    PolicyKind::Tlsa { mx_host, records } => json!({
                        "policy-type": "tlsa",
                        "policy-string": records,
                        "policy-domain": domain,
                        "mx-host": [mx_host],
                    }),
                    PolicyKind::None => json!({
                        "policy-type": "no-policy-found",
                        "policy-domain": domain,
                    }),
                };
                let failed: u64 = counts.failures.values().sum();
                let details: Vec<_> = counts
                    .failures
                    .iter()
                    .map(|(k, n)| {
                        let mut d = json!({
                            "result-type": k.result.name(),
                            "failed-session-count": n,
                            "failure-reason-code": k.reason,
                        });
                        if let Some(h) = &k.mx_host {
                            d["receiving-mx-hostname"] = json!(h);
                        }
                        if let Some(ip) = k.ip {
                            d["receiving-ip"] = json!(ip.to_string());
                        }
                        d
                    })
                    .collect();
                json!({
                    "policy": policy,
                    "summary": {
                        "total-successful-session-count": counts.success,
                        "total-failure-session-count": failed,
                    },
                    "failure-details": details,
                })
            })
            .collect();
        let report = json!({
            "organization-name": self.hostname,
            "date-range": {
                "start-datetime": rfc3339(start),
                "end-datetime": rfc3339(end),
            },
            "contact-info": format!("postmaster@{}", self.hostname),
            "report-id": format!("{}.{}@{}", start / 1000, domain, self.hostname),
            "policies": policies,
        });
        std::fs::create_dir_all(&self.dir)?;
        let name = format!(
            "{}!{}!{}!{}.json",
            self.hostname,
            domain,
            start / 1000,
            end / 1000
        );
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(&report)?)?;
        std::fs::rename(&tmp, &path)?;
        tracing::info!(file = %path.display(), %domain, "TLS report written");
        Ok(path)
    }

    /// Write each period's reports when it ends, until the process stops.
    pub async fn run(self: std::sync::Arc<Self>) {
        loop {
            let start = self.period.lock().unwrap().start_ms;
            let due = start + self.interval.as_millis() as u64;
            let wait = due.saturating_sub(now_ms());
            tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
            self.flush(now_ms(), false);
        }
    }
}

/// The start of the period holding `now` (periods are aligned to the epoch,
/// so daily reports run from 00:00 to 24:00 UTC).
fn period_start(now: u64, interval: Duration) -> u64 {
    let i = (interval.as_millis() as u64).max(1);
    now - now % i
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A directory under `data_dir` named `tls-rpt` (the default report place).
pub fn default_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls-rpt")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_rfc8460_report_per_domain() {
        let dir = tempfile::tempdir().unwrap();
        let r = TlsReporter::new(dir.path().into(), Duration::from_secs(86400), "mx.me.test");
        let p = Policy::parse(
            "a.test",
            "1",
            "version: STSv1\nmode: enforce\nmx: mx.a.test\nmax_age: 86400\n",
            0,
        )
        .unwrap();
        let sts = Applied::sts(&p);
        r.success(&sts);
        r.success(&sts);
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        for _ in 0..3 {
            r.failure(
                &sts,
                ResultType::CertificateHostMismatch,
                Some("mx.a.test"),
                Some(ip),
                "no",
            );
        }
        r.success(&Applied::none("b.test"));
        let files = r.flush(now_ms(), true);
        assert_eq!(files.len(), 2);
        let a = files
            .iter()
            .find(|f| f.to_string_lossy().contains("!a.test!"))
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(a).unwrap()).unwrap();
        let pol = &v["policies"][0];
        assert_eq!(pol["policy"]["policy-type"], "sts");
        assert_eq!(pol["policy"]["mx-host"][0], "mx.a.test");
        assert_eq!(pol["summary"]["total-successful-session-count"], 2);
        assert_eq!(pol["summary"]["total-failure-session-count"], 3);
        let d = &pol["failure-details"][0];
        assert_eq!(d["result-type"], "certificate-host-mismatch");
        assert_eq!(d["receiving-ip"], "127.0.0.9");
        assert_eq!(d["failed-session-count"], 3);
        assert!(
            v["date-range"]["start-datetime"]
                .as_str()
                .unwrap()
                .ends_with('Z')
        );
        // The period was emptied.
        assert!(r.flush(now_ms(), true).is_empty());
        assert!(
            r.flush(now_ms(), false).is_empty(),
            "the period has not ended"
        );
    }
}
