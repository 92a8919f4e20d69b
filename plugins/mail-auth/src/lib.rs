//! mail-auth: the policy on the host's mail authentication (capability
//! "mail-auth"). At MAIL FROM: SPF (RFC 7208) with an action per result. At
//! DATA: inbound mail gets one `Authentication-Results` field (RFC 8601) with
//! SPF, DKIM (RFC 6376), ARC (RFC 8617) and DMARC (RFC 7489) results and
//! meets the DMARC policy; mail from authenticated users and trusted
//! networks is DKIM-signed with the key of its From domain instead. Trusts
//! the host's session facts and results; keys are read from the plugin's
//! read-only `files` grant.

use postern_sdk::prelude::*;
use postern_sdk::wit::mail_auth::MailAuthError;

pub mod config;
pub mod results;

use config::{Config, Settings};
use results::DmarcAction;

pub struct MailAuthPolicy(Settings);

impl Plugin for MailAuthPolicy {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        config.validate().map(MailAuthPolicy)
    }
}

fn helo(session: &Session) -> String {
    session.helo().unwrap_or_default()
}

impl MailAuthPolicy {
    /// Outbound: an authenticated session or a trusted network.
    fn outbound(&self, session: &Session) -> bool {
        session.auth_user().is_some()
            || postern_sdk::net::parse_client(&session.client_ip())
                .is_some_and(|ip| self.0.trusted.contains(ip))
    }

    fn sign(&self, message: &Message) -> DataResult {
        let from = message.header("From").unwrap_or_default();
        let domain = from_domain(&from);
        let Some(key) = self.0.config.sign.domains.get(&domain) else {
            return DataResult::verdict(pass());
        };
        let pem = match std::fs::read_to_string(&key.key_file) {
            Ok(p) => p,
            Err(e) => {
                log::with(
                    Level::Error,
                    "cannot read the DKIM key; message not signed",
                    &[("file", &key.key_file), ("error", &e.to_string())],
                );
                return DataResult::verdict(defer(
                    451,
                    "4.3.0",
                    "Signing unavailable, try again later",
                ));
            }
        };
        // Oversign (RFC 6376 §8.15): each name once more than it occurs.
        let mut names = Vec::new();
        for h in &self.0.config.sign.headers {
            let n = message.header_all(h).len();
            names.extend(std::iter::repeat_n(h.as_str(), n + 1));
        }
        match mail_auth::dkim_sign(
            message,
            &domain,
            &key.selector,
            &key.algorithm,
            &pem,
            &names,
        ) {
            Ok(value) => DataResult::verdict(pass()).add_header("DKIM-Signature", value),
            Err(e) => {
                log::with(
                    Level::Error,
                    "DKIM signing failed",
                    &[("error", &err_text(&e))],
                );
                DataResult::verdict(defer(451, "4.3.0", "Signing failed, try again later"))
            }
        }
    }

    fn verify(&self, session: &Session, message: &Message) -> DataResult {
        let mail_from = session.mail_from().map(|a| a.address).unwrap_or_default();
        let outcome = match mail_auth::authenticate(
            message,
            &session.client_ip(),
            &helo(session),
            &mail_from,
        ) {
            Ok(o) => o,
            Err(e) => {
                log::with(
                    Level::Error,
                    "mail-auth unavailable",
                    &[("error", &err_text(&e))],
                );
                return DataResult::verdict(pass());
            }
        };
        let id = self
            .0
            .config
            .authserv_id
            .clone()
            .unwrap_or_else(|| session.server_name());
        let mut add = vec![header(
            "Authentication-Results",
            results::authentication_results(&id, &outcome, &mail_from, &helo(session)),
        )];
        let sample = sample(&session.id(), message.size());
        let hold = match results::dmarc_action(&self.0.config.dmarc, &outcome, sample) {
            DmarcAction::Accept => None,
            DmarcAction::Tag => Some(false),
            DmarcAction::Hold => Some(true),
            DmarcAction::Refuse(v) => return DataResult::verdict(v),
        };
        let mut quarantine = None;
        if let Some(hold) = hold {
            let reason = format!(
                "DMARC policy of {}",
                results::clean(&outcome.dmarc.from_domain, 200)
            );
            if hold {
                quarantine = Some(reason.clone());
            }
            add.push(header(
                self.0.config.dmarc.quarantine_header.clone(),
                reason,
            ));
        }
        DataResult {
            add_headers: add,
            quarantine,
            ..DataResult::verdict(pass())
        }
    }
}

/// 0..100 for `pct` sampling, from the session id and message size.
fn sample(session_id: &str, size: u64) -> u8 {
    let mut h: u32 = 2166136261;
    for b in session_id.bytes().chain(size.to_le_bytes()) {
        h = (h ^ b as u32).wrapping_mul(16777619);
    }
    (h % 100) as u8
}

fn err_text(e: &MailAuthError) -> String {
    match e {
        MailAuthError::Denied => "capability \"mail-auth\" not granted".into(),
        MailAuthError::Invalid(m) => m.clone(),
    }
}

/// The domain of the (first) address in a From field value.
pub fn from_domain(from: &str) -> String {
    let addr = match (from.rfind('<'), from.rfind('>')) {
        (Some(a), Some(b)) if a < b => &from[a + 1..b],
        _ => from.split(',').next().unwrap_or(""),
    };
    addr.rsplit_once('@')
        .map(|(_, d)| d.trim().trim_end_matches('>').to_ascii_lowercase())
        .unwrap_or_default()
}

impl MailFrom for MailAuthPolicy {
    fn on_mail_from(&self, session: &Session, sender: &EnvelopeAddress) -> Verdict {
        if self.outbound(session) {
            return pass();
        }
        match mail_auth::check_spf(&session.client_ip(), &helo(session), &sender.address) {
            Ok(spf) => results::spf_verdict(&self.0.config.spf, &spf),
            Err(e) => {
                log::with(
                    Level::Error,
                    "mail-auth unavailable",
                    &[("error", &err_text(&e))],
                );
                pass()
            }
        }
    }
}

impl Data for MailAuthPolicy {
    fn on_data(&self, session: &Session, message: &Message) -> DataResult {
        if self.outbound(session) {
            self.sign(message)
        } else {
            self.verify(session, message)
        }
    }
}

export_plugin!(MailAuthPolicy, [mail_from, data], recycle);
