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

/// The SMTP client a message came from, as its session knew it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// The client's address and port.
    pub client_ip: String,
    pub client_port: u16,
    /// The HELO/EHLO argument, if one was given.
    pub helo: Option<String>,
    /// The SASL-authenticated user, if any.
    pub auth_user: Option<String>,
    /// Whether the transaction ran over TLS.
    pub tls: bool,
}

impl Client {
    /// A client known by its address alone: no HELO, AUTH nor TLS.
    pub fn at(ip: impl Into<String>, port: u16) -> Client {
        Client {
            client_ip: ip.into(),
            client_port: port,
            helo: None,
            auth_user: None,
            tls: false,
        }
    }
}

/// Everything the SMTP transaction established about a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The queue id; also the id in the message's log records.
    pub queue_id: QueueId,
    /// When the final `.` of DATA was received, unix milliseconds.
    pub received_at_unix_ms: u64,
    /// Who sent it, and how (in the record, its fields stand among the
    /// envelope's own).
    #[serde(flatten)]
    pub client: Client,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The record's JSON: the client's fields stand among the envelope's
    /// own, in the order they always had.
    #[test]
    fn record_keeps_its_fields_and_their_order() {
        let json = r#"{"queue_id":"0000000000000000000A","received_at_unix_ms":1,"client_ip":"::1","client_port":2,"helo":"c.example","auth_user":null,"tls":true,"mail_from":"","mail_params":[],"recipients":[{"address":"a@b","params":[]}],"session_id":"s"}"#;
        let envelope = Envelope {
            queue_id: "0000000000000000000A".parse().unwrap(),
            received_at_unix_ms: 1,
            client: Client {
                helo: Some("c.example".into()),
                tls: true,
                ..Client::at("::1", 2)
            },
            mail_from: String::new(),
            mail_params: vec![],
            recipients: vec![Recipient {
                address: "a@b".into(),
                params: vec![],
            }],
            session_id: "s".into(),
            quarantine: None,
        };
        assert_eq!(serde_json::to_string(&envelope).unwrap(), json);
        assert_eq!(serde_json::from_str::<Envelope>(json).unwrap(), envelope);
        let quarantined = json.replace(r#""s"}"#, r#""s","quarantine":"why"}"#);
        let back: Envelope = serde_json::from_str(&quarantined).unwrap();
        assert_eq!(back.quarantine.as_deref(), Some("why"));
        assert_eq!(serde_json::to_string(&back).unwrap(), quarantined);
    }
}
