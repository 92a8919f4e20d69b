//! `postern:policy@0.2.0` call glue: the session is lent as a `session`
//! handle (a reference to the host's snapshot; the plugin reads what it
//! needs through getters, see `crate::session`), observers get a batch of
//! outcomes per call, and the data stage may change the envelope and header
//! section or quarantine the message.

use std::sync::Arc;

use wasmtime::component::{InstancePre, Resource};

use super::{Call, DataReturn, GuestSet, Live, Returned, guest, stage_table};
use crate::Stage;
use crate::bindings::v02::hooks as h;
use crate::bindings::v02::types as wit;
use crate::context::{EnvelopeChange, HeaderChange, MessageChanges, Outcome, SessionContext};
use crate::message::MessageHandle;
use crate::session::SessionHandle;
use crate::state::PluginState;

stage_table!();
crate::convert::conversions!();

fn outcome(o: &Outcome) -> wit::Outcome {
    wit::Outcome {
        stage: stage(o.stage),
        argument: o.argument.clone(),
        code: o.code,
        enhanced: o.enhanced.clone(),
        text: o.text.clone(),
        decided_by: o.decided_by.as_ref().map(|d| d.to_string()),
        helo: o.helo.clone(),
        tls: o.tls.as_ref().map(tls_info),
        auth_user: o.auth_user.clone(),
        mail_from: o.mail_from.clone(),
        recipient_count: o.recipient_count,
    }
}

fn changes(r: &mut wit::DataResult) -> MessageChanges {
    MessageChanges {
        headers: r
            .header_changes
            .drain(..)
            .map(|c| match c {
                wit::HeaderChange::Remove(n) => HeaderChange::Remove(n),
                wit::HeaderChange::Replace(h) => HeaderChange::Replace(h.name, h.value),
            })
            .collect(),
        envelope: r
            .envelope_changes
            .drain(..)
            .map(|c| match c {
                wit::EnvelopeChange::SetSender(a) => EnvelopeChange::SetSender(a),
                wit::EnvelopeChange::AddRecipient(a) => EnvelopeChange::AddRecipient(a),
                wit::EnvelopeChange::RemoveRecipient(a) => EnvelopeChange::RemoveRecipient(a),
            })
            .collect(),
        quarantine: r.quarantine.take(),
        body: None,
    }
}

/// A stage's arguments as 0.2 values (the session itself is not converted).
pub(crate) struct Args {
    credentials: Option<wit::Credentials>,
    address: Option<wit::EnvelopeAddress>,
    outcomes: Vec<wit::Outcome>,
}

impl Args {
    fn new(call: &Call<'_>) -> Args {
        Args {
            credentials: match call {
                Call::Auth(c) => Some(credentials(c)),
                _ => None,
            },
            address: match call {
                Call::MailFrom(a) | Call::RcptTo(a) => Some(address(a)),
                _ => None,
            },
            outcomes: match call {
                Call::Outcomes(o) => o.iter().map(outcome).collect(),
                _ => Vec::new(),
            },
        }
    }
}

pub(super) async fn call(
    live: &mut Live,
    idx: &Indices,
    ctx: &Arc<SessionContext>,
    args: &mut Option<Args>,
    call: &Call<'_>,
) -> wasmtime::Result<Returned> {
    let a = args.get_or_insert_with(|| Args::new(call));
    let Live {
        store,
        instance,
        guests,
        ..
    } = live;
    let GuestSet::V02(guests) = guests else {
        wasmtime::bail!("instance of another contract version");
    };
    // The session handle lives in the instance's table for this call only.
    let handle = store.data_mut().table.push(SessionHandle(ctx.clone()))?;
    let s = || Resource::<SessionHandle>::new_borrow(handle.rep());
    let missing = || wasmtime::format_err!("argument not prepared");
    let result: wasmtime::Result<Returned> = async {
        Ok(match call {
            Call::Connect => {
                let g = guest!(store, instance, guests, idx, connect);
                Returned::Verdict(verdict(g.call_on_connect(&mut *store, s()).await?))
            }
            Call::Helo { name, extended } => {
                let g = guest!(store, instance, guests, idx, helo);
                Returned::Verdict(verdict(
                    g.call_on_helo(&mut *store, s(), name, *extended).await?,
                ))
            }
            Call::Auth(_) => {
                let g = guest!(store, instance, guests, idx, auth);
                let c = a.credentials.as_ref().ok_or_else(missing)?;
                Returned::Verdict(verdict(g.call_on_auth(&mut *store, s(), c).await?))
            }
            Call::MailFrom(_) => {
                let g = guest!(store, instance, guests, idx, mail_from);
                let addr = a.address.as_ref().ok_or_else(missing)?;
                Returned::Verdict(verdict(g.call_on_mail_from(&mut *store, s(), addr).await?))
            }
            Call::RcptTo(_) => {
                let g = guest!(store, instance, guests, idx, rcpt_to);
                let addr = a.address.as_ref().ok_or_else(missing)?;
                Returned::Verdict(verdict(g.call_on_rcpt_to(&mut *store, s(), addr).await?))
            }
            Call::Data(message) => {
                let g = guest!(store, instance, guests, idx, data);
                let m = store
                    .data_mut()
                    .table
                    .push(MessageHandle((*message).clone()))?;
                let borrowed = Resource::<MessageHandle>::new_borrow(m.rep());
                let result = g.call_on_data(&mut *store, s(), borrowed).await;
                store.data_mut().table.delete(m)?;
                let mut r = result?;
                let changes = changes(&mut r);
                Returned::Data(DataReturn {
                    verdict: verdict(r.verdict),
                    add_headers: headers(r.add_headers),
                    changes,
                })
            }
            Call::Vrfy(arg) => {
                let g = guest!(store, instance, guests, idx, vrfy);
                Returned::Verdict(verdict(g.call_on_vrfy(&mut *store, s(), arg).await?))
            }
            Call::Expn(arg) => {
                let g = guest!(store, instance, guests, idx, expn);
                Returned::Verdict(verdict(g.call_on_expn(&mut *store, s(), arg).await?))
            }
            Call::Outcomes(_) => {
                let g = guest!(store, instance, guests, idx, outcome);
                g.call_on_outcomes(&mut *store, s(), &a.outcomes).await?;
                Returned::Nothing
            }
        })
    }
    .await;
    let deleted = store.data_mut().table.delete(handle);
    let returned = result?;
    deleted?;
    Ok(returned)
}
