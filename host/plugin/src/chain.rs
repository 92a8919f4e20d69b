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
use crate::context::{Credentials, EnvelopeAddress, Outcome, SessionContext};
use crate::convert;
use crate::generation::Generation;
use crate::hooks::{self, Call, Live, Returned};
use crate::load::{CallError, LoadedPlugin, Mode, OnError, WALL_GRACE, set_deadline};
use crate::message::MessageData;
use crate::verdict::{self, PluginReply, Verdict};

/// The chain's decision for one stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// The plugin whose verdict decided; none when every plugin passed.
    pub decided_by: Option<Arc<str>>,
    /// Header fields added by data-stage plugins (in chain order).
    pub headers: Vec<(String, String)>,
}

impl Decision {
    pub fn pass() -> Decision {
        Decision {
            verdict: Verdict::Pass,
            decided_by: None,
            headers: Vec::new(),
        }
    }
}

/// One session's view of a generation: its plugin instances.
pub struct SessionChain {
    generation: Arc<Generation>,
    session_id: Arc<str>,
    live: Vec<Option<Live>>,
}

impl Drop for SessionChain {
    fn drop(&mut self) {
        self.release();
        self.generation.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

fn failure_verdict(on_error: OnError) -> Verdict {
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

impl SessionChain {
    pub(crate) fn new(generation: Arc<Generation>, session_id: Arc<str>) -> SessionChain {
        let n = generation.plugins.len();
        SessionChain {
            generation,
            session_id,
            live: (0..n).map(|_| None).collect(),
        }
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

    pub async fn connect(&mut self, ctx: &SessionContext) -> Decision {
        self.run(ctx, Call::Connect).await
    }

    pub async fn helo(&mut self, ctx: &SessionContext, name: &str, extended: bool) -> Decision {
        self.run(ctx, Call::Helo { name, extended }).await
    }

    pub async fn auth(&mut self, ctx: &SessionContext, credentials: &Credentials) -> Decision {
        if !self.wants(Stage::Auth) {
            return Decision::pass();
        }
        let c = convert::credentials(credentials);
        self.run(ctx, Call::Auth(&c)).await
    }

    pub async fn mail_from(&mut self, ctx: &SessionContext, sender: &EnvelopeAddress) -> Decision {
        if !self.wants(Stage::MailFrom) {
            return Decision::pass();
        }
        let a = convert::address(sender);
        self.run(ctx, Call::MailFrom(&a)).await
    }

    pub async fn rcpt_to(&mut self, ctx: &SessionContext, rcpt: &EnvelopeAddress) -> Decision {
        if !self.wants(Stage::RcptTo) {
            return Decision::pass();
        }
        let a = convert::address(rcpt);
        self.run(ctx, Call::RcptTo(&a)).await
    }

    pub async fn data(&mut self, ctx: &SessionContext, message: &Arc<MessageData>) -> Decision {
        self.run(ctx, Call::Data(message)).await
    }

    pub async fn vrfy(&mut self, ctx: &SessionContext, argument: &str) -> Decision {
        self.run(ctx, Call::Vrfy(argument)).await
    }

    pub async fn expn(&mut self, ctx: &SessionContext, argument: &str) -> Decision {
        self.run(ctx, Call::Expn(argument)).await
    }

    /// Tell observers how a stage ended (results are ignored).
    pub async fn outcome(&mut self, ctx: &SessionContext, outcome: &Outcome) {
        if !self.wants(Stage::Outcome) {
            return;
        }
        let o = convert::outcome(outcome);
        self.run(ctx, Call::Outcome(&o)).await;
    }

    async fn call_one(
        &mut self,
        plugin: &LoadedPlugin,
        i: usize,
        session: &crate::bindings::types::Session,
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
            hooks::call(live, &plugin.idx, session, call),
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

    async fn run(&mut self, ctx: &SessionContext, call: Call<'_>) -> Decision {
        let stage = call.stage();
        let generation = self.generation.clone();
        let order = &generation.by_stage[stage as usize];
        if order.is_empty() {
            return Decision::pass();
        }
        let session = convert::session(ctx);
        let mut headers = Vec::new();
        for &i in order {
            let plugin = &generation.plugins[i];
            let started = Instant::now();
            let result = self.call_one(plugin, i, &session, &call).await;
            let stats = &plugin.stats.stages[stage as usize];
            stats.latency.observe(started.elapsed());
            let checked = result.and_then(|r| match r {
                Returned::Verdict(v) => verdict::validate(v)
                    .map(|v| (v, Vec::new()))
                    .map_err(|e| CallError::Invalid(e.to_string())),
                Returned::Data(d) => verdict::validate(d.verdict)
                    .and_then(|v| Ok((v, verdict::validate_headers(d.add_headers)?)))
                    .map_err(|e| CallError::Invalid(e.to_string())),
                Returned::Nothing => Ok((Verdict::Pass, Vec::new())),
            });
            let (verdict, added) = match checked {
                Ok(v) => v,
                Err(e) => {
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
                    if stage == Stage::Outcome {
                        continue;
                    }
                    (failure_verdict(plugin.spec.on_error), Vec::new())
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
                        .map(|r| format!("{} {}", r.code, r.text))
                        .unwrap_or_default();
                    tracing::info!(
                        plugin = %plugin.meta.name,
                        stage = stage.name(),
                        session = %self.session_id,
                        shadow_verdict = verdict.kind(),
                        reply = %reply,
                        "shadow plugin would have answered {}", verdict.kind()
                    );
                }
                continue;
            }
            if verdict.is_pass() {
                headers.extend(added);
                continue;
            }
            if matches!(verdict, Verdict::Accept | Verdict::AcceptWith(_)) {
                headers.extend(added);
            }
            return Decision {
                verdict,
                decided_by: Some(plugin.meta.name.clone()),
                headers,
            };
        }
        Decision {
            verdict: Verdict::Pass,
            decided_by: None,
            headers,
        }
    }
}
