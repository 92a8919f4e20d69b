//! The "mail-auth" capability as the runtime sees it: a backend trait and
//! the plain result types the host lends to plugins (mirroring
//! `postern:policy/mail-auth` in `wit/host.wit`). The server implements the
//! backend with a verification library (RFC 7208 SPF, RFC 6376/8463 DKIM,
//! RFC 8617 ARC, RFC 7489 DMARC); the runtime only checks grants and
//! converts. Input: arguments chosen by untrusted plugins.

use std::net::IpAddr;
use std::sync::Arc;

use crate::capability::BoxFuture;
use crate::message::MessageData;

/// A result as RFC 8601 §2.7 names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AuthResult {
    #[default]
    None,
    Pass,
    Fail,
    SoftFail,
    Neutral,
    TempError,
    PermError,
}

impl AuthResult {
    /// The RFC 8601 name ("pass", "softfail", ...).
    pub fn name(self) -> &'static str {
        match self {
            AuthResult::None => "none",
            AuthResult::Pass => "pass",
            AuthResult::Fail => "fail",
            AuthResult::SoftFail => "softfail",
            AuthResult::Neutral => "neutral",
            AuthResult::TempError => "temperror",
            AuthResult::PermError => "permerror",
        }
    }

    pub const ALL: [AuthResult; 7] = [
        AuthResult::None,
        AuthResult::Pass,
        AuthResult::Fail,
        AuthResult::SoftFail,
        AuthResult::Neutral,
        AuthResult::TempError,
        AuthResult::PermError,
    ];
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpfCheck {
    pub result: AuthResult,
    pub domain: String,
    pub explanation: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpfOutcome {
    pub helo: SpfCheck,
    pub mail_from: SpfCheck,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DkimSignature {
    pub domain: String,
    pub selector: String,
    pub algorithm: String,
    pub result: AuthResult,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArcOutcome {
    pub result: AuthResult,
    pub instances: u32,
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DmarcPolicy {
    None,
    Quarantine,
    Reject,
    #[default]
    Unspecified,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DmarcOutcome {
    pub from_domain: String,
    pub result: AuthResult,
    pub spf_aligned: bool,
    pub dkim_aligned: bool,
    pub record_found: bool,
    pub policy: DmarcPolicy,
    pub published_p: DmarcPolicy,
    pub published_sp: DmarcPolicy,
    pub pct: u8,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthOutcome {
    pub spf: SpfOutcome,
    pub dkim: Vec<DkimSignature>,
    pub arc: ArcOutcome,
    pub dmarc: DmarcOutcome,
}

/// What a plugin asks the backend to sign with.
#[derive(Clone, Debug)]
pub struct SignRequest {
    pub domain: String,
    pub selector: String,
    pub algorithm: String,
    pub private_key_pem: String,
    pub headers: Vec<String>,
}

/// The SMTP identities of a check (RFC 7208 §2.3, §2.4).
#[derive(Clone, Debug)]
pub struct Identities {
    pub client_ip: IpAddr,
    pub helo: String,
    /// Empty for the null reverse-path.
    pub mail_from: String,
}

/// Verification and signing, implemented by the server.
pub trait MailAuthBackend: Send + Sync {
    fn check_spf(&self, ids: Identities) -> BoxFuture<'_, SpfOutcome>;
    fn authenticate(
        &self,
        message: Arc<MessageData>,
        ids: Identities,
    ) -> BoxFuture<'_, AuthOutcome>;
    /// The `DKIM-Signature` field value, unfolded; `Err` names the problem.
    fn dkim_sign(&self, message: &MessageData, request: SignRequest) -> Result<String, String>;
}

/// Used when the server has no backend (tests): every check is a
/// `temperror`, signing fails.
pub struct NoMailAuth;

impl MailAuthBackend for NoMailAuth {
    fn check_spf(&self, _ids: Identities) -> BoxFuture<'_, SpfOutcome> {
        let t = SpfCheck {
            result: AuthResult::TempError,
            ..SpfCheck::default()
        };
        Box::pin(async move {
            SpfOutcome {
                helo: t.clone(),
                mail_from: t,
            }
        })
    }

    fn authenticate(
        &self,
        _message: Arc<MessageData>,
        ids: Identities,
    ) -> BoxFuture<'_, AuthOutcome> {
        Box::pin(async move {
            AuthOutcome {
                spf: self.check_spf(ids).await,
                ..AuthOutcome::default()
            }
        })
    }

    fn dkim_sign(&self, _message: &MessageData, _request: SignRequest) -> Result<String, String> {
        Err("no mail-auth backend configured".into())
    }
}
