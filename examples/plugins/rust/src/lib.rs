//! Example Postern plugin in Rust (see README.md): refuses recipients named
//! in its configuration at RCPT TO, either a whole address
//! (`"bob@example.test"`) or a whole domain (`"@old.example.test"`).
//! Input: the recipient as the host passed it; the operator's configuration.

use postern_sdk::prelude::*;

/// `[plugin.config]`. Unknown keys are refused, so a typo fails `postern check`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Addresses and `@domain` entries to refuse.
    blocked: Vec<String>,
}

#[derive(Debug)]
struct Blocklist {
    /// Lower-cased entries, checked at load time.
    blocked: Vec<String>,
}

impl Plugin for Blocklist {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        let mut blocked = Vec::new();
        for entry in config.blocked {
            if !entry.contains('@') {
                return Err(format!(
                    "blocked: {entry:?} is neither user@domain nor @domain"
                ));
            }
            blocked.push(entry.to_ascii_lowercase());
        }
        Ok(Blocklist { blocked })
    }
}

impl Blocklist {
    fn is_blocked(&self, address: &str) -> bool {
        let address = address.to_ascii_lowercase();
        let domain = format!("@{}", domain_of(&address));
        self.blocked.iter().any(|b| *b == address || *b == domain)
    }
}

impl RcptTo for Blocklist {
    fn on_rcpt_to(&self, _session: &Session, rcpt: &EnvelopeAddress) -> Verdict {
        if self.is_blocked(&rcpt.address) {
            log::with(Level::Info, "recipient refused", &[("rcpt", &rcpt.address)]);
            // Replies must be printable ASCII: replace anything else (SMTPUTF8).
            let shown: String = rcpt.address.chars().map(printable).collect();
            return reject(
                550,
                "5.7.1",
                format!("<{shown}>: Recipient refused by policy"),
            );
        }
        pass()
    }
}

fn printable(c: char) -> char {
    if c == ' ' || c.is_ascii_graphic() {
        c
    } else {
        '?'
    }
}

// Generates the component's exports: `init` and `rcpt-to-hook` only, so the
// host calls this plugin at RCPT TO and nowhere else.
export_plugin!(Blocklist, [rcpt_to], recycle);

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(blocked: &[&str]) -> Result<Blocklist, String> {
        Blocklist::new(Config {
            blocked: blocked.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn matches_addresses_and_domains_ignoring_case() {
        let p = plugin(&["Bob@example.test", "@old.example.test"]).unwrap();
        assert!(p.is_blocked("bob@EXAMPLE.test"));
        assert!(p.is_blocked("anyone@old.example.test"));
        assert!(!p.is_blocked("alice@example.test"));
        assert!(!p.is_blocked("bob@example.test.other"));
    }

    #[test]
    fn refuses_entries_without_at() {
        assert!(plugin(&["bob"]).unwrap_err().contains("\"bob\""));
    }

    /// The stage as the host calls it; `log` goes to the SDK's fake host.
    #[test]
    fn refuses_at_rcpt_to_and_logs() {
        use postern_sdk::testing;
        let host = testing::host();
        let p = plugin(&["@old.example.test"]).unwrap();
        let s = testing::session().build();
        let v = p.on_rcpt_to(&s, &testing::address("ann@OLD.example.test").build());
        assert_eq!(
            testing::summary(&v),
            (
                "reject",
                550,
                "5.7.1".into(),
                "<ann@OLD.example.test>: Recipient refused by policy".into()
            )
        );
        assert_eq!(host.logs()[0].field("rcpt"), Some("ann@OLD.example.test"));
        let v = p.on_rcpt_to(&s, &testing::address("ann@new.example.test").build());
        assert_eq!(testing::summary(&v).0, "pass");
        assert_eq!(host.logs().len(), 1);
    }
}
