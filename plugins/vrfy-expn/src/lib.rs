//! `vrfy-expn`: answers VRFY and EXPN. By default (and for untrusted clients
//! in `trusted` mode) it reveals nothing: VRFY gets 252, EXPN 502. Trusted
//! clients (authenticated, or in `trusted_networks`) get answers from the
//! configured directory. Every VRFY/EXPN counts against a per-client-IP rate
//! limit in the kv store, which fails safe (4xx) when the store fails unless
//! `on_kv_error = "allow"` (then the command goes unlimited).
//! Input: the argument (client-controlled, never echoed), the session's
//! `auth_user` and `client_ip` (host-computed). RFC 5321 §3.5, §4.1.1.6–7,
//! §7.3 (VRFY/EXPN and security); RFC 2505 §2.11.

use std::collections::BTreeMap;

use postern_sdk::OnKvError;
use postern_sdk::net::{self, Ranges};
use postern_sdk::prelude::*;

pub mod directory;

use directory::{Directory, ExpnAnswer, VrfyAnswer};

#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Off,
    Trusted,
}

/// `[plugin.config]` of `vrfy-expn`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub trusted_networks: Vec<String>,
    #[serde(default)]
    pub mailboxes: Vec<String>,
    #[serde(default)]
    pub lists: BTreeMap<String, Vec<String>>,
    /// Most VRFY+EXPN per client IP per window; 0 turns the limit off.
    #[serde(default = "default_rate_limit")]
    pub rate_limit: u32,
    /// Seconds.
    #[serde(default = "default_rate_window")]
    pub rate_window: u64,
    /// A failed rate-limit count: "tempfail" answers 451, "allow" answers
    /// the command without counting it.
    #[serde(default)]
    pub on_kv_error: OnKvError,
}

fn default_rate_limit() -> u32 {
    10
}
fn default_rate_window() -> u64 {
    60
}

/// The host capabilities this plugin uses, behind a trait so the decision
/// logic runs natively in tests.
pub trait Host {
    fn kv_increment(&self, key: &str, delta: i64, window_ms: u64) -> Result<i64, KvError>;
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]);
}

/// The real host (only callable inside the component).
pub struct Wasm;

impl Host for Wasm {
    fn kv_increment(&self, key: &str, delta: i64, window_ms: u64) -> Result<i64, KvError> {
        kv::increment(key, delta, window_ms)
    }
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        log::with(level, message, fields)
    }
}

/// The kv counter of one client.
pub fn rate_key(client_ip: &str) -> String {
    format!("rate:{client_ip}")
}

/// Which command is being answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Vrfy,
    Expn,
}

/// `252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery`.
pub fn vrfy_off() -> Verdict {
    accept_with(
        252,
        "2.0.0",
        "Cannot VRFY user, but will accept message and attempt delivery",
    )
}

/// `502 5.5.1 EXPN is disabled`.
pub fn expn_off() -> Verdict {
    reject(502, "5.5.1", "EXPN is disabled")
}

pub struct VrfyExpn {
    mode: Mode,
    trusted: Ranges,
    directory: Directory,
    rate_limit: u32,
    rate_window_ms: u64,
    on_kv_error: OnKvError,
}

impl Plugin for VrfyExpn {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        let trusted = Ranges::parse("trusted_networks", &config.trusted_networks)?;
        let directory = Directory::new(&config.mailboxes, &config.lists)?;
        if config.rate_limit > 0 && config.rate_window == 0 {
            return Err("rate_window must be at least 1 (seconds) when rate_limit is set; use rate_limit = 0 to turn the limit off".into());
        }
        Ok(VrfyExpn {
            mode: config.mode,
            trusted,
            directory,
            rate_limit: config.rate_limit,
            rate_window_ms: config.rate_window.saturating_mul(1000),
            on_kv_error: config.on_kv_error,
        })
    }
}

impl VrfyExpn {
    /// Whether this session gets real answers.
    pub fn trusted(&self, session: &Session) -> bool {
        self.mode == Mode::Trusted
            && (session.auth_user().is_some()
                || net::parse_client(&session.client_ip())
                    .is_some_and(|ip| self.trusted.contains(ip)))
    }

    /// `Some(verdict)` when the rate limit refuses the request (or the store
    /// failed); `None` to go on.
    fn rate_limited(&self, host: &dyn Host, session: &Session) -> Option<Verdict> {
        if self.rate_limit == 0 {
            return None;
        }
        let client = session.client_ip();
        let ip = client.as_str();
        match host.kv_increment(&rate_key(ip), 1, self.rate_window_ms) {
            Ok(n) if n > i64::from(self.rate_limit) => {
                let count = n.to_string();
                let limit = self.rate_limit.to_string();
                host.log(
                    Level::Info,
                    "VRFY/EXPN rate limit exceeded",
                    &[("client", ip), ("count", &count), ("limit", &limit)],
                );
                Some(defer(
                    450,
                    "4.7.1",
                    "Too many VRFY/EXPN requests, slow down",
                ))
            }
            Ok(_) => None,
            Err(e) => {
                let error = match e {
                    KvError::Denied => {
                        "kv capability not granted (add capabilities = [\"kv\"] or set rate_limit = 0)"
                            .to_string()
                    }
                    KvError::Unavailable(m) => format!("kv unavailable: {m}"),
                    KvError::Invalid(m) => format!("kv request invalid: {m}"),
                };
                if self.on_kv_error == OnKvError::Allow {
                    host.log(
                        Level::Warn,
                        "VRFY/EXPN rate limit check failed; answering unlimited (on_kv_error = \"allow\")",
                        &[("client", ip), ("error", &error)],
                    );
                    return None;
                }
                host.log(
                    Level::Warn,
                    "VRFY/EXPN rate limit check failed; deferring",
                    &[("client", ip), ("error", &error)],
                );
                Some(defer(
                    451,
                    "4.3.0",
                    "VRFY/EXPN temporarily unavailable, try again later",
                ))
            }
        }
    }

    /// The verdict for one VRFY or EXPN.
    pub fn answer(
        &self,
        host: &dyn Host,
        session: &Session,
        command: Command,
        argument: &str,
    ) -> Verdict {
        if let Some(v) = self.rate_limited(host, session) {
            return v;
        }
        let trusted = self.trusted(session);
        match (command, trusted) {
            (Command::Vrfy, false) => vrfy_off(),
            (Command::Expn, false) => expn_off(),
            (Command::Vrfy, true) => match self.directory.vrfy(argument) {
                VrfyAnswer::Mailbox(m) => accept_with(250, "2.1.5", format!("<{m}>")),
                VrfyAnswer::Ambiguous => reject(553, "5.1.4", "User ambiguous"),
                VrfyAnswer::List => reject(550, "5.1.1", "That is a mailing list, not a user"),
                VrfyAnswer::Unknown => reject(550, "5.1.1", "Mailbox unknown"),
            },
            (Command::Expn, true) => match self.directory.expn(argument) {
                ExpnAnswer::Members(text) => accept_with(250, "2.1.5", text),
                ExpnAnswer::Mailbox => {
                    reject(550, "5.1.1", "That is a user name, not a mailing list")
                }
                ExpnAnswer::Unknown => reject(550, "5.1.1", "Mailing list unknown"),
            },
        }
    }
}

impl Vrfy for VrfyExpn {
    fn on_vrfy(&self, session: &Session, argument: &str) -> Verdict {
        self.answer(&Wasm, session, Command::Vrfy, argument)
    }
}

impl Expn for VrfyExpn {
    fn on_expn(&self, session: &Session, argument: &str) -> Verdict {
        self.answer(&Wasm, session, Command::Expn, argument)
    }
}

export_plugin!(VrfyExpn, [vrfy, expn], recycle);

#[cfg(test)]
mod tests;
