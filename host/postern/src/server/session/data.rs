//! End of DATA: refuse malformed content, run the data stage, prepend the
//! `Received:` field and plugin headers, and hand the message to the spool —
//! answering 250 only after the spool reports it durable (RFC 5321 §6.1).
//! A large message is not in memory: it lies in a spill file (see
//! `incoming`), which the data stage reads through the message handle and the
//! spool copies into its log (`Spool::commit_file`).
//! Input: message bytes from the client (already dot-unstuffed by the
//! protocol library), plugin verdicts (validated by the runtime).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use postern_plugin::{Ask, Decision, MessageData, Stage, Stored, Verdict};
use postern_protocol::DataOutcome;
use postern_spool::{Client, Envelope, Recipient};

use super::changes::{apply_envelope, header_section, rewrite_headers};
use super::envelope::{raw_params, recipient_text, sender_text};
use super::{Observed, Session, Step, refusal, replies, step_reply};
use crate::server::incoming::Incoming;
use crate::server::received::{ReceivedCounter, Trace, count_received, received};

/// Block read at a time while counting the trace fields of a spilled message.
const HOPS_BLOCK: u32 = 64 << 10;

impl Session {
    /// The content of a DATA command about to start (see `Incoming`).
    pub fn incoming(&self) -> Incoming {
        Incoming::new(Arc::clone(&self.spool), &self.config.hostname)
    }

    /// A BDAT chunk (not the last) was read: 250, unless the message is
    /// already refused (too big, bare line end, NUL, long line), which ends
    /// the transaction now rather than at LAST.
    pub async fn chunk_done(
        &mut self,
        size: u64,
        body: Incoming,
        outcome: DataOutcome,
    ) -> (Step, Option<Incoming>) {
        if outcome == DataOutcome::Complete {
            return (Step::Reply(replies::chunk_received(size)), Some(body));
        }
        (self.data_done(body, outcome).await, None)
    }

    /// The message data ended (".", or BDAT LAST) with `outcome`; `body`
    /// is the content.
    pub async fn data_done(&mut self, body: Incoming, outcome: DataOutcome) -> Step {
        let step = self.finish_message(body, outcome).await;
        self.reset();
        step
    }

    async fn finish_message(&mut self, body: Incoming, outcome: DataOutcome) -> Step {
        let message = match self.accept_content(body, outcome) {
            Ok(message) => message,
            Err(reply) => {
                crate::server::metrics::events::message("refused");
                tracing::info!(outcome = ?outcome, "message refused: {}", reply);
                let step = Step::Reply(reply);
                self.observe(
                    Observed {
                        stage: Stage::Data,
                        argument: "",
                        decided_by: None,
                    },
                    step_reply(&step),
                )
                .await;
                return step;
            }
        };
        let message = Arc::new(message);
        let decide = async |s: &mut Self, d: &Decision| {
            let step = match &d.verdict {
                Verdict::Pass | Verdict::Accept | Verdict::AcceptWith(_) => {
                    s.spool_message(&message, d).await
                }
                v => refusal(v),
            };
            if !step_reply(&step).is_positive() {
                crate::server::metrics::events::message("refused");
                tracing::info!(decided_by = ?d.decided_by, "message refused: {}", step_reply(&step));
            }
            step
        };
        self.stage(Ask::Data(&message), "", decide).await
    }

    /// The content as a message for the data stage, or the reply refusing it
    /// before that stage: malformed or too large, looping, or not storable.
    fn accept_content(
        &self,
        body: Incoming,
        outcome: DataOutcome,
    ) -> Result<MessageData, postern_protocol::Reply> {
        match outcome {
            DataOutcome::Complete => {}
            DataOutcome::TooBig => return Err(replies::size_exceeded()),
            DataOutcome::BareLineEnding => return Err(replies::data_bare_line_ending()),
            DataOutcome::LineTooLong => return Err(replies::data_line_too_long()),
            DataOutcome::Nul => return Err(replies::data_nul()),
        }
        let unstorable = |e: std::io::Error| {
            tracing::error!(error = %e, "cannot keep the message data");
            replies::storage_failure()
        };
        let message = body.finish().map_err(unstorable)?;
        match self.looping(&message).map_err(unstorable)? {
            Some(reply) => Err(reply),
            None => Ok(message),
        }
    }

    /// RFC 5321 §6.3: a message that already carries `max_hops` trace
    /// fields (ours would be one more) is looping between relays.
    fn looping(&self, message: &MessageData) -> std::io::Result<Option<postern_protocol::Reply>> {
        let max = self.config.limits.max_hops;
        if max == 0 {
            return Ok(None);
        }
        let hops = match message.stored() {
            Stored::Memory(bytes) => count_received(bytes),
            Stored::File { len, .. } => {
                // The header section, a block at a time (the first from memory).
                let mut counter = ReceivedCounter::default();
                let mut at = 0;
                while at < len && !counter.feed(&message.read(at, HOPS_BLOCK)?) {
                    at += u64::from(HOPS_BLOCK);
                }
                counter.finish()
            }
        };
        Ok((hops >= max).then(|| replies::too_many_hops(hops)))
    }

    async fn spool_message(&mut self, message: &MessageData, d: &Decision) -> Step {
        let added = &d.headers;
        let Some(tx) = &self.tx else {
            return Step::Reply(replies::need_mail());
        };
        let now = SystemTime::now();
        let id = tx.queue_id;
        let rcpts: Vec<String> = tx
            .recipients
            .iter()
            .map(|(p, _)| recipient_text(p))
            .collect();
        let trace = received(&Trace {
            helo: self.ctx.helo.as_deref(),
            client_name: self.ctx.client_name.as_deref(),
            client_ip: self.ctx.client.ip(),
            hostname: &self.config.hostname,
            esmtp: self.ctx.esmtp,
            tls: self.ctx.tls.is_some(),
            authenticated: self.ctx.auth_user.is_some(),
            smtputf8: tx.params.smtputf8,
            queue_id: id.as_str(),
            single_recipient: (rcpts.len() == 1).then(|| rcpts[0].as_str()),
            when: now,
        });
        let mut extra = String::new();
        for (name, value) in added {
            extra.push_str(name);
            extra.push_str(": ");
            extra.push_str(value);
            extra.push_str("\r\n");
        }
        // What the data stage asked to change (0.2): the envelope now, the
        // header section below.
        if !d.changes.envelope.is_empty() {
            let Some(tx) = self.tx.as_mut() else {
                return Step::Reply(replies::need_mail());
            };
            if let Err(e) = apply_envelope(tx, &d.changes.envelope) {
                tracing::warn!(queue_id = %id, "data-stage envelope changes refused: {e}");
                return Step::Reply(replies::changes_failed());
            }
            tracing::info!(queue_id = %id, changes = d.changes.envelope.len(), "envelope changed by the data stage");
        }
        let Some(tx) = &self.tx else {
            return Step::Reply(replies::need_mail());
        };
        let envelope = Envelope {
            queue_id: id,
            received_at_unix_ms: now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            client: Client {
                client_ip: self.ctx.client.ip().to_string(),
                client_port: self.ctx.client.port(),
                helo: self.ctx.helo.clone(),
                auth_user: self.ctx.auth_user.clone(),
                tls: self.ctx.tls.is_some(),
            },
            mail_from: sender_text(&tx.sender),
            mail_params: raw_params(&tx.params.all),
            recipients: tx
                .recipients
                .iter()
                .map(|(p, params)| Recipient {
                    address: recipient_text(p),
                    params: params.clone(),
                })
                .collect(),
            session_id: self.ctx.id.to_string(),
            quarantine: d.changes.quarantine.clone(),
        };
        // The header section as plugins changed it, and where the rest of
        // the message starts.
        // A milter may have replaced the body: the header section, then it.
        let replaced_body = d.changes.body.as_deref();
        let (section, rest_at) = if d.changes.headers.is_empty() && replaced_body.is_none() {
            (Vec::new(), 0)
        } else {
            match header_section(message) {
                Ok(s) if d.changes.headers.is_empty() => (s.clone(), s.len()),
                Ok(s) => (rewrite_headers(&s, &d.changes.headers), s.len()),
                Err(e) => {
                    tracing::error!(queue_id = %id, error = %e, "cannot read the header section");
                    return Step::Reply(replies::storage_failure());
                }
            }
        };
        let head: [&[u8]; 3] = [trace.as_bytes(), extra.as_bytes(), &section];
        let committed = match message.stored() {
            _ if replaced_body.is_some() => {
                let body = replaced_body.unwrap_or_default();
                tracing::info!(queue_id = %id, bytes = body.len(), "body replaced by a milter");
                let parts: [&[u8]; 4] = [head[0], head[1], head[2], body];
                self.spool.commit(&envelope, &parts).await
            }
            Stored::Memory(bytes) => {
                let parts: [&[u8]; 4] = [head[0], head[1], head[2], &bytes[rest_at..]];
                self.spool.commit(&envelope, &parts).await
            }
            Stored::File { file, len } => {
                let at = rest_at as u64;
                self.spool
                    .commit_file_range(&envelope, &head, Arc::clone(file), at, len - at)
                    .await
            }
        };
        match committed {
            Ok(()) => {
                crate::server::metrics::events::message("queued");
                self.ctx_mut().messages_accepted += 1;
                tracing::info!(
                    queue_id = %id,
                    from = %envelope.mail_from,
                    recipients = envelope.recipients.len(),
                    size = message.size(),
                    "message queued"
                );
                Step::Reply(replies::queued(id.as_str()))
            }
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "spool commit failed");
                Step::Reply(replies::storage_failure())
            }
        }
    }
}
