//! SMTP AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms: the
//! SASL exchange, decoding, and the host's rules around it — offered only
//! over TLS unless the listener allows plaintext, per-session and per-client
//! failure limits — while the decision about the credentials belongs to the
//! auth-stage plugins. Credentials are never logged. Input: base64 lines from
//! an untrusted client.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use postern_plugin::{Ask, Credentials, Decision, Verdict};
use postern_protocol::Reply;

use super::{Phase, Session, Step, replies};

/// A SASL exchange waiting for the client's next line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    Plain,
    LoginUser,
    LoginPassword { username: String },
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`.
pub fn decode_plain(b64: &str) -> Result<Credentials, &'static str> {
    let raw = STANDARD.decode(b64.trim()).map_err(|_| "invalid base64")?;
    let mut parts = raw.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("PLAIN response must be authzid NUL authcid NUL password");
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| "credentials are not UTF-8");
    let (authzid, username, password) = (text(authzid)?, text(user)?, text(pass)?);
    if username.is_empty() {
        return Err("empty user name");
    }
    Ok(Credentials {
        mechanism: "PLAIN".into(),
        authzid: (!authzid.is_empty()).then_some(authzid),
        username,
        password,
    })
}

fn decode_text(b64: &str) -> Result<String, &'static str> {
    let raw = STANDARD.decode(b64.trim()).map_err(|_| "invalid base64")?;
    String::from_utf8(raw).map_err(|_| "not UTF-8")
}

impl Session {
    /// Whether AUTH may be offered on this connection right now.
    pub(super) fn auth_offered(&self) -> bool {
        self.ctx.tls.is_some() || self.listener.allow_plaintext_auth
    }

    fn client_failure_key(&self) -> String {
        format!("postern\u{1f}auth-fail:{}", self.ctx.client.ip())
    }

    pub(super) async fn auth_command(
        &mut self,
        mechanism: String,
        initial: Option<String>,
    ) -> Step {
        if self.phase != Phase::Ready || !self.ctx.esmtp {
            return self.bad(replies::need_ehlo());
        }
        if !self.auth_offered() {
            return self.bad(replies::auth_needs_tls());
        }
        if self.ctx.auth_user.is_some() {
            return self.bad(replies::already_authenticated());
        }
        if self.tx.is_some() {
            return self.bad(replies::auth_in_transaction());
        }
        let limit = self.config.auth.client_failure_limit as i64;
        if let Ok(Some(n)) = self.kv.get(self.client_failure_key()).await
            && n.parse::<i64>().unwrap_or(0) >= limit
        {
            return Step::Close(replies::auth_client_blocked());
        }
        match (mechanism.as_str(), initial) {
            ("PLAIN", Some(resp)) => self.auth_plain(&resp).await,
            ("PLAIN", None) => {
                self.exchange = Some(Exchange::Plain);
                Step::Reply(replies::auth_continue())
            }
            ("LOGIN", Some(user)) => match decode_text(&user) {
                Ok(username) => {
                    self.exchange = Some(Exchange::LoginPassword { username });
                    Step::Reply(replies::auth_challenge("Password:"))
                }
                Err(e) => self.bad(replies::cannot_decode(Some(e))),
            },
            ("LOGIN", None) => {
                self.exchange = Some(Exchange::LoginUser);
                Step::Reply(replies::auth_challenge("Username:"))
            }
            _ => self.bad(replies::unknown_mechanism()),
        }
    }

    /// The client's answer to a 334 challenge.
    pub(super) async fn auth_continue(&mut self, line: &[u8]) -> Step {
        let Some(exchange) = self.exchange.take() else {
            return Step::Reply(replies::ok());
        };
        let Ok(text) = std::str::from_utf8(line) else {
            return self.bad(replies::cannot_decode(None));
        };
        if text.trim() == "*" {
            return Step::Reply(replies::auth_cancelled());
        }
        match exchange {
            Exchange::Plain => self.auth_plain(text).await,
            Exchange::LoginUser => match decode_text(text) {
                Ok(username) => {
                    self.exchange = Some(Exchange::LoginPassword { username });
                    Step::Reply(replies::auth_challenge("Password:"))
                }
                Err(e) => self.bad(replies::cannot_decode(Some(e))),
            },
            Exchange::LoginPassword { username } => match decode_text(text) {
                Ok(password) => {
                    let creds = Credentials {
                        mechanism: "LOGIN".into(),
                        authzid: None,
                        username,
                        password,
                    };
                    self.verify(creds).await
                }
                Err(e) => self.bad(replies::cannot_decode(Some(e))),
            },
        }
    }

    async fn auth_plain(&mut self, b64: &str) -> Step {
        match decode_plain(b64) {
            Ok(creds) => self.verify(creds).await,
            Err(e) => self.bad(replies::cannot_decode(Some(e))),
        }
    }

    async fn verify(&mut self, creds: Credentials) -> Step {
        let argument = format!("{} {}", creds.mechanism, creds.username);
        let decide = async |s: &mut Self, d: &Decision| match &d.verdict {
            Verdict::Accept | Verdict::AcceptWith(_) => {
                crate::server::metrics::events::auth("ok");
                s.ctx_mut().auth_user = Some(creds.username.clone());
                s.remember_authenticated(&creds.username).await;
                tracing::info!(user = ?creds.username, mechanism = %creds.mechanism, "authenticated");
                Step::Reply(replies::auth_ok())
            }
            Verdict::Defer(p) => Step::Reply(replies::plugin(p)),
            Verdict::Disconnect(p) => Step::Close(replies::plugin(p)),
            Verdict::Reject(p) => s.auth_failed(&creds, replies::plugin(p)).await,
            Verdict::Pass => s.auth_failed(&creds, replies::auth_invalid()).await,
        };
        self.stage(Ask::Auth(&creds), &argument, decide).await
    }

    async fn auth_failed(&mut self, creds: &Credentials, reply: Reply) -> Step {
        crate::server::metrics::events::auth("failed");
        self.auth_failures += 1;
        tracing::info!(
            user = ?creds.username,
            mechanism = %creds.mechanism,
            failures = self.auth_failures,
            "authentication failed"
        );
        let window = self.config.auth.client_failure_window;
        let _ = self
            .kv
            .increment(self.client_failure_key(), 1, window)
            .await;
        if self.auth_failures >= self.config.auth.max_failures {
            return Step::Close(replies::auth_too_many_failures());
        }
        Step::Reply(reply)
    }

    /// "Recently authenticated" (the modern POP-before-SMTP): remember the
    /// client address so relay-control may allow it for a while.
    async fn remember_authenticated(&mut self, user: &str) {
        let window = self.config.auth.remember_window;
        if window.is_zero() {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let key = format!(
            "{}\u{1f}recent-auth:{}",
            self.config.auth.remember_namespace,
            self.ctx.client.ip()
        );
        if let Err(e) = self
            .kv
            .set(key, format!("{now} {user}"), Some(window))
            .await
        {
            tracing::warn!("cannot remember authenticated client: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_decoding() {
        let enc = |s: &[u8]| STANDARD.encode(s);
        let c = decode_plain(&enc(b"\0bob\0secret")).unwrap();
        assert_eq!(
            (c.authzid, c.username.as_str(), c.password.as_str()),
            (None, "bob", "secret")
        );
        let c = decode_plain(&enc(b"admin\0bob\0pw")).unwrap();
        assert_eq!(c.authzid.as_deref(), Some("admin"));
        assert!(decode_plain(&enc(b"bob\0secret")).is_err());
        assert!(decode_plain(&enc(b"\0\0secret")).is_err());
        assert!(decode_plain(&enc(b"\0a\0b\0c")).is_err());
        assert!(decode_plain("!!!notbase64").is_err());
        assert!(decode_plain(&enc(b"\0\xff\0x")).is_err());
    }

    #[test]
    fn debug_hides_password() {
        let c = decode_plain(&STANDARD.encode(b"\0bob\0hunter2")).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
