//! What plugins decide on the delivery side, seen from the queue manager:
//! a recipient's route before each attempt, the meaning of a failed attempt,
//! and whether a generated bounce is sent. The host implements
//! [`DeliveryPolicy`] with the plugin chain (`route-hook`, `delivery-hook`,
//! `bounce-hook` of `postern:policy@0.2.0`); this crate only calls the trait,
//! so delivery does not link the plugin runtime's calls. Answers come from
//! untrusted plugins: relay names are parsed here, failures are turned into
//! diagnostics with the host's enhanced codes, and nothing a policy answers
//! can lose a message (a refused recipient or bounce is journaled).

use std::future::Future;
use std::pin::Pin;

use crate::outcome::{Diagnostic, Handover, RcptOutcome};
use crate::settings::Relayhost;
use crate::state::MessageState;

/// A boxed future borrowing the policy and its arguments.
pub type PolicyFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A queued message as the policy is told about it (the type the plugin
/// runtime hands on, from `postern-capability`).
pub use postern_capability::delivery::QueuedMessage as MessageFacts;

/// The facts of `state` for the policy.
pub fn facts_of(state: &MessageState) -> MessageFacts {
    facts(&state.id, &state.envelope, state.size, state.attempts)
}

/// The facts of a message from its parts.
pub fn facts(
    queue_id: &postern_spool::QueueId,
    envelope: &postern_spool::Envelope,
    size: u64,
    attempts: u32,
) -> MessageFacts {
    MessageFacts {
        queue_id: queue_id.to_string(),
        sender: envelope.mail_from.clone(),
        size,
        received_ms: envelope.received_at_unix_ms,
        attempts,
        client_ip: envelope.client.client_ip.clone(),
        auth_user: envelope.client.auth_user.clone(),
    }
}

/// Where the policy sends a recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteChoice {
    /// The host's routing (`route::route`).
    Default,
    /// The local Maildirs.
    Local,
    /// The configured relayhost.
    Relayhost,
    /// Another SMTP host, without an MX look-up.
    Relay(Relayhost),
    /// The MX hosts of this domain (lower case, no trailing dot).
    Mx(String),
    /// Not delivered in this attempt: failed for good (5xx status) or
    /// deferred (4xx).
    Fail(Diagnostic),
}

/// What the policy makes of one recipient's failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// As the host judged.
    Default,
    /// Deferred, even when the failure was permanent.
    Retry,
    /// Failed for good now, with a bounce.
    GiveUp,
    /// Failed for good now, without a bounce.
    SuppressBounce,
}

impl Judgement {
    /// The outcome after this judgement.
    pub fn apply(self, outcome: RcptOutcome) -> RcptOutcome {
        match (self, outcome) {
            (Judgement::Retry, RcptOutcome::Failed(d) | RcptOutcome::Suppressed(d)) => {
                RcptOutcome::Deferred(d)
            }
            (Judgement::GiveUp, RcptOutcome::Deferred(d) | RcptOutcome::Suppressed(d)) => {
                RcptOutcome::Failed(d.made_permanent())
            }
            (Judgement::SuppressBounce, RcptOutcome::Deferred(d) | RcptOutcome::Failed(d)) => {
                RcptOutcome::Suppressed(d.made_permanent())
            }
            (_, o) => o,
        }
    }
}

/// A bounce about to be queued (from `postern-capability`).
pub use postern_capability::delivery::BounceInfo as BounceFacts;

/// Whether a bounce is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BounceChoice {
    Send,
    /// Not sent; the reason names who refused it.
    Refuse(String),
    /// Not now; asked again at the message's next attempt.
    Hold(String),
}

/// The delivery-side policy. Every method is asked only when the matching
/// `routes`/`judges`/`screens_bounces` says the policy has something to say,
/// so a server without delivery-side plugins pays nothing.
pub trait DeliveryPolicy: Send + Sync {
    /// Whether deliveries may start: the host's policy becomes ready once its
    /// plugins are loaded, so no message is routed around them at start-up.
    fn ready(&self) -> bool {
        true
    }
    fn routes(&self) -> bool;
    fn judges(&self) -> bool;
    fn screens_bounces(&self) -> bool;
    /// One choice per recipient, in order.
    fn route<'a>(
        &'a self,
        message: &'a MessageFacts,
        recipients: &'a [String],
    ) -> PolicyFuture<'a, Vec<RouteChoice>>;
    /// One judgement per failure (recipient address, outcome), in order.
    fn judge<'a>(
        &'a self,
        message: &'a MessageFacts,
        failures: &'a [(String, &'a Diagnostic, bool)],
    ) -> PolicyFuture<'a, Vec<Judgement>>;
    /// `report` is the complete RFC 3464 message.
    fn bounce<'a>(
        &'a self,
        bounce: &'a BounceFacts,
        report: &'a [u8],
    ) -> PolicyFuture<'a, BounceChoice>;
}

/// No delivery-side policy: the host decides everything.
pub struct NoPolicy;

impl DeliveryPolicy for NoPolicy {
    fn routes(&self) -> bool {
        false
    }
    fn judges(&self) -> bool {
        false
    }
    fn screens_bounces(&self) -> bool {
        false
    }
    fn route<'a>(
        &'a self,
        _: &'a MessageFacts,
        recipients: &'a [String],
    ) -> PolicyFuture<'a, Vec<RouteChoice>> {
        Box::pin(async move { vec![RouteChoice::Default; recipients.len()] })
    }
    fn judge<'a>(
        &'a self,
        _: &'a MessageFacts,
        failures: &'a [(String, &'a Diagnostic, bool)],
    ) -> PolicyFuture<'a, Vec<Judgement>> {
        Box::pin(async move { vec![Judgement::Default; failures.len()] })
    }
    fn bounce<'a>(&'a self, _: &'a BounceFacts, _: &'a [u8]) -> PolicyFuture<'a, BounceChoice> {
        Box::pin(async { BounceChoice::Send })
    }
}

/// Judge the failures among `results` (when the policy judges at all) and
/// apply the judgements.
pub async fn judge_results(
    policy: &dyn DeliveryPolicy,
    message: &MessageFacts,
    addresses: impl Fn(usize) -> String,
    results: &mut [(usize, RcptOutcome)],
) {
    if !policy.judges() {
        return;
    }
    let failed: Vec<usize> = (0..results.len())
        .filter(|&k| !matches!(results[k].1, RcptOutcome::Delivered(..)))
        .collect();
    if failed.is_empty() {
        return;
    }
    let judgements = {
        let failures: Vec<(String, &Diagnostic, bool)> = failed
            .iter()
            .filter_map(|&k| {
                let (i, o) = &results[k];
                let (d, permanent) = match o {
                    RcptOutcome::Deferred(d) => (d, false),
                    RcptOutcome::Failed(d) | RcptOutcome::Suppressed(d) => (d, true),
                    RcptOutcome::Delivered(..) => return None,
                };
                Some((addresses(*i), d, permanent))
            })
            .collect();
        policy.judge(message, &failures).await
    };
    for (k, j) in failed.into_iter().zip(judgements) {
        if j != Judgement::Default {
            let (i, o) = &mut results[k];
            let before =
                std::mem::replace(o, RcptOutcome::Delivered(Handover::Relayed, String::new()));
            *o = j.apply(before);
            tracing::info!(queue_id = %message.queue_id, to = %addresses(*i),
                judgement = ?j, "delivery result changed by plugin");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_protocol::EnhancedCode;

    #[test]
    fn judgements_turn_outcomes() {
        let temp = Diagnostic::local(EnhancedCode::new(4, 4, 1), "no answer");
        let perm = Diagnostic::local(EnhancedCode::new(5, 1, 1), "no such user");
        let deferred = RcptOutcome::Deferred(temp.clone());
        let failed = RcptOutcome::Failed(perm.clone());
        assert_eq!(Judgement::Default.apply(failed.clone()), failed);
        assert_eq!(
            Judgement::Retry.apply(failed.clone()),
            RcptOutcome::Deferred(perm.clone())
        );
        assert_eq!(Judgement::Retry.apply(deferred.clone()), deferred);
        match Judgement::GiveUp.apply(deferred.clone()) {
            RcptOutcome::Failed(d) => assert_eq!(d.status.to_string(), "5.4.1"),
            o => panic!("{o:?}"),
        }
        match Judgement::SuppressBounce.apply(failed) {
            RcptOutcome::Suppressed(d) => assert_eq!(d.status.to_string(), "5.1.1"),
            o => panic!("{o:?}"),
        }
    }
}
