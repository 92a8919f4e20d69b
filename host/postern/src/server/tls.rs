//! Server-side TLS (rustls, ring provider): loading the certificate chain and
//! key named in `[tls]` (errors name the file), optional client certificates,
//! the TLS facts given to plugins, and a self-signed certificate generator for
//! the example configuration. Input: PEM files from the operator; the
//! handshake itself is rustls's.

use std::path::Path;
use std::sync::Arc;

use postern_plugin::TlsInfo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Which `[tls]` key a loading error is about (so the caller can name the
/// line of the configuration that set it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsKey {
    Cert,
    Key,
    ClientCa,
}

impl TlsKey {
    pub fn name(self) -> &'static str {
        match self {
            TlsKey::Cert => "tls.cert",
            TlsKey::Key => "tls.key",
            TlsKey::ClientCa => "tls.client_ca",
        }
    }
}

/// A certificate, key or CA file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    pub key: TlsKey,
    pub message: String,
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.key.name(), self.message)
    }
}

fn fail(key: TlsKey, path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError {
        key,
        message: format!("{}: {e}", path.display()),
    }
}

/// A readable regular file (a directory or a missing file gets a plain
/// answer instead of a parser's).
fn check_file(key: TlsKey, path: &Path) -> Result<(), TlsError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(fail(key, path, "is a directory, not a PEM file")),
        Ok(_) => Ok(()),
        Err(e) => Err(fail(key, path, e)),
    }
}

/// Build the server TLS configuration. With `client_ca`, clients may present
/// a certificate signed by it (optional; it is reported to plugins).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    check_file(TlsKey::Cert, cert)?;
    check_file(TlsKey::Key, key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| fail(TlsKey::Cert, cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(TlsKey::Cert, cert, e))?;
    if chain.is_empty() {
        return Err(fail(TlsKey::Cert, cert, "no PEM certificate found"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| fail(TlsKey::Key, key, e))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(TlsKey::Cert, cert, e))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            check_file(TlsKey::ClientCa, ca)?;
            let bad = |e: &dyn std::fmt::Display| fail(TlsKey::ClientCa, ca, e);
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
                let c = c.map_err(|e| bad(&e))?;
                roots.add(c).map_err(|e| bad(&e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| bad(&e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key_der).map_err(|e| {
        fail(
            TlsKey::Key,
            key,
            format!("does not fit the certificate: {e}"),
        )
    })?;
    Ok(Arc::new(config))
}

/// What plugins learn about a TLS session.
pub fn info(conn: &ServerConnection) -> TlsInfo {
    TlsInfo {
        protocol: match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
            Some(v) => format!("{v:?}"),
            None => "unknown".into(),
        },
        cipher: conn
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default(),
        client_certificate: conn.peer_certificates().is_some_and(|c| !c.is_empty()),
        server_name: conn.server_name().map(str::to_string),
    }
}

/// Write a self-signed certificate and key for `hostname` into `dir`
/// (`cert.pem`, `key.pem` 0600), unless both already exist. Safe against
/// concurrent runs: a lock file serialises them, and each file is written to
/// a temporary name and renamed into place (key first), so a reader never
/// sees a half-written file or a key that does not match the certificate.
pub fn ensure_self_signed(hostname: &str, dir: &Path) -> anyhow::Result<bool> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.exists() && key.exists() {
        return Ok(false);
    }
    std::fs::create_dir_all(dir)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".gen-cert.lock"))?;
    lock.lock()?;
    if cert.exists() && key.exists() {
        return Ok(false);
    }
    let ck = rcgen::generate_simple_self_signed(vec![hostname.to_string(), "localhost".into()])?;
    write_new(&key, ck.signing_key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert, ck.cert.pem().as_bytes(), 0o644)?;
    Ok(true)
}

/// Write `data` to `path` through a temporary file, fsync'd and renamed.
fn write_new(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_loads_and_errors_name_files() {
        let dir = std::env::temp_dir().join(format!("postern-tls-{}", std::process::id()));
        assert!(ensure_self_signed("mx.test", &dir).unwrap());
        assert!(!ensure_self_signed("mx.test", &dir).unwrap());
        server_config(&dir.join("cert.pem"), &dir.join("key.pem"), None).unwrap();
        let e = server_config(&dir.join("nope.pem"), &dir.join("key.pem"), None).unwrap_err();
        assert_eq!(e.key, TlsKey::Cert);
        assert!(
            e.to_string().contains("tls.cert") && e.to_string().contains("nope.pem"),
            "{e}"
        );
        let e = server_config(&dir.join("cert.pem"), &dir.join("cert.pem"), None).unwrap_err();
        assert_eq!(e.key, TlsKey::Key, "{e}");
        let e = server_config(&dir, &dir.join("key.pem"), None).unwrap_err();
        assert_eq!(e.key, TlsKey::Cert);
        assert!(e.message.contains("is a directory"), "{e}");
        std::fs::write(dir.join("garbage.pem"), b"not a certificate\n").unwrap();
        let e = server_config(&dir.join("garbage.pem"), &dir.join("key.pem"), None).unwrap_err();
        assert!(e.message.contains("no PEM certificate"), "{e}");
        let e = server_config(
            &dir.join("cert.pem"),
            &dir.join("key.pem"),
            Some(&dir.join("ca.pem")),
        )
        .unwrap_err();
        assert_eq!(e.key, TlsKey::ClientCa, "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
