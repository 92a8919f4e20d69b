//! Conversion of parsed envelope paths (RFC 5321 §4.1.2) into the plugin
//! context and spool records. Input: paths already validated by the parser.

use postern_plugin::EnvelopeAddress;
use postern_protocol::{
    Domain, EsmtpParam, ForwardPath, MailParams, Mailbox, RcptParams, ReversePath,
};

fn params(all: &[EsmtpParam]) -> Vec<(String, Option<String>)> {
    all.iter()
        .map(|p| (p.keyword.clone(), p.value.clone()))
        .collect()
}

/// "KEY=VALUE" or "KEY", as stored in the spool envelope.
pub fn raw_params(all: &[EsmtpParam]) -> Vec<String> {
    all.iter()
        .map(|p| match &p.value {
            Some(v) => format!("{}={v}", p.keyword),
            None => p.keyword.clone(),
        })
        .collect()
}

fn mailbox(m: &Mailbox, all: &[EsmtpParam], is_local: bool) -> EnvelopeAddress {
    EnvelopeAddress {
        address: m.to_string(),
        local_part: m.local_part.clone(),
        domain: m.domain.to_string(),
        params: params(all),
        is_local,
    }
}

pub fn sender(
    path: &ReversePath,
    p: &MailParams,
    is_local_domain: impl Fn(&str) -> bool,
) -> EnvelopeAddress {
    match path {
        ReversePath::Null => EnvelopeAddress {
            params: params(&p.all),
            ..EnvelopeAddress::default()
        },
        ReversePath::Mailbox(m) => mailbox(m, &p.all, local(&m.domain, &is_local_domain)),
    }
}

fn local(d: &Domain, is_local_domain: impl Fn(&str) -> bool) -> bool {
    match d {
        Domain::Name(_) => is_local_domain(&d.normalized()),
        _ => false,
    }
}

/// `is_local_domain` decides locality of a domain name; address literals are
/// never local here (a plugin may still accept them).
pub fn recipient(
    path: &ForwardPath,
    p: &RcptParams,
    is_local_domain: impl Fn(&str) -> bool,
) -> EnvelopeAddress {
    match path {
        ForwardPath::Postmaster => EnvelopeAddress {
            address: "postmaster".into(),
            local_part: "postmaster".into(),
            domain: String::new(),
            params: params(&p.all),
            is_local: true,
        },
        ForwardPath::Mailbox(m) => mailbox(m, &p.all, local(&m.domain, &is_local_domain)),
    }
}

/// The reverse-path as stored in the spool ("" for `<>`).
pub fn sender_text(path: &ReversePath) -> String {
    match path {
        ReversePath::Null => String::new(),
        ReversePath::Mailbox(m) => m.to_string(),
    }
}

/// The forward-path as stored in the spool.
pub fn recipient_text(path: &ForwardPath) -> String {
    match path {
        ForwardPath::Postmaster => "postmaster".into(),
        ForwardPath::Mailbox(m) => m.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locality() {
        let local = |d: &str| d == "example.test";
        let p = RcptParams::default();
        let r = |s: &str| ForwardPath::parse(s).unwrap();
        assert!(recipient(&r("<a@EXAMPLE.test.>"), &p, local).is_local);
        assert!(!recipient(&r("<a@other.test>"), &p, local).is_local);
        assert!(!recipient(&r("<a@[127.0.0.1]>"), &p, local).is_local);
        assert!(recipient(&r("<Postmaster>"), &p, local).is_local);
        let q = recipient(&r("<\"a@b\"@example.test>"), &p, local);
        assert_eq!(q.local_part, "\"a@b\"");
        assert_eq!(q.address, "\"a@b\"@example.test");
    }
}
