//! The delivery side's plugin policy: the queue manager asks it where a
//! recipient goes, what a failed attempt means and whether a bounce is sent,
//! and it runs the current generation's `route-hook`, `delivery-hook` and
//! `bounce-hook` chains (one plugin instance set per question, released at
//! once). Input: the queue's facts (trusted) and plugin answers (untrusted:
//! checked by the chain, relay and MX names parsed here; a bad one defers the
//! recipient instead of misrouting it).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock, Weak};

use postern_delivery::{
    BounceChoice, BounceFacts, DeliveryPolicy, Diagnostic, Judgement, MessageFacts, PolicyFuture,
    Relayhost, RouteChoice,
};
use postern_plugin::{
    Attempt, Decision, DeliveryAnswer, DeliveryDecision, MessageData, PluginReply, Route,
    SessionChain, SessionContext, Stage, Verdict,
};
use postern_protocol::EnhancedCode;

use crate::server::Shared;

/// The plugin chain as the queue manager's policy. Ready once the server's
/// first generation is loaded (`install`).
#[derive(Default)]
pub struct ChainPolicy {
    shared: OnceLock<Weak<Shared>>,
}

impl ChainPolicy {
    /// From now on, ask the server's current generation.
    pub fn install(&self, shared: &Arc<Shared>) {
        let _ = self.shared.set(Arc::downgrade(shared));
    }

    fn shared(&self) -> Option<Arc<Shared>> {
        self.shared.get()?.upgrade()
    }

    fn hooks(&self, stage: Stage) -> bool {
        self.shared()
            .is_some_and(|s| s.generations.delivery_hooks(stage))
    }

    /// The chain for one delivery question (`what` names it in the logs)
    /// about one message: the canary's for its share of messages, the
    /// current generation's otherwise; none before the plugins are loaded.
    fn chain(&self, what: &str, queue_id: &str) -> Option<(SessionContext, SessionChain)> {
        let g = self.shared()?.generations.delivery_generation(queue_id);
        let ctx = context(what, queue_id);
        let chain = g.question(ctx.id.clone());
        Some((ctx, chain))
    }
}

/// The context delivery-side calls run under: they have no SMTP session (the
/// hooks get no `session` handle), only an id for the logs.
fn context(what: &str, queue_id: &str) -> SessionContext {
    let none = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    SessionContext::new(
        format!("{what}-{queue_id}").into(),
        none,
        none,
        "delivery".into(),
        "".into(),
    )
}

/// A plugin's refusal or deferral as a delivery diagnostic: its enhanced code
/// when it gave one of the right class, else X.7.1 (delivery not authorised).
fn refusal(r: &PluginReply, by: Option<&str>) -> Diagnostic {
    let class = (r.code / 100) as u8;
    let status = r
        .enhanced
        .as_deref()
        .and_then(|e| e.parse::<EnhancedCode>().ok())
        .filter(|e| e.class == class)
        .unwrap_or(EnhancedCode::new(class, 7, 1));
    Diagnostic::local(
        status,
        format!("{} (route-hook of {})", r.text, by.unwrap_or("a plugin")),
    )
}

/// The route a decision means; a relay or MX name that does not parse
/// defers the recipient (the plugin is wrong, the message is not).
fn choice(d: Decision) -> RouteChoice {
    let by = d.decided_by.as_deref();
    let invalid = |what: &str, name: &str| {
        tracing::warn!(
            plugin = by.unwrap_or("?"),
            "route-hook answered an invalid {what} {name:?}"
        );
        RouteChoice::Fail(Diagnostic::local(
            EnhancedCode::new(4, 3, 0),
            format!(
                "{} routed it to an invalid {what} {name:?}",
                by.unwrap_or("a plugin")
            ),
        ))
    };
    match (d.verdict, d.delivery) {
        (Verdict::Reject(r) | Verdict::Disconnect(r) | Verdict::Defer(r), _) => {
            RouteChoice::Fail(refusal(&r, by))
        }
        (_, Some(DeliveryAnswer::Route(route))) => match route {
            Route::Default => RouteChoice::Default,
            Route::Local => RouteChoice::Local,
            Route::Relayhost => RouteChoice::Relayhost,
            Route::Relay(name) => match Relayhost::parse(&name) {
                Ok(r) => RouteChoice::Relay(r),
                Err(_) => invalid("relay", &name),
            },
            Route::Mx(domain) => {
                let d = domain.trim_end_matches('.').to_ascii_lowercase();
                let valid = !d.is_empty()
                    && d.len() <= 253
                    && d.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if valid {
                    RouteChoice::Mx(d)
                } else {
                    invalid("MX domain", &domain)
                }
            }
            Route::Refuse(r) | Route::Defer(r) => RouteChoice::Fail(refusal(&r, by)),
        },
        _ => RouteChoice::Default,
    }
}

impl DeliveryPolicy for ChainPolicy {
    fn ready(&self) -> bool {
        self.shared.get().is_some()
    }

    fn routes(&self) -> bool {
        self.hooks(Stage::Route)
    }

    fn judges(&self) -> bool {
        self.hooks(Stage::DeliveryResult)
    }

    fn screens_bounces(&self) -> bool {
        self.hooks(Stage::Bounce)
    }

    fn route<'a>(
        &'a self,
        message: &'a MessageFacts,
        recipients: &'a [String],
    ) -> PolicyFuture<'a, Vec<RouteChoice>> {
        Box::pin(async move {
            let Some((ctx, mut chain)) = self.chain("route", &message.queue_id) else {
                return vec![RouteChoice::Default; recipients.len()];
            };
            let mut out = Vec::with_capacity(recipients.len());
            for r in recipients {
                out.push(choice(chain.route(&ctx, message, r).await));
            }
            out
        })
    }

    fn judge<'a>(
        &'a self,
        message: &'a MessageFacts,
        failures: &'a [(String, &'a Diagnostic, bool)],
    ) -> PolicyFuture<'a, Vec<Judgement>> {
        Box::pin(async move {
            let Some((ctx, mut chain)) = self.chain("delivery", &message.queue_id) else {
                return vec![Judgement::Default; failures.len()];
            };
            let mut out = Vec::with_capacity(failures.len());
            for (recipient, diag, permanent) in failures {
                let attempt = Attempt {
                    recipient: recipient.clone(),
                    permanent: *permanent,
                    status: diag.status.to_string(),
                    text: diag.text.clone(),
                    remote_host: diag.remote_mta.clone(),
                };
                let d = chain.delivery_result(&ctx, message, &attempt).await;
                out.push(match d.delivery {
                    Some(DeliveryAnswer::Decision(DeliveryDecision::Retry)) => Judgement::Retry,
                    Some(DeliveryAnswer::Decision(DeliveryDecision::GiveUp)) => Judgement::GiveUp,
                    Some(DeliveryAnswer::Decision(DeliveryDecision::SuppressBounce)) => {
                        Judgement::SuppressBounce
                    }
                    _ => Judgement::Default,
                });
            }
            out
        })
    }

    fn bounce<'a>(
        &'a self,
        bounce: &'a BounceFacts,
        report: &'a [u8],
    ) -> PolicyFuture<'a, BounceChoice> {
        Box::pin(async move {
            let Some((ctx, mut chain)) = self.chain("bounce", &bounce.queue_id) else {
                return BounceChoice::Send;
            };
            let d = chain
                .bounce(&ctx, bounce, &Arc::new(MessageData::new(report.to_vec())))
                .await;
            let by = d.decided_by.as_deref().unwrap_or("a plugin");
            match &d.verdict {
                Verdict::Reject(r) | Verdict::Disconnect(r) => {
                    BounceChoice::Refuse(format!("{by}: {} {}", r.code, r.text))
                }
                Verdict::Defer(r) => BounceChoice::Hold(format!("{by}: {} {}", r.code, r.text)),
                _ => BounceChoice::Send,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(verdict: Verdict, route: Option<Route>) -> Decision {
        Decision {
            verdict,
            decided_by: Some("router".into()),
            delivery: route.map(DeliveryAnswer::Route),
            ..Decision::pass()
        }
    }

    #[test]
    fn routes_from_decisions() {
        let accept = |r| decided(Verdict::Accept, Some(r));
        assert_eq!(choice(Decision::pass()), RouteChoice::Default);
        assert_eq!(
            choice(accept(Route::Relay("[127.0.0.1]:2525".into()))),
            RouteChoice::Relay(Relayhost::parse("[127.0.0.1]:2525").unwrap())
        );
        assert_eq!(
            choice(accept(Route::Mx("Example.NET.".into()))),
            RouteChoice::Mx("example.net".into())
        );
        for bad in [Route::Relay("a b".into()), Route::Mx("-..x".into())] {
            match choice(accept(bad)) {
                RouteChoice::Fail(d) => assert_eq!(d.status.to_string(), "4.3.0"),
                other => panic!("{other:?}"),
            }
        }
        let reply = |code, e: Option<&str>| PluginReply {
            code,
            enhanced: e.map(Into::into),
            text: "no".into(),
        };
        match choice(decided(Verdict::Reject(reply(550, Some("5.7.9"))), None)) {
            RouteChoice::Fail(d) => {
                assert_eq!(d.status.to_string(), "5.7.9");
                assert!(d.text.contains("router"), "{}", d.text);
            }
            other => panic!("{other:?}"),
        }
        match choice(decided(Verdict::Defer(reply(451, None)), None)) {
            RouteChoice::Fail(d) => assert_eq!(d.status.to_string(), "4.7.1"),
            other => panic!("{other:?}"),
        }
    }
}
