//! Client TLS for STARTTLS (RFC 3207) with rustls (ring provider), per the policy in
//! `Settings::tls`: `required` verifies the server certificate against the webpki
//! roots or `tls_ca_file` for the MX / relayhost name (RFC 6125 via webpki);
//! `opportunistic` encrypts without authenticating (RFC 7435: any certificate is
//! accepted, signatures are still checked). Input: the operator's CA file (trusted)
//! and the remote certificate chain (untrusted; rustls/webpki judge it).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

use crate::settings::Settings;
use crate::tlsrpt::ResultType;

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The two client configurations a delivery may need.
#[derive(Clone)]
pub struct TlsClient {
    verified: Arc<ClientConfig>,
    unverified: Arc<ClientConfig>,
}

impl TlsClient {
    /// Build both configurations; an unreadable or empty `tls_ca_file` is an error.
    pub fn new(settings: &Settings) -> Result<TlsClient, String> {
        let mut roots = RootCertStore::empty();
        match &settings.tls_ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("delivery.tls_ca_file {}: {e}", path.display()))?;
                for cert in certs {
                    let cert =
                        cert.map_err(|e| format!("delivery.tls_ca_file {}: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("delivery.tls_ca_file {}: {e}", path.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!(
                        "delivery.tls_ca_file {}: no certificate found",
                        path.display()
                    ));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let verified = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let unverified = config_checking(AcceptAnyCertificate)?;
        Ok(TlsClient {
            verified: Arc::new(verified),
            unverified: Arc::new(unverified),
        })
    }

    /// A connector that verifies the certificate (`true`) or accepts any.
    pub fn connector(&self, verify: bool) -> TlsConnector {
        TlsConnector::from(if verify {
            self.verified.clone()
        } else {
            self.unverified.clone()
        })
    }
}

/// The name to verify and to send as SNI: a DNS name, or an IP address.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(host.trim_end_matches('.').to_string()).ok()
}

/// What was wrong with a certificate a handshake refused, as a TLS-RPT
/// result type (RFC 8460 §4.3); `None` when the failure was not the
/// certificate's.
pub fn certificate_problem(e: &std::io::Error) -> Option<ResultType> {
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(c) = e.get_ref()?.downcast_ref::<rustls::Error>()? else {
        return None;
    };
    Some(match c {
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            ResultType::CertificateHostMismatch
        }
        C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
            ResultType::CertificateExpired
        }
        C::UnknownIssuer | C::BadSignature | C::Revoked => ResultType::CertificateNotTrusted,
        _ => ResultType::ValidationFailure,
    })
}

/// How a client decides on the server's certificate chain, when it is not
/// webpki's decision for the host name: opportunistic TLS accepts any chain,
/// DANE matches it against TLSA records (`dane`).
pub trait ChainCheck: std::fmt::Debug + Send + Sync {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error>;
}

/// A client connector whose chain decision is `check`'s; the handshake
/// signatures are still verified, so the session key belongs to the
/// presented key.
pub fn connector_checking(check: impl ChainCheck + 'static) -> Result<TlsConnector, String> {
    Ok(TlsConnector::from(Arc::new(config_checking(check)?)))
}

fn config_checking(check: impl ChainCheck + 'static) -> Result<ClientConfig, String> {
    let provider = provider();
    Ok(ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Checked { check, provider }))
        .with_no_client_auth())
}

/// Opportunistic TLS (RFC 7435): encryption without authentication.
#[derive(Debug)]
struct AcceptAnyCertificate;

impl ChainCheck for AcceptAnyCertificate {
    fn check(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<(), rustls::Error> {
        Ok(())
    }
}

#[derive(Debug)]
struct Checked<C> {
    check: C,
    provider: Arc<CryptoProvider>,
}

impl<C: ChainCheck> ServerCertVerifier for Checked<C> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check
            .check(end_entity, intermediates, now)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn configurations_build() {
        let mut s = Settings::new("mx.test", &[], Path::new("/d"));
        assert!(TlsClient::new(&s).is_ok());
        s.tls_ca_file = Some("/nonexistent/ca.pem".into());
        let e = TlsClient::new(&s).err().unwrap();
        assert!(
            e.contains("delivery.tls_ca_file /nonexistent/ca.pem"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        s.tls_ca_file = Some(empty);
        assert!(TlsClient::new(&s).err().unwrap().contains("no certificate"));
    }

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("mx.example.org."),
            Some(ServerName::DnsName(_))
        ));
        assert!(matches!(
            server_name("127.0.0.1"),
            Some(ServerName::IpAddress(_))
        ));
        assert!(server_name("bad name").is_none());
    }
}
