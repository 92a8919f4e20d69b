//! `access-log`: writes one structured log line (message "smtp") per stage
//! outcome, for auditing and accounting; it never changes a reply. Input:
//! the session snapshot and outcome from the host; every text field in them
//! is client-controlled (HELO name, addresses, arguments) and is logged as a
//! separate field, never formatted into the message. AUTH outcomes are logged
//! without any argument, so no credential can reach the log. RFC 5321 §4.2
//! (reply codes), RFC 3463 (enhanced codes), RFC 2505 §2.3–§2.4 (logging).

use std::borrow::Cow;

use postern_sdk::prelude::*;

/// Every stage name, in the order of the WIT `stage` enum.
pub const STAGE_NAMES: [&str; 9] = [
    "connect",
    "helo",
    "auth",
    "mail-from",
    "rcpt-to",
    "data",
    "vrfy",
    "expn",
    "disconnect",
];

/// The position of `stage` in [`STAGE_NAMES`].
pub fn stage_index(stage: &Stage) -> usize {
    match stage {
        Stage::Connect => 0,
        Stage::Helo => 1,
        Stage::Auth => 2,
        Stage::MailFrom => 3,
        Stage::RcptTo => 4,
        Stage::Data => 5,
        Stage::Vrfy => 6,
        Stage::Expn => 7,
        Stage::Disconnect => 8,
    }
}

/// `[plugin.config]` of `access-log`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Stages to log (kebab-case or snake_case names); absent = all.
    #[serde(default)]
    pub stages: Option<Vec<String>>,
    #[serde(default = "yes")]
    pub include_arguments: bool,
}

fn yes() -> bool {
    true
}

pub struct AccessLog {
    enabled: [bool; 9],
    include_arguments: bool,
}

impl Plugin for AccessLog {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        let enabled = match &config.stages {
            None => [true; 9],
            Some(list) if list.is_empty() => {
                return Err(
                    "stages is empty, so nothing would be logged; remove the key to log every stage"
                        .into(),
                );
            }
            Some(list) => {
                let mut enabled = [false; 9];
                for (i, name) in list.iter().enumerate() {
                    let wanted = name.trim().to_ascii_lowercase().replace('_', "-");
                    let Some(idx) = STAGE_NAMES.iter().position(|s| *s == wanted) else {
                        return Err(format!(
                            "stages[{i}]: unknown stage {name:?} (known: {})",
                            STAGE_NAMES.join(", ")
                        ));
                    };
                    enabled[idx] = true;
                }
                enabled
            }
        };
        Ok(AccessLog {
            enabled,
            include_arguments: config.include_arguments,
        })
    }
}

/// `192.0.2.7:4711` or `[2001:db8::7]:4711`.
fn client(session: &Session) -> String {
    let ip = session.client_ip();
    if ip.contains(':') {
        format!("[{ip}]:{}", session.client_port())
    } else {
        format!("{ip}:{}", session.client_port())
    }
}

impl AccessLog {
    /// The fields of the log line for this outcome, in a fixed order, or
    /// `None` when its stage is not logged. Pure: no host calls.
    pub fn fields<'a>(
        &self,
        session: &Session,
        outcome: &'a Outcome,
    ) -> Option<Vec<(&'static str, Cow<'a, str>)>> {
        let (id, client) = (session.id(), client(session));
        let fields = self.fields_of(&id, &client, outcome)?;
        Some(
            fields
                .into_iter()
                .map(|(k, v)| (k, Cow::Owned(v.into_owned())))
                .collect(),
        )
    }

    /// `fields` with the session's id and client address read once per
    /// batch; the outcome's texts are lent, not copied.
    fn fields_of<'a>(
        &self,
        session_id: &'a str,
        client: &'a str,
        outcome: &'a Outcome,
    ) -> Option<Vec<(&'static str, Cow<'a, str>)>> {
        let stage = stage_index(&outcome.stage);
        if !self.enabled[stage] {
            return None;
        }
        let text = |v: &'a Option<String>| Cow::Borrowed(v.as_deref().unwrap_or_default());
        let mut f: Vec<(&'static str, Cow<'a, str>)> = Vec::with_capacity(13);
        f.push(("session", session_id.into()));
        f.push(("client", client.into()));
        // The session's changing state as it was when the stage was decided
        // (outcomes arrive after the transaction).
        f.push(("helo", text(&outcome.helo)));
        f.push(("stage", STAGE_NAMES[stage].into()));
        // AUTH never logs an argument, whatever the host passed.
        if self.include_arguments && !matches!(outcome.stage, Stage::Auth) {
            f.push(("argument", outcome.argument.as_str().into()));
        }
        f.push(("code", outcome.code.to_string().into()));
        f.push(("enhanced", text(&outcome.enhanced)));
        f.push(("text", outcome.text.as_str().into()));
        f.push((
            "decided_by",
            outcome.decided_by.as_deref().unwrap_or("host").into(),
        ));
        f.push(("auth_user", text(&outcome.auth_user)));
        f.push((
            "tls",
            outcome.tls.as_ref().map_or(Cow::Borrowed("none"), |t| {
                format!("{} {}", t.protocol, t.cipher).into()
            }),
        ));
        f.push((
            "mail_from",
            match outcome.mail_from.as_deref() {
                None => "".into(),
                Some("") => "<>".into(),
                Some(a) => a.into(),
            },
        ));
        f.push(("rcpt_count", outcome.recipient_count.to_string().into()));
        Some(f)
    }
}

impl Observe for AccessLog {
    fn on_outcomes(&self, session: &Session, outcomes: &[Outcome]) {
        let (id, client) = (session.id(), client(session));
        for outcome in outcomes {
            if let Some(fields) = self.fields_of(&id, &client, outcome) {
                let lent: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, &**v)).collect();
                log::with(Level::Info, "smtp", &lent);
            }
        }
    }
}

export_plugin!(AccessLog, [outcome], recycle);

#[cfg(test)]
mod tests;
