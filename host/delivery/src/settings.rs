//! What the operator chose for delivery (the `[delivery]` section, validated by the
//! binary's configuration loader): agents, limits, retry schedule, TLS policy and the
//! optional relayhost. Trusted input; `Relayhost::parse` checks the one free-form value.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::retry::RetrySchedule;

/// When to use STARTTLS on outbound SMTP (RFC 3207).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Never: plain text only.
    None,
    /// Use STARTTLS when offered, without certificate checks (RFC 7435); fall back to
    /// plain text when it is not offered or the handshake fails.
    Opportunistic,
    /// STARTTLS must be offered and succeed, but the certificate is not
    /// checked (Postfix's `encrypt`); otherwise the delivery is deferred.
    Encrypt,
    /// STARTTLS must be offered and the certificate must verify for the host name
    /// (webpki roots or `tls_ca_file`); otherwise the delivery is deferred.
    Required,
    /// A per-domain choice, resolved before connecting: the domain's MTA-STS
    /// policy (RFC 8461) when it publishes one, else `tls`.
    Sts,
    /// Opportunistic DANE (RFC 7672): hosts with a DNSSEC-validated, usable
    /// TLSA RRset must present a matching certificate; others get
    /// `Opportunistic`. See `dane`.
    Dane,
    /// Mandatory DANE: hosts without a validated, usable TLSA RRset are not
    /// used (the delivery is deferred).
    DaneOnly,
}

impl TlsPolicy {
    pub fn name(self) -> &'static str {
        match self {
            TlsPolicy::None => "none",
            TlsPolicy::Opportunistic => "opportunistic",
            TlsPolicy::Encrypt => "encrypt",
            TlsPolicy::Required => "required",
            TlsPolicy::Sts => "sts",
            TlsPolicy::Dane => "dane",
            TlsPolicy::DaneOnly => "dane-only",
        }
    }

    /// Whether a session without TLS is refused.
    pub fn requires_tls(self) -> bool {
        matches!(self, TlsPolicy::Encrypt | TlsPolicy::Required)
    }

    /// Whether the TLS of each host is decided by its TLSA records (`dane`).
    pub fn is_dane(self) -> bool {
        matches!(self, TlsPolicy::Dane | TlsPolicy::DaneOnly)
    }
}

/// A password: compared, cloned, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"(secret)\"")
    }
}

/// A smarthost: every non-local recipient goes there (no MX look-up).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Relayhost {
    /// Host name or IP address (no brackets).
    pub host: String,
    pub port: u16,
}

impl Relayhost {
    /// `host`, `host:port`, `[host]:port`, `1.2.3.4:587`, `[2001:db8::1]:25`.
    pub fn parse(text: &str) -> Result<Relayhost, String> {
        let t = text.trim();
        let bad = || format!("relayhost {text:?} is not \"host\" or \"host:port\"");
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').ok_or_else(bad)?)),
            }
        } else if t.matches(':').count() > 1 {
            (t, None) // a bare IPv6 address
        } else {
            match t.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (t, None),
            }
        };
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && (host.parse::<std::net::IpAddr>().is_ok()
                || host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
        if !valid_host {
            return Err(bad());
        }
        let port = match port {
            None => 25,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?,
        };
        // One spelling per address, so that lists of relays compare equal.
        let host = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.to_canonical().to_string(),
            Err(_) => host.trim_end_matches('.').to_ascii_lowercase(),
        };
        Ok(Relayhost { host, port })
    }
}

impl fmt::Display for Relayhost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]:{}", self.host, self.port)
    }
}

/// Everything delivery needs to know. Cheap to share behind an `Arc`.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Deliver at all (false: hold everything in the queue).
    pub enabled: bool,
    /// This MTA's name: Reporting-MTA of bounces, Maildir file names, loop detection.
    pub hostname: String,
    /// The name sent in EHLO/HELO.
    pub helo_name: String,
    /// Domains delivered to local Maildirs (lower case, no trailing dot).
    pub local_domains: Vec<String>,
    /// `<root>/<domain>/<local-part>/{tmp,new,cur}`.
    pub maildir_root: PathBuf,
    /// Deliveries (connections) in progress at once, overall.
    pub max_concurrency: usize,
    /// ... and per destination (domain, relayhost, or local).
    pub max_per_destination: usize,
    /// Messages sent over one SMTP connection before it is closed.
    pub max_messages_per_connection: usize,
    pub retry: RetrySchedule,
    /// Port of MX hosts (25; tests point it at a sink).
    pub smtp_port: u16,
    pub relayhost: Option<Relayhost>,
    /// Smarthosts a route-hook may name with `relay(...)` besides the
    /// relayhost (`[delivery] route_relays`); any other defers the recipient.
    /// A plugin gets no network of its own, so it cannot reach a host the
    /// operator did not list through routing either.
    pub route_relays: Vec<Relayhost>,
    /// AUTH credentials for the relayhost.
    pub relayhost_auth: Option<(String, Secret)>,
    /// Send AUTH credentials over a connection without TLS (default false).
    pub auth_without_tls: bool,
    pub tls: TlsPolicy,
    /// Per next-hop domain (`[delivery.tls_policy]`, like Postfix's
    /// `smtp_tls_policy_maps`): `example.com` for that domain, `.example.com`
    /// for its subdomains. Applies to MX delivery (the recipient's domain,
    /// or a route-hook's `mx(...)` domain); the relayhost and route-hook
    /// relays keep `tls`.
    pub tls_policy: std::collections::BTreeMap<String, TlsPolicy>,
    /// PEM CA certificates for `tls = "required"` (default: the webpki roots).
    pub tls_ca_file: Option<PathBuf>,
    /// Honour MTA-STS (RFC 8461) for domains without a `tls_policy` entry.
    pub mta_sts: bool,
    /// Where MTA-STS policies are cached across restarts.
    pub mta_sts_cache: Option<PathBuf>,
    /// Where TLS reports (RFC 8460) are written, and each report's period.
    pub tls_report_dir: PathBuf,
    pub tls_report_interval: Duration,
    pub connect_timeout: Duration,
    /// Greeting, EHLO, MAIL, RCPT, DATA and each data block (RFC 5321 §4.5.3.2).
    pub command_timeout: Duration,
    /// The reply to the final "." (RFC 5321 §4.5.3.2.6: 10 minutes).
    pub data_timeout: Duration,
}

impl Settings {
    /// The defaults for a server called `hostname` with data in `data_dir`.
    pub fn new(hostname: &str, local_domains: &[String], data_dir: &Path) -> Settings {
        Settings {
            enabled: true,
            hostname: hostname.to_string(),
            helo_name: hostname.to_string(),
            local_domains: local_domains.to_vec(),
            maildir_root: data_dir.join("mail"),
            max_concurrency: 20,
            max_per_destination: 5,
            max_messages_per_connection: 100,
            retry: RetrySchedule::default(),
            smtp_port: 25,
            relayhost: None,
            route_relays: Vec::new(),
            relayhost_auth: None,
            auth_without_tls: false,
            tls: TlsPolicy::Opportunistic,
            tls_policy: std::collections::BTreeMap::new(),
            tls_ca_file: None,
            mta_sts: true,
            mta_sts_cache: Some(data_dir.join("mta-sts.json")),
            tls_report_dir: crate::tlsrpt::default_dir(data_dir),
            tls_report_interval: Duration::from_secs(86400),
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
        }
    }

    /// The STARTTLS policy for mail to `domain` (lower case, no trailing
    /// dot): its own entry, else the nearest `.parent` entry, else `Sts`
    /// when `mta_sts` is on (and `tls` is not DANE), else `tls`.
    pub fn tls_for_domain(&self, domain: &str) -> TlsPolicy {
        // DANE, where configured, is used instead of MTA-STS (RFC 8461 §2).
        let default = match self.mta_sts && !self.tls.is_dane() {
            true => TlsPolicy::Sts,
            false => self.tls,
        };
        if self.tls_policy.is_empty() {
            return default;
        }
        if let Some(p) = self.tls_policy.get(domain) {
            return *p;
        }
        let mut rest = domain;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(p) = self.tls_policy.get(&format!(".{parent}")) {
                return *p;
            }
            rest = parent;
        }
        default
    }

    /// Whether `domain` (any case, optional trailing dot) is delivered locally.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        let d = domain.trim_end_matches('.');
        self.local_domains.iter().any(|l| l.eq_ignore_ascii_case(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayhost_forms() {
        let ok = [
            ("smtp.example.org", "smtp.example.org", 25),
            ("smtp.example.org:587", "smtp.example.org", 587),
            ("[Smtp.Example.org]:2525", "smtp.example.org", 2525),
            ("127.0.0.1:2525", "127.0.0.1", 2525),
            ("[2001:db8::1]:25", "2001:db8::1", 25),
            ("2001:db8::1", "2001:db8::1", 25),
            ("[mx.test]", "mx.test", 25),
        ];
        for (text, host, port) in ok {
            let r = Relayhost::parse(text).unwrap();
            assert_eq!((r.host.as_str(), r.port), (host, port), "{text}");
        }
        for bad in [
            "", ":25", "host:0", "host:x", "ho st:25", "[host", "[host]x", "a/b:25",
        ] {
            assert!(Relayhost::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_are_not_printed() {
        let s = Secret("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
