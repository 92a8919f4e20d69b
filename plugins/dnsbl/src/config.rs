//! The `[plugin.config]` table of dnsbl and its validation: zones with their
//! action, reply, return codes and DNS-error policy; the cache lifetime; the
//! networks never checked. Trusts nothing: every value is checked here.

use postern_sdk::Deserialize;
use postern_sdk::net::{self, IpNet};

/// What a listing does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// 554 5.7.1 (the greeting becomes a refusal).
    #[default]
    Reject,
    /// 450 4.7.1 and close.
    Defer,
    /// Only log; the next zone is asked.
    Log,
}

/// What a failed look-up (time-out, SERVFAIL, DNSBL error code) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDnsError {
    /// Go on as if not listed (and log): a DNSBL outage must not stop mail.
    #[default]
    Pass,
    /// 451 4.4.3 and close.
    Defer,
}

/// One `[[plugin.config.zones]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    pub zone: String,
    #[serde(default)]
    pub action: Action,
    /// Custom reply text; `{ip}` and `{zone}` are replaced.
    #[serde(default)]
    pub reply: Option<String>,
    /// Return codes ("127.0.0.2") or networks ("127.0.0.0/24") that count as
    /// listed; default: any 127.0.0.0/8 answer outside 127.255.255.0/24.
    #[serde(default, rename = "match")]
    pub matches: Option<Vec<String>>,
    #[serde(default)]
    pub on_dns_error: OnDnsError,
}

/// The configuration as written by the operator.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub zones: Vec<ZoneConfig>,
    /// Seconds a result stays in the KV cache; 0 disables the cache.
    #[serde(default = "default_ttl")]
    pub cache_ttl: u64,
    /// Client networks never checked (default: loopback).
    #[serde(default = "default_skip")]
    pub skip_networks: Vec<String>,
}

fn default_ttl() -> u64 {
    300
}

fn default_skip() -> Vec<String> {
    vec!["127.0.0.0/8".into(), "::1/128".into()]
}

/// A validated zone.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Lower-case, no trailing dot.
    pub zone: String,
    pub action: Action,
    pub reply: Option<String>,
    pub matches: Option<Vec<IpNet>>,
    pub on_dns_error: OnDnsError,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub zones: Vec<Zone>,
    /// None: no caching.
    pub cache_ttl_ms: Option<u64>,
    pub skip_networks: Vec<IpNet>,
}

/// The longest cache lifetime accepted: one day.
const MAX_TTL: u64 = 86_400;
/// The longest custom reply accepted (before substitution).
const MAX_REPLY: usize = 300;

fn is_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_".contains(c))
        })
}

fn net(what: &str, text: &str) -> Result<IpNet, String> {
    net::parse_network(text)
        .ok_or_else(|| format!("{what}: {text:?} is not an address or a network (CIDR)"))
}

impl Config {
    /// Validate and normalize.
    pub fn validate(self) -> Result<Settings, String> {
        if self.zones.is_empty() {
            return Err("zones is empty: list at least one DNSBL zone".into());
        }
        if self.cache_ttl > MAX_TTL {
            return Err(format!(
                "cache_ttl must be at most {MAX_TTL} seconds, not {}",
                self.cache_ttl
            ));
        }
        let mut zones: Vec<Zone> = Vec::new();
        for z in self.zones {
            let name = z.zone.trim().trim_end_matches('.').to_ascii_lowercase();
            if !is_domain(&name) {
                return Err(format!("zone {:?} is not a valid domain name", z.zone));
            }
            if zones.iter().any(|k| k.zone == name) {
                return Err(format!("zone {name:?} is listed twice"));
            }
            if let Some(r) = &z.reply {
                if r.trim().is_empty() || r.len() > MAX_REPLY {
                    return Err(format!(
                        "zone {name:?}: reply must be 1 to {MAX_REPLY} characters"
                    ));
                }
                if !r.chars().all(|c| (' '..='~').contains(&c)) {
                    return Err(format!(
                        "zone {name:?}: reply must be printable ASCII (no control characters)"
                    ));
                }
            }
            let matches = match &z.matches {
                None => None,
                Some(list) if list.is_empty() => {
                    return Err(format!(
                        "zone {name:?}: match is empty (omit it for the default rule)"
                    ));
                }
                Some(list) => {
                    let what = format!("zone {name:?}: match");
                    let nets = list
                        .iter()
                        .map(|m| net(&what, m))
                        .collect::<Result<Vec<_>, _>>()?;
                    if let Some(n) = nets.iter().find(|n| matches!(n, IpNet::V6(_))) {
                        return Err(format!(
                            "{what}: {n} is IPv6, but DNSBL return codes are IPv4 A records"
                        ));
                    }
                    Some(nets)
                }
            };
            zones.push(Zone {
                zone: name,
                action: z.action,
                reply: z.reply,
                matches,
                on_dns_error: z.on_dns_error,
            });
        }
        let skip_networks = self
            .skip_networks
            .iter()
            .map(|n| net("skip_networks", n))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Settings {
            zones,
            cache_ttl_ms: (self.cache_ttl > 0).then_some(self.cache_ttl * 1000),
            skip_networks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Settings, String> {
        postern_sdk::parse_config::<Config>(json)?.validate()
    }

    #[test]
    fn defaults() {
        let s = parse(r#"{"zones": [{"zone": "ZEN.Example."}]}"#).unwrap();
        let z = &s.zones[0];
        assert_eq!(z.zone, "zen.example");
        assert_eq!(z.action, Action::Reject);
        assert_eq!(z.on_dns_error, OnDnsError::Pass);
        assert!(z.reply.is_none() && z.matches.is_none());
        assert_eq!(s.cache_ttl_ms, Some(300_000));
        let skip: Vec<String> = s.skip_networks.iter().map(|n| n.to_string()).collect();
        assert_eq!(skip, vec!["127.0.0.0/8", "::1/128"]);
    }

    #[test]
    fn full() {
        let s = parse(
            r#"{"cache_ttl": 0, "skip_networks": ["10.0.0.0/8", "192.0.2.1"],
                "zones": [
                  {"zone": "a.example", "action": "defer", "reply": "Go away {ip} ({zone})",
                   "match": ["127.0.0.2", "127.0.1.0/24"], "on_dns_error": "defer"},
                  {"zone": "b.example", "action": "log"}
                ]}"#,
        )
        .unwrap();
        assert_eq!(s.cache_ttl_ms, None);
        assert_eq!(s.skip_networks[1].to_string(), "192.0.2.1/32");
        assert_eq!(s.zones[0].action, Action::Defer);
        assert_eq!(s.zones[0].on_dns_error, OnDnsError::Defer);
        assert_eq!(s.zones[0].matches.as_ref().unwrap().len(), 2);
        assert_eq!(s.zones[1].action, Action::Log);
    }

    #[test]
    fn refusals() {
        let table = [
            (r#"{}"#, "missing field `zones`"),
            (r#"{"zones": []}"#, "zones is empty"),
            (
                r#"{"zones": [{"zone": "bad..zone"}]}"#,
                "is not a valid domain name",
            ),
            (
                r#"{"zones": [{"zone": "a.example"}, {"zone": "A.example."}]}"#,
                "listed twice",
            ),
            (
                r#"{"zones": [{"zone": "a.example", "action": "tag"}]}"#,
                "unknown variant `tag`",
            ),
            (
                r#"{"zones": [{"zone": "a.example", "on_dns_error": "reject"}]}"#,
                "unknown variant `reject`",
            ),
            (
                r#"{"zones": [{"zone": "a.example", "weight": 2}]}"#,
                "unknown field `weight`",
            ),
            (
                r#"{"zones": [{"zone": "a.example", "reply": ""}]}"#,
                "reply must be 1 to 300",
            ),
            (
                r#"{"zones": [{"zone": "a.example", "reply": "a\nb"}]}"#,
                "printable ASCII",
            ),
            (
                r#"{"zones": [{"zone": "a.example", "match": []}]}"#,
                "match is empty",
            ),
            (
                r#"{"zones": [{"zone": "a.example", "match": ["127.0.0.256"]}]}"#,
                "\"127.0.0.256\" is not an address",
            ),
            (
                r#"{"zones": [{"zone": "a.example", "match": ["::1"]}]}"#,
                "is IPv6",
            ),
            (
                r#"{"zones": [{"zone": "a.example"}], "cache_ttl": 100000}"#,
                "cache_ttl must be at most",
            ),
            (
                r#"{"zones": [{"zone": "a.example"}], "skip_networks": ["x"]}"#,
                "skip_networks: \"x\"",
            ),
            (
                r#"{"zones": [{"zone": "a.example"}], "bogus": 1}"#,
                "unknown field `bogus`",
            ),
            // The kv store is only a cache here: nothing for it to decide.
            (
                r#"{"zones": [{"zone": "a.example"}], "on_kv_error": "allow"}"#,
                "unknown field `on_kv_error`",
            ),
        ];
        for (json, want) in table {
            let err = parse(json).unwrap_err();
            assert!(err.contains(want), "{json}: {err}");
        }
    }
}
