//! What the host knows about a session, in host types. The server fills a
//! `SessionContext` as the SMTP dialogue advances; `convert.rs` turns it into
//! the WIT `session` record for each call. Trusted (built by the host).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::Stage;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvelopeAddress {
    /// `local@domain` as sent (quoted local parts keep their quotes); empty
    /// for `<>`, "postmaster" for `<Postmaster>`.
    pub address: String,
    pub local_part: String,
    pub domain: String,
    /// (KEYWORD, value) pairs.
    pub params: Vec<(String, Option<String>)>,
    /// The domain is one of the server's local domains.
    pub is_local: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    pub protocol: String,
    pub cipher: String,
    pub client_certificate: bool,
    pub server_name: Option<String>,
}

#[derive(Clone, Debug)]
pub struct SessionContext {
    pub id: Arc<str>,
    pub client: SocketAddr,
    pub client_name: Option<String>,
    pub local: SocketAddr,
    pub listener: Arc<str>,
    pub server_name: Arc<str>,
    pub helo: Option<String>,
    pub esmtp: bool,
    pub tls: Option<TlsInfo>,
    pub auth_user: Option<String>,
    pub mail_from: Option<EnvelopeAddress>,
    pub recipients: Vec<EnvelopeAddress>,
    pub messages_accepted: u32,
}

impl SessionContext {
    pub fn new(
        id: Arc<str>,
        client: SocketAddr,
        local: SocketAddr,
        listener: Arc<str>,
        server_name: Arc<str>,
    ) -> Self {
        SessionContext {
            id,
            client,
            client_name: None,
            local,
            listener,
            server_name,
            helo: None,
            esmtp: false,
            tls: None,
            auth_user: None,
            mail_from: None,
            recipients: Vec::new(),
            messages_accepted: 0,
        }
    }
}

/// Decoded SASL credentials for the auth stage. `Debug` hides the password.
#[derive(Clone)]
pub struct Credentials {
    pub mechanism: String,
    pub authzid: Option<String>,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("mechanism", &self.mechanism)
            .field("authzid", &self.authzid)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The decided outcome of one stage, for observers (`outcome-hook`).
#[derive(Clone, Debug)]
pub struct Outcome {
    /// `None` means the session ended (WIT stage `disconnect`).
    pub stage: Option<Stage>,
    pub argument: String,
    pub code: u16,
    pub enhanced: Option<String>,
    pub text: String,
    pub decided_by: Option<Arc<str>>,
}
