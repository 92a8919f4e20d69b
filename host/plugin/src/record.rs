//! Session recordings for offline replay: every stage call the chain makes
//! (the session state at that moment, the stage's argument, the decision),
//! as one JSON document per session. What is never recorded: AUTH
//! passwords (an AUTH call keeps its mechanism and user name and is not
//! replayed), and message bodies beyond the configured size. The host
//! decides which sessions are recorded and where the documents go (a
//! `RecordSink`); `SessionChain::replay` runs a recording through another
//! generation. Input: the chain's own calls (trusted); recordings read back
//! for replay are checked like any file (a bad line is an error naming it).

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::Stage;
use crate::chain::Decision;
use crate::context::{EnvelopeAddress, SessionContext, TlsInfo};
use crate::hooks::{Ask, Call};
use crate::message::MessageData;

/// The recording format's version (`"v"` of every session document).
pub const FORMAT: u32 = 1;

/// Where finished recordings go (the host's rotating files).
pub trait RecordSink: Send + Sync {
    fn write(&self, record: SessionRecord);
}

/// One recorded session.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SessionRecord {
    pub v: u32,
    pub session: String,
    pub started_unix_ms: u64,
    /// The generation that served it.
    pub generation: u64,
    pub calls: Vec<CallRecord>,
}

/// One stage call.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CallRecord {
    pub stage: String,
    pub ctx: ContextRecord,
    pub arg: ArgRecord,
    pub decision: DecisionRecord,
}

/// The session state a call saw.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ContextRecord {
    pub client: SocketAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    pub local: SocketAddr,
    pub listener: String,
    pub server_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helo: Option<String>,
    pub esmtp: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_from: Option<AddressRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<AddressRecord>,
    pub messages_accepted: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TlsRecord {
    pub protocol: String,
    pub cipher: String,
    pub client_certificate: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AddressRecord {
    pub address: String,
    pub local_part: String,
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<(String, Option<String>)>,
    pub is_local: bool,
}

/// A stage's argument.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ArgRecord {
    None,
    Helo {
        name: String,
        extended: bool,
    },
    /// The password is never recorded, so an AUTH call is not replayed.
    Auth {
        mechanism: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        authzid: Option<String>,
        username: String,
    },
    Address(AddressRecord),
    /// The header section and the first `max_body` bytes of the body
    /// (base64), with the whole body's size.
    Message {
        header: String,
        body: String,
        body_size: u64,
        truncated: bool,
    },
    Text {
        argument: String,
    },
}

/// A decision as compared by replay: the verdict, its reply, who decided.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DecisionRecord {
    pub verdict: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enhanced: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
}

impl DecisionRecord {
    /// Whether two decisions tell the client the same (verdict, code and
    /// enhanced code; the text and the deciding plugin may differ).
    pub fn same_answer(&self, other: &DecisionRecord) -> bool {
        self.verdict == other.verdict && self.code == other.code && self.enhanced == other.enhanced
    }

    /// "reject 550 5.7.1 text (by plugin)", for reports.
    pub fn describe(&self) -> String {
        let mut s = self.verdict.clone();
        if let Some(c) = self.code {
            s.push_str(&format!(" {c}"));
        }
        if let Some(e) = &self.enhanced {
            s.push_str(&format!(" {e}"));
        }
        if let Some(t) = &self.text {
            s.push_str(&format!(" {t}"));
        }
        if let Some(p) = &self.decided_by {
            s.push_str(&format!(" (by {p})"));
        }
        s
    }
}

impl From<&Decision> for DecisionRecord {
    fn from(d: &Decision) -> Self {
        let reply = d.verdict.reply();
        DecisionRecord {
            verdict: d.verdict.kind().to_string(),
            code: reply.map(|r| r.code),
            enhanced: reply.and_then(|r| r.enhanced.clone()),
            text: reply.map(|r| r.text.clone()),
            decided_by: d.decided_by.as_deref().map(String::from),
        }
    }
}

fn address(a: &EnvelopeAddress) -> AddressRecord {
    AddressRecord {
        address: a.address.clone(),
        local_part: a.local_part.clone(),
        domain: a.domain.clone(),
        params: a.params.clone(),
        is_local: a.is_local,
    }
}

impl AddressRecord {
    pub fn to_address(&self) -> EnvelopeAddress {
        EnvelopeAddress {
            address: self.address.clone(),
            local_part: self.local_part.clone(),
            domain: self.domain.clone(),
            params: self.params.clone(),
            is_local: self.is_local,
        }
    }
}

impl ContextRecord {
    pub fn from_context(c: &SessionContext) -> Self {
        ContextRecord {
            client: c.client,
            client_name: c.client_name.clone(),
            local: c.local,
            listener: c.listener.to_string(),
            server_name: c.server_name.to_string(),
            helo: c.helo.clone(),
            esmtp: c.esmtp,
            tls: c.tls.as_ref().map(|t| TlsRecord {
                protocol: t.protocol.clone(),
                cipher: t.cipher.clone(),
                client_certificate: t.client_certificate,
                server_name: t.server_name.clone(),
            }),
            auth_user: c.auth_user.clone(),
            mail_from: c.mail_from.as_ref().map(address),
            recipients: c.recipients.iter().map(address).collect(),
            messages_accepted: c.messages_accepted,
        }
    }

    pub fn to_context(&self, id: Arc<str>) -> SessionContext {
        let mut c = SessionContext::new(
            id,
            self.client,
            self.local,
            self.listener.as_str().into(),
            self.server_name.as_str().into(),
        );
        c.client_name = self.client_name.clone();
        c.helo = self.helo.clone();
        c.esmtp = self.esmtp;
        c.tls = self.tls.as_ref().map(|t| TlsInfo {
            protocol: t.protocol.clone(),
            cipher: t.cipher.clone(),
            client_certificate: t.client_certificate,
            server_name: t.server_name.clone(),
        });
        c.auth_user = self.auth_user.clone();
        c.mail_from = self.mail_from.as_ref().map(AddressRecord::to_address);
        c.recipients = self
            .recipients
            .iter()
            .map(AddressRecord::to_address)
            .collect();
        c.messages_accepted = self.messages_accepted;
        c
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl ArgRecord {
    fn from_call(call: &Call<'_>, max_body: usize) -> ArgRecord {
        match call {
            Call::Smtp(Ask::Connect)
            | Call::Outcomes(_)
            | Call::Route { .. }
            | Call::DeliveryResult { .. }
            | Call::Bounce { .. } => ArgRecord::None,
            Call::Smtp(Ask::Helo { name, extended }) => ArgRecord::Helo {
                name: name.to_string(),
                extended: *extended,
            },
            Call::Smtp(Ask::Auth(c)) => ArgRecord::Auth {
                mechanism: c.mechanism.clone(),
                authzid: c.authzid.clone(),
                username: c.username.clone(),
            },
            Call::Smtp(Ask::MailFrom(a)) | Call::Smtp(Ask::RcptTo(a)) => {
                ArgRecord::Address(address(a))
            }
            Call::Smtp(Ask::Data(m)) => {
                let start = m.body_start();
                let header = m.read(0, start as u32).unwrap_or_default();
                let keep = (m.body_size() as usize).min(max_body);
                let body = m.read_body(0, keep as u32).unwrap_or_default();
                ArgRecord::Message {
                    header: b64(&header),
                    body: b64(&body),
                    body_size: m.body_size(),
                    truncated: (keep as u64) < m.body_size(),
                }
            }
            Call::Smtp(Ask::Vrfy(a)) | Call::Smtp(Ask::Expn(a)) => ArgRecord::Text {
                argument: a.to_string(),
            },
        }
    }

    /// The message a recorded data call saw (its header section and the
    /// recorded part of its body).
    pub fn message(&self) -> Result<MessageData, String> {
        let ArgRecord::Message { header, body, .. } = self else {
            return Err("not a message".into());
        };
        let e = base64::engine::general_purpose::STANDARD;
        let mut raw = e.decode(header).map_err(|e| format!("header: {e}"))?;
        raw.extend(e.decode(body).map_err(|e| format!("body: {e}"))?);
        Ok(MessageData::new(raw))
    }
}

/// A session being recorded (held by its chain, written when it ends).
pub(crate) struct Recording {
    sink: Arc<dyn RecordSink>,
    max_body: usize,
    record: SessionRecord,
}

impl Recording {
    pub(crate) fn new(
        sink: Arc<dyn RecordSink>,
        max_body: usize,
        session: &str,
        generation: u64,
    ) -> Recording {
        let started_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Recording {
            sink,
            max_body,
            record: SessionRecord {
                v: FORMAT,
                session: session.to_string(),
                started_unix_ms,
                generation,
                calls: Vec::new(),
            },
        }
    }

    pub(crate) fn push(&mut self, ctx: &SessionContext, call: &Call<'_>, decision: &Decision) {
        let stage = call.stage();
        if stage == Stage::Outcome {
            return;
        }
        self.record.calls.push(CallRecord {
            stage: stage.name().to_string(),
            ctx: ContextRecord::from_context(ctx),
            arg: ArgRecord::from_call(call, self.max_body),
            decision: DecisionRecord::from(decision),
        });
    }

    pub(crate) fn finish(self) {
        if !self.record.calls.is_empty() {
            self.sink.write(self.record);
        }
    }
}

/// What `SessionChain::replay` made of one recorded call.
#[derive(Clone, Debug, PartialEq)]
pub enum Replayed {
    Decided(DecisionRecord),
    /// Not replayed, and why (AUTH: no password was recorded).
    Skipped(&'static str),
}

impl crate::chain::SessionChain {
    /// Run a recorded session's calls through this chain, in order, each
    /// with the session state it was recorded with (a later call is made
    /// even when an earlier verdict here differs from the recording).
    pub async fn replay(&mut self, record: &SessionRecord) -> Result<Vec<Replayed>, String> {
        let id: Arc<str> = record.session.as_str().into();
        let mut out = Vec::with_capacity(record.calls.len());
        for call in &record.calls {
            let ctx = call.ctx.to_context(id.clone());
            let stage = Stage::ALL
                .into_iter()
                .find(|s| s.name() == call.stage)
                .ok_or_else(|| format!("unknown stage {:?}", call.stage))?;
            let d = match (&call.arg, stage) {
                (ArgRecord::None, Stage::Connect) => self.ask(&ctx, Ask::Connect).await,
                (ArgRecord::Helo { name, extended }, Stage::Helo) => {
                    self.ask(
                        &ctx,
                        Ask::Helo {
                            name,
                            extended: *extended,
                        },
                    )
                    .await
                }
                (ArgRecord::Auth { .. }, Stage::Auth) => {
                    out.push(Replayed::Skipped("auth: passwords are not recorded"));
                    continue;
                }
                (ArgRecord::Address(a), Stage::MailFrom) => {
                    self.ask(&ctx, Ask::MailFrom(&a.to_address())).await
                }
                (ArgRecord::Address(a), Stage::RcptTo) => {
                    self.ask(&ctx, Ask::RcptTo(&a.to_address())).await
                }
                (m @ ArgRecord::Message { .. }, Stage::Data) => {
                    self.ask(&ctx, Ask::Data(&Arc::new(m.message()?))).await
                }
                (ArgRecord::Text { argument }, Stage::Vrfy) => {
                    self.ask(&ctx, Ask::Vrfy(argument)).await
                }
                (ArgRecord::Text { argument }, Stage::Expn) => {
                    self.ask(&ctx, Ask::Expn(argument)).await
                }
                (arg, stage) => {
                    return Err(format!("a {} call with a {arg:?} argument", stage.name()));
                }
            };
            out.push(Replayed::Decided(DecisionRecord::from(&d)));
        }
        Ok(out)
    }
}
