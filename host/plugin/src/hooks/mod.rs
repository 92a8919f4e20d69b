//! Calling a plugin's exported stage interfaces. `HookIndices` records which
//! interfaces a component exports (found once per load); `Live` is one
//! session's instance of a plugin. One file per hook holds that hook's call
//! glue. Input: untrusted components; every call's result is validated by the
//! caller (`chain.rs`).

mod auth;
mod connect;
mod data;
mod expn;
mod helo;
mod init;
mod mail_from;
mod outcome;
mod rcpt_to;
mod recycle;
mod vrfy;

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre};

use crate::Stage;
use crate::bindings::hooks as h;
use crate::bindings::types as wit;
use crate::message::MessageData;
use crate::state::PluginState;

/// Which stage interfaces a component exports.
pub(crate) struct HookIndices {
    init: Option<h::init::GuestIndices>,
    connect: Option<h::connect_hook::GuestIndices>,
    helo: Option<h::helo_hook::GuestIndices>,
    auth: Option<h::auth_hook::GuestIndices>,
    mail_from: Option<h::mail_from_hook::GuestIndices>,
    rcpt_to: Option<h::rcpt_to_hook::GuestIndices>,
    data: Option<h::data_hook::GuestIndices>,
    vrfy: Option<h::vrfy_hook::GuestIndices>,
    expn: Option<h::expn_hook::GuestIndices>,
    outcome: Option<h::outcome_hook::GuestIndices>,
    recycle: Option<h::recycle::GuestIndices>,
}

impl HookIndices {
    pub fn detect(pre: &InstancePre<PluginState>) -> HookIndices {
        HookIndices {
            init: h::init::GuestIndices::new(pre).ok(),
            connect: h::connect_hook::GuestIndices::new(pre).ok(),
            helo: h::helo_hook::GuestIndices::new(pre).ok(),
            auth: h::auth_hook::GuestIndices::new(pre).ok(),
            mail_from: h::mail_from_hook::GuestIndices::new(pre).ok(),
            rcpt_to: h::rcpt_to_hook::GuestIndices::new(pre).ok(),
            data: h::data_hook::GuestIndices::new(pre).ok(),
            vrfy: h::vrfy_hook::GuestIndices::new(pre).ok(),
            expn: h::expn_hook::GuestIndices::new(pre).ok(),
            outcome: h::outcome_hook::GuestIndices::new(pre).ok(),
            recycle: h::recycle::GuestIndices::new(pre).ok(),
        }
    }

    /// Whether the component exports `recycle` (its instances may serve
    /// more than one session).
    pub fn recyclable(&self) -> bool {
        self.recycle.is_some()
    }

    pub fn exports(&self, stage: Stage) -> bool {
        match stage {
            Stage::Connect => self.connect.is_some(),
            Stage::Helo => self.helo.is_some(),
            Stage::Auth => self.auth.is_some(),
            Stage::MailFrom => self.mail_from.is_some(),
            Stage::RcptTo => self.rcpt_to.is_some(),
            Stage::Data => self.data.is_some(),
            Stage::Vrfy => self.vrfy.is_some(),
            Stage::Expn => self.expn.is_some(),
            Stage::Outcome => self.outcome.is_some(),
        }
    }
}

/// Guest export handles resolved on a live instance (resolved lazily, once).
#[derive(Default)]
struct GuestCache {
    connect: Option<h::connect_hook::Guest>,
    helo: Option<h::helo_hook::Guest>,
    auth: Option<h::auth_hook::Guest>,
    mail_from: Option<h::mail_from_hook::Guest>,
    rcpt_to: Option<h::rcpt_to_hook::Guest>,
    data: Option<h::data_hook::Guest>,
    vrfy: Option<h::vrfy_hook::Guest>,
    expn: Option<h::expn_hook::Guest>,
    outcome: Option<h::outcome_hook::Guest>,
}

/// One instance of one plugin, serving one session at a time.
pub(crate) struct Live {
    pub store: Store<PluginState>,
    pub instance: Instance,
    cache: GuestCache,
    /// Sessions this instance has served (reuse is capped).
    pub sessions: u32,
    /// Set while a call is in flight: an instance whose call was abandoned
    /// (its future dropped) is in an unknown state and is never reused.
    pub busy: bool,
}

impl Live {
    pub fn new(store: Store<PluginState>, instance: Instance) -> Live {
        Live {
            store,
            instance,
            cache: GuestCache::default(),
            sessions: 1,
            busy: false,
        }
    }
}

/// Resolve (and cache) a guest export on a live instance.
macro_rules! guest {
    ($live:expr, $idx:expr, $field:ident) => {{
        let live: &mut $crate::hooks::Live = $live;
        match &live.cache.$field {
            Some(g) => g.clone(),
            None => {
                let idx = $idx
                    .$field
                    .as_ref()
                    .ok_or_else(|| wasmtime::format_err!("stage not exported"))?;
                let g = idx.load(&mut live.store, &live.instance)?;
                live.cache.$field = Some(g.clone());
                g
            }
        }
    }};
}
pub(crate) use guest;

/// The arguments of one stage call, already converted to WIT types.
pub(crate) enum Call<'a> {
    Connect,
    Helo { name: &'a str, extended: bool },
    Auth(&'a wit::Credentials),
    MailFrom(&'a wit::EnvelopeAddress),
    RcptTo(&'a wit::EnvelopeAddress),
    Data(&'a Arc<MessageData>),
    Vrfy(&'a str),
    Expn(&'a str),
    Outcome(&'a wit::Outcome),
}

impl Call<'_> {
    pub fn stage(&self) -> Stage {
        match self {
            Call::Connect => Stage::Connect,
            Call::Helo { .. } => Stage::Helo,
            Call::Auth(_) => Stage::Auth,
            Call::MailFrom(_) => Stage::MailFrom,
            Call::RcptTo(_) => Stage::RcptTo,
            Call::Data(_) => Stage::Data,
            Call::Vrfy(_) => Stage::Vrfy,
            Call::Expn(_) => Stage::Expn,
            Call::Outcome(_) => Stage::Outcome,
        }
    }
}

/// What a stage call returned, before validation.
pub(crate) enum Returned {
    Verdict(wit::Verdict),
    Data(wit::DataResult),
    Nothing,
}

pub(crate) async fn call(
    live: &mut Live,
    idx: &HookIndices,
    session: &wit::Session,
    call: &Call<'_>,
) -> wasmtime::Result<Returned> {
    Ok(match call {
        Call::Connect => Returned::Verdict(connect::call(live, idx, session).await?),
        Call::Helo { name, extended } => {
            Returned::Verdict(helo::call(live, idx, session, name, *extended).await?)
        }
        Call::Auth(c) => Returned::Verdict(auth::call(live, idx, session, c).await?),
        Call::MailFrom(a) => Returned::Verdict(mail_from::call(live, idx, session, a).await?),
        Call::RcptTo(a) => Returned::Verdict(rcpt_to::call(live, idx, session, a).await?),
        Call::Data(m) => Returned::Data(data::call(live, idx, session, m).await?),
        Call::Vrfy(a) => Returned::Verdict(vrfy::call(live, idx, session, a).await?),
        Call::Expn(a) => Returned::Verdict(expn::call(live, idx, session, a).await?),
        Call::Outcome(o) => {
            outcome::call(live, idx, session, o).await?;
            Returned::Nothing
        }
    })
}

/// Ask an instance that served a session whether it may serve another.
pub(crate) async fn run_recycle(live: &mut Live, idx: &HookIndices) -> wasmtime::Result<bool> {
    recycle::call(live, idx).await
}

/// Run the plugin's `init` export, if it has one.
pub(crate) async fn run_init(
    live: &mut Live,
    idx: &HookIndices,
    config: &str,
) -> wasmtime::Result<Result<(), String>> {
    init::call(live, idx, config).await
}
