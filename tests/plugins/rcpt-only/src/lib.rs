//! Test plugin exporting only `rcpt-to`: rejects recipients whose local part
//! is in `blocked`, and traps on recipients containing `trap_on` (for the
//! breaker and rollback tests: every call it gets is an RCPT TO). Doubles as
//! the SDK's "plugin in 20 lines" example.

use postern_sdk::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    blocked: Vec<String>,
    #[serde(default)]
    trap_on: Option<String>,
}

struct Blocker(Vec<String>, Option<String>);

impl Plugin for Blocker {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        Ok(Blocker(config.blocked, config.trap_on))
    }
}

impl RcptTo for Blocker {
    fn on_rcpt_to(&self, _session: &Session, rcpt: &EnvelopeAddress) -> Verdict {
        if let Some(t) = &self.1
            && rcpt.address.contains(t.as_str())
        {
            panic!("rcpt-only: asked to trap on {}", rcpt.address);
        }
        match self
            .0
            .iter()
            .any(|b| b.eq_ignore_ascii_case(&rcpt.local_part))
        {
            true => reject(550, "5.1.1", format!("{} is blocked", rcpt.address)),
            false => pass(),
        }
    }
}

export_plugin!(Blocker, [rcpt_to]);
