//! Postern's policy plugin runtime: loads WebAssembly components that
//! implement the `postern:policy` WIT contract (`wit/`: 0.2.0, and 0.1.0 in
//! `wit/v0.1/` for components built against it), and runs them
//! as a chain at every SMTP stage, each call sandboxed under a wall-clock
//! deadline, a memory cap and a stack cap. Input: plugin binaries and their
//! results are untrusted; the operator's configuration is trusted.

mod av;
mod bindings;
mod breaker;
mod capability;
mod chain;
mod context;
mod convert;
mod delivery;
mod engine;
mod generation;
mod hooks;
mod host;
mod load;
mod mail_auth;
mod message;
mod milter;
pub mod record;
mod session;
mod state;
mod stats;
mod stdio;
mod verdict;

pub use av::{AvBackend, NoAv, ScanError, ScanResult};
pub use breaker::{BreakerSettings, BreakerState};
pub use capability::{
    BoxFuture, DnsAnswer, DnsBackend, DnsFailure, DnsQuery, Grants, KvBackend, KvFailure, MemoryKv,
    NoDns,
};
pub use chain::{Decision, MAX_OUTCOME_BATCH, SessionChain, StageContext};
pub use context::{
    Credentials, EnvelopeAddress, EnvelopeChange, HeaderChange, MessageChanges, Outcome,
    SessionContext, TlsInfo,
};
pub use delivery::{Attempt, BounceInfo, DeliveryAnswer, DeliveryDecision, QueuedMessage, Route};
pub use engine::{Runtime, RuntimeConfig};
pub use generation::{Generation, Health, PluginInfo};
pub use hooks::Ask;
pub use hooks::Contract;
pub use load::{LoadError, Mode, OnError, PluginSpec};
pub use mail_auth::{
    ArcOutcome, AuthOutcome, AuthResult, DkimSignature, DmarcOutcome, DmarcPolicy, Identities,
    MailAuthBackend, NoMailAuth, SignRequest, SpfCheck, SpfOutcome,
};
pub use message::{MessageData, Stored};
pub use milter::{MilterSpec, MilterStats, milter_stats};
pub use postern_milter::{Address as MilterAddress, Timeouts as MilterTimeouts};
pub use state::Services;
pub use stats::{
    ERROR_KINDS, Histogram, LATENCY_BUCKETS_US, PluginStats, StageStats, StatsRegistry,
    VERDICT_KINDS,
};
pub use verdict::{PluginReply, Verdict};

/// The WIT package this host implements, in every version it serves
/// (`Contract`).
pub const WIT_PACKAGE: &str = "postern:policy";

/// An SMTP stage a plugin can hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    Connect = 0,
    Helo,
    Auth,
    MailFrom,
    RcptTo,
    Data,
    Vrfy,
    Expn,
    Outcome,
    /// Delivery side (0.2): where a queued recipient goes.
    Route,
    /// Delivery side (0.2): what a failed attempt means.
    DeliveryResult,
    /// Delivery side (0.2): whether a generated bounce is sent.
    Bounce,
}

impl Stage {
    pub const COUNT: usize = 12;
    pub const ALL: [Stage; Stage::COUNT] = [
        Stage::Connect,
        Stage::Helo,
        Stage::Auth,
        Stage::MailFrom,
        Stage::RcptTo,
        Stage::Data,
        Stage::Vrfy,
        Stage::Expn,
        Stage::Outcome,
        Stage::Route,
        Stage::DeliveryResult,
        Stage::Bounce,
    ];

    /// The stage's name as in logs and metrics (matches the WIT names).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Helo => "helo",
            Stage::Auth => "auth",
            Stage::MailFrom => "mail-from",
            Stage::RcptTo => "rcpt-to",
            Stage::Data => "data",
            Stage::Vrfy => "vrfy",
            Stage::Expn => "expn",
            Stage::Outcome => "outcome",
            Stage::Route => "route",
            Stage::DeliveryResult => "delivery-result",
            Stage::Bounce => "bounce",
        }
    }

    /// The WIT interface a plugin exports to hook this stage.
    pub fn interface(self) -> &'static str {
        match self {
            Stage::Connect => "connect-hook",
            Stage::Helo => "helo-hook",
            Stage::Auth => "auth-hook",
            Stage::MailFrom => "mail-from-hook",
            Stage::RcptTo => "rcpt-to-hook",
            Stage::Data => "data-hook",
            Stage::Vrfy => "vrfy-hook",
            Stage::Expn => "expn-hook",
            Stage::Outcome => "outcome-hook",
            Stage::Route => "route-hook",
            Stage::DeliveryResult => "delivery-hook",
            Stage::Bounce => "bounce-hook",
        }
    }

    /// Whether the stage belongs to the queue manager (no SMTP session).
    pub fn is_delivery(self) -> bool {
        matches!(self, Stage::Route | Stage::DeliveryResult | Stage::Bounce)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
