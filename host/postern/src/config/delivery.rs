//! The `[delivery]` section: queue manager limits, retry schedule, local Maildir
//! root, outbound SMTP (port, relayhost with optional AUTH, STARTTLS policy, CA
//! file, time-outs). Input: the operator's file (see `examples/postern.toml`);
//! errors name the file and line like the rest of the configuration.

use std::path::Path;
use std::time::Duration;

use postern_delivery::{Relayhost, RetrySchedule, Secret, Settings, TlsPolicy};
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Ctx};

#[derive(Debug, Clone, Copy, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum TlsSetting {
    None,
    #[default]
    Opportunistic,
    Encrypt,
    Required,
    /// RFC 7672 DANE where the MX publishes validated TLSA, else opportunistic.
    Dane,
    /// RFC 7672 DANE or no delivery.
    #[serde(rename = "dane-only")]
    DaneOnly,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeliverySection {
    enabled: Option<bool>,
    maildir_root: Option<String>,
    max_concurrency: Option<Spanned<usize>>,
    max_per_destination: Option<Spanned<usize>>,
    max_messages_per_connection: Option<Spanned<usize>>,
    retry_intervals: Option<Spanned<Vec<Spanned<String>>>>,
    max_age: Option<Spanned<String>>,
    delay_warning: Option<Spanned<String>>,
    smtp_port: Option<Spanned<u16>>,
    relayhost: Option<Spanned<String>>,
    #[serde(default)]
    route_relays: Vec<Spanned<String>>,
    relayhost_username: Option<String>,
    relayhost_password: Option<String>,
    auth_without_tls: Option<bool>,
    #[serde(default)]
    tls: TlsSetting,
    /// `[delivery.tls_policy]`: recipient domain = "none" | "may" |
    /// "encrypt" | "verify" | "dane" | "dane-only" | "sts".
    #[serde(default)]
    tls_policy: std::collections::BTreeMap<String, Spanned<String>>,
    tls_ca_file: Option<String>,
    /// Honour MTA-STS for domains without a `tls_policy` entry (default true).
    mta_sts: Option<bool>,
    /// `[delivery.tls_report]`: where and how often TLS reports are written.
    tls_report: Option<TlsReportSection>,
    helo_name: Option<String>,
    connect_timeout: Option<Spanned<String>>,
    command_timeout: Option<Spanned<String>>,
    data_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsReportSection {
    dir: Option<String>,
    interval: Option<Spanned<String>>,
}

/// The validated delivery settings.
pub(super) fn build(
    cx: &Ctx,
    d: &DeliverySection,
    hostname: &str,
    local_domains: &[String],
    data_dir: &Path,
) -> Result<Settings, ConfigError> {
    let mut s = Settings::new(hostname, local_domains, data_dir);
    s.enabled = d.enabled.unwrap_or(true);
    if let Some(root) = &d.maildir_root {
        s.maildir_root = cx.resolve(root);
    }
    // How much is delivered at once, and over one connection.
    for (v, key, limit) in [
        (
            &d.max_concurrency,
            "delivery.max_concurrency",
            &mut s.max_concurrency,
        ),
        (
            &d.max_per_destination,
            "delivery.max_per_destination",
            &mut s.max_per_destination,
        ),
        (
            &d.max_messages_per_connection,
            "delivery.max_messages_per_connection",
            &mut s.max_messages_per_connection,
        ),
    ] {
        *limit = cx.at_least_one(v, key, *limit)?;
    }
    let mut retry = RetrySchedule::default();
    if let Some(list) = &d.retry_intervals {
        if list.get_ref().is_empty() {
            return Err(cx.at(
                list,
                "delivery.retry_intervals must list at least one interval",
            ));
        }
        retry.intervals = list
            .get_ref()
            .iter()
            .map(|i| {
                cx.positive_duration(&Some(i.clone()), "delivery.retry_intervals", Duration::ZERO)
            })
            .collect::<Result<_, _>>()?;
    }
    retry.max_age = cx.positive_duration(&d.max_age, "delivery.max_age", retry.max_age)?;
    if let Some(w) = &d.delay_warning {
        // "0s" turns delay notices off.
        retry.delay_warning = cx.duration(w, "delivery.delay_warning")?;
    }
    s.retry = retry;
    if let Some(port) = &d.smtp_port {
        if *port.get_ref() == 0 {
            return Err(cx.at(port, "delivery.smtp_port must not be 0"));
        }
        s.smtp_port = *port.get_ref();
    }
    if let Some(r) = &d.relayhost {
        s.relayhost =
            Some(Relayhost::parse(r.get_ref()).map_err(|e| cx.at(r, format!("delivery.{e}")))?);
    }
    for r in &d.route_relays {
        let relay = Relayhost::parse(r.get_ref())
            .map_err(|e| cx.at(r, format!("delivery.route_relays: {e}")))?;
        s.route_relays.push(relay);
    }
    match (&d.relayhost_username, &d.relayhost_password) {
        (None, None) => {}
        (Some(u), Some(p)) if s.relayhost.is_some() && !u.is_empty() => {
            s.relayhost_auth = Some((u.clone(), Secret(p.clone())));
        }
        _ => {
            return Err(cx.plain(
                "delivery.relayhost_username and relayhost_password go together, and need delivery.relayhost",
            ));
        }
    }
    s.auth_without_tls = d.auth_without_tls.unwrap_or(false);
    s.tls = match d.tls {
        TlsSetting::None => TlsPolicy::None,
        TlsSetting::Opportunistic => TlsPolicy::Opportunistic,
        TlsSetting::Encrypt => TlsPolicy::Encrypt,
        TlsSetting::Required => TlsPolicy::Required,
        TlsSetting::Dane => TlsPolicy::Dane,
        TlsSetting::DaneOnly => TlsPolicy::DaneOnly,
    };
    for (domain, level) in &d.tls_policy {
        let key = domain.trim_end_matches('.').to_ascii_lowercase();
        let name = key.strip_prefix('.').unwrap_or(&key);
        let valid = !name.is_empty()
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(cx.at(
                level,
                format!("delivery.tls_policy: {domain:?} is not a domain (or .domain for its subdomains)"),
            ));
        }
        let policy = match level.get_ref().as_str() {
            "none" => TlsPolicy::None,
            "may" => TlsPolicy::Opportunistic,
            "encrypt" => TlsPolicy::Encrypt,
            "verify" => TlsPolicy::Required,
            "dane" => TlsPolicy::Dane,
            "dane-only" => TlsPolicy::DaneOnly,
            "sts" => TlsPolicy::Sts,
            other => {
                return Err(cx.at(
                    level,
                    format!(
                        "delivery.tls_policy.{domain}: unknown level {other:?} (none, may, encrypt, verify, dane, dane-only or sts)"
                    ),
                ));
            }
        };
        s.tls_policy.insert(key, policy);
    }
    s.mta_sts = d.mta_sts.unwrap_or(true);
    if let Some(r) = &d.tls_report {
        if let Some(dir) = &r.dir {
            s.tls_report_dir = cx.resolve(dir);
        }
        s.tls_report_interval = cx.positive_duration(
            &r.interval,
            "delivery.tls_report.interval",
            s.tls_report_interval,
        )?;
    }
    if let Some(ca) = &d.tls_ca_file {
        s.tls_ca_file = Some(cx.resolve(ca));
        postern_delivery::tls::TlsClient::new(&s).map_err(|e| cx.plain(e))?;
    }
    if let Some(h) = &d.helo_name {
        if h.trim().is_empty() || h.contains(char::is_whitespace) {
            return Err(cx.plain("delivery.helo_name must be a host name without spaces"));
        }
        s.helo_name = h.trim().to_string();
    }
    // The SMTP client's timeouts.
    for (v, key, timeout) in [
        (
            &d.connect_timeout,
            "delivery.connect_timeout",
            &mut s.connect_timeout,
        ),
        (
            &d.command_timeout,
            "delivery.command_timeout",
            &mut s.command_timeout,
        ),
        (
            &d.data_timeout,
            "delivery.data_timeout",
            &mut s.data_timeout,
        ),
    ] {
        *timeout = cx.positive_duration(v, key, *timeout)?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};
    use postern_delivery::TlsPolicy;
    use std::path::PathBuf;
    use std::time::Duration;

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        crate::config::parse_minimal(extra)
    }

    #[test]
    fn defaults() {
        let d = parse("").unwrap().delivery;
        assert!(d.enabled);
        assert_eq!(d.maildir_root, PathBuf::from("/etc/postern/data/mail"));
        assert_eq!((d.max_concurrency, d.max_per_destination), (20, 5));
        assert_eq!(d.retry.intervals.len(), 7);
        assert_eq!(d.retry.max_age, Duration::from_secs(5 * 86_400));
        assert_eq!(d.smtp_port, 25);
        assert_eq!(d.tls, TlsPolicy::Opportunistic);
        assert_eq!(d.helo_name, "mx.test");
        assert!(d.relayhost.is_none());
    }

    #[test]
    fn settings() {
        let d = parse(
            "[delivery]\nenabled = false\nmaildir_root = \"mbox\"\nmax_concurrency = 3\nretry_intervals = [\"1s\", \"2m\"]\nmax_age = \"1h\"\nsmtp_port = 2525\nrelayhost = \"[smart.test]:587\"\nrelayhost_username = \"u\"\nrelayhost_password = \"p\"\ntls = \"required\"\nhelo_name = \"out.test\"\ncommand_timeout = \"10s\"\n",
        )
        .unwrap()
        .delivery;
        assert!(!d.enabled);
        assert_eq!(d.maildir_root, PathBuf::from("/etc/postern/mbox"));
        assert_eq!(d.max_concurrency, 3);
        assert_eq!(
            d.retry.intervals,
            vec![Duration::from_secs(1), Duration::from_secs(120)]
        );
        assert_eq!(d.retry.max_age, Duration::from_secs(3600));
        assert_eq!(d.smtp_port, 2525);
        assert_eq!(
            d.relayhost.as_ref().unwrap().to_string(),
            "[smart.test]:587"
        );
        assert_eq!(d.relayhost_auth.as_ref().unwrap().0, "u");
        assert_eq!(d.tls, TlsPolicy::Required);
        assert_eq!(d.helo_name, "out.test");
        assert_eq!(d.command_timeout, Duration::from_secs(10));
    }

    #[test]
    fn per_domain_tls_policy() {
        let d = parse(
            "[delivery]\ntls = \"encrypt\"\nmta_sts = false\n[delivery.tls_policy]\n\"Bank.Example.\" = \"verify\"\n\".partner.example\" = \"may\"\n\"legacy.example\" = \"none\"\n\"sts.example\" = \"sts\"\n",
        )
        .unwrap()
        .delivery;
        assert_eq!(d.tls_for_domain("sts.example"), TlsPolicy::Sts);
        assert_eq!(d.tls, TlsPolicy::Encrypt);
        assert_eq!(d.tls_for_domain("bank.example"), TlsPolicy::Required);
        assert_eq!(
            d.tls_for_domain("mx.partner.example"),
            TlsPolicy::Opportunistic
        );
        assert_eq!(
            d.tls_for_domain("a.b.partner.example"),
            TlsPolicy::Opportunistic
        );
        // `.partner.example` is its subdomains, not the domain itself.
        assert_eq!(d.tls_for_domain("partner.example"), TlsPolicy::Encrypt);
        assert_eq!(d.tls_for_domain("legacy.example"), TlsPolicy::None);
        assert_eq!(d.tls_for_domain("other.example"), TlsPolicy::Encrypt);
        // MTA-STS is honoured by default where no entry says otherwise.
        let d = parse("[delivery.tls_policy]\n\"legacy.example\" = \"may\"\n[delivery.tls_report]\ndir = \"rpt\"\ninterval = \"1h\"\n")
            .unwrap()
            .delivery;
        assert_eq!(d.tls_for_domain("other.example"), TlsPolicy::Sts);
        assert_eq!(d.tls_for_domain("legacy.example"), TlsPolicy::Opportunistic);
        assert_eq!(d.tls_report_interval, Duration::from_secs(3600));
        assert!(d.tls_report_dir.ends_with("rpt"));
    }

    #[test]
    fn dane_levels() {
        let d = parse(
            "[delivery]\ntls = \"dane\"\n[delivery.tls_policy]\n\"bank.example\" = \"dane-only\"\n\".dane.example\" = \"dane\"\n",
        )
        .unwrap()
        .delivery;
        assert_eq!(d.tls, TlsPolicy::Dane);
        assert_eq!(d.tls_for_domain("bank.example"), TlsPolicy::DaneOnly);
        assert_eq!(d.tls_for_domain("mx.dane.example"), TlsPolicy::Dane);
        let d = parse("[delivery]\ntls = \"dane-only\"\n").unwrap().delivery;
        assert_eq!(d.tls, TlsPolicy::DaneOnly);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (
                "[delivery]\nbogus = 1\n",
                "p.toml:6",
                "unknown field `bogus`",
            ),
            (
                "[delivery]\nmax_concurrency = 0\n",
                "p.toml:6",
                "at least 1",
            ),
            (
                "[delivery]\nmax_messages_per_connection = 0\n",
                "p.toml:6",
                "delivery.max_messages_per_connection must be at least 1",
            ),
            (
                "[delivery]\ndata_timeout = \"0s\"\n",
                "p.toml:6",
                "delivery.data_timeout must be longer than 0",
            ),
            (
                "[delivery]\nretry_intervals = [\"0s\"]\n",
                "p.toml:6",
                "delivery.retry_intervals must be longer than 0",
            ),
            (
                "[delivery]\nretry_intervals = []\n",
                "p.toml:6",
                "at least one interval",
            ),
            (
                "[delivery]\nretry_intervals = [\"1s\", \"soon\"]\n",
                "p.toml:6",
                "invalid duration",
            ),
            (
                "[delivery]\nmax_age = \"0s\"\n",
                "p.toml:6",
                "longer than 0",
            ),
            (
                "[delivery]\nrelayhost = \"a b:25\"\n",
                "p.toml:6",
                "relayhost",
            ),
            (
                "[delivery]\nroute_relays = [\"[ok.test]:25\", \"bad host\"]\n",
                "p.toml:6",
                "delivery.route_relays",
            ),
            (
                "[delivery.tls_policy]\n\"a.test\" = \"sometimes\"\n",
                "p.toml:6",
                "unknown level \"sometimes\"",
            ),
            (
                "[delivery.tls_report]\ninterval = \"0s\"\n",
                "p.toml:6",
                "delivery.tls_report.interval",
            ),
            (
                "[delivery.tls_report]\nevery = \"1d\"\n",
                "p.toml:6",
                "unknown field `every`",
            ),
            (
                "[delivery.tls_policy]\n\"a.test\" = \"DANE\"\n",
                "p.toml:6",
                "unknown level \"DANE\"",
            ),
            (
                "[delivery]\ntls = \"dane_only\"\n",
                "p.toml:6",
                "unknown variant",
            ),
            (
                "[delivery.tls_policy]\n\"bad domain\" = \"verify\"\n",
                "p.toml:6",
                "is not a domain",
            ),
            (
                "[delivery]\ntls = \"maybe\"\n",
                "p.toml:6",
                "unknown variant",
            ),
            (
                "[delivery]\nrelayhost_username = \"u\"\n",
                "p.toml",
                "go together",
            ),
            (
                "[delivery]\ntls_ca_file = \"/nonexistent.pem\"\n",
                "p.toml",
                "tls_ca_file",
            ),
        ];
        for (text, at, msg) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(
                e.contains(at) && e.contains(msg),
                "{e:?} should contain {at:?} and {msg:?}"
            );
        }
    }
}
