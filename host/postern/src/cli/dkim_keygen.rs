//! `postern dkim keygen`: a new DKIM signing key (RSA-2048 per RFC 8301, or
//! Ed25519 per RFC 8463), written as PEM with mode 0600 and atomically
//! (temporary file, fsync, rename), and the DNS TXT record to publish for it
//! (RFC 6376 §3.6.1). Input: the operator's command line.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mail_auth::common::crypto::Ed25519Key;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::EncodePublicKey;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Algorithm {
    Rsa,
    Ed25519,
}

/// The key file for `domain` and `selector` in `dir`.
pub fn key_path(dir: &Path, domain: &str, selector: &str) -> PathBuf {
    dir.join(format!("{domain}.{selector}.pem"))
}

fn label_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// Generate, write and return (key file, TXT record line).
pub fn keygen(
    domain: &str,
    selector: &str,
    algorithm: Algorithm,
    dir: &Path,
) -> anyhow::Result<(PathBuf, String)> {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if !label_ok(&domain) || !label_ok(selector) {
        bail!("--domain and --selector must be DNS names (letters, digits, '-', '_', '.')");
    }
    let path = key_path(dir, &domain, selector);
    if path.exists() {
        bail!(
            "{} exists; remove it first or use another selector",
            path.display()
        );
    }
    let (pem, k, public) = match algorithm {
        Algorithm::Rsa => {
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
                .context("generating the RSA key")?;
            let pem = key
                .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
                .context("encoding the RSA key")?
                .to_string();
            let public = rsa::RsaPublicKey::from(&key)
                .to_public_key_der()
                .context("encoding the RSA public key")?
                .as_bytes()
                .to_vec();
            (pem, "rsa", public)
        }
        Algorithm::Ed25519 => {
            let der = Ed25519Key::generate_pkcs8().map_err(|e| anyhow::anyhow!("{e}"))?;
            let public = Ed25519Key::from_pkcs8_der(&der)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .public_key();
            (pem_encode("PRIVATE KEY", &der), "ed25519", public)
        }
    };
    write_atomically(&path, pem.as_bytes())?;
    Ok((path, txt_record(selector, &domain, k, &public)))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// `S._domainkey.D. IN TXT "v=DKIM1; k=…; p=…"`, the value split into
/// strings of at most 255 bytes (RFC 1035 §3.3.14; verifiers concatenate).
pub fn txt_record(selector: &str, domain: &str, k: &str, public: &[u8]) -> String {
    let value = format!("v=DKIM1; k={k}; p={}", B64.encode(public));
    let strings: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!(
        "{selector}._domainkey.{domain}. IN TXT {}",
        strings.join(" ")
    )
}

fn write_atomically(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("pem.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let written = f.write_all(data).and_then(|_| f.sync_all());
    if let Err(e) = written.and_then(|_| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_strings_are_at_most_255_bytes() {
        let rec = txt_record("s1", "example.org", "rsa", &[7u8; 294]);
        assert!(rec.starts_with("s1._domainkey.example.org. IN TXT \"v=DKIM1; k=rsa; p="));
        for s in rec.split('"').skip(1).step_by(2) {
            assert!(s.len() <= 255);
        }
    }

    #[test]
    fn keys_are_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("postern-keygen-{}", std::process::id()));
        let (path, rec) = keygen("Example.ORG", "ed", Algorithm::Ed25519, &dir).unwrap();
        assert!(rec.contains("k=ed25519; p="));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        assert!(keygen("example.org", "ed", Algorithm::Ed25519, &dir).is_err());
        assert!(keygen("bad domain", "x", Algorithm::Ed25519, &dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
