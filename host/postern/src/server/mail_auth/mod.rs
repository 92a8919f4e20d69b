//! The "mail-auth" host capability: SPF (RFC 7208), DKIM (RFC 6376, RFC 8463
//! Ed25519), ARC (RFC 8617) and DMARC (RFC 7489) verification and DKIM
//! signing with the `mail-auth` library, on the host's resolver (`[dns]`).
//! It runs in the host because mail-auth does not build for wasm32-wasip2
//! on this toolchain; plugins decide what a result means. Input: messages
//! and identities from the network (untrusted), keys read by a plugin from
//! its read-only files grant. RFC 7208 §4.6.4's 10-look-up limit is
//! mail-auth's own; the 2-void-look-up limit is added here
//! ([`void_lookups`]), as is §4.5's "more than one record" permerror for the
//! domain checked.

mod void_lookups;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::proto::rr::RData;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{DkimError, DkimSigner};
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, DkimResult, DmarcResult, MessageAuthenticator, Parameters, SpfOutput,
    SpfResult,
};
use postern_plugin::{
    ArcOutcome, AuthOutcome, AuthResult, BoxFuture, DkimSignature, DmarcOutcome, DmarcPolicy,
    Identities, MailAuthBackend, MessageData, SignRequest, SpfCheck, SpfOutcome,
};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

pub struct MailAuth {
    auth: MessageAuthenticator,
    /// This host's name, for SPF's `%{r}` macro.
    host_domain: String,
}

impl MailAuth {
    pub fn new(
        nameservers: &[SocketAddr],
        timeout: Duration,
        host_domain: &str,
    ) -> anyhow::Result<MailAuth> {
        Ok(MailAuth {
            auth: MessageAuthenticator(crate::server::dns::tokio_resolver(nameservers, timeout)?),
            host_domain: host_domain.to_string(),
        })
    }

    async fn spf_outputs(&self, ids: &Identities) -> (Option<SpfOutput>, SpfOutput) {
        let helo = ids.helo.trim();
        let ip = ids.client_ip;
        // RFC 7208 §2.3: the HELO identity only when it is a domain name.
        let helo_out = if is_domain(helo) {
            Some(
                self.check_host(SpfParameters::verify_ehlo(ip, helo, &self.host_domain))
                    .await,
            )
        } else {
            None
        };
        // RFC 7208 §2.4: the null sender is checked as postmaster@<helo>.
        let from_out = if ids.mail_from.is_empty() {
            helo_out
                .clone()
                .unwrap_or_else(|| SpfOutput::new(helo.to_string()))
        } else if self.spf_records(domain_of(&ids.mail_from)).await > 1 {
            // RFC 7208 §4.5: more than one record is a permerror (mail-auth
            // would use the first).
            SpfOutput::new(domain_of(&ids.mail_from).to_string()).with_result(SpfResult::PermError)
        } else {
            self.check_host(SpfParameters::verify_mail_from(
                ip,
                helo,
                &self.host_domain,
                &ids.mail_from,
            ))
            .await
        };
        (helo_out, from_out)
    }

    /// RFC 7208 `check_host()` for one identity, with the void-look-up
    /// limit.
    async fn check_host(&self, params: SpfParameters<'_>) -> SpfOutput {
        let queries = void_lookups::Queries::default();
        let w = queries.watches();
        let params = Parameters::new(params)
            .with_txt_cache(&w.txt)
            .with_mx_cache(&w.mx)
            .with_ipv4_cache(&w.a)
            .with_ipv6_cache(&w.aaaa)
            .with_ptr_cache(&w.ptr);
        let out = self.auth.verify_spf(params).await;
        queries.limit(out)
    }

    /// Number of SPF records published at `domain` (answers come from the
    /// resolver's cache when mail-auth asks again).
    async fn spf_records(&self, domain: &str) -> usize {
        let Ok(txt) = self.auth.0.txt_lookup(format!("{domain}.")).await else {
            return 0;
        };
        txt.answers()
            .iter()
            .filter(|r| match &r.data {
                RData::TXT(t) => {
                    let text: Vec<u8> = t.txt_data.iter().flat_map(|s| s.iter().copied()).collect();
                    text.len() >= 6
                        && (text[..6].eq_ignore_ascii_case(b"v=spf1"))
                        && (text.len() == 6 || text[6] == b' ')
                }
                _ => false,
            })
            .count()
    }

    /// The SPF results for the MAIL FROM and HELO identities.
    pub async fn spf(&self, ids: Identities) -> SpfOutcome {
        let (helo, from) = self.spf_outputs(&ids).await;
        let out = SpfOutcome {
            helo: helo.as_ref().map(spf_check).unwrap_or_default(),
            mail_from: spf_check(&from),
        };
        crate::server::metrics::events::mail_auth("spf", out.mail_from.result.name());
        out
    }

    async fn verify(&self, message: Arc<MessageData>, ids: Identities) -> AuthOutcome {
        let (helo, from) = self.spf_outputs(&ids).await;
        let spf = SpfOutcome {
            helo: helo.as_ref().map(spf_check).unwrap_or_default(),
            mail_from: spf_check(&from),
        };
        // Not strict: signatures with `l=` (RFC 6376 §3.5) are verified over
        // the length they sign rather than refused.
        let whole = match message.whole() {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(error = %e, "mail-auth: cannot read the message");
                std::borrow::Cow::Borrowed(&b""[..])
            }
        };
        let Some(msg) = AuthenticatedMessage::parse_with_opts(&whole, None, false) else {
            return AuthOutcome {
                spf,
                dmarc: DmarcOutcome {
                    result: AuthResult::PermError,
                    ..DmarcOutcome::default()
                },
                ..AuthOutcome::default()
            };
        };
        let dkim = self.auth.verify_dkim(&msg).await;
        let arc = self.auth.verify_arc(&msg).await;
        let from_domain = ids
            .mail_from
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or(ids.helo.as_str());
        let dmarc = self
            .auth
            .verify_dmarc(DmarcParameters::new(&msg, &dkim, from_domain, &from))
            .await;
        let mut dmarc_out = dmarc_outcome(&dmarc);
        if dmarc_out.record_found {
            dmarc_out.pct = self.pct(&dmarc_out.from_domain).await;
        }
        let out = AuthOutcome {
            spf,
            dkim: dkim
                .iter()
                .map(|d| {
                    let (domain, selector, algorithm) = d
                        .signature()
                        .map(|s| (s.d.clone(), s.s.clone(), algorithm(s.a).to_string()))
                        .unwrap_or_default();
                    let (result, error) = dkim_result(d.result());
                    DkimSignature {
                        domain,
                        selector,
                        algorithm,
                        result,
                        error,
                    }
                })
                .collect(),
            arc: {
                let (mut result, error) = dkim_result(arc.result());
                // RFC 8617 §4.4: a chain validates (pass), is absent (none)
                // or fails; mail-auth's neutral/permerror are failures.
                if matches!(result, AuthResult::Neutral | AuthResult::PermError) {
                    result = AuthResult::Fail;
                }
                ArcOutcome {
                    result,
                    instances: arc.sets().len() as u32,
                    error,
                }
            },
            dmarc: dmarc_out,
        };
        crate::server::metrics::events::mail_auth("spf", out.spf.mail_from.result.name());
        for d in &out.dkim {
            crate::server::metrics::events::mail_auth("dkim", d.result.name());
        }
        if out.dkim.is_empty() {
            crate::server::metrics::events::mail_auth("dkim", AuthResult::None.name());
        }
        crate::server::metrics::events::mail_auth("arc", out.arc.result.name());
        crate::server::metrics::events::mail_auth("dmarc", out.dmarc.result.name());
        out
    }

    /// `pct=` of the DMARC record that applies to `domain` (RFC 7489 §6.3;
    /// mail-auth follows DMARCbis, which dropped it): the record at the
    /// domain or the nearest parent publishing one. 100 when absent.
    async fn pct(&self, domain: &str) -> u8 {
        let mut d = domain.trim_end_matches('.');
        loop {
            let name = format!("_dmarc.{d}.");
            if let Ok(txt) = self.auth.0.txt_lookup(name).await {
                for r in txt.answers() {
                    let RData::TXT(t) = &r.data else { continue };
                    let text: String = t
                        .txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect();
                    if text.trim_start().starts_with("v=DMARC1") {
                        return parse_pct(&text);
                    }
                }
            }
            match d.split_once('.') {
                Some((_, rest)) if rest.contains('.') => d = rest,
                _ => return 100,
            }
        }
    }

    fn sign(&self, message: &MessageData, r: SignRequest) -> Result<String, String> {
        let der = PrivateKeyDer::from_pem_slice(r.private_key_pem.as_bytes())
            .map_err(|e| format!("private key: {e}"))?;
        let headers: Vec<String> = r.headers;
        let whole = message
            .whole()
            .map_err(|e| format!("cannot read the message: {e}"))?;
        let sig = match r.algorithm.as_str() {
            "rsa-sha256" => {
                let key = RsaKey::<Sha256>::from_key_der(der).map_err(|e| e.to_string())?;
                DkimSigner::from_key(key)
                    .domain(r.domain)
                    .selector(r.selector)
                    .headers(headers)
                    .sign(&whole)
            }
            "ed25519-sha256" => {
                let PrivateKeyDer::Pkcs8(p8) = der else {
                    return Err("an Ed25519 key must be PKCS#8 (\"PRIVATE KEY\")".into());
                };
                let key =
                    Ed25519Key::from_pkcs8_der(p8.secret_pkcs8_der()).map_err(|e| e.to_string())?;
                DkimSigner::from_key(key)
                    .domain(r.domain)
                    .selector(r.selector)
                    .headers(headers)
                    .sign(&whole)
            }
            other => return Err(format!("unknown algorithm {other:?}")),
        }
        .map_err(|e| e.to_string())?;
        let field = sig.to_header();
        let value = field
            .split_once(':')
            .map(|(_, v)| v)
            .unwrap_or(&field)
            .replace("\r\n", "");
        Ok(value.trim().to_string())
    }
}

impl MailAuthBackend for MailAuth {
    fn check_spf(&self, ids: Identities) -> BoxFuture<'_, SpfOutcome> {
        Box::pin(self.spf(ids))
    }

    fn authenticate(
        &self,
        message: Arc<MessageData>,
        ids: Identities,
    ) -> BoxFuture<'_, AuthOutcome> {
        Box::pin(self.verify(message, ids))
    }

    fn dkim_sign(&self, message: &MessageData, request: SignRequest) -> Result<String, String> {
        self.sign(message, request)
    }
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or(address, |(_, d)| d)
}

fn is_domain(s: &str) -> bool {
    !s.is_empty() && s.contains('.') && !s.starts_with('[') && s.parse::<IpAddr>().is_err()
}

fn spf_result(r: SpfResult) -> AuthResult {
    match r {
        SpfResult::Pass => AuthResult::Pass,
        SpfResult::Fail => AuthResult::Fail,
        SpfResult::SoftFail => AuthResult::SoftFail,
        SpfResult::Neutral => AuthResult::Neutral,
        SpfResult::TempError => AuthResult::TempError,
        SpfResult::PermError => AuthResult::PermError,
        SpfResult::None => AuthResult::None,
    }
}

fn spf_check(o: &SpfOutput) -> SpfCheck {
    SpfCheck {
        result: spf_result(o.result()),
        domain: o.domain().to_string(),
        explanation: o.explanation().map(str::to_string),
    }
}

fn dkim_result(r: &DkimResult) -> (AuthResult, Option<String>) {
    match r {
        DkimResult::Pass => (AuthResult::Pass, None),
        // RFC 6376 §6.1.3: a body hash mismatch is a PERMFAIL, "fail" in
        // RFC 8601 §2.7.1 terms (mail-auth reports it as neutral).
        DkimResult::Neutral(e @ mail_auth::Error::Dkim(DkimError::FailedBodyHashMatch)) => {
            (AuthResult::Fail, Some(e.to_string()))
        }
        DkimResult::Neutral(e) => (AuthResult::Neutral, Some(e.to_string())),
        DkimResult::Fail(e) => (AuthResult::Fail, Some(e.to_string())),
        DkimResult::PermError(e) => (AuthResult::PermError, Some(e.to_string())),
        DkimResult::TempError(e) => (AuthResult::TempError, Some(e.to_string())),
        DkimResult::None => (AuthResult::None, None),
    }
}

fn algorithm(a: mail_auth::common::crypto::Algorithm) -> &'static str {
    use mail_auth::common::crypto::Algorithm as A;
    match a {
        A::RsaSha1 => "rsa-sha1",
        A::RsaSha256 => "rsa-sha256",
        A::Ed25519Sha256 => "ed25519-sha256",
    }
}

fn policy(p: Policy) -> DmarcPolicy {
    match p {
        Policy::None => DmarcPolicy::None,
        Policy::Quarantine => DmarcPolicy::Quarantine,
        Policy::Reject => DmarcPolicy::Reject,
        Policy::Unspecified => DmarcPolicy::Unspecified,
    }
}

fn dmarc_outcome(d: &mail_auth::DmarcOutput) -> DmarcOutcome {
    let spf = d.spf_result();
    let dkim = d.dkim_result();
    let record = d.dmarc_record();
    let any = |f: fn(&DmarcResult) -> bool| f(spf) || f(dkim);
    let result = if matches!(spf, DmarcResult::Pass) || matches!(dkim, DmarcResult::Pass) {
        AuthResult::Pass
    } else if any(|r| matches!(r, DmarcResult::TempError(_))) {
        AuthResult::TempError
    } else if record.is_none() {
        if any(|r| matches!(r, DmarcResult::PermError(_))) {
            AuthResult::PermError
        } else {
            AuthResult::None
        }
    } else {
        AuthResult::Fail
    };
    DmarcOutcome {
        from_domain: d.domain().to_string(),
        result,
        spf_aligned: matches!(spf, DmarcResult::Pass),
        dkim_aligned: matches!(dkim, DmarcResult::Pass),
        record_found: record.is_some(),
        policy: policy(d.policy()),
        published_p: record.map(|r| policy(r.p)).unwrap_or_default(),
        published_sp: record.map(|r| policy(r.sp)).unwrap_or_default(),
        pct: 100,
    }
}

/// `pct=` of a DMARC record (RFC 7489 §6.3): 0..=100, 100 when absent or
/// invalid.
fn parse_pct(record: &str) -> u8 {
    record
        .split(';')
        .filter_map(|t| t.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("pct"))
        .and_then(|(_, v)| v.trim().parse::<u8>().ok())
        .filter(|p| *p <= 100)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pct_parsing() {
        for (rec, pct) in [
            ("v=DMARC1; p=reject", 100),
            ("v=DMARC1; p=reject; pct=20", 20),
            ("v=DMARC1;p=quarantine;PCT = 0", 0),
            ("v=DMARC1; pct=101", 100),
            ("v=DMARC1; pct=x", 100),
        ] {
            assert_eq!(parse_pct(rec), pct, "{rec}");
        }
    }

    #[test]
    fn helo_identity_is_a_domain() {
        assert!(is_domain("mail.example.org"));
        assert!(!is_domain("localhost"));
        assert!(!is_domain("[192.0.2.1]"));
        assert!(!is_domain("192.0.2.1"));
        assert!(!is_domain(""));
    }
}
