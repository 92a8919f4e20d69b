//! `ip-access`: allows or refuses a client at connect by its IP address,
//! using `allow`/`deny` CIDR lists where the most specific match wins (a tie
//! is a deny) and `default` decides for unlisted clients. Input: the client
//! address from the session (the peer of the TCP connection, reported by the
//! host), the operator's configuration. RFC 5321 §3.1 and §4.3.2 (a 554
//! greeting refuses the session), RFC 2505 §2.5 (refuse by caller address).

use postern_sdk::net::{self, Ranges};
use postern_sdk::prelude::*;

/// What the plugin does for clients that match no list.
#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    #[default]
    Allow,
    Deny,
}

/// `[plugin.config]` of `ip-access`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub default: DefaultAction,
}

/// Why a client was allowed or denied (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Matched an `allow` entry more specific than any `deny` entry.
    Allowed { rule: String },
    /// Matched a `deny` entry at least as specific as any `allow` entry.
    Denied { rule: String },
    /// Matched nothing; `default` applied.
    Default(DefaultAction),
    /// The host's client address could not be parsed (never expected).
    Unknown,
}

pub struct IpAccess {
    allow: Ranges,
    deny: Ranges,
    default: DefaultAction,
}

impl Plugin for IpAccess {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        let allow = Ranges::parse("allow", &config.allow)?;
        let deny = Ranges::parse("deny", &config.deny)?;
        if config.default == DefaultAction::Deny && allow.is_empty() {
            return Err(
                "default = \"deny\" with an empty `allow` list would refuse every client; list the allowed ranges in `allow`".into(),
            );
        }
        Ok(IpAccess {
            allow,
            deny,
            default: config.default,
        })
    }
}

impl IpAccess {
    /// The decision for the client address `client_ip` as the host reports
    /// it. Pure: no host calls.
    pub fn decide(&self, client_ip: &str) -> Decision {
        let Some(ip) = net::parse_client(client_ip) else {
            return Decision::Unknown;
        };
        let allow = self.allow.longest_match(ip);
        let deny = self.deny.longest_match(ip);
        match (allow, deny) {
            (None, None) => Decision::Default(self.default),
            (Some((_, rule)), None) => Decision::Allowed { rule: rule.into() },
            (None, Some((_, rule))) => Decision::Denied { rule: rule.into() },
            (Some((a, arule)), Some((d, drule))) => {
                if a > d {
                    Decision::Allowed { rule: arule.into() }
                } else {
                    Decision::Denied { rule: drule.into() }
                }
            }
        }
    }

    /// The verdict for a decision; `client_ip` is echoed as the host gave it.
    pub fn verdict(decision: &Decision, client_ip: &str) -> Verdict {
        match decision {
            Decision::Allowed { .. } | Decision::Default(DefaultAction::Allow) => pass(),
            Decision::Denied { .. } | Decision::Default(DefaultAction::Deny) => {
                reject(554, "5.7.1", format!("Access denied for {client_ip}"))
            }
            Decision::Unknown => defer(421, "4.3.0", "Cannot determine client address"),
        }
    }
}

impl Connect for IpAccess {
    fn on_connect(&self, session: &Session) -> Verdict {
        let client = session.client_ip();
        let ip = client.as_str();
        let decision = self.decide(ip);
        match &decision {
            Decision::Denied { rule } => {
                log::with(
                    Level::Info,
                    "client denied",
                    &[("client", ip), ("rule", rule)],
                );
            }
            Decision::Default(DefaultAction::Deny) => {
                log::with(
                    Level::Info,
                    "client denied",
                    &[("client", ip), ("rule", "default")],
                );
            }
            Decision::Unknown => {
                log::with(
                    Level::Error,
                    "cannot parse the client address; deferring",
                    &[("client", ip)],
                );
            }
            Decision::Allowed { .. } | Decision::Default(DefaultAction::Allow) => {}
        }
        Self::verdict(&decision, ip)
    }
}

export_plugin!(IpAccess, [connect], recycle);

#[cfg(test)]
mod tests;
