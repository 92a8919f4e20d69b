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
    /// The session's changing state when the stage was decided (0.2
    /// observers get outcomes later, in a batch).
    pub helo: Option<String>,
    pub tls: Option<TlsInfo>,
    pub auth_user: Option<String>,
    /// The transaction's sender ("" for `<>`); none outside a transaction.
    pub mail_from: Option<String>,
    pub recipient_count: u32,
}

impl Outcome {
    /// An outcome with the session's state taken from `ctx`.
    pub fn new(
        ctx: &SessionContext,
        stage: Option<Stage>,
        argument: String,
        reply: (u16, Option<String>, String),
        decided_by: Option<Arc<str>>,
    ) -> Outcome {
        let (code, enhanced, text) = reply;
        Outcome {
            stage,
            argument,
            code,
            enhanced,
            text,
            decided_by,
            helo: ctx.helo.clone(),
            tls: ctx.tls.clone(),
            auth_user: ctx.auth_user.clone(),
            mail_from: ctx.mail_from.as_ref().map(|a| a.address.clone()),
            recipient_count: ctx.recipients.len() as u32,
        }
    }
}

/// A change to the header section a data-stage plugin asked for (0.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderChange {
    /// Remove every field with this name.
    Remove(String),
    /// Replace the first field with this name (and drop the others), or
    /// add it at the top when there is none.
    Replace(String, String),
    /// A milter's change: the `index`th (from 1) field called `name` gets
    /// `value`, or is deleted (`None`); nothing when there is no such field.
    Change {
        name: String,
        index: u32,
        value: Option<String>,
    },
}

/// A change to the envelope a data-stage plugin asked for (0.2). Addresses
/// are checked for shape by the chain and parsed by the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvelopeChange {
    /// "" is the null sender.
    SetSender(String),
    AddRecipient(String),
    RemoveRecipient(String),
}

/// Everything a data-stage chain asked for besides the verdict and the
/// added fields: applied only to an accepted message, in chain order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageChanges {
    pub headers: Vec<HeaderChange>,
    pub envelope: Vec<EnvelopeChange>,
    /// Hold the message in the queue with this reason (the first plugin
    /// asking decides the reason).
    pub quarantine: Option<String>,
    /// A milter replaced the body with this (the last one asking wins).
    pub body: Option<Vec<u8>>,
}

impl MessageChanges {
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
            && self.envelope.is_empty()
            && self.quarantine.is_none()
            && self.body.is_none()
    }

    pub(crate) fn extend(&mut self, other: MessageChanges) {
        self.headers.extend(other.headers);
        self.envelope.extend(other.envelope);
        if self.quarantine.is_none() {
            self.quarantine = other.quarantine;
        }
        if other.body.is_some() {
            self.body = other.body;
        }
    }
}
