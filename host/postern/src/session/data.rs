//! End of DATA: refuse malformed content, run the data stage, prepend the
//! `Received:` field and plugin headers, and hand the message to the spool —
//! answering 250 only after the spool reports it durable (RFC 5321 §6.1).
//! Input: message bytes from the client (already dot-unstuffed by the
//! protocol library), plugin verdicts (validated by the runtime).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use postern_plugin::{MessageData, Stage, Verdict};
use postern_protocol::DataOutcome;
use postern_spool::{Envelope, Recipient};

use super::envelope::{raw_params, recipient_text, sender_text};
use super::{Observed, Session, Step, refusal, replies, step_reply};
use crate::received::{Trace, count_received, received};

impl Session {
    /// The message data ended (".") with `outcome`; `body` is the content.
    pub async fn data_done(&mut self, body: Vec<u8>, outcome: DataOutcome) -> Step {
        let step = self.finish_message(body, outcome).await;
        self.reset();
        step
    }

    async fn finish_message(&mut self, body: Vec<u8>, outcome: DataOutcome) -> Step {
        let refused = match outcome {
            DataOutcome::Complete => self.looping(&body),
            DataOutcome::TooBig => Some(replies::size_exceeded()),
            DataOutcome::BareLineEnding => Some(replies::data_bare_line_ending()),
            DataOutcome::LineTooLong => Some(replies::data_line_too_long()),
            DataOutcome::Nul => Some(replies::data_nul()),
        };
        if let Some(reply) = refused {
            crate::metrics::message("refused");
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
        // RFC 8601 §5: fields claiming our authserv-id (the host name) go.
        let body = match postern_protocol::auth_results::strip_ours(&body, &self.config.hostname) {
            std::borrow::Cow::Borrowed(_) => body,
            std::borrow::Cow::Owned(stripped) => stripped,
        };
        let message = Arc::new(MessageData::new(body));
        let d = self.chain.data(&self.ctx, &message).await;
        let step = match &d.verdict {
            Verdict::Pass | Verdict::Accept | Verdict::AcceptWith(_) => {
                self.spool_message(&message, &d.headers).await
            }
            v => refusal(v),
        };
        if !step_reply(&step).is_positive() {
            crate::metrics::message("refused");
            tracing::info!(decided_by = ?d.decided_by, "message refused: {}", step_reply(&step));
        }
        let reply = step_reply(&step).clone();
        self.observe(
            Observed {
                stage: Stage::Data,
                argument: "",
                decided_by: d.decided_by,
            },
            &reply,
        )
        .await;
        step
    }

    /// RFC 5321 §6.3: a message that already carries `max_hops` trace
    /// fields (ours would be one more) is looping between relays.
    fn looping(&self, body: &[u8]) -> Option<postern_protocol::Reply> {
        let max = self.config.max_hops;
        if max == 0 {
            return None;
        }
        let hops = count_received(body);
        (hops >= max).then(|| replies::too_many_hops(hops))
    }

    async fn spool_message(&mut self, message: &MessageData, added: &[(String, String)]) -> Step {
        let Some(tx) = &self.tx else {
            return Step::Reply(replies::need_mail());
        };
        let now = SystemTime::now();
        let id = tx.queue_id.to_string();
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
            queue_id: &id,
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
        let envelope = Envelope {
            queue_id: id.clone(),
            received_at_unix_ms: now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            client_ip: self.ctx.client.ip().to_string(),
            client_port: self.ctx.client.port(),
            helo: self.ctx.helo.clone(),
            auth_user: self.ctx.auth_user.clone(),
            tls: self.ctx.tls.is_some(),
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
        };
        let parts: [&[u8]; 3] = [trace.as_bytes(), extra.as_bytes(), message.raw()];
        match self.spool.commit(&envelope, &parts).await {
            Ok(()) => {
                crate::metrics::message("queued");
                self.ctx.messages_accepted += 1;
                tracing::info!(
                    queue_id = %id,
                    from = %envelope.mail_from,
                    recipients = envelope.recipients.len(),
                    size = message.size(),
                    "message queued"
                );
                Step::Reply(replies::queued(&id))
            }
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "spool commit failed");
                Step::Reply(replies::storage_failure())
            }
        }
    }
}
