//! Test plugin for the delivery-side hooks of `postern:policy@0.2.0`, each
//! driven by a table from the configuration keyed by recipient domain:
//!
//! ```toml
//! [plugin.config]
//! routes = { "a.test" = "relay:[127.0.0.1]:2525", "b.test" = "mx:c.test",
//!            "gone.test" = "refuse", "later.test" = "defer", "here.test" = "local" }
//! results = { "a.test" = "give-up", "quiet.test" = "suppress-bounce", "again.test" = "retry" }
//! refuse_bounces_to = ["noisy@sender.test"]
//! ```
//!
//! Every call is logged (`route <queue id> <recipient> -> <answer>`, ...) so
//! tests can see what the host asked.

use std::collections::BTreeMap;

use postern_sdk::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    routes: BTreeMap<String, String>,
    #[serde(default)]
    results: BTreeMap<String, String>,
    #[serde(default)]
    refuse_bounces_to: Vec<String>,
}

struct Router {
    routes: BTreeMap<String, Route>,
    results: BTreeMap<String, Decision>,
    refuse_bounces_to: Vec<String>,
}

fn route_of(text: &str) -> Result<Route, String> {
    let refuse = Reply {
        code: 550,
        enhanced: Some("5.7.1".into()),
        text: "Recipient domain closed by policy".into(),
    };
    Ok(match text.split_once(':') {
        Some(("relay", host)) => Route::Relay(host.to_string()),
        Some(("mx", domain)) => Route::Mx(domain.to_string()),
        None if text == "local" => Route::Local,
        None if text == "relayhost" => Route::Relayhost,
        None if text == "refuse" => Route::Refuse(refuse),
        None if text == "defer" => Route::Defer(Reply {
            code: 451,
            enhanced: Some("4.7.1".into()),
            text: "Not now".into(),
        }),
        _ => return Err(format!("unknown route {text:?}")),
    })
}

fn decision_of(text: &str) -> Result<Decision, String> {
    Ok(match text {
        "retry" => Decision::Retry,
        "give-up" => Decision::GiveUp,
        "suppress-bounce" => Decision::SuppressBounce,
        _ => return Err(format!("unknown decision {text:?}")),
    })
}

impl Plugin for Router {
    type Config = Config;
    fn new(c: Config) -> Result<Self, String> {
        let lower = |m: BTreeMap<String, String>| {
            m.into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect::<Vec<_>>()
        };
        Ok(Router {
            routes: lower(c.routes)
                .into_iter()
                .map(|(k, v)| Ok((k, route_of(&v)?)))
                .collect::<Result<_, String>>()?,
            results: lower(c.results)
                .into_iter()
                .map(|(k, v)| Ok((k, decision_of(&v)?)))
                .collect::<Result<_, String>>()?,
            refuse_bounces_to: c.refuse_bounces_to,
        })
    }
}

fn domain(address: &str) -> String {
    domain_of(address)
}

impl postern_sdk::Router for Router {
    fn on_route(&self, message: &QueuedMessage, recipient: &str) -> Route {
        let r = self
            .routes
            .get(&domain(recipient))
            .cloned()
            .unwrap_or(Route::Default);
        log::info(&format!(
            "route {} {recipient} (attempts {}) -> {r:?}",
            message.queue_id, message.attempts
        ));
        r
    }
}

impl postern_sdk::DeliveryResult for Router {
    fn on_delivery_result(&self, message: &QueuedMessage, attempt: &Attempt) -> Decision {
        let d = self
            .results
            .get(&domain(&attempt.recipient))
            .copied()
            .unwrap_or(Decision::Default);
        log::info(&format!(
            "delivery-result {} {} {} permanent={} -> {d:?}",
            message.queue_id, attempt.recipient, attempt.status, attempt.permanent
        ));
        d
    }
}

impl BounceFilter for Router {
    fn on_bounce(&self, bounce: &Bounce, report: &Message) -> Verdict {
        let refused = self
            .refuse_bounces_to
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&bounce.recipient));
        log::info(&format!(
            "bounce {} to <{}> for {} ({} bytes, report {}) -> {}",
            bounce.queue_id,
            bounce.recipient,
            bounce.failed.join(","),
            report.size(),
            report
                .header("Content-Type")
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default(),
            if refused { "refuse" } else { "pass" }
        ));
        if refused {
            return reject(550, "5.7.1", "No bounces to this sender");
        }
        pass()
    }
}

export_plugin!(Router, [route, delivery_result, bounce]);
