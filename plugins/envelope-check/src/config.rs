//! The `[plugin.config]` table of envelope-check and its validation. Trusts
//! nothing: every value is checked here, once, so the stages need not.

use postern_sdk::Deserialize;

use crate::helo::HeloPolicy;
use crate::recipient::Mailboxes;
use crate::sender::SenderPolicy;
use crate::syntax::is_domain;

fn yes() -> bool {
    true
}

/// The configuration as written by the operator.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Refuse clients that claim our `server_name`, one of `own_names`, or
    /// the address they connected to.
    #[serde(default = "yes")]
    pub reject_own_hostname: bool,
    #[serde(default)]
    pub own_names: Vec<String>,
    /// Refuse HELO names without a dot (address literals excepted).
    #[serde(default)]
    pub require_fqdn: bool,
    /// Refuse HELO names that are neither a domain nor an address literal.
    #[serde(default = "yes")]
    pub reject_invalid_helo: bool,
    /// Resolve the sender's domain (MX, else A/AAAA).
    #[serde(default = "yes")]
    pub check_sender_domain: bool,
    #[serde(default)]
    pub skip_domains: Vec<String>,
    /// Known local mailboxes ("user@domain", "@domain" catch-all); absent:
    /// recipients are not checked.
    #[serde(default)]
    pub mailboxes: Option<Vec<String>>,
    #[serde(default)]
    pub case_sensitive_local: bool,
}

/// Everything the stages need, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub helo: HeloPolicy,
    pub sender: SenderPolicy,
    pub mailboxes: Option<Mailboxes>,
}

fn domains(key: &str, list: &[String]) -> Result<Vec<String>, String> {
    list.iter()
        .map(|d| {
            let norm = d.trim().trim_end_matches('.').to_ascii_lowercase();
            if is_domain(&norm) {
                Ok(norm)
            } else {
                Err(format!("{key}: {d:?} is not a valid domain name"))
            }
        })
        .collect()
}

impl Config {
    /// Validate and normalize.
    pub fn validate(self) -> Result<Settings, String> {
        let own_names = domains("own_names", &self.own_names)?;
        let skip_domains = domains("skip_domains", &self.skip_domains)?;
        let mailboxes = match &self.mailboxes {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(
                    "mailboxes is empty: list local mailboxes (\"user@domain\" or \"@domain\"), or remove the key to accept every local recipient"
                        .into(),
                );
            }
            Some(list) => Some(Mailboxes::new(list, self.case_sensitive_local)?),
        };
        if self.case_sensitive_local && mailboxes.is_none() {
            return Err("case_sensitive_local has no effect without mailboxes".into());
        }
        Ok(Settings {
            helo: HeloPolicy {
                reject_own_hostname: self.reject_own_hostname,
                own_names,
                require_fqdn: self.require_fqdn,
                reject_invalid_helo: self.reject_invalid_helo,
            },
            sender: SenderPolicy {
                check_sender_domain: self.check_sender_domain,
                skip_domains,
            },
            mailboxes,
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
        assert!(s.helo.reject_own_hostname && s.helo.reject_invalid_helo && !s.helo.require_fqdn);
        assert!(s.helo.own_names.is_empty());
        assert!(s.sender.check_sender_domain && s.sender.skip_domains.is_empty());
        assert!(s.mailboxes.is_none());
    }

    #[test]
    fn full() {
        let s = parse(
            r#"{"reject_own_hostname": false, "own_names": ["MX2.Example.org."],
                "require_fqdn": true, "reject_invalid_helo": false,
                "check_sender_domain": false, "skip_domains": ["Lab.Example"],
                "mailboxes": ["a@example.org", "@example.net"], "case_sensitive_local": true}"#,
        )
        .unwrap();
        assert_eq!(s.helo.own_names, vec!["mx2.example.org"]);
        assert_eq!(s.sender.skip_domains, vec!["lab.example"]);
        assert!(s.mailboxes.unwrap().contains("a", "EXAMPLE.org"));
    }

    #[test]
    fn refusals() {
        let table = [
            (r#"{"bogus": 1}"#, "unknown field `bogus`"),
            (
                r#"{"own_names": ["bad..name"]}"#,
                "own_names: \"bad..name\" is not a valid domain name",
            ),
            (
                r#"{"skip_domains": ["-x"]}"#,
                "skip_domains: \"-x\" is not a valid domain name",
            ),
            (r#"{"mailboxes": []}"#, "mailboxes is empty"),
            (r#"{"mailboxes": ["nobody"]}"#, "mailboxes entry \"nobody\""),
            (
                r#"{"case_sensitive_local": true}"#,
                "case_sensitive_local has no effect",
            ),
            (r#"{"require_fqdn": "yes"}"#, "invalid type"),
        ];
        for (json, want) in table {
            let err = parse(json).unwrap_err();
            assert!(err.contains(want), "{json}: {err}");
        }
    }
}
