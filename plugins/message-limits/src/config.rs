//! The `[plugin.config]` table of message-limits and its validation: client
//! classes (networks, authentication), their limits and the counting window.
//! Trusts nothing: every value is checked here, once.

use postern_sdk::Deserialize;
use postern_sdk::net::{self, IpNet};

use crate::class::{Class, Limits, Settings};

/// What to do when the host KV store fails or is not granted (the SDK's
/// setting, shared by every shipped plugin that keeps state).
pub use postern_sdk::OnKvError;

/// Limits as written; every one optional (absent: no limit).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_message_size: Option<u64>,
    pub max_recipients: Option<u32>,
    pub max_messages: Option<u32>,
    pub max_connections_rate: Option<u32>,
    /// Counting window in seconds for this class (default: the top-level
    /// `window`).
    pub window: Option<u64>,
}

/// One `[[plugin.config.classes]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    pub name: String,
    /// CIDR blocks ("10.0.0.0/8", "2001:db8::/32") or single addresses.
    #[serde(default)]
    pub networks: Vec<String>,
    /// true: only authenticated sessions; false: only unauthenticated ones;
    /// absent: either.
    #[serde(default)]
    pub authenticated: Option<bool>,
    pub max_message_size: Option<u64>,
    pub max_recipients: Option<u32>,
    pub max_messages: Option<u32>,
    pub max_connections_rate: Option<u32>,
    pub window: Option<u64>,
}

impl ClassConfig {
    fn limits(&self) -> LimitsConfig {
        LimitsConfig {
            max_message_size: self.max_message_size,
            max_recipients: self.max_recipients,
            max_messages: self.max_messages,
            max_connections_rate: self.max_connections_rate,
            window: self.window,
        }
    }
}

/// The configuration as written by the operator.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub classes: Vec<ClassConfig>,
    #[serde(default)]
    pub default: LimitsConfig,
    /// Counting window in seconds (default 60).
    #[serde(default = "default_window")]
    pub window: u64,
    #[serde(default)]
    pub on_kv_error: OnKvError,
}

fn default_window() -> u64 {
    60
}

/// The longest counting window accepted: 30 days.
const MAX_WINDOW: u64 = 30 * 24 * 3600;

fn window_ms(what: &str, secs: u64) -> Result<u64, String> {
    if secs == 0 || secs > MAX_WINDOW {
        return Err(format!(
            "{what}: window must be between 1 and {MAX_WINDOW} seconds, not {secs}"
        ));
    }
    Ok(secs * 1000)
}

fn positive<T: Copy + Default + PartialEq + std::fmt::Display>(
    what: &str,
    key: &str,
    v: Option<T>,
) -> Result<Option<T>, String> {
    match v {
        Some(x) if x == T::default() => Err(format!(
            "{what}: {key} must be at least 1 (omit it for no limit)"
        )),
        other => Ok(other),
    }
}

fn limits(what: &str, l: &LimitsConfig, window: u64) -> Result<Limits, String> {
    Ok(Limits {
        max_message_size: positive(what, "max_message_size", l.max_message_size)?,
        max_recipients: positive(what, "max_recipients", l.max_recipients)?,
        max_messages: positive(what, "max_messages", l.max_messages)?,
        max_connections_rate: positive(what, "max_connections_rate", l.max_connections_rate)?,
        window_ms: window_ms(what, l.window.unwrap_or(window))?,
    })
}

fn network(class: &str, text: &str) -> Result<IpNet, String> {
    net::parse_network(text)
        .ok_or_else(|| format!("class {class:?}: {text:?} is not a network (CIDR) or an address"))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl Config {
    /// Validate and normalize.
    pub fn validate(self) -> Result<Settings, String> {
        window_ms("window", self.window)?;
        let mut classes = Vec::new();
        for c in &self.classes {
            if !valid_name(&c.name) {
                return Err(format!(
                    "class name {:?} must be 1 to 64 letters, digits, '-', '_' or '.'",
                    c.name
                ));
            }
            if c.name == "default" {
                return Err(
                    "class name \"default\" is reserved: configure it under [plugin.config.default]"
                        .into(),
                );
            }
            if classes.iter().any(|k: &Class| k.name == c.name) {
                return Err(format!("class {:?} is defined twice", c.name));
            }
            let networks = c
                .networks
                .iter()
                .map(|n| network(&c.name, n))
                .collect::<Result<Vec<_>, _>>()?;
            let what = format!("class {:?}", c.name);
            classes.push(Class {
                name: c.name.clone(),
                networks,
                authenticated: c.authenticated,
                limits: limits(&what, &c.limits(), self.window)?,
            });
        }
        let default = Class {
            name: "default".into(),
            networks: Vec::new(),
            authenticated: None,
            limits: limits("default", &self.default, self.window)?,
        };
        Ok(Settings {
            classes,
            default,
            on_kv_error: self.on_kv_error,
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
        let s = parse("{}").unwrap();
        assert!(s.classes.is_empty());
        assert_eq!(s.default.name, "default");
        assert_eq!(s.default.limits.window_ms, 60_000);
        assert_eq!(s.default.limits.max_message_size, None);
        assert_eq!(s.on_kv_error, OnKvError::Tempfail);
    }

    #[test]
    fn full() {
        let s = parse(
            r#"{"window": 3600, "on_kv_error": "allow",
                "default": {"max_message_size": 1000, "max_recipients": 5, "max_messages": 10, "max_connections_rate": 20},
                "classes": [
                  {"name": "internal", "networks": ["10.1.2.3/8", "2001:db8::1"], "max_recipients": 100, "window": 60},
                  {"name": "users", "authenticated": true, "max_messages": 500}
                ]}"#,
        )
        .unwrap();
        assert_eq!(s.on_kv_error, OnKvError::Allow);
        assert_eq!(s.default.limits.max_connections_rate, Some(20));
        assert_eq!(s.default.limits.window_ms, 3_600_000);
        let internal = &s.classes[0];
        assert_eq!(internal.networks[0].to_string(), "10.0.0.0/8");
        assert_eq!(internal.networks[1].to_string(), "2001:db8::1/128");
        assert_eq!(internal.limits.window_ms, 60_000);
        assert_eq!(internal.limits.max_message_size, None);
        assert_eq!(s.classes[1].authenticated, Some(true));
        assert_eq!(s.classes[1].limits.window_ms, 3_600_000);
    }

    #[test]
    fn refusals() {
        let table = [
            (r#"{"bogus": 1}"#, "unknown field `bogus`"),
            (r#"{"window": 0}"#, "window must be between 1 and"),
            (
                r#"{"on_kv_error": "ignore"}"#,
                "invalid value: string \"ignore\", expected on_kv_error = \"tempfail\" or \"allow\"",
            ),
            (
                r#"{"on_kv_error": true}"#,
                "expected on_kv_error = \"tempfail\" or \"allow\"",
            ),
            (
                r#"{"default": {"max_recipients": 0}}"#,
                "default: max_recipients must be at least 1",
            ),
            (
                r#"{"default": {"max_size": 1}}"#,
                "unknown field `max_size`",
            ),
            (
                r#"{"classes": [{"name": "x", "networks": ["10.0.0.0/33"]}]}"#,
                "\"10.0.0.0/33\" is not a network",
            ),
            (
                r#"{"classes": [{"name": "x", "bogus": true}]}"#,
                "unknown field `bogus`",
            ),
            (r#"{"classes": [{"name": ""}]}"#, "class name \"\" must be"),
            (
                r#"{"classes": [{"name": "a b"}]}"#,
                "class name \"a b\" must be",
            ),
            (r#"{"classes": [{"name": "default"}]}"#, "reserved"),
            (
                r#"{"classes": [{"name": "a"}, {"name": "a"}]}"#,
                "defined twice",
            ),
            (
                r#"{"classes": [{"name": "a", "max_messages": 0}]}"#,
                "class \"a\": max_messages must be at least 1",
            ),
            (
                r#"{"classes": [{"name": "a", "window": 99999999}]}"#,
                "class \"a\": window must be",
            ),
            (r#"{"classes": [{"networks": []}]}"#, "missing field `name`"),
        ];
        for (json, want) in table {
            let err = parse(json).unwrap_err();
            assert!(err.contains(want), "{json}: {err}");
        }
    }
}
