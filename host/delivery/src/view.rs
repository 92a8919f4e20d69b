//! What the queue commands show: serialisable views of a queued message, built the
//! same way from the live queue manager and from the spool on disk (offline), so
//! `postern queue list|show` print one format either way. Input: `MessageState`.

use serde::Serialize;

use crate::state::{MessageState, RcptStatus};

#[derive(Clone, Debug, Serialize)]
pub struct RecipientEntry {
    pub address: String,
    /// "pending", "delivered" or "failed".
    pub status: &'static str,
    /// The latest failure, one line.
    pub diagnostic: Option<String>,
    /// Where it was delivered.
    pub detail: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct QueueEntry {
    pub id: String,
    pub size: u64,
    pub arrival_unix_ms: u64,
    pub sender: String,
    /// "active" (being delivered), "deferred" (waiting for a retry), "queued" (not
    /// tried yet), "hold" (delivery disabled) or "quarantined" (held for an
    /// operator: `postern queue release`).
    pub state: String,
    /// Why a data-stage plugin quarantined it (kept after a release).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
    pub attempts: u32,
    pub next_attempt_unix_ms: Option<u64>,
    pub last_error: Option<String>,
    pub recipients: Vec<RecipientEntry>,
}

#[derive(Clone, Debug, Serialize)]
pub struct QueueDetail {
    #[serde(flatten)]
    pub entry: QueueEntry,
    /// The envelope's client, its fields as they are in the envelope.
    #[serde(flatten)]
    pub client: postern_spool::Client,
    pub session_id: String,
    pub mail_params: Vec<String>,
    pub dsns: Vec<String>,
    /// The message's header section (lossy UTF-8).
    pub headers: String,
}

/// The list view of `state`, labelled `phase`.
pub fn entry(state: &MessageState, phase: &str) -> QueueEntry {
    QueueEntry {
        id: state.id.to_string(),
        size: state.size,
        arrival_unix_ms: state.envelope.received_at_unix_ms,
        sender: state.envelope.mail_from.clone(),
        state: phase.to_string(),
        quarantine: state.envelope.quarantine.clone(),
        attempts: state.attempts,
        next_attempt_unix_ms: (state.attempts > 0 || state.next_ms > 0).then_some(state.next_ms),
        last_error: state.last_error().map(|d| d.to_string()),
        recipients: state
            .rcpts
            .iter()
            .map(|r| RecipientEntry {
                address: r.address.clone(),
                status: r.status.name(),
                diagnostic: r.last.as_ref().map(|d| d.to_string()),
                detail: r.detail.clone(),
            })
            .collect(),
    }
}

/// The detailed view; `headers` is the message's header section.
pub fn detail(state: &MessageState, phase: &str, headers: &[u8]) -> QueueDetail {
    let e = &state.envelope;
    QueueDetail {
        entry: entry(state, phase),
        client: e.client.clone(),
        session_id: e.session_id.clone(),
        mail_params: e.mail_params.clone(),
        dsns: state.dsns.clone(),
        headers: String::from_utf8_lossy(headers).into_owned(),
    }
}

/// The phase of a message that is not being delivered right now.
pub fn resting_phase(state: &MessageState, enabled: bool) -> &'static str {
    if state.is_held() {
        "quarantined"
    } else if !enabled {
        "hold"
    } else if state.attempts == 0
        && state
            .rcpts
            .iter()
            .all(|r| r.status == RcptStatus::Pending && r.last.is_none())
    {
        "queued"
    } else {
        "deferred"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::state::tests::envelope;

    /// `queue show --json` and the admin socket: the envelope's client
    /// fields stand among the entry's, in the order they always had.
    #[test]
    fn detail_keys_and_their_order() {
        let env = Arc::new(envelope("a@b.test", &[("c@d.test", &[])]));
        let state = MessageState::new(env.queue_id, env, 10);
        let view = detail(&state, "queued", b"Subject: x\r\n");
        let want = [
            "id",
            "size",
            "arrival_unix_ms",
            "sender",
            "state",
            "attempts",
            "next_attempt_unix_ms",
            "last_error",
            "recipients",
            "client_ip",
            "client_port",
            "helo",
            "auth_user",
            "tls",
            "session_id",
            "mail_params",
            "dsns",
            "headers",
        ];
        let value = serde_json::to_value(&view).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut sorted = want.to_vec();
        keys.sort_unstable();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
        let json = serde_json::to_string(&view).unwrap();
        let at: Vec<usize> = want
            .iter()
            .map(|k| json.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(at.is_sorted(), "keys out of order in {json}");
        assert_eq!(value["client_ip"], "127.0.0.1");
        assert_eq!(value["client_port"], 1);
        assert_eq!(value["tls"], false);
    }
}
