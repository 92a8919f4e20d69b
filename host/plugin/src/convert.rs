//! Conversion of host-side session state into WIT records. Done once per
//! stage, shared by every plugin of the chain. Trusted input.

use crate::Stage;
use crate::bindings::types as wit;
use crate::context::{Credentials, EnvelopeAddress, Outcome, SessionContext};

pub fn address(a: &EnvelopeAddress) -> wit::EnvelopeAddress {
    wit::EnvelopeAddress {
        address: a.address.clone(),
        local_part: a.local_part.clone(),
        domain: a.domain.clone(),
        params: a
            .params
            .iter()
            .map(|(k, v)| wit::EsmtpParam {
                keyword: k.clone(),
                value: v.clone(),
            })
            .collect(),
        is_local: a.is_local,
    }
}

pub fn session(s: &SessionContext) -> wit::Session {
    wit::Session {
        id: s.id.to_string(),
        client_ip: s.client.ip().to_string(),
        client_port: s.client.port(),
        client_name: s.client_name.clone(),
        local_ip: s.local.ip().to_string(),
        local_port: s.local.port(),
        listener: s.listener.to_string(),
        server_name: s.server_name.to_string(),
        helo: s.helo.clone(),
        esmtp: s.esmtp,
        tls: s.tls.as_ref().map(|t| wit::TlsInfo {
            protocol: t.protocol.clone(),
            cipher: t.cipher.clone(),
            client_certificate: t.client_certificate,
            server_name: t.server_name.clone(),
        }),
        auth_user: s.auth_user.clone(),
        mail_from: s.mail_from.as_ref().map(address),
        recipients: s.recipients.iter().map(address).collect(),
        messages_accepted: s.messages_accepted,
    }
}

pub fn credentials(c: &Credentials) -> wit::Credentials {
    wit::Credentials {
        mechanism: c.mechanism.clone(),
        authzid: c.authzid.clone(),
        username: c.username.clone(),
        password: c.password.clone(),
    }
}

fn stage(s: Option<Stage>) -> wit::Stage {
    match s {
        None | Some(Stage::Outcome) => wit::Stage::Disconnect,
        Some(Stage::Connect) => wit::Stage::Connect,
        Some(Stage::Helo) => wit::Stage::Helo,
        Some(Stage::Auth) => wit::Stage::Auth,
        Some(Stage::MailFrom) => wit::Stage::MailFrom,
        Some(Stage::RcptTo) => wit::Stage::RcptTo,
        Some(Stage::Data) => wit::Stage::Data,
        Some(Stage::Vrfy) => wit::Stage::Vrfy,
        Some(Stage::Expn) => wit::Stage::Expn,
    }
}

pub fn outcome(o: &Outcome) -> wit::Outcome {
    wit::Outcome {
        stage: stage(o.stage),
        argument: o.argument.clone(),
        code: o.code,
        enhanced: o.enhanced.clone(),
        text: o.text.clone(),
        decided_by: o.decided_by.as_ref().map(|d| d.to_string()),
    }
}
