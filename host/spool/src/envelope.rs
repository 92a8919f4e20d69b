//! The SMTP envelope stored with each message (RFC 5321 §3.3: MAIL FROM reverse-path,
//! RCPT TO forward-paths, their ESMTP parameters) plus the session facts policy and
//! delivery need. Built by the trusted SMTP session; read back from the log as JSON,
//! where it is trusted only after its record passed the checksum and id checks.

use serde::{Deserialize, Serialize};

use crate::QueueId;

/// One accepted RCPT TO.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The forward-path without angle brackets.
    pub address: String,
    /// ESMTP parameters as received: raw `KEY=VALUE` or `KEY` (e.g. `NOTIFY=FAILURE`).
    pub params: Vec<String>,
}

/// Everything the SMTP transaction established about a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The queue id; also the id in the message's log records.
    pub queue_id: QueueId,
    /// When the final `.` of DATA was received, unix milliseconds.
    pub received_at_unix_ms: u64,
    pub client_ip: String,
    pub client_port: u16,
    /// The HELO/EHLO argument, if one was given.
    pub helo: Option<String>,
    /// The SASL-authenticated user, if any.
    pub auth_user: Option<String>,
    /// Whether the transaction ran over TLS.
    pub tls: bool,
    /// The reverse-path without angle brackets; `""` for the null reverse-path `<>`.
    pub mail_from: String,
    /// ESMTP parameters of MAIL FROM as received (e.g. `SIZE=1234`, `BODY=8BITMIME`).
    pub mail_params: Vec<String>,
    pub recipients: Vec<Recipient>,
    /// The SMTP session that accepted the message (ties logs together).
    pub session_id: String,
    /// Held in the queue for an operator, with this reason (a data-stage
    /// plugin's `quarantine`): not delivered until released. Absent from
    /// records written before quarantine existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
}
