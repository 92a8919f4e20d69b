//! Postern guest SDK: write a policy plugin in Rust by implementing only the
//! stages you need.
//!
//! ```ignore
//! use postern_sdk::prelude::*;
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config { blocked: Vec<String> }
//!
//! struct Blocker { blocked: Vec<String> }
//!
//! impl Plugin for Blocker {
//!     type Config = Config;
//!     fn new(config: Config) -> Result<Self, String> {
//!         Ok(Blocker { blocked: config.blocked })
//!     }
//! }
//!
//! impl RcptTo for Blocker {
//!     fn on_rcpt_to(&self, _s: &Session, rcpt: &EnvelopeAddress) -> Verdict {
//!         if self.blocked.iter().any(|b| b.eq_ignore_ascii_case(&rcpt.address)) {
//!             return reject(550, "5.1.1", "No such user here");
//!         }
//!         pass()
//!     }
//! }
//!
//! export_plugin!(Blocker, [rcpt_to]);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm`
//! in `target/wasm32-wasip2/release/` is the component to load. For each new
//! instance the host calls `Plugin::new` with the plugin's `[plugin.config]`
//! table before the first stage; with `export_plugin!(…, recycle)` an
//! instance may then serve one session after another (see [`Plugin`]). Input trusted by
//! this crate: the host's calls (the host validates what plugins return).
//!
//! The contract is `postern:policy@0.2.0`: a stage gets a [`Session`]
//! whose getters (`client_ip()`, `helo()`, `mail_from()`...) each ask the
//! host, so read only what you need; observers get a transaction's
//! [`Outcome`]s at a time ([`Observe::on_outcomes`]); the data stage may
//! change the envelope and header section or quarantine the message
//! ([`DataResult`]'s builder methods). With the `contract-0-1` feature the
//! same source builds a `postern:policy@0.1.0` component (a plugin that asks
//! for 0.2-only changes then panics, which the host treats as its error).
//!
//! Also here: [`net`] (client addresses and CIDR ranges from the
//! configuration, with `ipnet` re-exported) and, in native builds only,
//! [`testing`] (a fake host behind [`host`] and session and address
//! builders, for plugin unit tests).

/// Bindings for everything the host offers (`postern:policy/imports`), for
/// the contract this build targets: `postern:policy@0.2.0` (`wit/`), or
/// 0.1.0 (`wit/v0.1/`) with the `contract-0-1` feature.
pub mod wit {
    #[cfg(not(feature = "contract-0-1"))]
    wit_bindgen::generate!({
        world: "postern:policy/imports@0.2.0",
        path: "../../wit",
        generate_unused_types: true,
        // Arguments to the host are passed borrowed (`&str`, `&[(&str,
        // &str)]`): a log line's fields are not copied once more only to be
        // lowered.
        ownership: Borrowing {
            duplicate_if_necessary: true
        },
    });
    #[cfg(feature = "contract-0-1")]
    wit_bindgen::generate!({
        world: "postern:policy/imports@0.1.0",
        path: "../../wit/v0.1",
        generate_unused_types: true,
        ownership: Borrowing {
            duplicate_if_necessary: true
        },
    });
    pub use postern::policy::*;
}

/// The contract version this build implements ("0.2.0", or "0.1.0" with the
/// `contract-0-1` feature). A plugin whose configuration asks for something
/// only 0.2 can do (data-stage changes, quarantine) refuses it at `init`
/// when built for 0.1, instead of trapping on the first message.
#[cfg(not(feature = "contract-0-1"))]
pub const CONTRACT_VERSION: &str = "0.2.0";
#[cfg(feature = "contract-0-1")]
pub const CONTRACT_VERSION: &str = "0.1.0";

/// Whether [`DataResult`] may carry header and envelope changes and a
/// quarantine in this build (contract 0.2).
pub const CAN_CHANGE_MESSAGE: bool = cfg!(not(feature = "contract-0-1"));

pub mod addr;
pub mod host;
pub mod net;
mod session;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use postern_sdk_macros::export_plugin;
pub use serde::Deserialize;
pub use session::{
    DataResult, EnvelopeChange, HeaderChange, Outcome, Session, SessionData, glue as __glue,
};
#[cfg(not(feature = "contract-0-1"))]
pub use wit::delivery::{Attempt, Bounce, Decision, QueuedMessage, Route};
pub use wit::dns::{DnsError, Mx};
pub use wit::kv::KvError;
pub use wit::log::Level;
pub use wit::message::Message;
pub use wit::types::{
    Credentials, EnvelopeAddress, EsmtpParam, Header, Reply, Stage, TlsInfo, Verdict,
};

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::addr::{domain_of, same_domain};
    pub use crate::host::{av_scan, dns, kv, log, mail_auth, now_ms};
    #[cfg(not(feature = "contract-0-1"))]
    pub use crate::{
        Attempt, Bounce, BounceFilter, Decision, DeliveryResult, QueuedMessage, Route, Router,
    };
    pub use crate::{
        Auth, Connect, Credentials, Data, DataResult, Deserialize, DnsError, EnvelopeAddress, Expn,
        Header, Helo, KvError, Level, MailFrom, Message, Mx, NoConfig, Observe, Outcome, Plugin,
        RcptTo, Reply, Session, Stage, Verdict, Vrfy, accept, accept_with, defer, disconnect,
        export_plugin, header, pass, reject,
    };
}

/// A plugin: built from its configuration once per instance.
///
/// By default every SMTP session gets a fresh instance. A plugin whose
/// instances keep nothing of a session (no `Cell`/`RefCell`, statics or
/// caches filled by stage calls) can opt in to instance reuse with
/// `export_plugin!(Type, [stages], recycle)`: the host then hands an instance
/// from one session to the next instead of creating (and configuring) one per
/// session, asking [`Plugin::recycle`] first.
pub trait Plugin: Sized + 'static {
    /// The plugin's `[plugin.config]` table, deserialized from JSON. Use
    /// `#[serde(deny_unknown_fields)]` so typos are refused at load time.
    type Config: serde::de::DeserializeOwned;
    /// Validate the configuration and build the plugin; an `Err` refuses the
    /// configuration (the host shows the message and does not load it).
    fn new(config: Self::Config) -> Result<Self, String>;
    /// With `export_plugin!(…, recycle)`: called before this instance serves
    /// another session. Clear anything a stage call left behind and return
    /// `true`, or return `false` to have it replaced by a fresh instance.
    fn recycle(&self) -> bool {
        true
    }
}

/// What a plugin does when the host's kv store fails (`unavailable`, a
/// call past the host's `[kv] timeout`, `invalid`) or was not granted
/// (`denied`): the `on_kv_error` setting every shipped plugin that keeps
/// state spells the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnKvError {
    /// Answer a temporary failure (4xx) and log: fail safe (the default).
    #[default]
    Tempfail,
    /// Go on as if the store held nothing restrictive, and log.
    Allow,
}

/// Any other value is refused naming the setting: `invalid value: string
/// "ignore", expected on_kv_error = "tempfail" or "allow"`.
impl<'de> serde::Deserialize<'de> for OnKvError {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Expect;
        impl serde::de::Visitor<'_> for Expect {
            type Value = OnKvError;
            fn expecting(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
                f.write_str("on_kv_error = \"tempfail\" or \"allow\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OnKvError, E> {
                match v {
                    "tempfail" => Ok(OnKvError::Tempfail),
                    "allow" => Ok(OnKvError::Allow),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_str(Expect)
    }
}

/// Configuration type for plugins that take none (accepts only `{}`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// `connect`: a client connected; the verdict decides the greeting.
pub trait Connect: Plugin {
    fn on_connect(&self, session: &Session) -> Verdict;
}
/// `helo`: HELO (`extended == false`) or EHLO.
pub trait Helo: Plugin {
    fn on_helo(&self, session: &Session, name: &str, extended: bool) -> Verdict;
}
/// `auth`: verify SASL credentials; `accept` means valid.
pub trait Auth: Plugin {
    fn on_auth(&self, session: &Session, credentials: &Credentials) -> Verdict;
}
/// `mail-from`: the proposed sender.
pub trait MailFrom: Plugin {
    fn on_mail_from(&self, session: &Session, sender: &EnvelopeAddress) -> Verdict;
}
/// `rcpt-to`: one recipient; `accept` grants it even outside local domains.
pub trait RcptTo: Plugin {
    fn on_rcpt_to(&self, session: &Session, recipient: &EnvelopeAddress) -> Verdict;
}
/// `data`: the complete message, lent as a handle.
pub trait Data: Plugin {
    fn on_data(&self, session: &Session, message: &Message) -> DataResult;
}
/// `vrfy`: the VRFY argument.
pub trait Vrfy: Plugin {
    fn on_vrfy(&self, session: &Session, argument: &str) -> Verdict;
}
/// `expn`: the EXPN argument.
pub trait Expn: Plugin {
    fn on_expn(&self, session: &Session, argument: &str) -> Verdict;
}
/// `outcome`: observe how every stage ended (and the disconnect): a
/// transaction's outcomes at a time, after its replies were sent (0.2; a 0.1
/// build gets one at a time, as each stage ends).
pub trait Observe: Plugin {
    fn on_outcomes(&self, session: &Session, outcomes: &[Outcome]);
}

/// `route` (delivery side, 0.2): where a queued recipient goes, asked before
/// each delivery attempt. `Route::Default` leaves it to the host.
#[cfg(not(feature = "contract-0-1"))]
pub trait Router: Plugin {
    fn on_route(&self, message: &QueuedMessage, recipient: &str) -> Route;
}

/// `delivery_result` (delivery side, 0.2): what a recipient's failed
/// attempt means (retry, give up, give up without a bounce).
#[cfg(not(feature = "contract-0-1"))]
pub trait DeliveryResult: Plugin {
    fn on_delivery_result(&self, message: &QueuedMessage, attempt: &Attempt) -> Decision;
}

/// `bounce` (delivery side, 0.2): whether a bounce Postern generated is
/// sent (`pass`/`accept`), refused (`reject`) or held (`defer`); `report`
/// is the whole RFC 3464 message.
#[cfg(not(feature = "contract-0-1"))]
pub trait BounceFilter: Plugin {
    fn on_bounce(&self, bounce: &Bounce, report: &Message) -> Verdict;
}

/// Parse the JSON configuration the host passes to `init`.
pub fn parse_config<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, String> {
    serde_json::from_str(json).map_err(|e| format!("invalid configuration: {e}"))
}

fn reply(code: u16, enhanced: &str, text: impl Into<String>) -> Reply {
    Reply {
        code,
        enhanced: (!enhanced.is_empty()).then(|| enhanced.to_string()),
        text: text.into(),
    }
}

/// No opinion: the next plugin decides.
pub fn pass() -> Verdict {
    Verdict::Pass
}
/// Stop the chain; the stage succeeds with the host's standard reply.
pub fn accept() -> Verdict {
    Verdict::Accept
}
/// Stop the chain with a custom 2xx reply. `enhanced` may be "".
pub fn accept_with(code: u16, enhanced: &str, text: impl Into<String>) -> Verdict {
    Verdict::AcceptWith(reply(code, enhanced, text))
}
/// Refuse permanently (5xx). `enhanced` may be "".
pub fn reject(code: u16, enhanced: &str, text: impl Into<String>) -> Verdict {
    Verdict::Reject(reply(code, enhanced, text))
}
/// Refuse temporarily (4xx). `enhanced` may be "".
pub fn defer(code: u16, enhanced: &str, text: impl Into<String>) -> Verdict {
    Verdict::Defer(reply(code, enhanced, text))
}
/// Reply (usually 421) and close the connection.
pub fn disconnect(code: u16, enhanced: &str, text: impl Into<String>) -> Verdict {
    Verdict::Disconnect(reply(code, enhanced, text))
}
/// A header field for `DataResult::add_headers`.
pub fn header(name: impl Into<String>, value: impl Into<String>) -> Header {
    Header {
        name: name.into(),
        value: value.into(),
    }
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}
