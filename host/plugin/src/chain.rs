//! The one place that calls plugins: runs a stage through the generation's
//! chain in configuration order, first non-`pass` verdict wins. Each plugin
//! gets an instance per session on first use: a fresh one, or for plugins
//! that export `recycle` one that served an earlier session and agreed to be
//! reused (it goes back to the plugin's pool when the session ends); a plugin that
//! traps, times out, exhausts memory or answers an invalid reply is logged
//! with its name and stage, its instance is discarded, and its `on_error`
//! setting decides the stage. Shadow-mode plugins are run, logged and
//! counted, never enforced.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::Stage;
use crate::breaker::{Admit, BreakerState, Transition};
use crate::context::{MessageChanges, Outcome, SessionContext};
use crate::delivery::{Attempt, BounceInfo, DeliveryAnswer, QueuedMessage};
use crate::generation::{Generation, Member};
use crate::hooks::{self, Ask, Call, Contract, DataReturn, Live, Prepared, Returned};
use crate::load::{CallError, LoadedPlugin, Mode, OnError, WALL_GRACE, set_deadline};
use crate::message::MessageData;
use crate::stats::cpu_timed;
use crate::verdict::{self, PluginReply, Verdict};

/// The chain's decision for one stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// The plugin whose verdict decided; none when every plugin passed.
    pub decided_by: Option<Arc<str>>,
    /// Header fields added by data-stage plugins (in chain order).
    pub headers: Vec<(String, String)>,
    /// Envelope and header changes and quarantine asked for by data-stage
    /// plugins (0.2), in chain order; for an accepted message only.
    pub changes: MessageChanges,
    /// The route or decision of a delivery-side stage, when the deciding
    /// plugin gave one (its verdict is then `accept`).
    pub delivery: Option<DeliveryAnswer>,
}

impl Decision {
    /// No plugin had an opinion: the host's default decides.
    pub fn pass() -> Decision {
        Decision::default()
    }
}

/// The session state a stage call takes: shared (`Arc`, what the server
/// keeps, lent to plugins without copying) or owned (tests and tools; copied
/// into an `Arc` for the call).
pub trait StageContext {
    fn shared(&self) -> std::borrow::Cow<'_, Arc<SessionContext>>;
}

impl StageContext for Arc<SessionContext> {
    fn shared(&self) -> std::borrow::Cow<'_, Arc<SessionContext>> {
        std::borrow::Cow::Borrowed(self)
    }
}

impl StageContext for SessionContext {
    fn shared(&self) -> std::borrow::Cow<'_, Arc<SessionContext>> {
        std::borrow::Cow::Owned(Arc::new(self.clone()))
    }
}

/// Most outcomes 0.2 observers get in one call.
pub const MAX_OUTCOME_BATCH: usize = 64;

/// One session's view of a generation: its plugin instances.
pub struct SessionChain {
    generation: Arc<Generation>,
    session_id: Arc<str>,
    live: Vec<Option<Live>>,
    /// Outcomes waiting for the 0.2 observers, and whether the transaction
    /// they belong to ended (the batch is due).
    pending: Vec<Outcome>,
    batch_due: bool,
    /// Which contract versions observe outcomes in this generation.
    observers: [bool; 2],
    /// The session's recording, when it is one of the recorded sessions.
    recording: Option<crate::record::Recording>,
    /// Its state with each milter of the generation.
    milters: Vec<crate::milter::MilterSession>,
}

impl Drop for SessionChain {
    fn drop(&mut self) {
        if let Some(r) = self.recording.take() {
            r.finish();
        }
        self.release();
        self.generation.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) fn failure_verdict(on_error: OnError) -> Verdict {
    match on_error {
        OnError::Tempfail => Verdict::Defer(PluginReply {
            code: 451,
            enhanced: Some("4.3.0".into()),
            text: "Temporary policy failure, please try again later".into(),
        }),
        OnError::FailOpen => Verdict::Pass,
        OnError::FailClosed => Verdict::Reject(PluginReply {
            code: 554,
            enhanced: Some("5.7.0".into()),
            text: "Policy check failed".into(),
        }),
    }
}

/// A chain member's (plugin's or milter's) answer: what it adds or changes
/// is kept when it lets the stage go on or accepts; anything but `pass`
/// decides the stage (`Some`), counted in the generation's health.
fn settle(
    verdict: Verdict,
    mut added: DataReturn,
    by: Arc<str>,
    health: &crate::generation::HealthCounters,
    headers: &mut Vec<(String, String)>,
    changes: &mut MessageChanges,
) -> Option<Decision> {
    if matches!(
        verdict,
        Verdict::Pass | Verdict::Accept | Verdict::AcceptWith(_)
    ) {
        headers.extend(std::mem::take(&mut added.add_headers));
        changes.extend(std::mem::take(&mut added.changes));
    }
    if verdict.is_pass() {
        return None;
    }
    if let Some(k) = crate::stats::VERDICT_KINDS
        .iter()
        .position(|k| *k == verdict.kind())
    {
        health.verdicts[k].fetch_add(1, Ordering::Relaxed);
    }
    Some(Decision {
        verdict,
        decided_by: Some(by),
        headers: std::mem::take(headers),
        changes: std::mem::take(changes),
        delivery: added.delivery,
    })
}

/// Stages whose plugin failures are skipped instead of applying
/// `on_error`: observers cannot decide anything, a failed delivery-result
/// judge leaves the host's own judgement, and a failed bounce screen lets
/// the bounce go (a broken filter must not lose one).
fn ignores_failures(stage: Stage) -> bool {
    matches!(
        stage,
        Stage::Outcome | Stage::DeliveryResult | Stage::Bounce
    )
}

/// What a failed plugin's stage becomes: its `on_error`, except at `route`,
/// where it always defers the recipient (a `fail-closed` meant for SMTP
/// stages must not fail queued mail for good).
fn failure_of(plugin: &LoadedPlugin, stage: Stage) -> Verdict {
    match stage {
        Stage::Route => failure_verdict(OnError::Tempfail),
        _ => failure_verdict(plugin.spec.on_error),
    }
}

/// Log and count a breaker's change of state.
fn breaker_changed(plugin: &LoadedPlugin, t: &Transition) {
    let stats = &plugin.stats;
    stats.breaker_state.store(t.to.gauge(), Ordering::Relaxed);
    match t.to {
        BreakerState::Open => {
            stats.breaker_opened.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                plugin = %plugin.meta.name,
                breaker = t.to.name(),
                calls = t.calls,
                failures = t.failures,
                cool_down_ms = plugin.spec.breaker.cool_down.as_millis() as u64,
                on_error = ?plugin.spec.on_error,
                "circuit breaker opened: not calling the plugin for the cool-down, its on_error applies"
            );
        }
        BreakerState::HalfOpen => tracing::info!(
            plugin = %plugin.meta.name,
            breaker = t.to.name(),
            "circuit breaker half-open: one probe call"
        ),
        BreakerState::Closed => tracing::info!(
            plugin = %plugin.meta.name,
            breaker = t.to.name(),
            "circuit breaker closed: the probe call succeeded"
        ),
    }
}

impl SessionChain {
    pub(crate) fn new(generation: Arc<Generation>, session_id: Arc<str>) -> SessionChain {
        let n = generation.plugins.len();
        let mut observers = [false; 2];
        for m in &generation.by_stage[Stage::Outcome as usize] {
            if let Member::Plugin(i) = *m {
                observers[generation.plugins[i].idx.contract() as usize] = true;
            }
        }
        let milters = (0..generation.milters.len())
            .map(|_| crate::milter::MilterSession::default())
            .collect();
        SessionChain {
            generation,
            session_id,
            live: (0..n).map(|_| None).collect(),
            milters,
            pending: Vec::new(),
            batch_due: false,
            observers,
            recording: None,
        }
    }

    /// Record this session's stage calls (their state, argument and
    /// decision; message bodies up to `max_body` bytes, no passwords) and
    /// hand the recording to `sink` when the session ends.
    pub fn record(&mut self, sink: Arc<dyn crate::record::RecordSink>, max_body: usize) {
        self.recording = Some(crate::record::Recording::new(
            sink,
            max_body,
            &self.session_id,
            self.generation.id,
        ));
    }

    pub fn generation(&self) -> &Arc<Generation> {
        &self.generation
    }

    /// Whether any plugin hooks `stage` (lets the session skip building
    /// arguments nobody reads).
    pub fn wants(&self, stage: Stage) -> bool {
        self.generation.hooks(stage)
    }

    /// Give every live instance back (e.g. while the session idles, and at
    /// the end): reusable ones to their plugin's pool, the others dropped.
    /// The next stage call takes another.
    pub fn release(&mut self) {
        for (i, l) in self.live.iter_mut().enumerate() {
            if let Some(live) = l.take() {
                self.generation.plugins[i].give_back(live);
            }
        }
    }

    /// Number of plugin instances this session holds.
    pub fn live_instances(&self) -> usize {
        self.live.iter().filter(|l| l.is_some()).count()
    }

    /// Run an SMTP stage through the chain: a session's one way in.
    pub async fn ask(&mut self, ctx: &impl StageContext, ask: Ask<'_>) -> Decision {
        self.run(&ctx.shared(), Call::Smtp(ask), None).await
    }

    /// Delivery side: where `recipient` of `message` goes. The decision's
    /// verdict is `pass` (the host routes it), `reject`/`defer` (refuse or
    /// defer it with the reply) or `accept` with the route in `delivery`.
    pub async fn route(
        &mut self,
        ctx: &impl StageContext,
        message: &QueuedMessage,
        recipient: &str,
    ) -> Decision {
        self.run(&ctx.shared(), Call::Route { message, recipient }, None)
            .await
    }

    /// Delivery side: what a failed attempt means (`pass`: the host's
    /// judgement; `accept` with the decision in `delivery`).
    pub async fn delivery_result(
        &mut self,
        ctx: &impl StageContext,
        message: &QueuedMessage,
        attempt: &Attempt,
    ) -> Decision {
        self.run(
            &ctx.shared(),
            Call::DeliveryResult { message, attempt },
            None,
        )
        .await
    }

    /// Delivery side: whether a generated bounce is sent (`pass`/`accept`),
    /// refused (`reject`/`disconnect`) or held (`defer`).
    pub async fn bounce(
        &mut self,
        ctx: &impl StageContext,
        bounce: &BounceInfo,
        report: &Arc<MessageData>,
    ) -> Decision {
        self.run(&ctx.shared(), Call::Bounce { bounce, report }, None)
            .await
    }

    /// Record how a stage ended: 0.1 observers are told now (one call per
    /// outcome, as 0.1 promised); 0.2 observers get it in the next batch
    /// (`deliver_outcomes`).
    pub async fn outcome(&mut self, ctx: &Arc<SessionContext>, outcome: Outcome) {
        if self.observers[Contract::V01 as usize] {
            let one = std::slice::from_ref(&outcome);
            self.run(ctx, Call::Outcomes(one), Some(Contract::V01))
                .await;
        }
        if self.observers[Contract::V02 as usize] {
            self.pending.push(outcome);
        }
    }

    /// The transaction ended: the outcomes recorded so far form a batch.
    pub fn close_batch(&mut self) {
        self.batch_due = !self.pending.is_empty();
    }

    /// Whether a batch of outcomes should be delivered now (its transaction
    /// ended, or it is full).
    pub fn batch_ready(&self) -> bool {
        self.batch_due || self.pending.len() >= MAX_OUTCOME_BATCH
    }

    /// Whether recorded outcomes wait for the 0.2 observers.
    pub fn outcomes_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Hand the recorded outcomes to the 0.2 observers (in batches of at
    /// most `MAX_OUTCOME_BATCH`). Their results cannot change anything.
    pub async fn deliver_outcomes(&mut self, ctx: &Arc<SessionContext>) {
        self.batch_due = false;
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        for batch in pending.chunks(MAX_OUTCOME_BATCH) {
            self.run(ctx, Call::Outcomes(batch), Some(Contract::V02))
                .await;
        }
    }

    async fn call_one(
        &mut self,
        plugin: &LoadedPlugin,
        i: usize,
        ctx: &Arc<SessionContext>,
        prepared: &mut Prepared,
        call: &Call<'_>,
    ) -> Result<Returned, CallError> {
        if self.live[i].as_ref().is_some_and(|l| l.busy) {
            // A call on it was abandoned (its future dropped): unknown state.
            self.live[i] = None;
        }
        if self.live[i].is_none() {
            self.live[i] = Some(self.generation.checkout(i, &self.session_id).await?);
        }
        let Some(live) = self.live[i].as_mut() else {
            return Err(CallError::Instantiate("instance vanished".into()));
        };
        let timeout = plugin.spec.timeout;
        set_deadline(&mut live.store, timeout);
        live.busy = true;
        match tokio::time::timeout(
            timeout + WALL_GRACE,
            hooks::call(live, &plugin.idx, ctx, prepared, call),
        )
        .await
        {
            Ok(Ok(r)) => {
                live.busy = false;
                Ok(r)
            }
            Ok(Err(e)) => Err(CallError::classify(e)),
            Err(_) => Err(CallError::Timeout),
        }
    }

    /// Run a stage through the chain, and record it when the session is
    /// recorded.
    async fn run(
        &mut self,
        ctx: &Arc<SessionContext>,
        call: Call<'_>,
        only: Option<Contract>,
    ) -> Decision {
        let d = self.run_chain(ctx, &call, only).await;
        if let Some(r) = &mut self.recording {
            r.push(ctx, &call, &d);
        }
        d
    }

    /// Run a stage through the chain (only the plugins of one contract
    /// version when `only` says so: outcomes reach 0.1 and 0.2 observers at
    /// different times).
    async fn run_chain(
        &mut self,
        ctx: &Arc<SessionContext>,
        call: &Call<'_>,
        only: Option<Contract>,
    ) -> Decision {
        let stage = call.stage();
        let generation = self.generation.clone();
        let order = &generation.by_stage[stage as usize];
        if order.is_empty() {
            return Decision::pass();
        }
        let mut prepared = Prepared::default();
        let mut headers = Vec::new();
        let mut changes = MessageChanges::default();
        for &member in order {
            let i = match member {
                Member::Plugin(i) => i,
                Member::Milter(j) => {
                    let spec = &generation.milters[j];
                    let started = Instant::now();
                    generation.health.calls.fetch_add(1, Ordering::Relaxed);
                    // Its changes are checked as it returns them.
                    let answer = self.milters[j].call(spec, ctx, call).await;
                    let failed = answer.is_err();
                    let (verdict, added) = answer.unwrap_or_else(|e| {
                        generation.health.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            milter = %spec.name,
                            stage = stage.name(),
                            session = %self.session_id,
                            on_error = ?spec.on_error,
                            "milter failed: {e}"
                        );
                        (failure_verdict(spec.on_error), DataReturn::default())
                    });
                    crate::milter::observe(&spec.name, &verdict, started.elapsed(), failed);
                    let by: Arc<str> = spec.name.as_str().into();
                    match settle(
                        verdict,
                        added,
                        by,
                        &generation.health,
                        &mut headers,
                        &mut changes,
                    ) {
                        Some(d) => return d,
                        None => continue,
                    }
                }
            };
            let plugin = &generation.plugins[i];
            if only.is_some_and(|c| c != plugin.idx.contract()) {
                continue;
            }
            let started = Instant::now();
            let (admit, probing) = plugin.breaker.admit(started);
            if let Some(t) = probing {
                breaker_changed(plugin, &t);
            }
            let health = &generation.health;
            health.calls.fetch_add(1, Ordering::Relaxed);
            let result = if admit == Admit::Skip {
                plugin.stats.breaker_skipped.fetch_add(1, Ordering::Relaxed);
                Err(CallError::BreakerOpen)
            } else {
                let (r, cpu) = cpu_timed(self.call_one(plugin, i, ctx, &mut prepared, call)).await;
                let st = &plugin.stats.stages[stage as usize];
                st.latency.observe(started.elapsed());
                st.cpu.observe(cpu);
                r
            };
            let checked = result.and_then(|r| {
                match r {
                    Returned::Verdict(v) => {
                        verdict::validate(v).map(|v| (v, DataReturn::default()))
                    }
                    Returned::Data(d) => verdict::validate(d.verdict.clone())
                        .and_then(|v| Ok((v, verdict::validate_data(d)?))),
                    Returned::Nothing => Ok((Verdict::Pass, DataReturn::default())),
                }
                .map_err(|e| CallError::Invalid(e.to_string()))
            });
            if let Some(t) = plugin
                .breaker
                .record(admit, checked.is_ok(), Instant::now())
            {
                breaker_changed(plugin, &t);
            }
            let (verdict, added) = match checked {
                Ok(v) => v,
                Err(CallError::BreakerOpen) => {
                    health.failures.fetch_add(1, Ordering::Relaxed);
                    if ignores_failures(stage) {
                        continue;
                    }
                    (failure_of(plugin, stage), DataReturn::default())
                }
                Err(e) => {
                    health.failures.fetch_add(1, Ordering::Relaxed);
                    self.live[i] = None;
                    plugin.stats.error(stage, e.kind());
                    tracing::warn!(
                        plugin = %plugin.meta.name,
                        stage = stage.name(),
                        session = %self.session_id,
                        error_kind = e.kind(),
                        on_error = ?plugin.spec.on_error,
                        "plugin {e}"
                    );
                    if ignores_failures(stage) {
                        continue;
                    }
                    (failure_of(plugin, stage), DataReturn::default())
                }
            };
            if stage == Stage::Outcome {
                continue;
            }
            let shadow = plugin.spec.mode == Mode::Shadow;
            plugin.stats.verdict(stage, verdict.kind(), shadow);
            if shadow {
                if !verdict.is_pass() {
                    let reply = verdict
                        .reply()
                        .map(|r| match &r.enhanced {
                            Some(e) => format!("{} {e} {}", r.code, r.text),
                            None => format!("{} {}", r.code, r.text),
                        })
                        .unwrap_or_default();
                    tracing::info!(
                        plugin = %plugin.meta.name,
                        stage = stage.name(),
                        session = %self.session_id,
                        shadow_verdict = verdict.kind(),
                        reply = %reply,
                        answer = ?added.delivery,
                        "shadow plugin would have answered {}", verdict.kind()
                    );
                }
                continue;
            }
            let by = plugin.meta.name.clone();
            if let Some(d) = settle(verdict, added, by, health, &mut headers, &mut changes) {
                return d;
            }
        }
        Decision {
            verdict: Verdict::Pass,
            decided_by: None,
            headers,
            changes,
            delivery: None,
        }
    }
}
