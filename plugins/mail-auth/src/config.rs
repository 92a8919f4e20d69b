//! The plugin's `[plugin.config]`: SPF actions, DMARC handling, signing
//! keys. Input: the operator's configuration (trusted, but validated so a
//! typo is refused at load time rather than at the first message).

use std::collections::BTreeMap;

use postern_sdk::Deserialize;
use postern_sdk::net::Ranges;

/// What to do with an SPF result at MAIL FROM.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SpfAction {
    /// 550 5.7.23.
    Reject,
    /// 451 4.7.24.
    Defer,
    /// Accept; the result shows in Authentication-Results.
    Tag,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpfConfig {
    pub fail: SpfAction,
    pub softfail: SpfAction,
    pub temperror: SpfAction,
    pub permerror: SpfAction,
}

impl Default for SpfConfig {
    fn default() -> Self {
        SpfConfig {
            fail: SpfAction::Reject,
            softfail: SpfAction::Tag,
            temperror: SpfAction::Defer,
            permerror: SpfAction::Tag,
        }
    }
}

/// How a DMARC `quarantine` is carried out.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum QuarantineAction {
    /// Accept and add the `quarantine_header` field.
    Tag,
    /// Accept, add the `quarantine_header` field and hold the message in
    /// the queue until an operator releases it (`postern queue release`);
    /// contract 0.2's quarantine.
    Hold,
    /// 451 4.7.1.
    Defer,
    /// 550 5.7.1.
    Reject,
}

/// An operator's override of a domain's published policy.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Override {
    None,
    Quarantine,
    Reject,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DmarcConfig {
    /// Apply published policies (false: only report in Authentication-Results).
    pub enforce: bool,
    pub quarantine: QuarantineAction,
    pub quarantine_header: String,
    /// Per-domain policy overrides (the From domain, lower case).
    pub overrides: BTreeMap<String, Override>,
}

impl Default for DmarcConfig {
    fn default() -> Self {
        DmarcConfig {
            enforce: true,
            quarantine: QuarantineAction::Tag,
            quarantine_header: "X-Postern-Quarantine".into(),
            overrides: BTreeMap::new(),
        }
    }
}

/// One signing domain.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKey {
    pub selector: String,
    /// PEM file inside one of the plugin's `files` directories.
    pub key_file: String,
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
}

fn default_algorithm() -> String {
    "rsa-sha256".into()
}

/// RFC 6376 §8.15: sign these, each listed once more than it occurs so that
/// none can be added later (oversigning).
pub const DEFAULT_SIGNED: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignConfig {
    /// Client networks whose mail is signed (besides authenticated sessions).
    pub trusted_networks: Vec<String>,
    /// Header fields to sign (oversigned); default [`DEFAULT_SIGNED`].
    pub headers: Vec<String>,
    /// Keys per From domain (lower case).
    pub domains: BTreeMap<String, SigningKey>,
}

impl Default for SignConfig {
    fn default() -> Self {
        SignConfig {
            trusted_networks: Vec::new(),
            headers: DEFAULT_SIGNED.iter().map(|s| s.to_string()).collect(),
            domains: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Authentication-Results authserv-id; default the server's host name
    /// (the host removes incoming fields claiming that name).
    pub authserv_id: Option<String>,
    pub spf: SpfConfig,
    pub dmarc: DmarcConfig,
    pub sign: SignConfig,
}

/// The validated settings.
pub struct Settings {
    pub config: Config,
    pub trusted: Ranges,
}

impl Config {
    pub fn validate(mut self) -> Result<Settings, String> {
        if self.spf.temperror == SpfAction::Reject {
            return Err(
                "spf.temperror cannot be \"reject\" (a temporary error is worth a 4xx at most)"
                    .into(),
            );
        }
        if self.dmarc.quarantine == QuarantineAction::Hold && !postern_sdk::CAN_CHANGE_MESSAGE {
            return Err(format!(
                "dmarc.quarantine = \"hold\" needs postern:policy@0.2.0; this build is {}",
                postern_sdk::CONTRACT_VERSION
            ));
        }
        let trusted = Ranges::parse("sign.trusted_networks", &self.sign.trusted_networks)?;
        for (domain, key) in &self.sign.domains {
            if !matches!(key.algorithm.as_str(), "rsa-sha256" | "ed25519-sha256") {
                return Err(format!(
                    "sign.domains.{domain}.algorithm must be \"rsa-sha256\" or \"ed25519-sha256\""
                ));
            }
            if key.selector.is_empty() || key.key_file.is_empty() {
                return Err(format!(
                    "sign.domains.{domain}: selector and key_file are required"
                ));
            }
        }
        if self
            .sign
            .headers
            .iter()
            .all(|h| !h.eq_ignore_ascii_case("from"))
        {
            return Err("sign.headers must include From (RFC 6376 §5.4)".into());
        }
        self.sign.domains = std::mem::take(&mut self.sign.domains)
            .into_iter()
            .map(|(d, k)| (d.to_ascii_lowercase(), k))
            .collect();
        self.dmarc.overrides = std::mem::take(&mut self.dmarc.overrides)
            .into_iter()
            .map(|(d, o)| (d.to_ascii_lowercase(), o))
            .collect();
        Ok(Settings {
            config: self,
            trusted,
        })
    }
}
