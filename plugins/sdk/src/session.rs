//! The session as a plugin sees it, the same API whichever contract the
//! plugin is built for: under `postern:policy@0.2.0` (the default) a
//! [`Session`] wraps the handle the host lends for the call and every getter
//! is one host call (a plugin pays only for what it reads); under 0.1 (the
//! `contract-0-1` feature) it holds the record the host copied in; in native
//! builds (unit tests) it holds values from [`crate::testing`]. Also the
//! SDK's own [`Outcome`] and [`DataResult`], which carry the 0.2 fields in
//! both builds. Input: the host's calls (trusted).

use crate::{EnvelopeAddress, Header, Stage, TlsInfo, Verdict};

/// What a session holds, as values (0.1 records, tests).
#[derive(Clone, Debug, Default)]
pub struct SessionData {
    pub id: String,
    pub client_ip: String,
    pub client_port: u16,
    pub client_name: Option<String>,
    pub local_ip: String,
    pub local_port: u16,
    pub listener: String,
    pub server_name: String,
    pub helo: Option<String>,
    pub esmtp: bool,
    pub tls: Option<TlsInfo>,
    pub auth_user: Option<String>,
    pub mail_from: Option<EnvelopeAddress>,
    pub recipients: Vec<EnvelopeAddress>,
    pub messages_accepted: u32,
}

enum Repr {
    Data(Box<SessionData>),
    /// The host's handle, lent for one call: never dropped by the plugin
    /// (the host owns it), so it is kept in a `ManuallyDrop`.
    #[cfg(all(target_arch = "wasm32", not(feature = "contract-0-1")))]
    Handle(core::mem::ManuallyDrop<crate::wit::types::Session>),
}

/// The SMTP session at the moment of the call. Read it through the getters;
/// do not keep it past the call (the SDK only ever lends it).
pub struct Session(Repr);

macro_rules! getters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        impl Session {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> $ty {
                    match &self.0 {
                        Repr::Data(d) => d.$name.clone(),
                        #[cfg(all(target_arch = "wasm32", not(feature = "contract-0-1")))]
                        Repr::Handle(h) => h.$name(),
                    }
                }
            )*
        }
    };
}

getters! {
    /// Unique id of this SMTP session (also in the host's logs).
    id: String;
    /// Client address as text: "192.0.2.7" or "2001:db8::7".
    client_ip: String;
    client_port: u16;
    /// The forward-confirmed reverse DNS name of the client, if looked up.
    client_name: Option<String>;
    local_ip: String;
    local_port: u16;
    /// Name of the listener that accepted the connection.
    listener: String;
    /// This server's host name.
    server_name: String;
    /// The argument of the last HELO/EHLO.
    helo: Option<String>;
    /// Whether the client greeted with EHLO.
    esmtp: bool;
    tls: Option<TlsInfo>;
    /// The SMTP AUTH user, if the client authenticated.
    auth_user: Option<String>;
    /// The sender of the current transaction, once MAIL FROM succeeded.
    mail_from: Option<EnvelopeAddress>;
    /// Recipients accepted so far in the current transaction.
    recipients: Vec<EnvelopeAddress>;
    /// Number of messages accepted earlier in this session.
    messages_accepted: u32;
}

impl Session {
    /// How many recipients were accepted so far (one cheap host call).
    pub fn recipient_count(&self) -> u32 {
        match &self.0 {
            Repr::Data(d) => d.recipients.len() as u32,
            #[cfg(all(target_arch = "wasm32", not(feature = "contract-0-1")))]
            Repr::Handle(h) => h.recipient_count(),
        }
    }
}

impl From<SessionData> for Session {
    fn from(d: SessionData) -> Session {
        Session(Repr::Data(Box::new(d)))
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Repr::Data(d) => d.fmt(f),
            #[cfg(all(target_arch = "wasm32", not(feature = "contract-0-1")))]
            Repr::Handle(_) => f.write_str("Session(<host handle>)"),
        }
    }
}

/// The decided outcome of one stage, for observers, with the session's
/// changing state at the time it was decided.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub stage: Stage,
    /// The command argument (HELO name, address...); never AUTH credentials.
    pub argument: String,
    /// The reply sent (0 for `disconnect`).
    pub code: u16,
    pub enhanced: Option<String>,
    pub text: String,
    /// The plugin whose verdict decided; none when the host did.
    pub decided_by: Option<String>,
    pub helo: Option<String>,
    pub tls: Option<TlsInfo>,
    pub auth_user: Option<String>,
    /// The transaction's sender ("" for `<>`); none outside a transaction.
    pub mail_from: Option<String>,
    pub recipient_count: u32,
}

/// The answer of the data stage: a verdict, and what to change in an
/// accepted message (see the builder methods).
#[derive(Clone, Debug)]
pub struct DataResult {
    pub verdict: Verdict,
    /// Fields added at the top of the message.
    pub add_headers: Vec<Header>,
    pub header_changes: Vec<HeaderChange>,
    pub envelope_changes: Vec<EnvelopeChange>,
    /// Hold the message in the queue with this reason.
    pub quarantine: Option<String>,
}

/// A change to the header section the message arrived with.
#[derive(Clone, Debug)]
pub enum HeaderChange {
    /// Remove every field of this name.
    Remove(String),
    /// Replace the first field of this name (drop the others; add it when
    /// missing).
    Replace(Header),
}

/// A change to the envelope.
#[derive(Clone, Debug)]
pub enum EnvelopeChange {
    /// "" sets the null sender.
    SetSender(String),
    AddRecipient(String),
    RemoveRecipient(String),
}

impl DataResult {
    /// A data-stage answer that changes nothing.
    pub fn verdict(verdict: Verdict) -> DataResult {
        DataResult {
            verdict,
            add_headers: Vec::new(),
            header_changes: Vec::new(),
            envelope_changes: Vec::new(),
            quarantine: None,
        }
    }
    pub fn add_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.add_headers.push(crate::header(name, value));
        self
    }
    pub fn remove_header(mut self, name: impl Into<String>) -> Self {
        self.header_changes.push(HeaderChange::Remove(name.into()));
        self
    }
    pub fn replace_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.header_changes
            .push(HeaderChange::Replace(crate::header(name, value)));
        self
    }
    pub fn set_sender(mut self, address: impl Into<String>) -> Self {
        self.envelope_changes
            .push(EnvelopeChange::SetSender(address.into()));
        self
    }
    pub fn add_recipient(mut self, address: impl Into<String>) -> Self {
        self.envelope_changes
            .push(EnvelopeChange::AddRecipient(address.into()));
        self
    }
    pub fn remove_recipient(mut self, address: impl Into<String>) -> Self {
        self.envelope_changes
            .push(EnvelopeChange::RemoveRecipient(address.into()));
        self
    }
    /// Accept the message but hold it in the queue for an operator.
    pub fn quarantine(mut self, reason: impl Into<String>) -> Self {
        self.quarantine = Some(reason.into());
        self
    }
}

impl From<Verdict> for DataResult {
    fn from(verdict: Verdict) -> DataResult {
        DataResult::verdict(verdict)
    }
}

/// Conversions the `export_plugin!` glue calls (not part of the API).
#[doc(hidden)]
pub mod glue {
    use super::*;
    use crate::wit::types as w;

    /// 0.2: the handle the host lent for this call.
    #[cfg(all(target_arch = "wasm32", not(feature = "contract-0-1")))]
    pub fn lend(s: &w::Session) -> Session {
        // SAFETY: a second owner of the same handle that is never dropped
        // (ManuallyDrop) and lives only for the call that lent it: the
        // `Session` is created by the export glue and passed by reference.
        let h = unsafe { w::Session::from_handle(s.handle()) };
        Session(Repr::Handle(core::mem::ManuallyDrop::new(h)))
    }

    #[cfg(not(feature = "contract-0-1"))]
    pub fn outcome(o: w::Outcome) -> Outcome {
        Outcome {
            stage: o.stage,
            argument: o.argument,
            code: o.code,
            enhanced: o.enhanced,
            text: o.text,
            decided_by: o.decided_by,
            helo: o.helo,
            tls: o.tls,
            auth_user: o.auth_user,
            mail_from: o.mail_from,
            recipient_count: o.recipient_count,
        }
    }

    #[cfg(not(feature = "contract-0-1"))]
    pub fn data_result(d: DataResult) -> w::DataResult {
        w::DataResult {
            verdict: d.verdict,
            add_headers: d.add_headers,
            header_changes: d
                .header_changes
                .into_iter()
                .map(|c| match c {
                    HeaderChange::Remove(n) => w::HeaderChange::Remove(n),
                    HeaderChange::Replace(h) => w::HeaderChange::Replace(h),
                })
                .collect(),
            envelope_changes: d
                .envelope_changes
                .into_iter()
                .map(|c| match c {
                    EnvelopeChange::SetSender(a) => w::EnvelopeChange::SetSender(a),
                    EnvelopeChange::AddRecipient(a) => w::EnvelopeChange::AddRecipient(a),
                    EnvelopeChange::RemoveRecipient(a) => w::EnvelopeChange::RemoveRecipient(a),
                })
                .collect(),
            quarantine: d.quarantine,
        }
    }

    /// 0.1: the record the host copied in.
    #[cfg(feature = "contract-0-1")]
    pub fn record(s: w::Session) -> Session {
        Session(Repr::Data(Box::new(SessionData {
            id: s.id,
            client_ip: s.client_ip,
            client_port: s.client_port,
            client_name: s.client_name,
            local_ip: s.local_ip,
            local_port: s.local_port,
            listener: s.listener,
            server_name: s.server_name,
            helo: s.helo,
            esmtp: s.esmtp,
            tls: s.tls,
            auth_user: s.auth_user,
            mail_from: s.mail_from,
            recipients: s.recipients,
            messages_accepted: s.messages_accepted,
        })))
    }

    /// 0.1: one outcome, with the session's state of the moment (0.1 calls
    /// observers at the time of each stage).
    #[cfg(feature = "contract-0-1")]
    pub fn outcome(s: &Session, o: w::Outcome) -> Outcome {
        Outcome {
            stage: o.stage,
            argument: o.argument,
            code: o.code,
            enhanced: o.enhanced,
            text: o.text,
            decided_by: o.decided_by,
            helo: s.helo(),
            tls: s.tls(),
            auth_user: s.auth_user(),
            mail_from: s.mail_from().map(|a| a.address),
            recipient_count: s.recipient_count(),
        }
    }

    /// 0.1 has no changes at the data stage: a plugin asking for them was
    /// built for the wrong contract, which must not pass unnoticed.
    #[cfg(feature = "contract-0-1")]
    pub fn data_result(d: DataResult) -> w::DataResult {
        if !d.header_changes.is_empty() || !d.envelope_changes.is_empty() || d.quarantine.is_some()
        {
            panic!(
                "postern: this plugin changes the envelope, the header section or quarantines: \
                 build it for postern:policy@0.2.0 (without the contract-0-1 feature)"
            );
        }
        w::DataResult {
            verdict: d.verdict,
            add_headers: d.add_headers,
        }
    }
}
