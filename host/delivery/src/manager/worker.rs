//! Delivery workers: one task per busy destination slot. A worker takes jobs for its
//! destination from the queue manager one after another — for SMTP over one reused
//! connection — and reports every recipient's outcome back. When it cannot reach
//! the destination at all it says so, and the manager defers that destination's
//! other queued jobs instead of trying each one. Input: jobs from the manager,
//! messages from the spool, everything remote through `smtp` and `mx`.

use std::sync::Arc;

use postern_capability::DnsBackend;
use postern_spool::{Spool, SpoolError};
use tokio::sync::{mpsc, oneshot};

use super::Event;
use super::job::Job;
use crate::outcome::{Diagnostic, Handover, RcptOutcome};
use crate::policy::{DeliveryPolicy, facts, judge_results};
use crate::route::Destination;
use crate::settings::{Settings, TlsPolicy};
use crate::smtp::content::{self, Check, Content};
use crate::smtp::{ClientCtx, Outgoing, Report, Session, Stale, TlsPlan};
use crate::sts::{Found, Mode, StsCache};
use crate::tlsrpt::{Applied, ResultType, TlsReporter};
use crate::{mailbox, maildir, mx};
use postern_protocol::EnhancedCode;

/// What every worker needs.
#[derive(Clone)]
pub(crate) struct WorkerCtx {
    pub spool: Arc<Spool>,
    pub policy: Arc<dyn DeliveryPolicy>,
    pub dns: Arc<dyn DnsBackend>,
    pub sts: Arc<StsCache>,
    pub tls_report: Arc<TlsReporter>,
    pub client: ClientCtx,
}

impl WorkerCtx {
    fn settings(&self) -> &Arc<Settings> {
        &self.client.settings
    }
}

/// Run jobs for `dest` until the manager has none left for us.
pub(crate) async fn run(
    ctx: WorkerCtx,
    dest: Destination,
    mut job: Job,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut session: Option<Session> = None;
    loop {
        let (results, dest_failure) = match &dest {
            Destination::Local => (local_job(&ctx, &job).await, None),
            _ => smtp_job(&ctx, &dest, &job, &mut session).await,
        };
        let results = judged(&*ctx.policy, &dest, &job, results).await;
        let (tx, rx) = oneshot::channel();
        let done = Event::JobDone {
            dest: dest.clone(),
            id: job.id,
            results,
            dest_failure,
            next: tx,
        };
        if events.send(done).is_err() {
            break;
        }
        match rx.await {
            Ok(Some(next)) => job = next,
            _ => break,
        }
    }
    if let Some(s) = session {
        s.quit().await;
    }
}

/// A job's results as the delivery policy judges them, logged one line
/// per recipient.
pub(super) async fn judged(
    policy: &dyn DeliveryPolicy,
    dest: &Destination,
    job: &Job,
    mut results: Vec<(usize, RcptOutcome)>,
) -> Vec<(usize, RcptOutcome)> {
    if policy.judges() {
        let facts = facts(&job.id, &job.envelope, job.size, job.attempts);
        let env = &job.envelope;
        let address = |i: usize| {
            env.recipients
                .get(i)
                .map(|r| r.address.clone())
                .unwrap_or_default()
        };
        judge_results(policy, &facts, address, &mut results).await;
    }
    log_results(&job.id, &job.envelope, dest, &results);
    results
}

/// One log line per recipient outcome (`dest`: where it went, or "planning"
/// for one decided before any delivery).
pub(super) fn log_results(
    id: &postern_spool::QueueId,
    envelope: &postern_spool::Envelope,
    dest: &dyn std::fmt::Display,
    results: &[(usize, RcptOutcome)],
) {
    for (i, outcome) in results {
        let to = envelope
            .recipients
            .get(*i)
            .map(|r| r.address.as_str())
            .unwrap_or("?");
        match outcome {
            RcptOutcome::Delivered(handover, detail) => {
                let handover = handover.token();
                tracing::info!(queue_id = %id, to, %dest, handover, %detail, "delivered")
            }
            RcptOutcome::Deferred(d) => {
                tracing::info!(queue_id = %id, to, %dest, status = %d.status, reason = %d, "deferred")
            }
            RcptOutcome::Failed(d) => {
                tracing::info!(queue_id = %id, to, %dest, status = %d.status, reason = %d, "failed")
            }
            RcptOutcome::Suppressed(d) => {
                tracing::info!(queue_id = %id, to, %dest, status = %d.status, reason = %d,
                    "failed; no bounce (plugin)")
            }
        }
    }
}

fn all(job: &Job, outcome: RcptOutcome) -> Vec<(usize, RcptOutcome)> {
    job.rcpts.iter().map(|&i| (i, outcome.clone())).collect()
}

fn vanished(e: &SpoolError) -> RcptOutcome {
    RcptOutcome::Deferred(Diagnostic::local(
        EnhancedCode::new(4, 3, 0),
        format!("cannot read the queued message: {e}"),
    ))
}

/// Maildir delivery of every recipient of the job (on the blocking pool).
async fn local_job(ctx: &WorkerCtx, job: &Job) -> Vec<(usize, RcptOutcome)> {
    let spool = ctx.spool.clone();
    let settings = ctx.settings().clone();
    let job2 = job.clone();
    let result = tokio::task::spawn_blocking(move || {
        let env = &job2.envelope;
        job2.rcpts
            .iter()
            .map(|&i| {
                let address = &env.recipients[i].address;
                let mb = match mailbox::local_mailbox(address, &settings) {
                    Ok(mb) => mb,
                    Err(d) => return (i, RcptOutcome::from_diagnostic(d)),
                };
                let mut reader = match spool.open_message(&job2.id).map(|m| m.reader()) {
                    Ok(r) => r,
                    Err(e) => return (i, vanished(&e)),
                };
                let outcome =
                    match maildir::deliver(&mb, &settings.hostname, &env.mail_from, &mut reader) {
                        Ok(path) => RcptOutcome::Delivered(
                            Handover::Mailbox,
                            format!("maildir={}", path.display()),
                        ),
                        Err(e) => RcptOutcome::Deferred(maildir::failure(&mb, &e)),
                    };
                (i, outcome)
            })
            .collect::<Vec<_>>()
    })
    .await;
    result.unwrap_or_else(|e| {
        all(
            job,
            RcptOutcome::Deferred(Diagnostic::local(
                EnhancedCode::new(4, 3, 0),
                format!("local delivery task failed: {e}"),
            )),
        )
    })
}

/// Connect to `dest`'s hosts and set the session up.
async fn connect(ctx: &WorkerCtx, dest: &Destination) -> Result<Session, Diagnostic> {
    let settings = ctx.settings();
    let mut hosts = mx::hosts_for(dest, settings, &*ctx.dns).await?;
    let port = match (dest, &settings.relayhost) {
        (Destination::Relay, Some(r)) => r.port,
        (Destination::Via(r), _) => r.port,
        _ => settings.smtp_port,
    };
    let relay = matches!(dest, Destination::Relay);
    // The next hop's domain: its TLS policy applies (relays keep `tls`).
    let domain = match dest {
        Destination::Domain(d) | Destination::RoutedMx(d) => Some(d.as_str()),
        _ => None,
    };
    let (level, testing, applied) = match domain.map(|d| (d, settings.tls_for_domain(d))) {
        Some((d, TlsPolicy::Sts)) => sts(ctx, d, &mut hosts).await?,
        Some((_, level)) => (level, None, None),
        None => (settings.tls, None, None),
    };
    // Sessions are counted under an MTA-STS policy, or for DANE per host.
    let report = domain
        .filter(|_| applied.is_some() || level.is_dane())
        .map(|domain| Report {
            reporter: &ctx.tls_report,
            domain,
            sts: applied.as_ref(),
        });
    let plan = TlsPlan {
        level,
        testing,
        report,
    };
    let s = if level.is_dane() {
        let planned = crate::dane::plan(level, domain, &hosts, port, &*ctx.dns).await;
        Session::connect_planned(&hosts, planned, port, &ctx.client, relay, &plan).await?
    } else {
        Session::connect_with(&hosts, port, &ctx.client, relay, &plan).await?
    };
    tracing::debug!(%dest, host = %s.label, tls = s.is_tls(), "connected");
    Ok(s)
}

/// The TLS level for mail to `domain` under its MTA-STS policy (RFC 8461
/// §5), the level to fall back to in `testing` mode, and the policy to count
/// sessions under. `enforce` keeps only the MX hosts the policy lists (none
/// left defers) and requires verified TLS; without a policy the global
/// setting applies.
async fn sts(
    ctx: &WorkerCtx,
    domain: &str,
    hosts: &mut Vec<mx::MxHost>,
) -> Result<(TlsPolicy, Option<TlsPolicy>, Option<Applied>), Diagnostic> {
    let global = ctx.settings().tls;
    let p = match ctx.sts.lookup(domain, &*ctx.dns, &ctx.client.tls).await {
        Found::Policy(p) if p.mode != Mode::None => p,
        Found::Policy(_) | Found::None => return Ok((global, None, None)),
        Found::Failed(f) => {
            // Announced but unusable, and none cached: delivered as without
            // a policy, and reported.
            let applied = Applied::none(domain);
            let kind = ResultType::of_fetch(&f);
            ctx.tls_report
                .failure(&applied, kind, None, None, f.reason());
            return Ok((global, None, None));
        }
    };
    let applied = Applied::sts(&p);
    let unlisted: Vec<String> = hosts
        .iter()
        .filter(|h| !p.matches(&h.name))
        .map(|h| h.name.clone())
        .collect();
    for name in &unlisted {
        let why = "MX host not listed in the MTA-STS policy";
        let kind = ResultType::ValidationFailure;
        ctx.tls_report
            .failure(&applied, kind, Some(name), None, why);
    }
    if p.mode == Mode::Testing {
        return Ok((TlsPolicy::Required, Some(global), Some(applied)));
    }
    hosts.retain(|h| p.matches(&h.name));
    if hosts.is_empty() {
        return Err(Diagnostic::local(
            EnhancedCode::new(4, 7, 5),
            format!(
                "MTA-STS policy of {domain} (enforce) lists none of its MX hosts ({})",
                unlisted.join(", ")
            ),
        ));
    }
    Ok((TlsPolicy::Required, None, Some(applied)))
}

/// One SMTP transaction for the job, connecting first if needed. The second value
/// is set when the destination could not be reached at all. A reused connection
/// found dead before MAIL FROM was answered is replaced once by a fresh one.
async fn smtp_job(
    ctx: &WorkerCtx,
    dest: &Destination,
    job: &Job,
    session: &mut Option<Session>,
) -> (Vec<(usize, RcptOutcome)>, Option<Diagnostic>) {
    let settings = ctx.settings().clone();
    if session
        .as_ref()
        .is_some_and(|s| !s.reusable(settings.max_messages_per_connection))
        && let Some(old) = session.take()
    {
        old.quit().await;
    }
    for fresh_try in [false, true] {
        let s = match session {
            Some(s) => s,
            None => match connect(ctx, dest).await {
                Ok(s) => session.insert(s),
                Err(d) => return (all(job, RcptOutcome::from_diagnostic(d.clone())), Some(d)),
            },
        };
        match transmit(ctx, job, s).await {
            Ok(results) => return (results, None),
            Err(Stale(d)) => {
                if let Some(old) = session.take() {
                    old.quit().await;
                }
                if fresh_try {
                    return (all(job, RcptOutcome::Deferred(d)), None);
                }
                tracing::info!(queue_id = %job.id, %dest, reason = %d,
                    "reused connection was closed by the server; retrying on a new connection");
            }
        }
    }
    (Vec::new(), None)
}

/// Send the job's message over `s`: as spooled, or — when the server does not
/// offer 8BITMIME, or SMTPUTF8 that the message asked for — after the content
/// check [`content::read`] makes for this server.
async fn transmit(
    ctx: &WorkerCtx,
    job: &Job,
    s: &mut Session,
) -> Result<Vec<(usize, RcptOutcome)>, Stale> {
    let spool = ctx.spool.clone();
    let id = job.id;
    let env = &job.envelope;
    let check = Check::for_server(s.capabilities(), &env.mail_params);
    let opened = tokio::task::spawn_blocking(move || {
        let m = spool.open_message(&id)?;
        let path = m.segment_path().to_path_buf();
        let file = m.into_message_reader().map_err(|e| SpoolError::Io {
            path: path.clone(),
            source: e,
        })?;
        content::read(file, check).map_err(|e| SpoolError::Io { path, source: e })
    })
    .await;
    let Content {
        mut body,
        size,
        check,
        converted,
    } = match opened {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Ok(all(job, vanished(&e))),
        Err(e) => return Ok(all(job, vanished(&SpoolError::Worker(e.to_string())))),
    };
    if let Some(original) = converted {
        tracing::info!(queue_id = %job.id, host = %s.label, original, size,
            "converted to 7 bit: the server does not offer 8BITMIME");
    }
    let outgoing = Outgoing {
        sender: &env.mail_from,
        mail_params: &env.mail_params,
        rcpts: job
            .rcpts
            .iter()
            .map(|&i| {
                let r = &env.recipients[i];
                (i, r.address.as_str(), r.params.as_slice())
            })
            .collect(),
        size,
        content: check,
    };
    s.deliver(ctx.settings(), &outgoing, &mut body).await
}
