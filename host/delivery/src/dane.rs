//! Outbound DANE for SMTP (RFC 7672; TLSA records, RFC 6698 and RFC 7671) for the
//! `dane` and `dane-only` TLS levels.
//!
//! What it trusts: the AD bit of the operator's resolver (`[dns] nameservers`),
//! which must be a *validating* resolver on a trusted path (loopback), as
//! Postfix's `smtp_dns_support_level = dnssec` does. Nothing here validates
//! signatures itself: an answer without AD is "insecure", a SERVFAIL (what a
//! validating resolver answers for bogus data) is a failure that defers.
//!
//! For an MX destination ([`plan`]): the MX RRset must be secure, then for each
//! MX host its address RRset, then its TLSA RRset `_<port>._tcp.<host>`. A host
//! with a secure, usable TLSA RRset must present a chain that matches it
//! ([`DaneVerifier`]), or it is skipped and the recipient deferred (4.7.5) —
//! never a fall-back to plain text or to unauthenticated TLS (§2.2). A host
//! without one gets `may` under `dane`, and is unusable under `dane-only`. A
//! TLSA look-up failure (bogus, time-out) makes the host unusable under both
//! (§2.1.1). Usable records are DANE-TA(2) and DANE-EE(3) with selector 0/1 and
//! matching type 0/1/2 (§3.1); an RRset with none of them is no DANE (§3.1.3).
//!
//! Input: certificates from a hostile server; TLSA data from DNS (validated by
//! the resolver, still parsed defensively).

use std::sync::Arc;

use postern_capability::{DnsBackend, DnsFailure, DnssecQuery, TlsaRecord};
use postern_protocol::EnhancedCode;
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::Digest;
use tokio_rustls::TlsConnector;

use crate::mx::MxHost;
use crate::outcome::Diagnostic;
use crate::settings::TlsPolicy;
use crate::tls::ChainCheck;

/// Certificate usages (RFC 7218 names).
pub const DANE_TA: u8 = 2;
pub const DANE_EE: u8 = 3;

/// Whether a record can be used for SMTP (RFC 7672 §3.1): DANE-TA or DANE-EE,
/// a known selector and matching type, and a digest of the right length.
pub fn usable(r: &TlsaRecord) -> bool {
    let len_ok = match r.matching {
        0 => !r.data.is_empty(),
        1 => r.data.len() == 32,
        2 => r.data.len() == 64,
        _ => false,
    };
    matches!(r.usage, DANE_TA | DANE_EE) && matches!(r.selector, 0 | 1) && len_ok
}

/// The selected content of a DER certificate: the whole (0) or its
/// SubjectPublicKeyInfo (1). `None` when the certificate does not parse.
fn selected(cert: &[u8], selector: u8) -> Option<&[u8]> {
    match selector {
        0 => Some(cert),
        1 => {
            let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
            Some(c.tbs_certificate.subject_pki.raw)
        }
        _ => None,
    }
}

/// Whether `cert` (DER) matches the record's selector, matching type and data.
pub fn matches(r: &TlsaRecord, cert: &[u8]) -> bool {
    let Some(content) = selected(cert, r.selector) else {
        return false;
    };
    match r.matching {
        0 => content == r.data.as_slice(),
        1 => sha2::Sha256::digest(content).as_slice() == r.data.as_slice(),
        2 => sha2::Sha512::digest(content).as_slice() == r.data.as_slice(),
        _ => false,
    }
}

/// Verifies a server's chain against a TLSA RRset (usable records only).
/// DANE-EE(3): the end-entity certificate matches; names and dates are not
/// checked (§3.1.1). DANE-TA(2): a certificate the server sent matches and is
/// the trust anchor of a chain to the end entity that webpki validates —
/// signatures, dates and one of `names` (the MX host, the TLSA base domain;
/// §3.2.2). Handshake signatures are always verified.
#[derive(Debug)]
pub struct DaneVerifier {
    records: Vec<TlsaRecord>,
    names: Vec<String>,
    provider: Arc<CryptoProvider>,
}

impl DaneVerifier {
    pub fn new(records: Vec<TlsaRecord>, names: Vec<String>) -> DaneVerifier {
        DaneVerifier {
            records: records.into_iter().filter(usable).collect(),
            names,
            provider: crate::tls::provider(),
        }
    }

    /// `Ok` when the chain matches a record; `Err` says why not.
    pub fn check_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), String> {
        let ee = self.records.iter().filter(|r| r.usage == DANE_EE);
        if ee.clone().any(|r| matches(r, end_entity)) {
            return Ok(());
        }
        let mut why = String::from("no TLSA record matches the server's certificate chain");
        for ta in self.records.iter().filter(|r| r.usage == DANE_TA) {
            for anchor in intermediates.iter().filter(|c| matches(ta, c)) {
                let mut roots = RootCertStore::empty();
                if roots.add(anchor.clone()).is_err() {
                    continue;
                }
                let Ok(verifier) = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    self.provider.clone(),
                )
                .build() else {
                    continue;
                };
                for name in &self.names {
                    let Ok(sn) = ServerName::try_from(name.trim_end_matches('.').to_string())
                    else {
                        continue;
                    };
                    match verifier.verify_server_cert(end_entity, intermediates, &sn, &[], now) {
                        Ok(_) => return Ok(()),
                        Err(e) => {
                            why = format!("DANE-TA trust anchor found, but the chain fails: {e}")
                        }
                    }
                }
            }
        }
        Err(why)
    }
}

impl ChainCheck for DaneVerifier {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        self.check_chain(end_entity, intermediates, now)
            .map_err(|e| rustls::Error::General(format!("DANE: {e}")))
    }
}

/// A connector that authenticates the server with `records` (usable ones).
pub fn connector(records: Vec<TlsaRecord>, names: Vec<String>) -> Result<TlsConnector, String> {
    crate::tls::connector_checking(DaneVerifier::new(records, names))
}

/// A TLSA record as a zone file writes it: `usage selector matching hex`.
pub fn presentation(r: &TlsaRecord) -> String {
    let hex: String = r.data.iter().map(|b| format!("{b:02x}")).collect();
    format!("{} {} {} {hex}", r.usage, r.selector, r.matching)
}

/// How to secure the session with one host.
#[derive(Clone)]
pub enum HostTls {
    /// No DANE for this host: this ordinary level.
    Policy(TlsPolicy),
    /// TLS is required and the chain must match the host's TLSA records
    /// (given again in presentation form, for TLS reports).
    Dane(TlsConnector, Vec<String>),
    /// Not to be tried (a DNS failure, or `dane-only` without TLSA).
    Unusable(Diagnostic),
}

fn dane_failure(host: &str, text: String) -> Diagnostic {
    Diagnostic::at_host(EnhancedCode::new(4, 7, 5), host, text)
}

/// Why a TLSA RRset gives no DANE, or the usable records.
enum Tlsa {
    Usable(Vec<TlsaRecord>),
    None(String),
}

async fn host_tlsa(dns: &dyn DnsBackend, host: &str, port: u16) -> Result<Tlsa, String> {
    // §2.2.2: the host's address records must be secure too.
    let mut addr_secure = false;
    for q in [DnssecQuery::A(host.into()), DnssecQuery::Aaaa(host.into())] {
        let a = dns
            .lookup_dnssec(q)
            .await
            .map_err(|e| format!("DNSSEC address look-up of {host} failed: {e}"))?;
        if a.count > 0 {
            addr_secure = a.secure;
            break;
        }
    }
    if !addr_secure {
        return Ok(Tlsa::None(format!(
            "the address records of {host} are not DNSSEC-validated"
        )));
    }
    let name = format!("_{port}._tcp.{}", host.trim_end_matches('.'));
    let answer = match dns.lookup_dnssec(DnssecQuery::Tlsa(name.clone())).await {
        Ok(a) => a,
        Err(DnsFailure::NxDomain | DnsFailure::NoRecords) => {
            return Ok(Tlsa::None(format!("no TLSA records at {name}")));
        }
        Err(e) => return Err(format!("TLSA look-up of {name} failed: {e}")),
    };
    if !answer.secure {
        return Ok(Tlsa::None(format!(
            "the TLSA records at {name} are not DNSSEC-validated"
        )));
    }
    if answer.tlsa.is_empty() {
        return Ok(Tlsa::None(format!("no TLSA records at {name}")));
    }
    let records: Vec<TlsaRecord> = answer.tlsa.into_iter().filter(usable).collect();
    if records.is_empty() {
        return Ok(Tlsa::None(format!(
            "no usable TLSA records at {name} (only PKIX or unknown types)"
        )));
    }
    Ok(Tlsa::Usable(records))
}

/// The TLS to use with each of `hosts` under `level` (`Dane` or `DaneOnly`),
/// in their order.
/// `mx_domain` is the domain whose MX RRset named the hosts (its security
/// gates DANE, §2.2.1); `None` for a host the operator named (relayhost).
pub async fn plan(
    level: TlsPolicy,
    mx_domain: Option<&str>,
    hosts: &[MxHost],
    port: u16,
    dns: &dyn DnsBackend,
) -> Vec<HostTls> {
    let only = level == TlsPolicy::DaneOnly;
    let without_dane = |host: &str, why: String| {
        if only {
            tracing::info!(host, reason = %why, "dane-only: host has no usable DANE TLSA");
            HostTls::Unusable(dane_failure(host, format!("dane-only: {why}")))
        } else {
            tracing::debug!(host, reason = %why, "dane: no DANE, using opportunistic TLS");
            HostTls::Policy(TlsPolicy::Opportunistic)
        }
    };
    let mx_secure = match mx_domain {
        None => Ok(true),
        Some(d) => match dns.lookup_dnssec(DnssecQuery::Mx(d.to_string())).await {
            Ok(a) => Ok(a.secure),
            Err(DnsFailure::NxDomain | DnsFailure::NoRecords) => Ok(false),
            Err(e) => Err(format!("DNSSEC MX look-up of {d} failed: {e}")),
        },
    };
    let mut out = Vec::with_capacity(hosts.len());
    for h in hosts {
        let tls = match &mx_secure {
            Err(e) => HostTls::Unusable(dane_failure(&h.name, e.clone())),
            Ok(false) => without_dane(
                &h.name,
                format!(
                    "the MX records of {} are not DNSSEC-validated",
                    mx_domain.unwrap_or("?")
                ),
            ),
            Ok(true) if h.name.parse::<std::net::IpAddr>().is_ok() => {
                without_dane(&h.name, "an IP address has no TLSA records".into())
            }
            Ok(true) => match host_tlsa(dns, &h.name, port).await {
                Err(e) => {
                    tracing::info!(host = %h.name, reason = %e, "DANE: host unusable");
                    HostTls::Unusable(dane_failure(&h.name, e))
                }
                Ok(Tlsa::None(why)) => without_dane(&h.name, why),
                Ok(Tlsa::Usable(records)) => {
                    let mut names = vec![h.name.clone()];
                    if let Some(d) = mx_domain {
                        names.push(d.to_string());
                    }
                    tracing::debug!(host = %h.name, records = records.len(), "DANE: TLSA records in use");
                    let shown = records.iter().map(presentation).collect();
                    match connector(records, names) {
                        Ok(c) => HostTls::Dane(c, shown),
                        Err(e) => HostTls::Unusable(dane_failure(&h.name, e)),
                    }
                }
            },
        };
        out.push(tls);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;

    fn rec(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> TlsaRecord {
        TlsaRecord {
            usage,
            selector,
            matching,
            data,
        }
    }

    fn self_signed(name: &str) -> (CertificateDer<'static>, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.der().clone(), key.subject_public_key_info())
    }

    #[test]
    fn usability() {
        assert!(usable(&rec(3, 1, 1, vec![0; 32])));
        assert!(usable(&rec(2, 0, 2, vec![0; 64])));
        assert!(usable(&rec(3, 0, 0, vec![1, 2])));
        assert!(!usable(&rec(0, 1, 1, vec![0; 32])), "PKIX-TA");
        assert!(!usable(&rec(1, 1, 1, vec![0; 32])), "PKIX-EE");
        assert!(!usable(&rec(3, 2, 1, vec![0; 32])), "selector");
        assert!(!usable(&rec(3, 1, 3, vec![0; 32])), "matching type");
        assert!(!usable(&rec(3, 1, 1, vec![0; 31])), "short digest");
        assert!(!usable(&rec(3, 1, 2, vec![0; 32])), "SHA-512 length");
        assert!(!usable(&rec(3, 0, 0, vec![])), "empty");
    }

    #[test]
    fn matching_types_and_selectors() {
        let (cert, spki) = self_signed("mx.dane.test");
        let c = cert.as_ref();
        assert!(matches(&rec(3, 0, 0, c.to_vec()), c));
        assert!(matches(&rec(3, 0, 1, sha2::Sha256::digest(c).to_vec()), c));
        assert!(matches(&rec(3, 0, 2, sha2::Sha512::digest(c).to_vec()), c));
        assert!(matches(&rec(3, 1, 0, spki.clone()), c));
        assert!(matches(
            &rec(3, 1, 1, sha2::Sha256::digest(&spki).to_vec()),
            c
        ));
        assert!(matches(
            &rec(3, 1, 2, sha2::Sha512::digest(&spki).to_vec()),
            c
        ));
        let mut wrong = sha2::Sha256::digest(&spki).to_vec();
        wrong[0] ^= 1;
        assert!(!matches(&rec(3, 1, 1, wrong), c));
        // SPKI digest under the Cert selector does not match.
        assert!(!matches(
            &rec(3, 0, 1, sha2::Sha256::digest(&spki).to_vec()),
            c
        ));
        assert!(!matches(&rec(3, 1, 1, vec![0; 32]), b"not a certificate"));
    }

    #[test]
    fn dane_ee_ignores_names_and_dates() {
        let (cert, spki) = self_signed("other.example");
        let v = spki_verifier(3, &spki);
        // Far in the future: the certificate has long expired.
        let later = UnixTime::since_unix_epoch(std::time::Duration::from_secs(4_000_000_000));
        assert!(v.check_chain(&cert, &[], later).is_ok());
        let (other, _) = self_signed("mx.dane.test");
        assert!(v.check_chain(&other, &[], UnixTime::now()).is_err());
    }

    #[test]
    fn unusable_records_are_dropped() {
        let (cert, spki) = self_signed("mx.dane.test");
        // A PKIX-EE record that would match is not usable for SMTP.
        let v = spki_verifier(1, &spki);
        assert!(v.check_chain(&cert, &[], UnixTime::now()).is_err());
    }

    /// A verifier for mx.dane.test with one record of `usage` holding the
    /// SHA-256 of `spki` (selector SPKI, matching SHA2-256).
    fn spki_verifier(usage: u8, spki: &[u8]) -> DaneVerifier {
        DaneVerifier::new(
            vec![rec(usage, 1, 1, sha2::Sha256::digest(spki).to_vec())],
            vec!["mx.dane.test".into()],
        )
    }

    /// A CA and a leaf it signs for `leaf_name`.
    fn ca_and_leaf(leaf_name: &str) -> (CertificateDer<'static>, CertificateDer<'static>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test DANE TA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec![leaf_name.to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        (ca.der().clone(), leaf.der().clone())
    }

    #[test]
    fn dane_ta_checks_chain_and_name() {
        let (ca, leaf) = ca_and_leaf("mx.dane.test");
        let ta = rec(2, 0, 1, sha2::Sha256::digest(ca.as_ref()).to_vec());
        let v = DaneVerifier::new(vec![ta.clone()], vec!["mx.dane.test".into()]);
        assert!(
            v.check_chain(&leaf, std::slice::from_ref(&ca), UnixTime::now())
                .is_ok()
        );
        // The trust anchor must be in the chain the server sends.
        assert!(v.check_chain(&leaf, &[], UnixTime::now()).is_err());
        // The name must match the MX host (or the TLSA base domain).
        let v = DaneVerifier::new(vec![ta.clone()], vec!["other.dane.test".into()]);
        let e = v
            .check_chain(&leaf, std::slice::from_ref(&ca), UnixTime::now())
            .unwrap_err();
        assert!(e.contains("chain fails"), "{e}");
        // A leaf from another CA does not chain to the anchor.
        let (_, stranger) = ca_and_leaf("mx.dane.test");
        let v = DaneVerifier::new(vec![ta], vec!["mx.dane.test".into()]);
        assert!(v.check_chain(&stranger, &[ca], UnixTime::now()).is_err());
    }
}
