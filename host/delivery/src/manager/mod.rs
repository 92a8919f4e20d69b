//! The queue manager: one task that owns the in-memory view of the queue and
//! decides what is delivered when. It learns of messages from the spool (every
//! commit, and a scan at start — so it resumes after a crash), replays their
//! journals, plans attempts when they are due (retry schedule), hands jobs to
//! workers within `max_concurrency` overall and `max_per_destination` per
//! destination, journals each job's outcomes as it ends (`progress`), and
//! finalizes each attempt (journal, bounces, removal). Queue
//! commands and shutdown arrive as events too, so no state is shared or locked.
//! Input: spool ids and files (verified by the spool), settings (trusted).

mod finalize;
mod job;
mod loading;
mod progress;
mod worker;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use postern_capability::DnsBackend;
use postern_spool::{Committed, QueueId, Spool, SpoolError};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::journal::Record;
use crate::now_ms;
use crate::outcome::{Diagnostic, RcptOutcome};
use crate::policy::{DeliveryPolicy, RouteChoice, facts_of};
use crate::route::Destination;
use crate::settings::Settings;
use crate::smtp::ClientCtx;
use crate::state::MessageState;
use crate::sts::StsCache;
use crate::tls::TlsClient;
use crate::tlsrpt::TlsReporter;
use crate::view::{self, QueueDetail, QueueEntry};
use finalize::Finalized;
pub use job::{Job, MAX_RCPTS};
use worker::WorkerCtx;

/// Messages being delivered at once, at most (the rest wait, like Postfix's
/// active queue limit), so a huge backlog does not become a huge job list.
const MAX_ACTIVE_MESSAGES: usize = 10_000;

pub(crate) enum Event {
    Committed(QueueId),
    Loaded(Box<MessageState>),
    /// With the error when the message is there but could not be read.
    LoadFailed(QueueId, Option<String>),
    JobDone {
        dest: Destination,
        id: QueueId,
        results: Vec<(usize, RcptOutcome)>,
        dest_failure: Option<Diagnostic>,
        next: oneshot::Sender<Option<Job>>,
    },
    /// The delivery policy judged a job drained from an unreachable
    /// destination (`job_done`).
    Judged {
        id: QueueId,
        results: Vec<(usize, RcptOutcome)>,
    },
    /// A finished job's records were journaled (or not: `error`).
    Recorded {
        id: QueueId,
        records: Vec<Record>,
        error: Option<String>,
    },
    Finalized(QueueId, Finalized),
    /// The delivery policy's routes for an attempt's pending recipients.
    Planned(QueueId, Vec<(usize, RouteChoice)>),
    /// Something outside changed (the policy became ready): look again.
    Wake,
    Flush(oneshot::Sender<usize>),
    Delete(QueueId, oneshot::Sender<Result<bool, String>>),
    /// Release a quarantined message (`Ok(false)`: not held).
    Release(QueueId, oneshot::Sender<Result<bool, String>>),
    /// The release was journaled.
    Released(QueueId, u64, oneshot::Sender<Result<bool, String>>),
    List(oneshot::Sender<Vec<QueueEntry>>),
    Show(
        QueueId,
        oneshot::Sender<Option<(MessageState, &'static str)>>,
    ),
    Stats(oneshot::Sender<QueueStats>),
    Reconfigure(Prepared),
    Shutdown(oneshot::Sender<()>),
}

/// New delivery settings, checked and ready (`QueueHandle::prepare`).
pub struct Prepared {
    settings: Arc<Settings>,
    tls: TlsClient,
    dns: Arc<dyn DnsBackend>,
}

/// Counters for `postern status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct QueueStats {
    pub messages: usize,
    pub active: usize,
    pub workers: usize,
    pub destinations: usize,
    pub enabled: bool,
}

enum Phase {
    Waiting,
    /// The delivery policy is choosing routes for an attempt.
    Planning,
    Running {
        /// Jobs not finished yet.
        outstanding: usize,
        /// Per-job journal writes in flight (see `progress`).
        writing: usize,
        /// Outcomes of this attempt not journaled yet.
        fresh: Vec<Record>,
        /// Outcomes of this attempt already journaled.
        written: Vec<Record>,
    },
    Finalizing,
}

struct Entry {
    state: MessageState,
    phase: Phase,
    delete: bool,
}

#[derive(Default)]
struct DestQueue {
    pending: VecDeque<Job>,
    active: usize,
}

/// Starts the queue manager.
pub struct QueueManager;

impl QueueManager {
    /// Subscribe to the spool's commits, scan the queue, and start delivering.
    /// Must be called inside a tokio runtime.
    /// `policy` decides routes, failed attempts and bounces where plugins
    /// do (`NoPolicy` leaves everything to the settings); no attempt starts
    /// before it is `ready` (`QueueHandle::wake` when it becomes so).
    pub fn start(
        spool: Arc<Spool>,
        dns: Arc<dyn DnsBackend>,
        settings: Settings,
        policy: Arc<dyn DeliveryPolicy>,
    ) -> Result<QueueHandle, String> {
        let tls = TlsClient::new(&settings)?;
        let commits = spool.subscribe();
        let initial = spool.list().map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut manager = Manager::new(spool.clone(), dns, Arc::new(settings), tls, tx.clone());
        manager.policy = policy;
        tracing::info!(queued = initial.len(), enabled = manager.settings.enabled,
            relayhost = ?manager.settings.relayhost.as_ref().map(|r| r.to_string()),
            tls = manager.settings.tls.name(), "queue manager started");
        manager.load_initial(initial);
        tokio::spawn(manager.tls_report.clone().run());
        tokio::spawn(manager.run(rx, commits));
        Ok(QueueHandle { tx, spool })
    }
}

/// A cheap handle to the running queue manager.
#[derive(Clone)]
pub struct QueueHandle {
    tx: mpsc::UnboundedSender<Event>,
    spool: Arc<Spool>,
}

impl QueueHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Event) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .map_err(|_| "the queue manager has stopped".to_string())?;
        rx.await
            .map_err(|_| "the queue manager has stopped".to_string())
    }

    /// Tell the manager about a committed message (the spool subscription does
    /// this already; duplicates are ignored).
    pub fn notify(&self, id: QueueId) {
        let _ = self.tx.send(Event::Committed(id));
    }

    /// Every known message, oldest first.
    pub async fn list(&self) -> Result<Vec<QueueEntry>, String> {
        self.ask(Event::List).await
    }

    /// One message in detail.
    pub async fn show(&self, id: &QueueId) -> Result<Option<QueueDetail>, String> {
        let Some((state, phase)) = self.ask(|tx| Event::Show(*id, tx)).await? else {
            return Ok(None);
        };
        let spool = self.spool.clone();
        let id = *id;
        let headers =
            tokio::task::spawn_blocking(move || crate::dsn::original_headers(&spool, &id))
                .await
                .map_err(|e| e.to_string())?;
        match headers {
            Ok(h) => Ok(Some(view::detail(&state, phase, &h))),
            Err(SpoolError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Look at the queue again (the delivery policy became ready).
    pub fn wake(&self) {
        let _ = self.tx.send(Event::Wake);
    }

    /// Make every waiting message due now; how many.
    pub async fn flush(&self) -> Result<usize, String> {
        self.ask(Event::Flush).await
    }

    /// Remove a message without a bounce (after its current attempt, if one runs).
    pub async fn delete(&self, id: &QueueId) -> Result<bool, String> {
        self.ask(|tx| Event::Delete(*id, tx)).await?
    }

    /// Release a quarantined message: journaled durably, then delivered like
    /// a fresh one. `Ok(false)` when no such message is held.
    pub async fn release(&self, id: &QueueId) -> Result<bool, String> {
        self.ask(|tx| Event::Release(*id, tx)).await?
    }

    pub async fn stats(&self) -> Result<QueueStats, String> {
        self.ask(Event::Stats).await
    }

    /// Check new settings and build what they need (TLS client), changing
    /// nothing yet: a reload prepares first and applies only once everything
    /// else of it is valid too.
    pub fn prepare(
        &self,
        settings: Settings,
        dns: Arc<dyn DnsBackend>,
    ) -> Result<Prepared, String> {
        let tls = TlsClient::new(&settings)?;
        Ok(Prepared {
            settings: Arc::new(settings),
            tls,
            dns,
        })
    }

    /// Use prepared settings (and resolver) for attempts started from now on.
    pub fn apply(&self, prepared: Prepared) {
        if self.tx.send(Event::Reconfigure(prepared)).is_err() {
            tracing::warn!("delivery settings not applied: the queue manager has stopped");
        }
    }

    /// Start no new deliveries and wait (up to `limit`) for those in flight; true
    /// when they all finished. One cut off is retried after the restart.
    pub async fn shutdown(&self, limit: Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, self.ask(Event::Shutdown)).await,
            Ok(Ok(()))
        )
    }
}

struct Manager {
    spool: Arc<Spool>,
    policy: Arc<dyn DeliveryPolicy>,
    dns: Arc<dyn DnsBackend>,
    settings: Arc<Settings>,
    tls: TlsClient,
    /// MTA-STS policies (RFC 8461) and TLS reports (RFC 8460), kept across
    /// reloads: a reload changes what is enforced, not what was learnt.
    sts: Arc<StsCache>,
    tls_report: Arc<TlsReporter>,
    entries: HashMap<QueueId, Entry>,
    /// (due time, id) of every `Waiting` entry.
    timers: BTreeSet<(u64, QueueId)>,
    dests: HashMap<Destination, DestQueue>,
    workers: usize,
    /// Entries in `Running` or `Finalizing`.
    running: usize,
    finalizing: usize,
    /// Questions to the delivery policy in flight off the manager's task:
    /// routes (`Event::Planned`) and judgements of drained jobs
    /// (`Event::Judged`).
    asking: usize,
    loading: HashSet<QueueId>,
    /// Failed loads so far of messages that could not be read.
    load_failures: HashMap<QueueId, u32>,
    /// (due time, id) of every load to try again.
    reloads: BTreeSet<(u64, QueueId)>,
    stopping: bool,
    waiters: Vec<oneshot::Sender<()>>,
    events: mpsc::UnboundedSender<Event>,
}

impl Manager {
    fn new(
        spool: Arc<Spool>,
        dns: Arc<dyn DnsBackend>,
        settings: Arc<Settings>,
        tls: TlsClient,
        events: mpsc::UnboundedSender<Event>,
    ) -> Manager {
        Manager {
            spool,
            policy: Arc::new(crate::policy::NoPolicy),
            dns,
            sts: Arc::new(StsCache::new(settings.mta_sts_cache.clone())),
            tls_report: Arc::new(TlsReporter::new(
                settings.tls_report_dir.clone(),
                settings.tls_report_interval,
                &settings.hostname,
            )),
            settings,
            tls,
            entries: HashMap::new(),
            timers: BTreeSet::new(),
            dests: HashMap::new(),
            workers: 0,
            running: 0,
            finalizing: 0,
            asking: 0,
            loading: HashSet::new(),
            load_failures: HashMap::new(),
            reloads: BTreeSet::new(),
            stopping: false,
            waiters: Vec::new(),
            events,
        }
    }

    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Event>,
        mut commits: mpsc::UnboundedReceiver<Committed>,
    ) {
        let mut commits_open = true;
        loop {
            crate::counters::set(&crate::counters::COUNTERS.queued, self.entries.len() as u64);
            crate::counters::set(&crate::counters::COUNTERS.active, self.running as u64);
            let wake = self.next_wake();
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => self.handle(ev),
                    None => return,
                },
                c = commits.recv(), if commits_open => match c {
                    Some(c) => self.committed(c),
                    None => commits_open = false,
                },
                _ = sleep_until(wake) => {}
            }
            self.run_reloads();
            self.run_due();
            self.dispatch();
            self.check_stopped();
        }
    }

    fn next_wake(&self) -> Option<u64> {
        if self.stopping {
            return None;
        }
        let due =
            if self.settings.enabled && self.running < MAX_ACTIVE_MESSAGES && self.policy.ready() {
                self.timers.first().map(|(at, _)| *at)
            } else {
                None
            };
        let reload = self.reloads.first().map(|(at, _)| *at);
        due.into_iter().chain(reload).min()
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Committed(id) => self.load(id),
            Event::Loaded(state) => self.loaded(*state),
            Event::LoadFailed(id, error) => self.load_failed(id, error),
            Event::JobDone {
                dest,
                id,
                results,
                dest_failure,
                next,
            } => self.job_done(dest, id, results, dest_failure, next),
            Event::Judged { id, results } => {
                self.asking = self.asking.saturating_sub(1);
                self.job_finished(id, results);
            }
            Event::Recorded { id, records, error } => self.recorded(id, records, error),
            Event::Finalized(id, outcome) => self.finalized(id, outcome),
            Event::Planned(id, choices) => {
                self.asking = self.asking.saturating_sub(1);
                self.planned(id, Some(&choices))
            }
            Event::Wake => {}
            Event::Flush(reply) => {
                let _ = reply.send(self.flush());
            }
            Event::Delete(id, reply) => self.delete(id, reply),
            Event::Release(id, reply) => self.release(id, reply),
            Event::Released(id, at_ms, reply) => {
                if let Some(e) = self.entries.get_mut(&id) {
                    e.state.apply(&Record::Released { at_ms });
                    if matches!(e.phase, Phase::Waiting) {
                        self.timers.insert((e.state.next_ms, id));
                    }
                    tracing::info!(queue_id = %id, "released from quarantine");
                }
                let _ = reply.send(Ok(true));
            }
            Event::List(reply) => {
                let mut list: Vec<(QueueId, QueueEntry)> = self
                    .entries
                    .iter()
                    .map(|(id, e)| (*id, view::entry(&e.state, self.phase_name(e))))
                    .collect();
                list.sort_by_key(|(id, _)| *id);
                let _ = reply.send(list.into_iter().map(|(_, e)| e).collect());
            }
            Event::Show(id, reply) => {
                let found = self
                    .entries
                    .get(&id)
                    .map(|e| (e.state.clone(), self.phase_name(e)));
                let _ = reply.send(found);
            }
            Event::Stats(reply) => {
                let _ = reply.send(QueueStats {
                    messages: self.entries.len(),
                    active: self.running,
                    workers: self.workers,
                    destinations: self.dests.len(),
                    enabled: self.settings.enabled,
                });
            }
            Event::Reconfigure(Prepared { settings, tls, dns }) => {
                if *settings != *self.settings {
                    tracing::info!(enabled = settings.enabled, "delivery settings changed");
                }
                self.settings = settings;
                self.tls = tls;
                self.dns = dns;
            }
            Event::Shutdown(reply) => {
                if !self.stopping {
                    tracing::info!(
                        workers = self.workers,
                        "queue manager stopping: no new deliveries"
                    );
                }
                self.stopping = true;
                self.waiters.push(reply);
            }
        }
    }

    fn phase_name(&self, e: &Entry) -> &'static str {
        match e.phase {
            Phase::Waiting => view::resting_phase(&e.state, self.settings.enabled),
            _ => "active",
        }
    }

    /// Start attempts of every due message.
    fn run_due(&mut self) {
        if self.stopping || !self.settings.enabled || !self.policy.ready() {
            return;
        }
        let now = now_ms();
        while self.running < MAX_ACTIVE_MESSAGES {
            let Some(&(at, id)) = self.timers.first() else {
                break;
            };
            if at > now {
                break;
            }
            self.timers.pop_first();
            self.start_attempt(id);
        }
    }

    fn start_attempt(&mut self, id: QueueId) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        self.running += 1;
        if !self.policy.routes() {
            self.planned(id, None);
            return;
        }
        // Plugins choose the routes (off the manager's task); the attempt
        // goes on when they have answered (`Event::Planned`).
        entry.phase = Phase::Planning;
        let facts = facts_of(&entry.state);
        let pending = entry.state.pending();
        let addresses: Vec<String> = pending
            .iter()
            .map(|&i| entry.state.rcpts[i].address.clone())
            .collect();
        let policy = self.policy.clone();
        let n = addresses.len();
        let question = async move { policy.route(&facts, &addresses).await };
        self.ask(question, move |asked| {
            let choices = match asked {
                Ok(c) if c.len() == n => c,
                other => {
                    let why = match other {
                        Ok(c) => format!("answered {} routes for {n} recipients", c.len()),
                        Err(e) => format!("failed: {e}"),
                    };
                    tracing::error!(queue_id = %id, "delivery policy {why}; deferring the attempt");
                    let d = Diagnostic::local(
                        postern_protocol::EnhancedCode::new(4, 3, 0),
                        format!("the delivery policy {why}"),
                    );
                    vec![RouteChoice::Fail(d); n]
                }
            };
            Event::Planned(id, pending.into_iter().zip(choices).collect())
        });
    }

    /// Ask the delivery policy off the manager's task: `question` runs in a
    /// task of its own (so that a panic in it still answers), and `answer`
    /// turns what came of it into the event the manager gets. Counted in
    /// `asking` until that event.
    fn ask<T: Send + 'static>(
        &mut self,
        question: impl Future<Output = T> + Send + 'static,
        answer: impl FnOnce(Result<T, tokio::task::JoinError>) -> Event + Send + 'static,
    ) {
        let events = self.events.clone();
        self.asking += 1;
        tokio::spawn(async move {
            let asked = tokio::spawn(question).await;
            let _ = events.send(answer(asked));
        });
    }

    /// Plan the attempt of `id` (counted in `running` already) and queue its
    /// jobs.
    fn planned(&mut self, id: QueueId, choices: Option<&[(usize, RouteChoice)]>) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        if self.stopping && !entry.delete {
            // Shutting down: no new jobs; the attempt starts again after
            // the restart.
            entry.phase = Phase::Waiting;
            self.running = self.running.saturating_sub(1);
            self.timers.insert((entry.state.next_ms, id));
            return;
        }
        let (jobs, known) = if entry.delete {
            (Vec::new(), Vec::new())
        } else {
            job::plan(&entry.state, &self.settings, choices)
        };
        // Unroutable, or refused or deferred by a route-hook: decided while
        // planning, before any delivery.
        worker::log_results(&id, &entry.state.envelope, &"planning", &known);
        entry.phase = Phase::Running {
            outstanding: jobs.len(),
            writing: 0,
            fresh: Record::of_outcomes(known, now_ms()),
            written: Vec::new(),
        };
        let none = jobs.is_empty();
        for (dest, job) in jobs {
            self.dests.entry(dest).or_default().pending.push_back(job);
        }
        if none {
            self.finish_if_done(id);
        }
    }

    /// Spawn workers while limits allow.
    fn dispatch(&mut self) {
        if self.stopping || !self.settings.enabled {
            return;
        }
        let max_total = self.settings.max_concurrency.max(1);
        let max_dest = self.settings.max_per_destination.max(1);
        if self.workers >= max_total {
            return;
        }
        for (dest, q) in self.dests.iter_mut() {
            while q.active < max_dest && self.workers < max_total {
                let Some(job) = q.pending.pop_front() else {
                    break;
                };
                q.active += 1;
                self.workers += 1;
                let ctx = WorkerCtx {
                    spool: self.spool.clone(),
                    policy: self.policy.clone(),
                    dns: self.dns.clone(),
                    sts: self.sts.clone(),
                    tls_report: self.tls_report.clone(),
                    client: ClientCtx {
                        settings: self.settings.clone(),
                        tls: self.tls.clone(),
                    },
                };
                tokio::spawn(worker::run(ctx, dest.clone(), job, self.events.clone()));
            }
            if self.workers >= max_total {
                break;
            }
        }
    }

    fn job_done(
        &mut self,
        dest: Destination,
        id: QueueId,
        results: Vec<(usize, RcptOutcome)>,
        dest_failure: Option<Diagnostic>,
        next: oneshot::Sender<Option<Job>>,
    ) {
        self.job_finished(id, results);
        let mut drained = Vec::new();
        if let Some(diag) = &dest_failure
            && let Some(q) = self.dests.get_mut(&dest)
        {
            // The destination is unreachable: the same answer for its queued jobs.
            drained.extend(q.pending.drain(..));
            if !drained.is_empty() {
                tracing::info!(%dest, jobs = drained.len(), reason = %diag,
                    "destination unreachable; deferring its queued messages");
            }
            let outcome = RcptOutcome::from_diagnostic(diag.clone());
            for job in drained {
                let results: Vec<_> = job.rcpts.iter().map(|&i| (i, outcome.clone())).collect();
                if !self.policy.judges() {
                    worker::log_results(&job.id, &job.envelope, &dest, &results);
                    self.job_finished(job.id, results);
                    continue;
                }
                // The delivery-hook judges these as it would an attempted
                // job's, off the manager's task.
                // (A panic in the policy leaves the results as they were.)
                let (policy, dest) = (self.policy.clone(), dest.clone());
                let (id, unjudged) = (job.id, results.clone());
                let question = async move { worker::judged(&*policy, &dest, &job, results).await };
                self.ask(question, move |asked| {
                    let results = asked.unwrap_or_else(|e| {
                        tracing::error!(queue_id = %id, "delivery policy failed judging drained jobs: {e}");
                        unjudged
                    });
                    Event::Judged { id, results }
                });
            }
        }
        let more = !self.stopping
            && self.settings.enabled
            && dest_failure.is_none()
            && !self.others_starved(&dest);
        let q = self.dests.entry(dest.clone()).or_default();
        let handed = if more { q.pending.pop_front() } else { None };
        let mut released = handed.is_none();
        if let Err(Some(job)) = next.send(handed) {
            // The worker is gone: its job waits for another, and its slots are free.
            q.pending.push_front(job);
            released = true;
        }
        if released {
            q.active = q.active.saturating_sub(1);
            self.workers = self.workers.saturating_sub(1);
        }
        if q.active == 0 && q.pending.is_empty() {
            self.dests.remove(&dest);
        }
    }

    /// All connection slots are taken and another destination waits for one: a
    /// worker finishing a job then gives its slot up instead of taking the next
    /// job of its own destination (round-robin between destinations).
    fn others_starved(&self, dest: &Destination) -> bool {
        let max_dest = self.settings.max_per_destination.max(1);
        self.workers >= self.settings.max_concurrency.max(1)
            && self
                .dests
                .iter()
                .any(|(d, q)| d != dest && !q.pending.is_empty() && q.active < max_dest)
    }

    fn finalize(&mut self, id: QueueId) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let (fresh, written) = match std::mem::replace(&mut entry.phase, Phase::Finalizing) {
            Phase::Running { fresh, written, .. } => (fresh, written),
            other => {
                entry.phase = other;
                return;
            }
        };
        self.finalizing += 1;
        let spool = self.spool.clone();
        let settings = self.settings.clone();
        let state = entry.state.clone();
        let delete = entry.delete;
        let events = self.events.clone();
        let policy = self.policy.clone();
        tokio::spawn(async move {
            let outcome =
                finalize::run(spool, settings, &*policy, state, fresh, written, delete).await;
            let _ = events.send(Event::Finalized(id, outcome));
        });
    }

    fn finalized(&mut self, id: QueueId, outcome: Finalized) {
        self.finalizing = self.finalizing.saturating_sub(1);
        self.running = self.running.saturating_sub(1);
        let Some(mut entry) = self.entries.remove(&id) else {
            return;
        };
        let state = match outcome {
            Finalized::Removed => return,
            Finalized::Requeue(state) => *state,
            Finalized::Failed(state, error) => {
                tracing::error!(queue_id = %id, %error, "delivery state not saved; will retry");
                *state
            }
        };
        if entry.delete {
            self.remove_now(id, None);
            return;
        }
        self.timers.insert((state.next_ms, id));
        entry.state = state;
        entry.phase = Phase::Waiting;
        self.entries.insert(id, entry);
    }

    fn release(&mut self, id: QueueId, reply: oneshot::Sender<Result<bool, String>>) {
        match self.entries.get(&id) {
            Some(e) if e.state.is_held() => {}
            _ => {
                let _ = reply.send(Ok(false));
                return;
            }
        }
        let spool = self.spool.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let at_ms = now_ms();
            match crate::journal::append(&spool, &id, &[Record::Released { at_ms }]).await {
                Ok(()) => {
                    let _ = events.send(Event::Released(id, at_ms, reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        });
    }

    fn flush(&mut self) -> usize {
        let mut n = 0;
        for (id, e) in self.entries.iter_mut() {
            if matches!(e.phase, Phase::Waiting) && !e.state.is_held() {
                self.timers.remove(&(e.state.next_ms, *id));
                e.state.next_ms = 0;
                self.timers.insert((0, *id));
                n += 1;
            }
        }
        tracing::info!(messages = n, "queue flush");
        n
    }

    fn delete(&mut self, id: QueueId, reply: oneshot::Sender<Result<bool, String>>) {
        let Some(entry) = self.entries.get_mut(&id) else {
            // Not known (yet): remove whatever the spool has.
            self.remove_now(id, Some(reply));
            return;
        };
        if matches!(entry.phase, Phase::Waiting) {
            self.timers.remove(&(entry.state.next_ms, id));
            self.entries.remove(&id);
            self.remove_now(id, Some(reply));
            return;
        }
        // An attempt is running: drop its queued jobs; the rest ends soon.
        entry.delete = true;
        let mut dropped = 0;
        for q in self.dests.values_mut() {
            let before = q.pending.len();
            q.pending.retain(|j| j.id != id);
            dropped += before - q.pending.len();
        }
        for _ in 0..dropped {
            self.job_finished(id, Vec::new());
        }
        let _ = reply.send(Ok(true));
    }

    fn remove_now(&self, id: QueueId, reply: Option<oneshot::Sender<Result<bool, String>>>) {
        let spool = self.spool.clone();
        tokio::spawn(async move {
            let result = spool.remove(&id).await.map_err(|e| e.to_string());
            if let Ok(true) = result {
                tracing::info!(queue_id = %id, "removed by queue delete");
            }
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        });
    }

    fn check_stopped(&mut self) {
        if self.stopping && self.workers == 0 && self.finalizing == 0 && self.asking == 0 {
            if !self.waiters.is_empty() {
                // What this period counted so far, so a restart loses none of it.
                self.tls_report.flush(now_ms(), true);
            }
            for w in self.waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }
}

async fn sleep_until(wake: Option<u64>) {
    match wake {
        Some(at) => {
            let now = now_ms();
            if at > now {
                tokio::time::sleep(Duration::from_millis(at - now)).await;
            }
        }
        None => std::future::pending().await,
    }
}
