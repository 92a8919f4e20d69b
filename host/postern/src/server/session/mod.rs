//! The SMTP server session: a state machine that takes parsed commands and
//! returns the reply to send (and whether to close or switch to DATA mode).
//! It never does network I/O itself (see `conn.rs`) and never writes spool
//! files itself (the spool does). Input: hostile client commands, already
//! framed and parsed by `postern-protocol`. Implements RFC 5321 §3–4 (command
//! sequencing, §4.5.3.1 recipient limits), RFC 1870 (SIZE), RFC 6152
//! (8BITMIME), RFC 6531 (SMTPUTF8), RFC 2920 (PIPELINING, with `conn.rs`),
//! RFC 3030 (CHUNKING), RFC 3461 (DSN: RET, ENVID, NOTIFY and ORCPT are
//! checked by `postern-protocol` and kept with the envelope), RFC 8689
//! (REQUIRETLS: offered and accepted over TLS only, kept with the envelope).

mod auth;
mod changes;
mod data;
pub mod enumeration;
mod envelope;
pub mod replies;

use std::sync::Arc;

use postern_plugin::{
    Ask, Decision, EnvelopeAddress, KvBackend, Outcome, SessionChain, SessionContext, Stage,
    TlsInfo, Verdict,
};
use postern_protocol::{
    BodyType, Command, ForwardPath, LineError, MailParams, Reply, ReversePath, parse_command,
};
use postern_spool::{QueueId, Spool};
use tokio::sync::watch;

use crate::config::{Config, ListenerSpec, TlsMode};

/// What the connection loop must do with a reply.
#[derive(Debug)]
pub enum Step {
    /// Send the reply and read the next command.
    Reply(Reply),
    /// Send the reply and close the connection.
    Close(Reply),
    /// Send the reply (354) and read message data.
    Data(Reply),
    /// Send the reply (220) and start the TLS handshake (RFC 3207).
    StartTls(Reply),
    /// Read the `size` octets of a BDAT chunk (RFC 3030) that follow the
    /// command, then answer: with `refusal` when the chunk is refused (its
    /// octets are read and dropped), else as the message so far deserves
    /// (`chunk_done`, or `data_done` for the LAST chunk).
    Chunk {
        size: u64,
        last: bool,
        refusal: Option<Reply>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Connected, greeting not decided yet.
    Connected,
    /// The connect stage refused the client: only QUIT is accepted.
    Refused,
    /// Greeted by us; waiting for HELO/EHLO.
    NeedHelo,
    /// HELO/EHLO accepted.
    Ready,
}

/// The mail transaction in progress (RFC 5321 §3.3).
struct Transaction {
    queue_id: QueueId,
    sender: ReversePath,
    params: MailParams,
    recipients: Vec<(ForwardPath, Vec<String>)>,
    /// BDAT chunks of this transaction's message have been received.
    chunking: bool,
}

/// What a session needs from the server, pinned at connection time.
pub struct SessionEnv {
    pub config: Arc<Config>,
    pub spool: Arc<Spool>,
    pub listener: Arc<ListenerSpec>,
    pub kv: Arc<dyn KvBackend>,
    /// A TLS configuration exists (STARTTLS can be offered).
    pub tls_available: bool,
    /// Becomes true when the server shuts down (cuts waits short).
    pub shutdown: watch::Receiver<bool>,
}

pub struct Session {
    config: Arc<Config>,
    spool: Arc<Spool>,
    listener: Arc<ListenerSpec>,
    kv: Arc<dyn KvBackend>,
    tls_available: bool,
    chain: SessionChain,
    /// What plugins see of the session: shared with the stage calls in
    /// progress (0.2 lends it as a handle), copied only when changed while
    /// shared (`ctx_mut`).
    ctx: Arc<SessionContext>,
    phase: Phase,
    tx: Option<Transaction>,
    bad_commands: u32,
    exchange: Option<auth::Exchange>,
    auth_failures: u32,
    shutdown: watch::Receiver<bool>,
    /// Refused recipients (recipient-enumeration resistance).
    unknown: enumeration::Tally,
}

/// Stage argument and reply, reported to observers.
struct Observed<'a> {
    stage: Stage,
    argument: &'a str,
    decided_by: Option<Arc<str>>,
}

impl Session {
    pub fn new(env: SessionEnv, chain: SessionChain, ctx: SessionContext) -> Session {
        Session {
            config: env.config,
            spool: env.spool,
            listener: env.listener,
            kv: env.kv,
            tls_available: env.tls_available,
            chain,
            ctx: Arc::new(ctx),
            phase: Phase::Connected,
            tx: None,
            bad_commands: 0,
            exchange: None,
            auth_failures: 0,
            shutdown: env.shutdown,
            unknown: enumeration::Tally::default(),
        }
    }

    /// The TLS handshake after STARTTLS succeeded: forget everything learned
    /// before it (RFC 3207 §4.2); the client must send EHLO again.
    pub fn tls_started(&mut self, info: TlsInfo) {
        tracing::info!(protocol = %info.protocol, cipher = %info.cipher, "TLS established");
        self.reset();
        let ctx = self.ctx_mut();
        ctx.helo = None;
        ctx.esmtp = false;
        ctx.auth_user = None;
        ctx.tls = Some(info);
        self.exchange = None;
        if self.phase != Phase::Refused {
            self.phase = Phase::NeedHelo;
        }
    }

    /// Whether plugin instances are alive for this session.
    pub fn holds_instances(&self) -> bool {
        self.chain.live_instances() > 0
    }

    /// Give plugin instances back (the session is idle); state that must
    /// survive belongs in kv, as the contract says.
    pub fn release_instances(&mut self) {
        self.chain.release();
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The session state, to change it (copied first if a stage call still
    /// holds the previous state).
    fn ctx_mut(&mut self) -> &mut SessionContext {
        Arc::make_mut(&mut self.ctx)
    }

    /// Maximum DATA size for the transaction in progress.
    pub fn data_limit(&self) -> u64 {
        self.config.limits.max_message_size
    }

    async fn observe(&mut self, o: Observed<'_>, reply: &Reply) {
        if !self.chain.wants(Stage::Outcome) {
            return;
        }
        let outcome = Outcome::new(
            &self.ctx,
            Some(o.stage),
            o.argument.to_string(),
            (
                reply.code,
                reply.enhanced.map(|e| e.to_string()),
                reply.lines.join(" "),
            ),
            o.decided_by,
        );
        self.chain.outcome(&self.ctx, outcome).await;
    }

    /// Whether outcomes wait for 0.2 observers (their transaction ended):
    /// the connection delivers them once the replies are written.
    pub fn outcomes_ready(&self) -> bool {
        self.chain.batch_ready()
    }

    /// Whether outcomes wait for 0.2 observers at all.
    pub fn outcomes_pending(&self) -> bool {
        self.chain.outcomes_pending()
    }

    /// Hand the waiting outcomes to the 0.2 observers.
    pub async fn deliver_outcomes(&mut self) {
        self.chain.deliver_outcomes(&self.ctx).await;
    }

    /// Tell observers the session ended (0.2 observers get what is left).
    pub async fn finish(&mut self) {
        if self.chain.wants(Stage::Outcome) {
            let outcome = Outcome::new(
                &self.ctx,
                None,
                String::new(),
                (0, None, String::new()),
                None,
            );
            self.chain.outcome(&self.ctx, outcome).await;
            self.chain.deliver_outcomes(&self.ctx).await;
        }
    }

    /// Run the connect stage and decide the greeting.
    pub async fn greet(&mut self) -> Step {
        self.stage(
            Ask::Connect,
            "",
            async |s: &mut Self, d: &Decision| match &d.verdict {
                Verdict::Pass | Verdict::Accept | Verdict::AcceptWith(_) => {
                    s.phase = Phase::NeedHelo;
                    Step::Reply(replies::greeting(&s.config.hostname))
                }
                Verdict::Reject(r) => {
                    s.phase = Phase::Refused;
                    Step::Reply(replies::plugin(r))
                }
                Verdict::Defer(r) => Step::Close(replies::connect_defer(r)),
                Verdict::Disconnect(r) => Step::Close(replies::plugin(r)),
            },
        )
        .await
    }

    /// The one path every SMTP stage takes: the chain decides, `decide`
    /// turns the decision into the step (changing the session's state as
    /// it goes), and observers are told the reply that goes out.
    async fn stage(
        &mut self,
        ask: Ask<'_>,
        argument: &str,
        decide: impl AsyncFnOnce(&mut Self, &Decision) -> Step,
    ) -> Step {
        let stage = ask.stage();
        let d = self.chain.ask(&self.ctx, ask).await;
        let step = decide(self, &d).await;
        self.observe_decision(stage, argument, d, &step).await;
        step
    }

    /// A framing error on a command line.
    pub async fn line_error(&mut self, e: LineError) -> Step {
        let reply = match e {
            LineError::TooLong => replies::line_too_long(),
            LineError::BareLf | LineError::BareCr => replies::bare_line_ending(),
        };
        self.bad(reply)
    }

    /// Count a protocol error; past the limit the connection is closed.
    fn bad(&mut self, reply: Reply) -> Step {
        self.bad_commands += 1;
        if self.bad_commands > self.config.limits.max_bad_commands {
            Step::Close(replies::too_many_errors(&self.config.hostname))
        } else {
            Step::Reply(reply)
        }
    }

    /// Whether a framed line (without CRLF) longer than RFC 5321's 512 octets
    /// is acceptable here: only the AUTH command and SASL responses may be
    /// longer, up to the framer's 12288 (RFC 4954 §4).
    pub fn accepts_long_line(&self, line: &[u8]) -> bool {
        self.exchange.is_some() || postern_protocol::is_auth_command(line)
    }

    /// Handle one command line (without CRLF).
    pub async fn command(&mut self, line: &[u8]) -> Step {
        if self.exchange.is_some() {
            return self.auth_continue(line).await;
        }
        let cmd = match parse_command(line) {
            Ok(c) => c,
            // Without a size the chunk's octets cannot be told from the
            // commands after them: read nothing more from this client.
            Err(_) if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"BDAT") => {
                return Step::Close(replies::bdat_syntax());
            }
            Err(e) => return self.bad(e.reply()),
        };
        if self.phase == Phase::Refused {
            return match cmd {
                Command::Quit => Step::Close(replies::bye()),
                Command::Bdat { size, last } => {
                    self.bad_commands += 1;
                    Step::Chunk {
                        size,
                        last,
                        refusal: Some(replies::refused_only_quit()),
                    }
                }
                _ => self.bad(replies::refused_only_quit()),
            };
        }
        match cmd {
            Command::Helo(name) => self.helo(name, false).await,
            Command::Ehlo(name) => self.helo(name, true).await,
            Command::MailFrom { path, params } => self.mail(path, params).await,
            Command::RcptTo { path, params } => self.rcpt(path, params).await,
            Command::Data => self.data_command(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.reset();
                Step::Reply(replies::ok())
            }
            Command::Noop => Step::Reply(replies::ok()),
            Command::Quit => Step::Close(replies::bye()),
            Command::Help(_) => Step::Reply(replies::help(
                self.starttls_offered(),
                self.auth_offered() && self.ctx.auth_user.is_none(),
            )),
            Command::Vrfy(arg) => self.vrfy_expn(Stage::Vrfy, arg).await,
            Command::Expn(arg) => self.vrfy_expn(Stage::Expn, arg).await,
            Command::StartTls => self.starttls(),
            Command::Auth {
                mechanism,
                initial_response,
            } => self.auth_command(mechanism, initial_response).await,
        }
    }

    /// End the transaction (if any): its outcomes form a batch for 0.2
    /// observers.
    fn reset(&mut self) {
        if self.tx.is_some() || self.ctx.mail_from.is_some() {
            self.chain.close_batch();
        }
        self.tx = None;
        if self.ctx.mail_from.is_some() || !self.ctx.recipients.is_empty() {
            let ctx = self.ctx_mut();
            ctx.mail_from = None;
            ctx.recipients.clear();
        }
    }

    fn starttls_offered(&self) -> bool {
        self.listener.tls == TlsMode::Starttls && self.tls_available && self.ctx.tls.is_none()
    }

    fn keywords(&self) -> Vec<String> {
        let mut k = vec![
            "PIPELINING".into(),
            format!("SIZE {}", self.config.limits.max_message_size),
            "8BITMIME".into(),
            "CHUNKING".into(),
            "ENHANCEDSTATUSCODES".into(),
            "SMTPUTF8".into(),
            "DSN".into(),
        ];
        if self.ctx.tls.is_some() {
            // RFC 8689 §4: only where the message arrives over TLS.
            k.push("REQUIRETLS".into());
        }
        if self.starttls_offered() {
            k.push("STARTTLS".into());
        }
        if self.auth_offered() && self.ctx.auth_user.is_none() {
            k.push("AUTH PLAIN LOGIN".into());
        }
        k
    }

    fn starttls(&mut self) -> Step {
        if self.ctx.tls.is_some() {
            return self.bad(replies::tls_already_active());
        }
        if !self.starttls_offered() {
            return self.bad(replies::not_available("STARTTLS"));
        }
        Step::StartTls(replies::ready_for_tls())
    }

    async fn helo(&mut self, name: String, extended: bool) -> Step {
        // RFC 5321 §4.1.4: HELO/EHLO resets any transaction.
        self.reset();
        let ctx = self.ctx_mut();
        let previous = (ctx.helo.take(), ctx.esmtp);
        ctx.helo = Some(name.clone());
        ctx.esmtp = extended;
        let ask = Ask::Helo {
            name: &name,
            extended,
        };
        self.stage(ask, &name, async |s: &mut Self, d: &Decision| {
            if !matches!(
                d.verdict,
                Verdict::Pass | Verdict::Accept | Verdict::AcceptWith(_)
            ) {
                let ctx = s.ctx_mut();
                (ctx.helo, ctx.esmtp) = previous;
                return refusal(&d.verdict);
            }
            s.phase = Phase::Ready;
            if extended {
                let client = s.ctx.client.ip().to_string();
                Step::Reply(replies::ehlo(&s.config.hostname, &client, s.keywords()))
            } else {
                Step::Reply(replies::helo(&s.config.hostname))
            }
        })
        .await
    }

    async fn mail(&mut self, path: ReversePath, params: MailParams) -> Step {
        if self.phase != Phase::Ready {
            return self.bad(replies::need_helo());
        }
        if self.listener.require_auth && self.ctx.auth_user.is_none() {
            return Step::Reply(replies::auth_required());
        }
        if self.tx.is_some() {
            return self.bad(replies::nested_mail());
        }
        if !self.ctx.esmtp && !params.all.is_empty() {
            return self.bad(replies::params_need_ehlo());
        }
        if let Some(p) = unsupported_mail_param(&params) {
            return self.bad(replies::unsupported_param(&p));
        }
        if params.requiretls && self.ctx.tls.is_none() {
            // Not offered without TLS (RFC 8689 §4.1).
            return self.bad(replies::unsupported_param("REQUIRETLS"));
        }
        if let ReversePath::Mailbox(m) = &path
            && !m.is_ascii()
            && !params.smtputf8
        {
            return Step::Reply(replies::need_smtputf8());
        }
        if params
            .size
            .is_some_and(|s| s > self.config.limits.max_message_size)
        {
            return Step::Reply(replies::size_exceeded());
        }
        let sender = envelope::sender(&path, &params, |d| self.config.is_local_domain(d));
        let argument = sender.address.clone();
        let ask = Ask::MailFrom(&sender);
        let decide = async |s: &mut Self, d: &Decision| {
            let reply = match &d.verdict {
                Verdict::Pass | Verdict::Accept => replies::sender_ok(),
                Verdict::AcceptWith(r) => replies::plugin(r),
                v => return refusal(v),
            };
            s.open_transaction(path, params, sender.clone());
            Step::Reply(reply)
        };
        self.stage(ask, &argument, decide).await
    }

    fn open_transaction(&mut self, path: ReversePath, params: MailParams, sender: EnvelopeAddress) {
        let ctx = self.ctx_mut();
        ctx.mail_from = Some(sender);
        ctx.recipients.clear();
        self.tx = Some(Transaction {
            queue_id: QueueId::generate(),
            sender: path,
            params,
            recipients: Vec::new(),
            chunking: false,
        });
    }

    async fn observe_decision(&mut self, stage: Stage, argument: &str, d: Decision, step: &Step) {
        let reply = step_reply(step).clone();
        self.observe(
            Observed {
                stage,
                argument,
                decided_by: d.decided_by,
            },
            &reply,
        )
        .await;
    }

    async fn rcpt(&mut self, path: ForwardPath, params: postern_protocol::RcptParams) -> Step {
        let Some(tx) = &self.tx else {
            return self.bad(replies::need_mail());
        };
        if tx.recipients.len() >= self.config.limits.max_recipients {
            return Step::Reply(replies::too_many_recipients());
        }
        if let Some(p) = params.other.first() {
            return self.bad(replies::unsupported_param(&p.keyword));
        }
        if let ForwardPath::Mailbox(m) = &path
            && !m.is_ascii()
            && !tx.params.smtputf8
        {
            return Step::Reply(replies::need_smtputf8());
        }
        let rcpt = envelope::recipient(&path, &params, |d| self.config.is_local_domain(d));
        let argument = rcpt.address.clone();
        let guard = match self.recipient_guard().await {
            Ok(g) => g,
            Err(close) => return close,
        };
        let ask = Ask::RcptTo(&rcpt);
        let decide = async |s: &mut Self, d: &Decision| {
            let step = match &d.verdict {
                Verdict::Pass if !rcpt.is_local => {
                    Step::Reply(replies::relay_denied(&rcpt.address))
                }
                Verdict::Pass | Verdict::Accept => Step::Reply(replies::recipient_ok()),
                Verdict::AcceptWith(r) => Step::Reply(replies::plugin(r)),
                v => refusal(v),
            };
            let step = s.recipient_counted(guard, step).await;
            if step_reply(&step).is_positive()
                && let Some(tx) = &mut s.tx
            {
                tx.recipients
                    .push((path, envelope::raw_params(&params.all)));
                s.ctx_mut().recipients.push(rcpt.clone());
            }
            step
        };
        self.stage(ask, &argument, decide).await
    }

    fn data_command(&mut self) -> Step {
        match &self.tx {
            None => self.bad(replies::need_mail()),
            Some(tx) if tx.recipients.is_empty() => Step::Reply(replies::no_valid_recipients()),
            Some(tx) if tx.chunking => self.bad(replies::data_after_bdat()),
            Some(_) => Step::Data(replies::start_data()),
        }
    }

    /// `BDAT size [LAST]` (RFC 3030): the chunk's octets follow at once and
    /// are read whatever the answer, so a refused chunk never reaches the
    /// command parser. CHUNKING is offered after EHLO only.
    fn bdat(&mut self, size: u64, last: bool) -> Step {
        let refusal = match &mut self.tx {
            _ if !self.ctx.esmtp => Some(replies::bdat_needs_ehlo()),
            None => Some(replies::need_mail()),
            Some(tx) if tx.recipients.is_empty() => Some(replies::no_valid_recipients()),
            Some(tx) => {
                tx.chunking = true;
                None
            }
        };
        if refusal.is_some() {
            self.bad_commands += 1;
        }
        Step::Chunk {
            size,
            last,
            refusal,
        }
    }

    /// Whether a message is being received in BDAT chunks (the connection
    /// keeps the chunks so far while this holds).
    pub fn chunking(&self) -> bool {
        self.tx.as_ref().is_some_and(|t| t.chunking)
    }

    async fn vrfy_expn(&mut self, stage: Stage, arg: String) -> Step {
        let ask = if stage == Stage::Vrfy {
            Ask::Vrfy(&arg)
        } else {
            Ask::Expn(&arg)
        };
        self.stage(ask, &arg, async |_: &mut Self, d: &Decision| {
            match &d.verdict {
                Verdict::Pass | Verdict::Accept if stage == Stage::Vrfy => {
                    Step::Reply(replies::vrfy_default())
                }
                Verdict::Pass | Verdict::Accept => Step::Reply(replies::expn_default()),
                Verdict::AcceptWith(r) => Step::Reply(replies::plugin(r)),
                v => refusal(v),
            }
        })
        .await
    }

    /// The server is shutting down: say so (RFC 5321 §3.8) and close.
    pub fn shutdown(&self) -> Step {
        Step::Close(replies::shutting_down(&self.config.hostname))
    }

    /// The client was silent for too long (RFC 5321 §4.5.3.2).
    pub fn timed_out(&self) -> Step {
        Step::Close(replies::timeout(&self.config.hostname))
    }
}

/// The step for a refusing verdict (reject, defer, disconnect).
fn refusal(v: &Verdict) -> Step {
    match v {
        Verdict::Reject(r) | Verdict::Defer(r) => Step::Reply(replies::plugin(r)),
        Verdict::Disconnect(r) => Step::Close(replies::plugin(r)),
        // Callers handle the accepting verdicts; keep a sane answer anyway.
        Verdict::Pass | Verdict::Accept => Step::Reply(replies::ok()),
        Verdict::AcceptWith(r) => Step::Reply(replies::plugin(r)),
    }
}

pub fn step_reply(s: &Step) -> &Reply {
    static CHUNK_PENDING: std::sync::LazyLock<Reply> =
        std::sync::LazyLock::new(replies::chunk_pending);
    match s {
        Step::Reply(r) | Step::Close(r) | Step::Data(r) | Step::StartTls(r) => r,
        Step::Chunk {
            refusal: Some(r), ..
        } => r,
        Step::Chunk { refusal: None, .. } => &CHUNK_PENDING,
    }
}

/// MAIL parameters this server does not implement (RFC 5321 §4.1.1.11: 555).
fn unsupported_mail_param(p: &MailParams) -> Option<String> {
    if p.body == Some(BodyType::BinaryMime) {
        return Some("BODY=BINARYMIME".into());
    }
    p.other.first().map(|o| o.keyword.clone())
}
