//! The delivery-side hooks' arguments and answers in host types
//! (`postern:policy/delivery@0.2.0`): what the queue manager tells a plugin
//! about a queued message and a failed attempt, and the route or decision it
//! answers. Answers are untrusted: replies are checked like any verdict
//! (`verdict.rs`), relay and MX names by the delivery side that uses them.

pub use postern_capability::delivery::{BounceInfo, QueuedMessage};

use crate::verdict::PluginReply;

/// Where a plugin sends a recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Default,
    Local,
    Relayhost,
    /// `name`, `name:port` or `[address]:port`, as the plugin gave it.
    Relay(String),
    /// A domain whose MX hosts to use.
    Mx(String),
    Refuse(PluginReply),
    Defer(PluginReply),
}

/// One recipient's failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub recipient: String,
    pub permanent: bool,
    pub status: String,
    pub text: String,
    pub remote_host: Option<String>,
}

/// What a plugin makes of a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryDecision {
    Default,
    Retry,
    GiveUp,
    SuppressBounce,
}

impl DeliveryDecision {
    pub fn name(self) -> &'static str {
        match self {
            DeliveryDecision::Default => "default",
            DeliveryDecision::Retry => "retry",
            DeliveryDecision::GiveUp => "give-up",
            DeliveryDecision::SuppressBounce => "suppress-bounce",
        }
    }
}

/// What decided a delivery-side stage, beyond its verdict: the chain maps
/// `route` and `decision` answers onto verdicts (`default` is `pass`, a
/// `refuse` is `reject`, a `defer` is `defer`, anything else `accept` with
/// this attached) so that order, shadow mode, breakers and `on_error` work
/// as at every other stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryAnswer {
    Route(Route),
    Decision(DeliveryDecision),
}

impl Route {
    /// The verdict the chain runs on, and the route when it is more than a
    /// verdict.
    pub(crate) fn into_verdict(self) -> (crate::Verdict, Option<DeliveryAnswer>) {
        use crate::Verdict;
        match self {
            Route::Default => (Verdict::Pass, None),
            Route::Refuse(r) => (Verdict::Reject(r), None),
            Route::Defer(r) => (Verdict::Defer(r), None),
            other => (Verdict::Accept, Some(DeliveryAnswer::Route(other))),
        }
    }
}

impl DeliveryDecision {
    pub(crate) fn into_verdict(self) -> (crate::Verdict, Option<DeliveryAnswer>) {
        match self {
            DeliveryDecision::Default => (crate::Verdict::Pass, None),
            d => (crate::Verdict::Accept, Some(DeliveryAnswer::Decision(d))),
        }
    }
}
