//! `postern:policy@0.1.0` call glue: the session is converted to a record
//! once per stage and copied into every call; observers get one outcome per
//! call (at the time of the stage, as 0.1 promised); the data stage answers
//! a verdict and added fields only.

use std::sync::Arc;

use wasmtime::component::InstancePre;

use super::{Ask, Call, DataReturn, GuestSet, Live, Returned, guest, stage_table};
use crate::Stage;
use crate::bindings::v01::hooks as h;
use crate::bindings::v01::types as wit;
use crate::context::{MessageChanges, Outcome, SessionContext};
use crate::state::PluginState;

super::with_stages!(stage_table;);
crate::convert::conversions!();

fn session(s: &SessionContext) -> wit::Session {
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
        tls: s.tls.as_ref().map(tls_info),
        auth_user: s.auth_user.clone(),
        mail_from: s.mail_from.as_ref().map(address),
        recipients: s.recipients.iter().map(address).collect(),
        messages_accepted: s.messages_accepted,
    }
}

fn outcome(o: &Outcome) -> wit::Outcome {
    crate::convert::outcome_record!(o)
}

/// A stage's arguments as 0.1 records: the session is copied into every
/// call.
pub(crate) struct Args {
    session: wit::Session,
    call: super::Converted<wit::Credentials, wit::EnvelopeAddress, wit::Outcome>,
}

impl Args {
    fn new(ctx: &SessionContext, call: &Call<'_>) -> Args {
        Args {
            session: session(ctx),
            call: super::Converted::new(call, credentials, address, outcome),
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
    let a = args.get_or_insert_with(|| Args::new(ctx, call));
    let Live {
        store,
        instance,
        guests,
        ..
    } = live;
    let GuestSet::V01(guests) = guests else {
        wasmtime::bail!("instance of another contract version");
    };
    let s = &a.session;
    let a = &a.call;
    let missing = || wasmtime::format_err!("argument not prepared");
    Ok(match call {
        Call::Smtp(Ask::Connect) => {
            let g = guest!(store, instance, guests, idx, connect);
            Returned::Verdict(verdict(g.call_on_connect(&mut *store, s).await?))
        }
        Call::Smtp(Ask::Helo { name, extended }) => {
            let g = guest!(store, instance, guests, idx, helo);
            Returned::Verdict(verdict(
                g.call_on_helo(&mut *store, s, name, *extended).await?,
            ))
        }
        Call::Smtp(Ask::Auth(_)) => {
            let g = guest!(store, instance, guests, idx, auth);
            let c = a.credentials.as_ref().ok_or_else(missing)?;
            Returned::Verdict(verdict(g.call_on_auth(&mut *store, s, c).await?))
        }
        Call::Smtp(Ask::MailFrom(_)) => {
            let g = guest!(store, instance, guests, idx, mail_from);
            let addr = a.address.as_ref().ok_or_else(missing)?;
            Returned::Verdict(verdict(g.call_on_mail_from(&mut *store, s, addr).await?))
        }
        Call::Smtp(Ask::RcptTo(_)) => {
            let g = guest!(store, instance, guests, idx, rcpt_to);
            let addr = a.address.as_ref().ok_or_else(missing)?;
            Returned::Verdict(verdict(g.call_on_rcpt_to(&mut *store, s, addr).await?))
        }
        Call::Smtp(Ask::Data(message)) => {
            let g = guest!(store, instance, guests, idx, data);
            let (owned, borrowed) = super::lend(store, message)?;
            let result = g.call_on_data(&mut *store, s, borrowed).await;
            super::reclaim(store, owned)?;
            let r = result?;
            Returned::Data(DataReturn {
                verdict: verdict(r.verdict),
                add_headers: headers(r.add_headers),
                changes: MessageChanges::default(),
                delivery: None,
            })
        }
        Call::Smtp(Ask::Vrfy(arg)) => {
            let g = guest!(store, instance, guests, idx, vrfy);
            Returned::Verdict(verdict(g.call_on_vrfy(&mut *store, s, arg).await?))
        }
        Call::Smtp(Ask::Expn(arg)) => {
            let g = guest!(store, instance, guests, idx, expn);
            Returned::Verdict(verdict(g.call_on_expn(&mut *store, s, arg).await?))
        }
        Call::Outcomes(_) => {
            let g = guest!(store, instance, guests, idx, outcome);
            for o in &a.outcomes {
                g.call_on_outcome(&mut *store, s, o).await?;
            }
            Returned::Nothing
        }
        Call::Route { .. } | Call::DeliveryResult { .. } | Call::Bounce { .. } => {
            wasmtime::bail!("delivery-side hooks are not part of contract 0.1")
        }
    })
}
