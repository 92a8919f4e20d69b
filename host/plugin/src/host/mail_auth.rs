//! `postern:policy/mail-auth`: SPF, DKIM, ARC and DMARC verification and
//! DKIM signing, only for plugins granted the "mail-auth" capability.
//! Arguments come from untrusted plugins: addresses are parsed here, the
//! message is the host's own copy (a borrowed handle), and every check runs
//! under the deadline of the plugin call making it.

use std::net::IpAddr;
use std::time::Instant;

use wasmtime::component::Resource;

use super::Refused;
use crate::mail_auth::{self as ma, Identities, SignRequest};
use crate::message::MessageHandle;
use crate::state::PluginState;

impl PluginState {
    fn mail_auth_ids(
        &self,
        client_ip: &str,
        helo: String,
        mail_from: String,
    ) -> Result<Identities, Refused<String>> {
        if !self.meta.grants.mail_auth {
            self.log_denied("mail-auth call", "mail-auth");
            return Err(Refused::Denied);
        }
        let client_ip = client_ip
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| Refused::Failed(format!("{client_ip:?} is not an IP address")))?;
        if helo.len() > 255 || mail_from.len() > 512 {
            return Err(Refused::Failed("identity too long".into()));
        }
        Ok(Identities {
            client_ip,
            helo,
            mail_from,
        })
    }
}

/// Run `f` until `deadline` (less a margin for the plugin to answer); `None`
/// when it ran out.
async fn within<T>(deadline: Instant, f: impl std::future::Future<Output = T>) -> Option<T> {
    let budget = super::dns::lookup_budget(deadline.saturating_duration_since(Instant::now()));
    tokio::time::timeout(budget, f).await.ok()
}

fn timed_out() -> ma::AuthResult {
    ma::AuthResult::TempError
}

/// SPF of both identities when the check ran out of time.
fn spf_timed_out() -> ma::SpfOutcome {
    let t = ma::SpfCheck {
        result: timed_out(),
        ..Default::default()
    };
    ma::SpfOutcome {
        helo: t.clone(),
        mail_from: t,
    }
}

/// The `mail-auth` interface of one contract version (the same in both).
macro_rules! mail_auth_host {
    ($v:ident) => {
        const _: () = {
            use crate::bindings::$v::postern::policy::mail_auth as wit;

            type Answer<T> = wasmtime::Result<Result<T, wit::MailAuthError>>;

            fn result(r: ma::AuthResult) -> wit::AuthResult {
                use ma::AuthResult as A;
                use wit::AuthResult as W;
                match r {
                    A::None => W::None,
                    A::Pass => W::Pass,
                    A::Fail => W::Fail,
                    A::SoftFail => W::Softfail,
                    A::Neutral => W::Neutral,
                    A::TempError => W::Temperror,
                    A::PermError => W::Permerror,
                }
            }

            fn policy(p: ma::DmarcPolicy) -> wit::DmarcPolicy {
                match p {
                    ma::DmarcPolicy::None => wit::DmarcPolicy::None,
                    ma::DmarcPolicy::Quarantine => wit::DmarcPolicy::Quarantine,
                    ma::DmarcPolicy::Reject => wit::DmarcPolicy::Reject,
                    ma::DmarcPolicy::Unspecified => wit::DmarcPolicy::Unspecified,
                }
            }

            fn spf_check(c: ma::SpfCheck) -> wit::SpfCheck {
                wit::SpfCheck {
                    result: result(c.result),
                    domain: c.domain,
                    explanation: c.explanation,
                }
            }

            fn spf(o: ma::SpfOutcome) -> wit::SpfOutcome {
                wit::SpfOutcome {
                    helo: spf_check(o.helo),
                    mail_from: spf_check(o.mail_from),
                }
            }

            fn outcome(o: ma::AuthOutcome) -> wit::AuthOutcome {
                wit::AuthOutcome {
                    spf: spf(o.spf),
                    dkim: o
                        .dkim
                        .into_iter()
                        .map(|d| wit::DkimSignature {
                            domain: d.domain,
                            selector: d.selector,
                            algorithm: d.algorithm,
                            result: result(d.result),
                            error: d.error,
                        })
                        .collect(),
                    arc: wit::ArcOutcome {
                        result: result(o.arc.result),
                        instances: o.arc.instances,
                        error: o.arc.error,
                    },
                    dmarc: wit::DmarcOutcome {
                        from_domain: o.dmarc.from_domain,
                        result: result(o.dmarc.result),
                        spf_aligned: o.dmarc.spf_aligned,
                        dkim_aligned: o.dmarc.dkim_aligned,
                        record_found: o.dmarc.record_found,
                        policy: policy(o.dmarc.policy),
                        published_p: policy(o.dmarc.published_p),
                        published_sp: policy(o.dmarc.published_sp),
                        pct: o.dmarc.pct,
                    },
                }
            }

            fn error(e: Refused<String>) -> wit::MailAuthError {
                match e {
                    Refused::Denied => wit::MailAuthError::Denied,
                    Refused::Failed(m) => wit::MailAuthError::Invalid(m),
                }
            }

            impl wit::Host for PluginState {
                async fn check_spf(
                    &mut self,
                    client_ip: String,
                    helo: String,
                    mail_from: String,
                ) -> Answer<wit::SpfOutcome> {
                    let ids = match self.mail_auth_ids(&client_ip, helo, mail_from) {
                        Ok(ids) => ids,
                        Err(e) => return Ok(Err(error(e))),
                    };
                    let backend = self.services.mail_auth.clone();
                    let out = within(self.deadline, backend.check_spf(ids))
                        .await
                        .unwrap_or_else(spf_timed_out);
                    Ok(Ok(spf(out)))
                }

                async fn authenticate(
                    &mut self,
                    message: Resource<MessageHandle>,
                    client_ip: String,
                    helo: String,
                    mail_from: String,
                ) -> Answer<wit::AuthOutcome> {
                    let data = self.table.get(&message)?.0.clone();
                    let ids = match self.mail_auth_ids(&client_ip, helo, mail_from) {
                        Ok(ids) => ids,
                        Err(e) => return Ok(Err(error(e))),
                    };
                    let backend = self.services.mail_auth.clone();
                    let out = within(self.deadline, backend.authenticate(data, ids))
                        .await
                        .unwrap_or_else(|| ma::AuthOutcome {
                            spf: spf_timed_out(),
                            arc: ma::ArcOutcome {
                                result: timed_out(),
                                ..Default::default()
                            },
                            dmarc: ma::DmarcOutcome {
                                result: timed_out(),
                                ..Default::default()
                            },
                            dkim: Vec::new(),
                        });
                    Ok(Ok(outcome(out)))
                }

                async fn dkim_sign(
                    &mut self,
                    message: Resource<MessageHandle>,
                    domain: String,
                    selector: String,
                    algorithm: String,
                    private_key_pem: String,
                    headers: Vec<String>,
                ) -> Answer<String> {
                    if let Err(e) = self.mail_auth_ids("0.0.0.0", String::new(), String::new()) {
                        return Ok(Err(error(e)));
                    }
                    let data = self.table.get(&message)?.0.clone();
                    let request = SignRequest {
                        domain,
                        selector,
                        algorithm,
                        private_key_pem,
                        headers,
                    };
                    Ok(self
                        .services
                        .mail_auth
                        .dkim_sign(&data, request)
                        .map_err(wit::MailAuthError::Invalid))
                }
            }
        };
    };
}

mail_auth_host!(v01);
mail_auth_host!(v02);
