//! envelope-check: HELO sanity (RFC 5321 §4.1.1.1, §4.1.3), sender domain
//! resolution with null MX (RFC 5321 §5.1, RFC 7505) and local mailbox
//! verification (RFC 5321 §4.5.1 postmaster). Trusts the host's session
//! fields (`server_name`, `local_ip`, `is_local`) and DNS answers; every
//! client-supplied name and address is hostile.

use postern_sdk::prelude::*;

pub mod config;
pub mod helo;
pub mod recipient;
pub mod sender;
pub mod syntax;
#[cfg(test)]
mod testutil;

use config::{Config, Settings};

/// The plugin: validated settings only (nothing of a session), so its
/// instances are recycled from one session to the next.
pub struct EnvelopeCheck(Settings);

impl Plugin for EnvelopeCheck {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        config.validate().map(EnvelopeCheck)
    }
}

/// The host's resolver and log.
struct HostDns;

impl sender::Resolver for HostDns {
    fn mx(&self, name: &str) -> Result<Vec<Mx>, DnsError> {
        dns::lookup_mx(name)
    }
    fn a(&self, name: &str) -> Result<Vec<String>, DnsError> {
        dns::lookup_a(name)
    }
    fn aaaa(&self, name: &str) -> Result<Vec<String>, DnsError> {
        dns::lookup_aaaa(name)
    }
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        log::with(level, message, fields);
    }
}

impl Helo for EnvelopeCheck {
    fn on_helo(&self, session: &Session, name: &str, _extended: bool) -> Verdict {
        let peers = helo::Peers {
            local_ip: &session.local_ip(),
            client_ip: &session.client_ip(),
        };
        helo::check(&self.0.helo, &session.server_name(), peers, name)
    }
}

impl MailFrom for EnvelopeCheck {
    fn on_mail_from(&self, _session: &Session, sender: &EnvelopeAddress) -> Verdict {
        sender::check(&self.0.sender, sender, &HostDns)
    }
}

impl RcptTo for EnvelopeCheck {
    fn on_rcpt_to(&self, _session: &Session, recipient: &EnvelopeAddress) -> Verdict {
        recipient::check(self.0.mailboxes.as_ref(), recipient)
    }
}

export_plugin!(EnvelopeCheck, [helo, mail_from, rcpt_to], recycle);
