//! Calling a plugin's exported interfaces, for both contract versions the
//! host serves. The stage table (`stage_table!`) is written once and expanded
//! in each version's module (`v01.rs`, `v02.rs`), which hold only what
//! differs: how the session and the arguments reach the guest and how the
//! result comes back. `HookIndices` records which interfaces a component
//! exports (found once per load); `Live` is one session's instance of a
//! plugin. Input: untrusted components; what they return is converted to
//! host types here and validated by the caller (`chain.rs`).

mod v01;
pub(crate) mod v02;

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre, Resource};

use crate::Stage;
use crate::context::{Credentials, EnvelopeAddress, MessageChanges, Outcome, SessionContext};
use crate::delivery::{Attempt, BounceInfo, DeliveryAnswer, QueuedMessage};
use crate::message::{MessageData, MessageHandle};
use crate::state::PluginState;
use crate::verdict::Verdict;

/// The contract version a component was built against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contract {
    /// `postern:policy@0.1.0`: session record per call, one outcome per call.
    V01,
    /// `postern:policy@0.2.0`: session resource, outcomes in batches,
    /// envelope and header changes, quarantine.
    V02,
}

impl Contract {
    pub const ALL: [Contract; 2] = [Contract::V01, Contract::V02];

    pub fn version(self) -> &'static str {
        match self {
            Contract::V01 => "0.1.0",
            Contract::V02 => "0.2.0",
        }
    }

    pub fn from_version(v: &str) -> Option<Contract> {
        Contract::ALL.into_iter().find(|c| c.version() == v)
    }
}

/// The hook interfaces, once, in chain-stage order: `field: binding module =
/// "interface" => Stage`. Each version's module expands `stage_table!`
/// through this list, adding the interfaces only it has
/// (`with_stages!(stage_table; extra entries)`).
macro_rules! with_stages {
    ($table:ident; $($extra:tt)*) => {
        $table! {
            connect: connect_hook = "connect-hook" => Connect,
            helo: helo_hook = "helo-hook" => Helo,
            auth: auth_hook = "auth-hook" => Auth,
            mail_from: mail_from_hook = "mail-from-hook" => MailFrom,
            rcpt_to: rcpt_to_hook = "rcpt-to-hook" => RcptTo,
            data: data_hook = "data-hook" => Data,
            vrfy: vrfy_hook = "vrfy-hook" => Vrfy,
            expn: expn_hook = "expn-hook" => Expn,
            outcome: outcome_hook = "outcome-hook" => Outcome,
            $($extra)*
        }
    };
}
use with_stages;

/// What a version's module generates from the hook list: which interfaces a
/// component exports, their type check, and the guest handles of a live
/// instance. The per-version modules expand it with their own `h`
/// (generated export bindings) in scope.
macro_rules! stage_table {
    ($($field:ident : $m:ident = $iface:literal => $stage:ident),* $(,)?) => {
        /// Which interfaces a component exports.
        pub(crate) struct Indices {
            init: Option<h::init::GuestIndices>,
            recycle: Option<h::recycle::GuestIndices>,
            $($field: Option<h::$m::GuestIndices>,)*
        }

        impl Indices {
            /// The hook interfaces the component exports. One it exports
            /// under the contract's name but without the functions the
            /// contract gives it is an error naming the interface (not a
            /// hook quietly missing).
            pub fn detect(
                pre: &InstancePre<PluginState>,
                version: &str,
            ) -> Result<Indices, String> {
                macro_rules! find {
                    ($mm:ident, $name:literal) => {
                        match h::$mm::GuestIndices::new(pre) {
                            Ok(i) => Some(i),
                            Err(e) => {
                                let name = format!("postern:policy/{}@{version}", $name);
                                if pre.component().get_export_index(None, &name).is_some() {
                                    return Err(format!("{name}: {e:#}"));
                                }
                                None
                            }
                        }
                    };
                }
                Ok(Indices {
                    init: find!(init, "init"),
                    recycle: find!(recycle, "recycle"),
                    $($field: find!($m, $iface),)*
                })
            }

            /// Resolve every export on a live instance: wasmtime compares
            /// each function's type with the host's by structure, so a
            /// component built from a changed WIT under the same version
            /// string is refused at load, with the interface and the
            /// difference, instead of failing every call.
            pub fn typecheck(
                &self,
                store: &mut wasmtime::Store<PluginState>,
                instance: &wasmtime::component::Instance,
            ) -> Result<(), String> {
                macro_rules! one {
                    ($f:ident, $name:literal) => {
                        if let Some(i) = &self.$f {
                            i.load(&mut *store, instance)
                                .map_err(|e| format!("export {}: {e:#}", $name))?;
                        }
                    };
                }
                one!(init, "init");
                one!(recycle, "recycle");
                $(one!($field, $iface);)*
                Ok(())
            }

            pub fn recyclable(&self) -> bool {
                self.recycle.is_some()
            }

            pub fn exports(&self, stage: Stage) -> bool {
                #[allow(unreachable_patterns)]
                match stage {
                    $(Stage::$stage => self.$field.is_some(),)*
                    _ => false,
                }
            }
        }

        /// Guest export handles resolved on a live instance (once each).
        #[derive(Default)]
        pub(crate) struct Guests {
            $($field: Option<h::$m::Guest>,)*
        }

        /// Ask an instance that served a session whether it may serve
        /// another: `true` lets it; no export, `false` or a trap has it
        /// replaced by a fresh instance.
        pub(super) async fn recycle(live: &mut Live, idx: &Indices) -> wasmtime::Result<bool> {
            let Some(i) = &idx.recycle else {
                return Ok(false);
            };
            let g = i.load(&mut live.store, &live.instance)?;
            g.call_recycle(&mut live.store).await
        }

        /// The configuration (JSON) in, acceptance or a refusal message out.
        /// Plugins without `init` accept.
        pub(super) async fn init(
            live: &mut Live,
            idx: &Indices,
            config: &str,
        ) -> wasmtime::Result<Result<(), String>> {
            let Some(i) = &idx.init else {
                return Ok(Ok(()));
            };
            let g = i.load(&mut live.store, &live.instance)?;
            g.call_init(&mut live.store, config).await
        }
    };
}
use stage_table;

/// Resolve (and keep in `$guests`) the guest handle of one export.
macro_rules! guest {
    ($store:expr, $instance:expr, $guests:expr, $idx:expr, $field:ident) => {
        match &$guests.$field {
            Some(g) => g.clone(),
            None => {
                let i = $idx
                    .$field
                    .as_ref()
                    .ok_or_else(|| wasmtime::format_err!("stage not exported"))?;
                let g = i.load(&mut *$store, $instance)?;
                $guests.$field = Some(g.clone());
                g
            }
        }
    };
}
use guest;

/// Which interfaces a component exports, per contract version.
pub(crate) enum HookIndices {
    V01(v01::Indices),
    V02(v02::Indices),
}

impl HookIndices {
    pub fn detect(
        pre: &InstancePre<PluginState>,
        contract: Contract,
    ) -> Result<HookIndices, String> {
        let v = contract.version();
        Ok(match contract {
            Contract::V01 => HookIndices::V01(v01::Indices::detect(pre, v)?),
            Contract::V02 => HookIndices::V02(v02::Indices::detect(pre, v)?),
        })
    }

    /// See `Indices::typecheck`.
    pub(crate) fn typecheck(&self, live: &mut Live) -> Result<(), String> {
        match self {
            HookIndices::V01(i) => i.typecheck(&mut live.store, &live.instance),
            HookIndices::V02(i) => i.typecheck(&mut live.store, &live.instance),
        }
    }

    pub fn contract(&self) -> Contract {
        match self {
            HookIndices::V01(_) => Contract::V01,
            HookIndices::V02(_) => Contract::V02,
        }
    }

    /// Whether the component exports `recycle` (its instances may serve
    /// more than one session).
    pub fn recyclable(&self) -> bool {
        match self {
            HookIndices::V01(i) => i.recyclable(),
            HookIndices::V02(i) => i.recyclable(),
        }
    }

    pub fn exports(&self, stage: Stage) -> bool {
        match self {
            HookIndices::V01(i) => i.exports(stage),
            HookIndices::V02(i) => i.exports(stage),
        }
    }
}

enum GuestSet {
    V01(v01::Guests),
    V02(v02::Guests),
}

/// One instance of one plugin, serving one session at a time.
pub(crate) struct Live {
    pub store: Store<PluginState>,
    pub instance: Instance,
    guests: GuestSet,
    /// Sessions this instance has served (reuse is capped).
    pub sessions: u32,
    /// Set while a call is in flight: an instance whose call was abandoned
    /// (its future dropped) is in an unknown state and is never reused.
    pub busy: bool,
}

impl Live {
    pub fn new(store: Store<PluginState>, instance: Instance, idx: &HookIndices) -> Live {
        Live {
            store,
            instance,
            guests: match idx {
                HookIndices::V01(_) => GuestSet::V01(v01::Guests::default()),
                HookIndices::V02(_) => GuestSet::V02(v02::Guests::default()),
            },
            sessions: 1,
            busy: false,
        }
    }
}

/// An SMTP stage's question to the chain, with its argument: what a session
/// asks through [`crate::SessionChain::ask`], its one way in.
#[derive(Clone, Copy, Debug)]
pub enum Ask<'a> {
    Connect,
    Helo { name: &'a str, extended: bool },
    Auth(&'a Credentials),
    MailFrom(&'a EnvelopeAddress),
    RcptTo(&'a EnvelopeAddress),
    Data(&'a Arc<MessageData>),
    Vrfy(&'a str),
    Expn(&'a str),
}

impl Ask<'_> {
    pub fn stage(&self) -> Stage {
        Call::Smtp(*self).stage()
    }
}

/// The arguments of one stage call, in host types.
pub(crate) enum Call<'a> {
    /// An SMTP stage, as a session asks it.
    Smtp(Ask<'a>),
    /// 0.1 observers get one outcome per call, 0.2 observers a batch.
    Outcomes(&'a [Outcome]),
    /// Delivery side (0.2 only).
    Route {
        message: &'a QueuedMessage,
        recipient: &'a str,
    },
    DeliveryResult {
        message: &'a QueuedMessage,
        attempt: &'a Attempt,
    },
    Bounce {
        bounce: &'a BounceInfo,
        report: &'a Arc<MessageData>,
    },
}

impl Call<'_> {
    pub fn stage(&self) -> Stage {
        match self {
            Call::Smtp(Ask::Connect) => Stage::Connect,
            Call::Smtp(Ask::Helo { .. }) => Stage::Helo,
            Call::Smtp(Ask::Auth(_)) => Stage::Auth,
            Call::Smtp(Ask::MailFrom(_)) => Stage::MailFrom,
            Call::Smtp(Ask::RcptTo(_)) => Stage::RcptTo,
            Call::Smtp(Ask::Data(_)) => Stage::Data,
            Call::Smtp(Ask::Vrfy(_)) => Stage::Vrfy,
            Call::Smtp(Ask::Expn(_)) => Stage::Expn,
            Call::Outcomes(_) => Stage::Outcome,
            Call::Route { .. } => Stage::Route,
            Call::DeliveryResult { .. } => Stage::DeliveryResult,
            Call::Bounce { .. } => Stage::Bounce,
        }
    }
}

/// The arguments of one call converted into a contract version's records
/// (credentials `C`, envelope address `A`, outcome `O`): built once per
/// stage, then borrowed by every plugin of that version.
pub(crate) struct Converted<C, A, O> {
    pub credentials: Option<C>,
    pub address: Option<A>,
    pub outcomes: Vec<O>,
}

impl<C, A, O> Converted<C, A, O> {
    pub fn new(
        call: &Call<'_>,
        credentials: fn(&Credentials) -> C,
        address: fn(&EnvelopeAddress) -> A,
        outcome: fn(&Outcome) -> O,
    ) -> Self {
        Converted {
            credentials: match call {
                Call::Smtp(Ask::Auth(c)) => Some(credentials(c)),
                _ => None,
            },
            address: match call {
                Call::Smtp(Ask::MailFrom(a)) | Call::Smtp(Ask::RcptTo(a)) => Some(address(a)),
                _ => None,
            },
            outcomes: match call {
                Call::Outcomes(o) => o.iter().map(outcome).collect(),
                _ => Vec::new(),
            },
        }
    }
}

/// Put `message` into the instance's table for one call: the owned handle
/// (give it back with [`reclaim`] whatever the call returned) and the
/// borrow the guest gets.
pub(crate) fn lend(
    store: &mut Store<PluginState>,
    message: &Arc<MessageData>,
) -> wasmtime::Result<(Resource<MessageHandle>, Resource<MessageHandle>)> {
    let owned = store
        .data_mut()
        .table
        .push(MessageHandle(message.clone()))?;
    let borrowed = Resource::new_borrow(owned.rep());
    Ok((owned, borrowed))
}

/// Take a lent message back out of the instance's table.
pub(crate) fn reclaim(
    store: &mut Store<PluginState>,
    owned: Resource<MessageHandle>,
) -> wasmtime::Result<()> {
    store.data_mut().table.delete(owned)?;
    Ok(())
}

/// What a stage returned, in host types, not yet validated. The default
/// is a pass with nothing added or changed (the answer of every stage but
/// data and the delivery side).
#[derive(Default)]
pub(crate) struct DataReturn {
    pub verdict: Verdict,
    /// Header fields the data stage adds.
    pub add_headers: Vec<(String, String)>,
    /// The data stage's envelope and header changes and quarantine (0.2).
    pub changes: MessageChanges,
    /// A delivery-side stage's route or decision (`DeliveryAnswer`).
    pub delivery: Option<DeliveryAnswer>,
}

impl DataReturn {
    /// A delivery-side answer: its verdict, and what goes with it.
    pub fn delivery(verdict: Verdict, answer: Option<DeliveryAnswer>) -> DataReturn {
        DataReturn {
            verdict,
            delivery: answer,
            ..DataReturn::default()
        }
    }
}

/// What a stage call returned, in host types, not yet validated.
pub(crate) enum Returned {
    Verdict(Verdict),
    Data(DataReturn),
    Nothing,
}

/// One stage's arguments converted for each contract version, at most once
/// per stage whatever the number of plugins.
#[derive(Default)]
pub(crate) struct Prepared {
    v01: Option<v01::Args>,
    v02: Option<v02::Args>,
}

pub(crate) async fn call(
    live: &mut Live,
    idx: &HookIndices,
    ctx: &Arc<SessionContext>,
    prepared: &mut Prepared,
    call: &Call<'_>,
) -> wasmtime::Result<Returned> {
    match idx {
        HookIndices::V01(i) => v01::call(live, i, ctx, &mut prepared.v01, call).await,
        HookIndices::V02(i) => v02::call(live, i, ctx, &mut prepared.v02, call).await,
    }
}

/// Ask an instance that served a session whether it may serve another.
pub(crate) async fn run_recycle(live: &mut Live, idx: &HookIndices) -> wasmtime::Result<bool> {
    match idx {
        HookIndices::V01(i) => v01::recycle(live, i).await,
        HookIndices::V02(i) => v02::recycle(live, i).await,
    }
}

/// Run the plugin's `init` export, if it has one.
pub(crate) async fn run_init(
    live: &mut Live,
    idx: &HookIndices,
    config: &str,
) -> wasmtime::Result<Result<(), String>> {
    match idx {
        HookIndices::V01(i) => v01::init(live, i, config).await,
        HookIndices::V02(i) => v02::init(live, i, config).await,
    }
}
