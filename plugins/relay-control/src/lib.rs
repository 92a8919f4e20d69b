//! `relay-control`: decides relaying at RCPT TO. Local recipients pass to
//! later plugins; any other recipient — and any local one whose local part
//! hides another destination (`%`, `!`, quoted `@`) — is granted only to
//! authenticated sessions, clients in `relay_networks`, or clients with a
//! recent successful AUTH recorded in the shared kv store (a failed look-up
//! defers, or with `on_kv_error = "allow"` counts as no recent AUTH).
//! Input: the session and recipient (client-controlled; only `auth_user`,
//! `client_ip` and `is_local` are host-computed) and the kv value written by
//! the auth plugin.
//! RFC 5321 §3.6 (relaying), §4.1.1.3 (RCPT), §7.1; RFC 2505 §2.1; RFC 4954.

use std::net::IpAddr;

use postern_sdk::OnKvError;
use postern_sdk::net::{self, Ranges};
use postern_sdk::prelude::*;

pub mod classify;

use classify::{Class, classify};

/// `[plugin.config]` of `relay-control`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub relay_networks: Vec<String>,
    /// Seconds; 0 turns the recent-auth look-up off.
    #[serde(default)]
    pub recent_auth_window: u64,
    #[serde(default)]
    pub local_literals: Vec<String>,
    #[serde(default = "yes")]
    pub deny_tricks: bool,
    /// A failed recent-auth look-up: "tempfail" defers the recipient,
    /// "allow" goes on as if the client had not authenticated recently.
    #[serde(default)]
    pub on_kv_error: OnKvError,
}

fn yes() -> bool {
    true
}

/// The kv key the auth plugin writes after a successful AUTH.
pub fn recent_auth_key(client_ip: &str) -> String {
    format!("recent-auth:{client_ip}")
}

/// The host capabilities this plugin uses, behind a trait so the decision
/// logic runs natively in tests.
pub trait Host {
    fn kv_get(&self, key: &str) -> Result<Option<String>, KvError>;
    fn now_ms(&self) -> u64;
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]);
}

/// The real host (only callable inside the component).
pub struct Wasm;

impl Host for Wasm {
    fn kv_get(&self, key: &str) -> Result<Option<String>, KvError> {
        kv::get(key)
    }
    fn now_ms(&self) -> u64 {
        now_ms()
    }
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        log::with(level, message, fields)
    }
}

/// Why a client may relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    Authenticated,
    Network(String),
    RecentAuth,
}

impl Grant {
    fn describe(&self) -> String {
        match self {
            Grant::Authenticated => "auth".into(),
            Grant::Network(rule) => format!("relay_networks {rule}"),
            Grant::RecentAuth => "recent-auth".into(),
        }
    }
}

pub struct RelayControl {
    relay_networks: Ranges,
    recent_auth_window_ms: u64,
    local_literals: Vec<IpAddr>,
    deny_tricks: bool,
    on_kv_error: OnKvError,
}

impl Plugin for RelayControl {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        let relay_networks = Ranges::parse("relay_networks", &config.relay_networks)?;
        let local_literals = config
            .local_literals
            .iter()
            .enumerate()
            .map(|(i, e)| {
                classify::parse_local_literal(e).map_err(|m| format!("local_literals[{i}]: {m}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RelayControl {
            relay_networks,
            recent_auth_window_ms: config.recent_auth_window.saturating_mul(1000),
            local_literals,
            deny_tricks: config.deny_tricks,
            on_kv_error: config.on_kv_error,
        })
    }
}

/// Whether a recent-auth value is still fresh. A value whose first word is a
/// decimal number is the authentication time in ms since the Unix epoch and
/// must be at most `window_ms` old (a time in the future counts as now); any
/// other value counts as fresh, leaving expiry to the writer's TTL.
pub fn fresh(value: &str, now_ms: u64, window_ms: u64) -> bool {
    let first = value.split_whitespace().next().unwrap_or("");
    match first.parse::<u64>() {
        Ok(at) if first.bytes().all(|b| b.is_ascii_digit()) => {
            now_ms.saturating_sub(at) <= window_ms
        }
        _ => true,
    }
}

fn describe_kv(e: &KvError) -> String {
    match e {
        KvError::Denied => "kv capability not granted (add capabilities = [\"kv\"])".into(),
        KvError::Unavailable(m) => format!("kv unavailable: {m}"),
        KvError::Invalid(m) => format!("kv request invalid: {m}"),
    }
}

/// Reply text never exceeds the host's 400-byte limit, whatever the address.
fn clamp(text: &str) -> &str {
    if text.len() <= 300 {
        return text;
    }
    let mut end = 300;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `554 5.7.1 <address>: Relay access denied`.
pub fn relay_denied(address: &str) -> Verdict {
    reject(
        554,
        "5.7.1",
        format!("{}: Relay access denied", clamp(address)),
    )
}

/// `451 4.3.0 <address>: Temporary relay check failure, try again later`.
pub fn relay_tempfail(address: &str) -> Verdict {
    defer(
        451,
        "4.3.0",
        format!(
            "{}: Temporary relay check failure, try again later",
            clamp(address)
        ),
    )
}

impl RelayControl {
    /// Whether this session may relay; `Err` when the kv look-up failed.
    pub fn authorize(&self, host: &dyn Host, session: &Session) -> Result<Option<Grant>, String> {
        if session.auth_user().is_some() {
            return Ok(Some(Grant::Authenticated));
        }
        if let Some(ip) = net::parse_client(&session.client_ip())
            && let Some((_, rule)) = self.relay_networks.longest_match(ip)
        {
            return Ok(Some(Grant::Network(rule.to_string())));
        }
        if self.recent_auth_window_ms == 0 {
            return Ok(None);
        }
        match host.kv_get(&recent_auth_key(&session.client_ip())) {
            Ok(Some(v)) if fresh(&v, host.now_ms(), self.recent_auth_window_ms) => {
                Ok(Some(Grant::RecentAuth))
            }
            Ok(_) => Ok(None),
            Err(e) => Err(describe_kv(&e)),
        }
    }

    /// The verdict for one recipient (logs through `host`).
    pub fn decide(&self, host: &dyn Host, session: &Session, rcpt: &EnvelopeAddress) -> Verdict {
        let class = classify(rcpt, &self.local_literals);
        let trick = match class {
            Class::Local => return pass(),
            Class::LocalTrick(t) => Some(t),
            Class::Remote => None,
        };
        let log = |level: Level, message: &str, extra: &[(&str, &str)]| {
            let client = session.client_ip();
            let mut f = vec![("rcpt", rcpt.address.as_str()), ("client", client.as_str())];
            f.extend_from_slice(extra);
            host.log(level, message, &f);
        };
        let trick_name = trick.map_or("", |t| t.name());
        if trick.is_some() && !self.deny_tricks {
            log(
                Level::Info,
                "address trick in a local recipient passed as a local mailbox (deny_tricks = false)",
                &[("trick", trick_name)],
            );
            return pass();
        }
        let granted = match self.authorize(host, session) {
            Ok(g) => g,
            Err(message) if self.on_kv_error == OnKvError::Allow => {
                log(
                    Level::Warn,
                    "recent-auth look-up failed; going on without it (on_kv_error = \"allow\")",
                    &[("error", &message)],
                );
                None
            }
            Err(message) => {
                log(
                    Level::Warn,
                    "recent-auth look-up failed; deferring the recipient",
                    &[("error", &message)],
                );
                return relay_tempfail(&rcpt.address);
            }
        };
        match granted {
            Some(grant) => {
                let via = grant.describe();
                if trick.is_some() {
                    log(
                        Level::Info,
                        "address trick from an authorised client treated as a local mailbox",
                        &[("trick", trick_name), ("via", &via)],
                    );
                    pass()
                } else {
                    log(Level::Debug, "relay granted", &[("via", &via)]);
                    accept()
                }
            }
            None => {
                let reason = if trick.is_some() {
                    trick_name
                } else {
                    "not authorised"
                };
                log(Level::Info, "relay denied", &[("reason", reason)]);
                relay_denied(&rcpt.address)
            }
        }
    }
}

impl RcptTo for RelayControl {
    fn on_rcpt_to(&self, session: &Session, recipient: &EnvelopeAddress) -> Verdict {
        self.decide(&Wasm, session, recipient)
    }
}

export_plugin!(RelayControl, [rcpt_to], recycle);

#[cfg(test)]
mod tests;
