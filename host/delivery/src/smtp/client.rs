//! The SMTP client dialogue: connect to the first host that answers (MX order),
//! EHLO (HELO fallback), STARTTLS per policy, AUTH to the relayhost, then one or
//! more mail transactions over the same connection — pipelined when the server
//! offers PIPELINING (RFC 2920) — and QUIT. Every reply is mapped to a per-recipient
//! outcome: 2xx delivered, 4xx deferred, 5xx failed (RFC 5321 §4.2.1, §4.5.3.2).
//! Failures before MAIL (connection, greeting, EHLO, TLS, AUTH) only ever defer.
//! A reused connection that turns out dead before the server answers MAIL FROM
//! (closed while idle, reset, or 421 at once) is reported as [`Stale`]: nothing
//! was sent, and the caller tries the message again on a fresh connection.
//! Input: replies from a hostile server, via `io::Connection`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use postern_protocol::{EnhancedCode, Reply};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

use crate::mx::MxHost;
use crate::outcome::{Diagnostic, Handover, RcptOutcome};
use crate::settings::{Settings, TlsPolicy};
use crate::smtp::dialogue;
use crate::smtp::ehlo::Capabilities;
use crate::smtp::io::{Connection, IoError};
use crate::smtp::stuff::DotStuffer;

/// Largest BDAT chunk sent (most messages go in one, with LAST).
const BDAT_CHUNK: usize = 1 << 20;
use crate::dane::HostTls;
use crate::tls::{self, TlsClient};
use crate::tlsrpt::{Applied, ResultType, TlsReporter};
use tokio_rustls::TlsConnector;

/// What a connection needs from the queue manager.
#[derive(Clone)]
pub struct ClientCtx {
    pub settings: Arc<Settings>,
    pub tls: TlsClient,
}

/// One message to send: envelope parts and the recipients of this transaction
/// (index in the envelope, address, RCPT parameters).
pub struct Outgoing<'a> {
    pub sender: &'a str,
    pub mail_params: &'a [String],
    pub rcpts: Vec<(usize, &'a str, &'a [String])>,
    /// Octets of the content as sent (after any 8BITMIME down-conversion).
    pub size: u64,
    /// What the content check for this server found.
    pub content: dialogue::ContentCheck,
}

/// An open, greeted (and possibly encrypted and authenticated) SMTP session.
pub struct Session {
    conn: Connection,
    caps: Capabilities,
    /// `name[ip]:port`, for diagnostics and logs.
    pub label: String,
    /// Host name (Remote-MTA).
    pub host: String,
    /// A transaction was abandoned: RSET before the next MAIL.
    dirty: bool,
    /// The connection cannot be used again.
    pub broken: bool,
    /// Transactions run on this connection.
    pub messages: usize,
    /// Over TLS whose certificate was verified (`tls = "required"`).
    verified: bool,
}

/// Make a diagnostic temporary (failures before MAIL never bounce).
fn soften(mut d: Diagnostic) -> Diagnostic {
    if d.status.class == 5 {
        d.status.class = 4;
    }
    d
}

fn code(class: u8, subject: u16, detail: u16) -> EnhancedCode {
    EnhancedCode::new(class, subject, detail)
}

fn lost(label: &str, during: &str, e: &IoError) -> Diagnostic {
    let status = match e {
        IoError::Timeout => code(4, 4, 2),
        IoError::Tls(_) => code(4, 7, 5),
        _ => code(4, 4, 2),
    };
    Diagnostic::at_host(status, label, format!("{e} while {during}"))
}

/// A reused connection failed before the server answered MAIL FROM (it was
/// closed while idle, reset, or said 421 at once): nothing of the message was
/// accepted, so it may be sent again on a fresh connection.
#[derive(Clone, Debug)]
pub struct Stale(pub Diagnostic);

/// Why a transaction stopped early.
enum Failure {
    /// The connection was dead before the MAIL FROM reply.
    BeforeMail(Diagnostic),
    /// Anything else: recipients without an outcome are deferred.
    Lost(Diagnostic),
}

impl From<Diagnostic> for Failure {
    fn from(d: Diagnostic) -> Failure {
        Failure::Lost(d)
    }
}

/// A failure before the MAIL FROM reply: `BeforeMail` when the connection is
/// gone (closed or reset), not when it is merely slow or garbled.
fn before_mail(label: &str, during: &str, e: &IoError) -> Failure {
    let d = lost(label, during, e);
    match e {
        IoError::Closed | IoError::Io(_) | IoError::Tls(_) => Failure::BeforeMail(d),
        _ => Failure::Lost(d),
    }
}

enum Attempt {
    Failed(Diagnostic),
    /// Opportunistic TLS failed in the handshake: try again in plain text.
    RetryPlain(Diagnostic),
    /// Required TLS could not be had, for the reason named (TLS-RPT's
    /// result type).
    Tls(ResultType, Diagnostic),
}

/// How a connection's TLS is judged: the level, and for mail under an
/// MTA-STS or DANE policy, where each session's result is counted (TLS-RPT).
#[derive(Clone, Copy)]
pub struct TlsPlan<'a> {
    pub level: TlsPolicy,
    /// A policy in `testing` mode: a host that fails `level` is counted,
    /// then used under this level instead (RFC 8461 §5).
    pub testing: Option<TlsPolicy>,
    pub report: Option<Report<'a>>,
}

/// Where a plan's sessions are counted: under the domain's MTA-STS policy
/// (`sts`), and a DANE host's under its own TLSA records.
#[derive(Clone, Copy)]
pub struct Report<'a> {
    pub reporter: &'a TlsReporter,
    /// The recipient (next-hop) domain.
    pub domain: &'a str,
    pub sts: Option<&'a Applied>,
}

impl TlsPlan<'_> {
    /// A plain level, nothing reported.
    pub fn level(level: TlsPolicy) -> TlsPlan<'static> {
        TlsPlan {
            level,
            testing: None,
            report: None,
        }
    }

    fn count(
        &self,
        host: &str,
        ip: std::net::IpAddr,
        tlsa: Option<&Applied>,
        result: Result<(), (ResultType, &str)>,
    ) {
        if let Some(Report { reporter, sts, .. }) = self.report
            && let Some(applied) = tlsa.or(sts)
        {
            match result {
                Ok(()) => reporter.success(applied),
                Err((kind, reason)) => {
                    reporter.failure(applied, kind, Some(host), Some(ip), reason)
                }
            }
        }
    }
}

impl Session {
    /// Connect to the first address that completes the session set-up, in order.
    /// `authenticate` says whether the relayhost credentials apply.
    pub async fn connect(
        hosts: &[MxHost],
        port: u16,
        ctx: &ClientCtx,
        authenticate: bool,
    ) -> Result<Session, Diagnostic> {
        let plan = TlsPlan::level(ctx.settings.tls);
        Session::connect_with(hosts, port, ctx, authenticate, &plan).await
    }

    /// `connect` under the TLS plan `tls` (a recipient domain's own level,
    /// `Settings::tls_for_domain`, or its MTA-STS policy's).
    pub async fn connect_with(
        hosts: &[MxHost],
        port: u16,
        ctx: &ClientCtx,
        authenticate: bool,
        tls: &TlsPlan<'_>,
    ) -> Result<Session, Diagnostic> {
        let each = hosts.iter().map(|_| HostTls::Policy(tls.level)).collect();
        Session::connect_planned(hosts, each, port, ctx, authenticate, tls).await
    }

    /// `connect` with each host's own TLS, `host_tls[i]` for `hosts[i]`
    /// (DANE decides per host, `dane::plan`); `plan` says how failures of
    /// required TLS are counted and whether a `testing` policy falls back.
    pub async fn connect_planned(
        hosts: &[MxHost],
        host_tls: Vec<HostTls>,
        port: u16,
        ctx: &ClientCtx,
        authenticate: bool,
        plan: &TlsPlan<'_>,
    ) -> Result<Session, Diagnostic> {
        let mut last = None;
        for (host, host_tls) in hosts.iter().zip(host_tls) {
            let mut tlsa = None;
            let (tls, dane) = match host_tls {
                HostTls::Policy(p) => (p, None),
                // DANE: TLS is required, the chain checked against TLSA.
                HostTls::Dane(c, records) => {
                    if let Some(r) = plan.report {
                        tlsa = Some(Applied::tlsa(r.domain, &host.name, records));
                    }
                    (TlsPolicy::Encrypt, Some(c))
                }
                HostTls::Unusable(d) => {
                    tracing::info!(host = %host.name, reason = %d, "host unusable");
                    last = Some(d);
                    continue;
                }
            };
            for ip in &host.addrs {
                let addr = SocketAddr::new(*ip, port);
                let mut result =
                    open(&host.name, addr, ctx, authenticate, tls, dane.as_ref()).await;
                if let Err(Attempt::Tls(kind, d)) = &result {
                    plan.count(&host.name, *ip, tlsa.as_ref(), Err((*kind, &d.text)));
                    if let Some(fallback) = plan.testing {
                        tracing::info!(host = %host.name, %addr, reason = %d,
                            "MTA-STS policy in testing mode not met; delivering anyway");
                        result = open(&host.name, addr, ctx, authenticate, fallback, None).await;
                    }
                } else if result.is_ok() {
                    plan.count(&host.name, *ip, tlsa.as_ref(), Ok(()));
                }
                let result = match result {
                    Err(Attempt::RetryPlain(d)) => {
                        tracing::info!(host = %host.name, %addr, reason = %d,
                            "opportunistic TLS failed; retrying without TLS");
                        open(&host.name, addr, ctx, authenticate, TlsPolicy::None, None).await
                    }
                    other => other,
                };
                match result {
                    Ok(s) => return Ok(s),
                    Err(Attempt::Failed(d) | Attempt::RetryPlain(d) | Attempt::Tls(_, d)) => {
                        tracing::info!(host = %host.name, %addr, reason = %d, "host unusable");
                        last = Some(d);
                    }
                }
            }
        }
        Err(soften(last.unwrap_or_else(|| {
            Diagnostic::local(code(4, 4, 4), "no addresses to connect to")
        })))
    }

    /// Whether another transaction may use this connection.
    pub fn reusable(&self, max_messages: usize) -> bool {
        !self.broken && self.messages < max_messages
    }

    pub fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }

    /// What the server offered (for deciding on a 7-bit conversion).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Run one mail transaction: MAIL, RCPT..., DATA, the content, ".". Returns the
    /// outcome of every recipient in `msg.rcpts`, or [`Stale`] when this connection
    /// was used before and died before the MAIL FROM reply (the session is then
    /// broken; `body` was not read).
    pub async fn deliver(
        &mut self,
        settings: &Settings,
        msg: &Outgoing<'_>,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<Vec<(usize, RcptOutcome)>, Stale> {
        let reused = self.messages > 0;
        self.messages += 1;
        let mut outcomes: Vec<Option<RcptOutcome>> = vec![None; msg.rcpts.len()];
        match self.transaction(settings, msg, body, &mut outcomes).await {
            Ok(()) => {}
            Err(Failure::BeforeMail(d)) if reused => {
                self.broken = true;
                return Err(Stale(d));
            }
            Err(Failure::BeforeMail(d) | Failure::Lost(d)) => {
                self.broken = true;
                for o in outcomes.iter_mut().filter(|o| o.is_none()) {
                    *o = Some(RcptOutcome::Deferred(d.clone()));
                }
            }
        }
        Ok(msg
            .rcpts
            .iter()
            .zip(outcomes)
            .map(|((i, _, _), o)| {
                (
                    *i,
                    o.unwrap_or_else(|| {
                        RcptOutcome::Deferred(Diagnostic::at_host(
                            code(4, 4, 0),
                            &self.label,
                            "no reply for this recipient",
                        ))
                    }),
                )
            })
            .collect())
    }

    fn outcome_of(&self, reply: &Reply) -> RcptOutcome {
        RcptOutcome::from_diagnostic(Diagnostic::from_reply(reply, &self.label))
    }

    /// Fill `outcomes`; `Err` when the connection failed (the unfilled ones defer).
    async fn transaction(
        &mut self,
        s: &Settings,
        msg: &Outgoing<'_>,
        body: &mut (dyn AsyncRead + Unpin + Send),
        outcomes: &mut [Option<RcptOutcome>],
    ) -> Result<(), Failure> {
        let t = s.command_timeout;
        let label = self.label.clone();
        if self.dirty {
            let r = self
                .conn
                .command("RSET\r\n", t)
                .await
                .map_err(|e| before_mail(&label, "resetting the session", &e))?;
            if r.code == 421 {
                self.broken = true;
                return Err(Failure::BeforeMail(soften(Diagnostic::from_reply(
                    &r, &label,
                ))));
            }
            if r.code != 250 {
                return Err(soften(Diagnostic::from_reply(&r, &label)).into());
            }
            self.dirty = false;
        }
        let addrs: Vec<&str> = msg.rcpts.iter().map(|(_, a, _)| *a).collect();
        // Envelope addresses were validated at receipt; never send a broken line.
        for (slot, addr) in outcomes.iter_mut().zip(&addrs) {
            if !dialogue::safe_path(addr) {
                *slot = Some(RcptOutcome::Failed(Diagnostic::local(
                    code(5, 1, 3),
                    "recipient address cannot be sent",
                )));
            }
        }
        if !dialogue::safe_path(msg.sender) {
            fill(
                outcomes,
                RcptOutcome::Failed(Diagnostic::local(
                    code(5, 1, 7),
                    "sender address cannot be sent",
                )),
            );
            return Ok(());
        }
        if let Some(d) = dialogue::precheck(
            &self.caps,
            self.verified,
            msg.size,
            msg.mail_params,
            msg.sender,
            &addrs,
            &msg.content,
        ) {
            fill(outcomes, RcptOutcome::from_diagnostic(d));
            return Ok(());
        }
        let smtputf8 = dialogue::requests_smtputf8(msg.mail_params);
        let mail =
            dialogue::mail_command(msg.sender, msg.mail_params, msg.size, &self.caps, smtputf8);
        let rcpts: Vec<(usize, String)> = msg
            .rcpts
            .iter()
            .enumerate()
            .filter(|(k, _)| outcomes[*k].is_none())
            .map(|(k, (_, a, p))| (k, dialogue::rcpt_command(a, p, &self.caps)))
            .collect();
        if rcpts.is_empty() {
            return Ok(());
        }
        let mut accepted = Vec::new();
        let data_reply;
        // RFC 3030: a server offering CHUNKING gets the content in BDAT
        // chunks (no dot-stuffing, no DATA round trip).
        let chunking = self.caps.chunking;
        if self.caps.pipelining {
            // RFC 2920: MAIL, every RCPT and DATA in one write; replies in order.
            let mut batch = mail.clone();
            for (_, r) in &rcpts {
                batch.push_str(r);
            }
            if !chunking {
                batch.push_str("DATA\r\n");
            }
            self.conn
                .send(batch.as_bytes(), t)
                .await
                .map_err(|e| before_mail(&label, "sending MAIL/RCPT/DATA", &e))?;
            let mail_reply = self.mail_reply(t).await?;
            for (k, _) in &rcpts {
                let r = self.reply(t, "RCPT TO").await?;
                if mail_reply.is_positive() {
                    if r.is_positive() {
                        accepted.push(*k);
                    } else {
                        outcomes[*k] = Some(self.outcome_of(&r));
                    }
                }
            }
            if chunking {
                if !mail_reply.is_positive() {
                    fill(outcomes, self.outcome_of(&mail_reply));
                }
                if accepted.is_empty() {
                    self.dirty = true;
                    return Ok(());
                }
                return self.send_chunks(s, body, &accepted, outcomes).await;
            }
            let reply = self.reply(t, "DATA").await?;
            if !mail_reply.is_positive() {
                fill(outcomes, self.outcome_of(&mail_reply));
            }
            if reply.code == 354 && accepted.is_empty() {
                // Nothing to send: end the content at once (RFC 2920 §3.1).
                self.dirty = true;
                self.conn
                    .send(b".\r\n", t)
                    .await
                    .map_err(|e| lost(&label, "ending empty DATA", &e))?;
                let _ = self.reply(s.data_timeout, "end of empty DATA").await?;
                return Ok(());
            }
            if accepted.is_empty() {
                self.dirty = true;
                return Ok(());
            }
            data_reply = reply;
        } else {
            self.conn
                .send(mail.as_bytes(), t)
                .await
                .map_err(|e| before_mail(&label, "sending MAIL FROM", &e))?;
            let r = self.mail_reply(t).await?;
            if !r.is_positive() {
                self.dirty = true;
                fill(outcomes, self.outcome_of(&r));
                return Ok(());
            }
            for (k, line) in &rcpts {
                let r = self.command(line, t, "RCPT TO").await?;
                if r.is_positive() {
                    accepted.push(*k);
                } else {
                    outcomes[*k] = Some(self.outcome_of(&r));
                }
            }
            if accepted.is_empty() {
                self.dirty = true;
                return Ok(());
            }
            if chunking {
                return self.send_chunks(s, body, &accepted, outcomes).await;
            }
            data_reply = self.command("DATA\r\n", t, "DATA").await?;
        }
        if data_reply.code != 354 {
            self.dirty = true;
            let o = self.outcome_of(&data_reply);
            for k in &accepted {
                outcomes[*k] = Some(o.clone());
            }
            return Ok(());
        }
        self.send_content(s, body).await?;
        let done = self.reply(s.data_timeout, "end of DATA").await?;
        self.record_done(&done, &accepted, outcomes);
        Ok(())
    }

    /// The final reply to the content (end of DATA, or the LAST chunk)
    /// decides every recipient the server accepted.
    fn record_done(
        &mut self,
        done: &Reply,
        accepted: &[usize],
        outcomes: &mut [Option<RcptOutcome>],
    ) {
        let label = &self.label;
        let o = if done.is_positive() {
            RcptOutcome::Delivered(
                // The next hop got NOTIFY/ORCPT: its success notices now.
                match self.caps.dsn {
                    true => Handover::DsnHandedOn,
                    false => Handover::Relayed,
                },
                format!(
                    "relay={}, {}",
                    label,
                    crate::outcome::sanitize(&done.to_string())
                ),
            )
        } else {
            self.outcome_of(done)
        };
        if done.code == 421 {
            self.broken = true;
        }
        for k in accepted {
            outcomes[*k] = Some(o.clone());
        }
    }

    /// Send the message in BDAT chunks of up to [`BDAT_CHUNK`] octets, the
    /// last one marked LAST, each answered before the next is sent; a chunk
    /// the server refuses ends the transaction with its reply.
    async fn send_chunks(
        &mut self,
        s: &Settings,
        body: &mut (dyn AsyncRead + Unpin + Send),
        accepted: &[usize],
        outcomes: &mut [Option<RcptOutcome>],
    ) -> Result<(), Failure> {
        let mut chunk = vec![0u8; BDAT_CHUNK];
        loop {
            // Fill a chunk, or find the end of the message.
            let mut n = 0;
            let mut end = false;
            while n < chunk.len() {
                match body.read(&mut chunk[n..]).await {
                    Ok(0) => {
                        end = true;
                        break;
                    }
                    Ok(k) => n += k,
                    Err(e) => {
                        // Never send LAST for a truncated message.
                        self.broken = true;
                        self.conn.shutdown().await;
                        return Err(Failure::Lost(Diagnostic::local(
                            code(4, 3, 0),
                            format!("cannot read the queued message: {e}"),
                        )));
                    }
                }
            }
            let mut out = format!("BDAT {n}{}\r\n", if end { " LAST" } else { "" }).into_bytes();
            out.extend_from_slice(&chunk[..n]);
            self.conn
                .send(&out, s.command_timeout)
                .await
                .map_err(|e| lost(&self.label, "sending a BDAT chunk", &e))?;
            let what = if end { "BDAT LAST" } else { "BDAT" };
            let reply = self.reply(s.data_timeout, what).await?;
            if end || !reply.is_positive() {
                if !end {
                    self.dirty = true;
                }
                self.record_done(&reply, accepted, outcomes);
                return Ok(());
            }
        }
    }

    /// Stream the message, dot-stuffed, and the final ".".
    async fn send_content(
        &mut self,
        s: &Settings,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), Diagnostic> {
        let mut stuffer = DotStuffer::default();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut out = Vec::with_capacity(70 * 1024);
        loop {
            let n = match body.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    // Never end a truncated message with ".": drop the connection.
                    self.broken = true;
                    self.conn.shutdown().await;
                    return Err(Diagnostic::local(
                        code(4, 3, 0),
                        format!("cannot read the queued message: {e}"),
                    ));
                }
            };
            out.clear();
            stuffer.feed(&chunk[..n], &mut out);
            self.conn
                .send(&out, s.command_timeout)
                .await
                .map_err(|e| lost(&self.label, "sending message content", &e))?;
        }
        out.clear();
        stuffer.finish(&mut out);
        self.conn
            .send(&out, s.command_timeout)
            .await
            .map_err(|e| lost(&self.label, "sending end of data", &e))
    }

    /// The reply to MAIL FROM; a dead connection or 421 is `BeforeMail`.
    async fn mail_reply(&mut self, t: Duration) -> Result<Reply, Failure> {
        let r = self
            .conn
            .read_reply(t)
            .await
            .map_err(|e| before_mail(&self.label, "waiting for the reply to MAIL FROM", &e))?;
        if r.code == 421 {
            self.broken = true;
            return Err(Failure::BeforeMail(soften(Diagnostic::from_reply(
                &r,
                &self.label,
            ))));
        }
        Ok(r)
    }

    async fn reply(&mut self, t: Duration, during: &str) -> Result<Reply, Diagnostic> {
        let r = self.conn.read_reply(t).await.map_err(|e| {
            lost(
                &self.label,
                &format!("waiting for the reply to {during}"),
                &e,
            )
        })?;
        if r.code == 421 {
            self.broken = true;
        }
        Ok(r)
    }

    async fn command(&mut self, line: &str, t: Duration, what: &str) -> Result<Reply, Diagnostic> {
        self.conn
            .send(line.as_bytes(), t)
            .await
            .map_err(|e| lost(&self.label, &format!("sending {what}"), &e))?;
        self.reply(t, what).await
    }

    /// QUIT (best effort) and close.
    pub async fn quit(mut self) {
        if !self.broken {
            let _ = self.conn.command("QUIT\r\n", Duration::from_secs(5)).await;
        }
        self.conn.shutdown().await;
    }
}

fn fill(outcomes: &mut [Option<RcptOutcome>], o: RcptOutcome) {
    for slot in outcomes.iter_mut().filter(|s| s.is_none()) {
        *slot = Some(o.clone());
    }
}

/// Connect to one address and set the session up.
async fn open(
    name: &str,
    addr: SocketAddr,
    ctx: &ClientCtx,
    authenticate: bool,
    policy: TlsPolicy,
    dane: Option<&TlsConnector>,
) -> Result<Session, Attempt> {
    let s = &ctx.settings;
    let label = format!("{name}[{}]:{}", addr.ip(), addr.port());
    let failed = |status: EnhancedCode, text: String| {
        Attempt::Failed(Diagnostic::at_host(status, &label, text))
    };
    let tcp = match tokio::time::timeout(s.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(failed(code(4, 4, 1), format!("connect failed: {e}"))),
        Err(_) => return Err(failed(code(4, 4, 1), "connect timed out".into())),
    };
    let mut conn = Connection::new(tcp);
    let t = s.command_timeout;
    let io = |during: &str, e: IoError| Attempt::Failed(lost(&label, during, &e));
    let greeting = conn
        .read_reply(t)
        .await
        .map_err(|e| io("waiting for the greeting", e))?;
    if greeting.code != 220 {
        return Err(Attempt::Failed(soften(Diagnostic::from_reply(
            &greeting, &label,
        ))));
    }
    if greets_as(&greeting, &s.hostname) {
        // An MX or relayhost that is this server (a DNS or relayhost
        // mistake): sending would loop the message back into our own queue.
        // Try the next host; if none is usable the message is deferred with
        // this reason (RFC 3463 X.4.6) and bounces when it expires.
        return Err(failed(
            code(4, 4, 6),
            format!(
                "mail for {name} loops back to myself: the server greets as {}",
                s.hostname
            ),
        ));
    }
    let mut caps = ehlo(&mut conn, &s.helo_name, t)
        .await
        .map_err(|e| match e {
            Ok(reply) => Attempt::Failed(soften(Diagnostic::from_reply(&reply, &label))),
            Err(e) => io("sending EHLO", e),
        })?;
    if caps.starttls && policy != TlsPolicy::None {
        let r = conn
            .command("STARTTLS\r\n", t)
            .await
            .map_err(|e| io("sending STARTTLS", e))?;
        if r.code == 220 {
            let verify = policy == TlsPolicy::Required;
            let Some(server_name) = tls::server_name(name) else {
                return Err(failed(
                    code(4, 7, 5),
                    format!("{name:?} is not a valid TLS server name"),
                ));
            };
            if let Err(e) = conn
                .starttls(
                    dane.cloned().unwrap_or_else(|| ctx.tls.connector(verify)),
                    server_name,
                    t,
                )
                .await
            {
                let d = lost(&label, "in the TLS handshake", &e);
                return Err(if policy.requires_tls() {
                    let kind = match &e {
                        IoError::Tls(e) => tls::certificate_problem(e),
                        _ => None,
                    };
                    Attempt::Tls(kind.unwrap_or(ResultType::ValidationFailure), d)
                } else {
                    Attempt::RetryPlain(d)
                });
            }
            caps = ehlo(&mut conn, &s.helo_name, t)
                .await
                .map_err(|e| match e {
                    Ok(reply) => Attempt::Failed(soften(Diagnostic::from_reply(&reply, &label))),
                    Err(e) => io("sending EHLO after STARTTLS", e),
                })?;
        } else if policy.requires_tls() {
            return Err(Attempt::Tls(
                ResultType::StarttlsNotSupported,
                soften(Diagnostic::from_reply(&r, &label)),
            ));
        }
    }
    if policy.requires_tls() && !conn.is_tls() {
        let _ = conn.command("QUIT\r\n", Duration::from_secs(5)).await;
        return Err(Attempt::Tls(
            ResultType::StarttlsNotSupported,
            Diagnostic::at_host(
                code(4, 7, 4),
                &label,
                "TLS is required, but the server did not offer STARTTLS",
            ),
        ));
    }
    if authenticate && let Some((user, password)) = &s.relayhost_auth {
        if !conn.is_tls() && !s.auth_without_tls {
            let _ = conn.command("QUIT\r\n", Duration::from_secs(5)).await;
            return Err(failed(
                code(4, 7, 0),
                "not sending AUTH credentials without TLS (delivery.auth_without_tls = false)"
                    .into(),
            ));
        }
        auth(&mut conn, &caps, user, &password.0, t, &label).await?;
    }
    tracing::debug!(host = %label, tls = ?conn.tls_summary(), "SMTP session ready");
    let verified = (policy == TlsPolicy::Required || dane.is_some()) && conn.is_tls();
    Ok(Session {
        conn,
        caps,
        label: label.clone(),
        host: name.to_string(),
        dirty: false,
        broken: false,
        messages: 0,
        verified,
    })
}

/// Whether the greeting's first word (the server's domain, RFC 5321 §4.3.1)
/// is `hostname`.
fn greets_as(greeting: &Reply, hostname: &str) -> bool {
    greeting
        .lines
        .first()
        .and_then(|l| l.split_ascii_whitespace().next())
        .is_some_and(|domain| {
            domain
                .trim_end_matches('.')
                .eq_ignore_ascii_case(hostname.trim_end_matches('.'))
        })
}

/// EHLO, falling back to HELO when EHLO is refused with 5xx (RFC 5321 §3.2).
/// `Err(Ok(reply))` is a negative reply, `Err(Err(e))` a connection failure.
async fn ehlo(
    conn: &mut Connection,
    name: &str,
    t: Duration,
) -> Result<Capabilities, Result<Reply, IoError>> {
    let r = conn
        .command(&format!("EHLO {name}\r\n"), t)
        .await
        .map_err(Err)?;
    if r.code == 250 {
        return Ok(Capabilities::parse(&r));
    }
    if r.code / 100 != 5 {
        return Err(Ok(r));
    }
    let r = conn
        .command(&format!("HELO {name}\r\n"), t)
        .await
        .map_err(Err)?;
    if r.code == 250 {
        Ok(Capabilities::default())
    } else {
        Err(Ok(r))
    }
}

/// AUTH PLAIN or LOGIN (RFC 4954); any failure defers.
async fn auth(
    conn: &mut Connection,
    caps: &Capabilities,
    user: &str,
    password: &str,
    t: Duration,
    label: &str,
) -> Result<(), Attempt> {
    let io = |e: IoError| Attempt::Failed(lost(label, "authenticating", &e));
    let refused = |r: &Reply| Attempt::Failed(soften(Diagnostic::from_reply(r, label)));
    let r = match dialogue::choose_auth(caps) {
        Some("PLAIN") => conn
            .command(&dialogue::auth_plain(user, password), t)
            .await
            .map_err(io)?,
        Some(_) => {
            let r = conn.command("AUTH LOGIN\r\n", t).await.map_err(io)?;
            if r.code != 334 {
                return Err(refused(&r));
            }
            let r = conn
                .command(&dialogue::b64_line(user), t)
                .await
                .map_err(io)?;
            if r.code != 334 {
                return Err(refused(&r));
            }
            conn.command(&dialogue::b64_line(password), t)
                .await
                .map_err(io)?
        }
        None => {
            return Err(Attempt::Failed(Diagnostic::at_host(
                code(4, 7, 0),
                label,
                format!(
                    "no supported AUTH mechanism offered (offered: {})",
                    caps.auth.join(" ")
                ),
            )));
        }
    };
    if r.code == 235 {
        Ok(())
    } else {
        Err(refused(&r))
    }
}

#[cfg(test)]
mod greeting_tests {
    use super::*;

    #[test]
    fn recognises_our_own_greeting() {
        let g = |text: &str| Reply::new(220, None, text.to_string());
        assert!(greets_as(
            &g("mx.example.test ESMTP Postern"),
            "mx.example.test"
        ));
        assert!(greets_as(&g("MX.Example.Test."), "mx.example.test"));
        assert!(!greets_as(&g("mx2.example.test ESMTP"), "mx.example.test"));
        assert!(!greets_as(&g("ESMTP mx.example.test"), "mx.example.test"));
        assert!(!greets_as(&g(""), "mx.example.test"));
    }
}
