//! Conversions between host types and the WIT types of a contract version.
//! The records and variants are shaped alike in 0.1 and 0.2 but are distinct
//! Rust types, so the conversions are written once here and expanded in each
//! version's module with its `wit` (the generated `types`) in scope. Values
//! coming from plugins are converted as they came; `verdict.rs` validates.

macro_rules! conversions {
    () => {
        #[allow(dead_code)]
        pub(crate) fn address(a: &crate::context::EnvelopeAddress) -> wit::EnvelopeAddress {
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

        #[allow(dead_code)]
        pub(crate) fn tls_info(t: &crate::context::TlsInfo) -> wit::TlsInfo {
            wit::TlsInfo {
                protocol: t.protocol.clone(),
                cipher: t.cipher.clone(),
                client_certificate: t.client_certificate,
                server_name: t.server_name.clone(),
            }
        }

        fn credentials(c: &crate::context::Credentials) -> wit::Credentials {
            wit::Credentials {
                mechanism: c.mechanism.clone(),
                authzid: c.authzid.clone(),
                username: c.username.clone(),
                password: c.password.clone(),
            }
        }

        fn stage(s: Option<crate::Stage>) -> wit::Stage {
            use crate::Stage;
            match s {
                None
                | Some(Stage::Outcome | Stage::Route | Stage::DeliveryResult | Stage::Bounce) => {
                    wit::Stage::Disconnect
                }
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

        fn reply(r: wit::Reply) -> crate::verdict::PluginReply {
            crate::verdict::PluginReply {
                code: r.code,
                enhanced: r.enhanced,
                text: r.text,
            }
        }

        /// A plugin's verdict in host types, as it came (not validated).
        fn verdict(v: wit::Verdict) -> crate::verdict::Verdict {
            use crate::verdict::Verdict;
            match v {
                wit::Verdict::Pass => Verdict::Pass,
                wit::Verdict::Accept => Verdict::Accept,
                wit::Verdict::AcceptWith(r) => Verdict::AcceptWith(reply(r)),
                wit::Verdict::Reject(r) => Verdict::Reject(reply(r)),
                wit::Verdict::Defer(r) => Verdict::Defer(reply(r)),
                wit::Verdict::Disconnect(r) => Verdict::Disconnect(reply(r)),
            }
        }

        fn headers(h: Vec<wit::Header>) -> Vec<(String, String)> {
            h.into_iter().map(|h| (h.name, h.value)).collect()
        }
    };
}
pub(crate) use conversions;

/// A `wit::Outcome` from an [`crate::context::Outcome`]: the fields every
/// contract version has, then the version's own (`field: value`, in 0.2 the
/// session's state at the time of the reply).
macro_rules! outcome_record {
    ($o:expr $(, $field:ident: $value:expr)* $(,)?) => {
        wit::Outcome {
            stage: stage($o.stage),
            argument: $o.argument.clone(),
            code: $o.code,
            enhanced: $o.enhanced.clone(),
            text: $o.text.clone(),
            decided_by: $o.decided_by.as_ref().map(|d| d.to_string()),
            $($field: $value,)*
        }
    };
}
pub(crate) use outcome_record;
