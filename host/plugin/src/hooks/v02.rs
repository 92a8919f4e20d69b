//! `postern:policy@0.2.0` call glue: the session is lent as a `session`
//! handle (a reference to the host's snapshot; the plugin reads what it
//! needs through getters, see `crate::session`), observers get a batch of
//! outcomes per call, and the data stage may change the envelope and header
//! section or quarantine the message.

use std::sync::Arc;

use wasmtime::component::{InstancePre, Resource};

use super::{Ask, Call, DataReturn, GuestSet, Live, Returned, guest, stage_table};
use crate::Stage;
use crate::bindings::v02::delivery as dw;
use crate::bindings::v02::hooks as h;
use crate::bindings::v02::types as wit;
use crate::context::{EnvelopeChange, HeaderChange, MessageChanges, Outcome, SessionContext};
use crate::delivery::{Attempt, DeliveryDecision, QueuedMessage, Route};
use crate::session::SessionHandle;
use crate::state::PluginState;

super::with_stages!(stage_table;
    route: route_hook = "route-hook" => Route,
    delivery: delivery_hook = "delivery-hook" => DeliveryResult,
    bounce: bounce_hook = "bounce-hook" => Bounce,
);
crate::convert::conversions!();

fn outcome(o: &Outcome) -> wit::Outcome {
    crate::convert::outcome_record!(o,
        helo: o.helo.clone(),
        tls: o.tls.as_ref().map(tls_info),
        auth_user: o.auth_user.clone(),
        mail_from: o.mail_from.clone(),
        recipient_count: o.recipient_count,
    )
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

fn queued(m: &QueuedMessage) -> dw::QueuedMessage {
    dw::QueuedMessage {
        queue_id: m.queue_id.clone(),
        sender: m.sender.clone(),
        size: m.size,
        received_ms: m.received_ms,
        attempts: m.attempts,
        client_ip: m.client_ip.clone(),
        auth_user: m.auth_user.clone(),
    }
}

fn attempt_of(a: &Attempt) -> dw::Attempt {
    dw::Attempt {
        recipient: a.recipient.clone(),
        permanent: a.permanent,
        status: a.status.clone(),
        text: a.text.clone(),
        remote_host: a.remote_host.clone(),
    }
}

fn route(r: dw::Route) -> Route {
    match r {
        dw::Route::Default => Route::Default,
        dw::Route::Local => Route::Local,
        dw::Route::Relayhost => Route::Relayhost,
        dw::Route::Relay(h) => Route::Relay(h),
        dw::Route::Mx(d) => Route::Mx(d),
        dw::Route::Refuse(r) => Route::Refuse(reply(r)),
        dw::Route::Defer(r) => Route::Defer(reply(r)),
    }
}

fn decision(d: dw::Decision) -> DeliveryDecision {
    match d {
        dw::Decision::Default => DeliveryDecision::Default,
        dw::Decision::Retry => DeliveryDecision::Retry,
        dw::Decision::GiveUp => DeliveryDecision::GiveUp,
        dw::Decision::SuppressBounce => DeliveryDecision::SuppressBounce,
    }
}

/// A stage's arguments as 0.2 values (the session itself is not converted:
/// it is lent as a handle).
pub(crate) type Args = super::Converted<wit::Credentials, wit::EnvelopeAddress, wit::Outcome>;

pub(super) async fn call(
    live: &mut Live,
    idx: &Indices,
    ctx: &Arc<SessionContext>,
    args: &mut Option<Args>,
    call: &Call<'_>,
) -> wasmtime::Result<Returned> {
    let a = args.get_or_insert_with(|| Args::new(call, credentials, address, outcome));
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
            Call::Smtp(Ask::Connect) => {
                let g = guest!(store, instance, guests, idx, connect);
                Returned::Verdict(verdict(g.call_on_connect(&mut *store, s()).await?))
            }
            Call::Smtp(Ask::Helo { name, extended }) => {
                let g = guest!(store, instance, guests, idx, helo);
                Returned::Verdict(verdict(
                    g.call_on_helo(&mut *store, s(), name, *extended).await?,
                ))
            }
            Call::Smtp(Ask::Auth(_)) => {
                let g = guest!(store, instance, guests, idx, auth);
                let c = a.credentials.as_ref().ok_or_else(missing)?;
                Returned::Verdict(verdict(g.call_on_auth(&mut *store, s(), c).await?))
            }
            Call::Smtp(Ask::MailFrom(_)) => {
                let g = guest!(store, instance, guests, idx, mail_from);
                let addr = a.address.as_ref().ok_or_else(missing)?;
                Returned::Verdict(verdict(g.call_on_mail_from(&mut *store, s(), addr).await?))
            }
            Call::Smtp(Ask::RcptTo(_)) => {
                let g = guest!(store, instance, guests, idx, rcpt_to);
                let addr = a.address.as_ref().ok_or_else(missing)?;
                Returned::Verdict(verdict(g.call_on_rcpt_to(&mut *store, s(), addr).await?))
            }
            Call::Smtp(Ask::Data(message)) => {
                let g = guest!(store, instance, guests, idx, data);
                let (owned, borrowed) = super::lend(store, message)?;
                let result = g.call_on_data(&mut *store, s(), borrowed).await;
                super::reclaim(store, owned)?;
                let mut r = result?;
                let changes = changes(&mut r);
                Returned::Data(DataReturn {
                    verdict: verdict(r.verdict),
                    add_headers: headers(r.add_headers),
                    changes,
                    delivery: None,
                })
            }
            Call::Smtp(Ask::Vrfy(arg)) => {
                let g = guest!(store, instance, guests, idx, vrfy);
                Returned::Verdict(verdict(g.call_on_vrfy(&mut *store, s(), arg).await?))
            }
            Call::Smtp(Ask::Expn(arg)) => {
                let g = guest!(store, instance, guests, idx, expn);
                Returned::Verdict(verdict(g.call_on_expn(&mut *store, s(), arg).await?))
            }
            Call::Outcomes(_) => {
                let g = guest!(store, instance, guests, idx, outcome);
                g.call_on_outcomes(&mut *store, s(), &a.outcomes).await?;
                Returned::Nothing
            }
            Call::Route { message, recipient } => {
                let g = guest!(store, instance, guests, idx, route);
                let m = queued(message);
                let (v, answer) =
                    route(g.call_on_route(&mut *store, &m, recipient).await?).into_verdict();
                Returned::Data(DataReturn::delivery(v, answer))
            }
            Call::DeliveryResult { message, attempt } => {
                let g = guest!(store, instance, guests, idx, delivery);
                let m = queued(message);
                let d = g
                    .call_on_delivery_result(&mut *store, &m, &attempt_of(attempt))
                    .await?;
                let (v, answer) = decision(d).into_verdict();
                Returned::Data(DataReturn::delivery(v, answer))
            }
            Call::Bounce { bounce, report } => {
                let g = guest!(store, instance, guests, idx, bounce);
                let b = dw::Bounce {
                    queue_id: bounce.queue_id.clone(),
                    recipient: bounce.recipient.clone(),
                    failed: bounce.failed.clone(),
                    delayed: bounce.delayed.clone(),
                    delivered: bounce.delivered.clone(),
                };
                let (owned, borrowed) = super::lend(store, report)?;
                let result = g.call_on_bounce(&mut *store, &b, borrowed).await;
                super::reclaim(store, owned)?;
                Returned::Verdict(verdict(result?))
            }
        })
    }
    .await;
    let deleted = store.data_mut().table.delete(handle);
    let returned = result?;
    deleted?;
    Ok(returned)
}
