//! `[tls]` (the server's certificate and key) and the listening sockets:
//! `server.listen` (or `--listen`) and each `[[listener]]`. Input: the
//! operator's file; errors name the file and line.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Ctx, Overrides};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsSection {
    cert: Spanned<String>,
    key: Spanned<String>,
    client_ca: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain SMTP, no STARTTLS.
    None,
    /// STARTTLS offered (RFC 3207).
    Starttls,
    /// TLS from the first byte (RFC 8314 "implicit TLS", port 465 style).
    Implicit,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenerSection {
    name: Spanned<String>,
    address: Spanned<String>,
    tls: Option<Spanned<TlsMode>>,
    #[serde(default)]
    require_auth: bool,
    #[serde(default)]
    allow_plaintext_auth: bool,
}

/// One listening socket and how it treats clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub name: String,
    pub address: SocketAddr,
    pub tls: TlsMode,
    /// Submission: AUTH is required before MAIL (530 5.7.0).
    pub require_auth: bool,
    /// Offer and accept AUTH without TLS (off by default).
    pub allow_plaintext_auth: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    /// Where each key was set ("file:line"), for errors found when the
    /// files are loaded.
    pub cert_at: String,
    pub key_at: String,
    pub client_ca_at: String,
}

/// `[tls]`: the certificate, key and optional client CA, resolved against
/// the file's directory. Nothing is checked here: the files are read (and
/// their errors reported at the `*_at` locations) when the server starts.
pub(super) fn tls(cx: &Ctx, s: Option<&TlsSection>) -> Option<TlsFiles> {
    s.map(|t| TlsFiles {
        cert: cx.resolve(t.cert.get_ref()),
        key: cx.resolve(t.key.get_ref()),
        client_ca: t.client_ca.as_ref().map(|c| cx.resolve(c.get_ref())),
        cert_at: cx.location(&t.cert),
        key_at: cx.location(&t.key),
        client_ca_at: t
            .client_ca
            .as_ref()
            .map(|c| cx.location(c))
            .unwrap_or_default(),
    })
}

/// The listeners: `server.listen` (or, replacing it, `--listen`) named
/// "smtp", then each `[[listener]]`. STARTTLS is the default when there is a
/// `[tls]` section (`has_tls`), plain SMTP otherwise. Checks, in this order,
/// that each address is an address:port, that a listener using TLS has a
/// `[tls]` section, that there is a listener at all, that no address (port 0
/// aside) is used twice, and that no `[[listener]]` name is "smtp" or used
/// twice.
pub(super) fn build(
    cx: &Ctx,
    listen: &[Spanned<String>],
    sections: &[ListenerSection],
    has_tls: bool,
    overrides: &Overrides,
) -> Result<Vec<ListenerSpec>, ConfigError> {
    let default_tls = if has_tls {
        TlsMode::Starttls
    } else {
        TlsMode::None
    };
    let mut listeners = Vec::new();
    // Where each listener's address was set (none: `--listen`).
    let mut set_at: Vec<Option<&Spanned<String>>> = Vec::new();
    if overrides.listen.is_empty() {
        for l in listen {
            let address: SocketAddr = l.get_ref().parse().map_err(|_| {
                cx.at(
                    l,
                    format!(
                        "server.listen: {:?} is not an address:port such as \"127.0.0.1:2525\"",
                        l.get_ref()
                    ),
                )
            })?;
            listeners.push(smtp(address, default_tls));
            set_at.push(Some(l));
        }
    } else {
        for address in &overrides.listen {
            listeners.push(smtp(*address, default_tls));
            set_at.push(None);
        }
    }
    for l in sections {
        listeners.push(listener(cx, l, default_tls, has_tls)?);
        set_at.push(Some(&l.address));
    }
    if listeners.is_empty() {
        return Err(cx.plain("no listener: set server.listen or add a [[listener]]"));
    }
    let mut seen = HashSet::new();
    for (l, at) in listeners.iter().zip(&set_at) {
        if l.address.port() != 0 && !seen.insert(l.address) {
            let msg = format!("listen address {} is used twice", l.address);
            return Err(match at {
                Some(span) => cx.at(span, msg),
                None => cx.plain(format!("{msg} (--listen)")),
            });
        }
    }
    let mut names = HashSet::new();
    for l in sections {
        let n = l.name.get_ref().as_str();
        if n == "smtp" {
            return Err(cx.at(
                &l.name,
                "listener name \"smtp\" is reserved for the server.listen (and --listen) addresses",
            ));
        }
        if !names.insert(n) {
            return Err(cx.at(&l.name, format!("listener name {n:?} is used twice")));
        }
    }
    Ok(listeners)
}

/// A `server.listen` (or `--listen`) address.
fn smtp(address: SocketAddr, tls: TlsMode) -> ListenerSpec {
    ListenerSpec {
        name: "smtp".into(),
        address,
        tls,
        require_auth: false,
        allow_plaintext_auth: false,
    }
}

/// One `[[listener]]`: its address must be an address:port, and TLS (its
/// own `tls`, or the default) needs a `[tls]` section.
fn listener(
    cx: &Ctx,
    l: &ListenerSection,
    default_tls: TlsMode,
    has_tls: bool,
) -> Result<ListenerSpec, ConfigError> {
    let address: SocketAddr = l.address.get_ref().parse().map_err(|_| {
        cx.at(
            &l.address,
            format!(
                "listener.address: {:?} is not an address:port",
                l.address.get_ref()
            ),
        )
    })?;
    let mode = l.tls.as_ref().map(|t| *t.get_ref()).unwrap_or(default_tls);
    if mode != TlsMode::None && !has_tls {
        let msg = format!(
            "listener {:?} uses TLS but there is no [tls] section with cert and key",
            l.name.get_ref()
        );
        return Err(match &l.tls {
            Some(t) => cx.at(t, msg),
            None => cx.at(&l.name, msg),
        });
    }
    Ok(ListenerSpec {
        name: l.name.get_ref().clone(),
        address,
        tls: mode,
        require_auth: l.require_auth,
        allow_plaintext_auth: l.allow_plaintext_auth,
    })
}
