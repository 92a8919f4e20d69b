//! Postern's delivery side: the queue manager that takes committed messages from the
//! spool and delivers them — to local Maildirs or by SMTP (MX look-up, STARTTLS,
//! relayhost with AUTH) — with durable per-recipient state, retries with backoff and
//! RFC 3464 bounces. Trusts the spool's verified envelopes and the operator's
//! settings; treats every remote SMTP server and DNS answer as hostile.
//!
//! Modules, each single-purpose: [`settings`] (what the operator chose),
//! [`retry`] (the schedule), [`journal`] (the per-message delivery journal,
//! kept as state records in the spool's log), [`state`] (per-recipient state
//! rebuilt from it), [`route`] (which agent and destination a recipient goes
//! to), [`mailbox`] and [`maildir`] (local delivery), [`mx`] (RFC 5321 §5.1 /
//! RFC 7505, through `postern-capability`'s `DnsBackend`: this crate does not
//! link the plugin runtime), [`tls`] (the STARTTLS policy), [`dane`] (RFC 7672 DANE), [`smtp`] (the
//! client), [`downgrade`] (8BITMIME down-conversion for a hop without it),
//! [`policy`] (what delivery-side plugins decide: routes, failed attempts,
//! bounces), [`dsn`] (RFC 3464 reports), [`manager`] (scheduling
//! and concurrency) and [`inspect`] (queue commands without a running
//! server).

pub mod counters;
pub mod dane;
pub mod downgrade;
pub mod dsn;
pub mod inspect;
pub mod journal;
pub mod mailbox;
pub mod maildir;
pub mod manager;
pub mod mx;
pub mod outcome;
pub mod policy;
pub mod retry;
pub mod route;
pub mod settings;
pub mod smtp;
pub mod state;
pub mod sts;
pub mod tls;
pub mod tlsrpt;
pub mod view;

pub use manager::{Prepared, QueueHandle, QueueManager};
pub use outcome::{Diagnostic, Handover, RcptOutcome};
pub use policy::{
    BounceChoice, BounceFacts, DeliveryPolicy, Judgement, MessageFacts, NoPolicy, PolicyFuture,
    RouteChoice,
};
pub use retry::RetrySchedule;
pub use settings::{Relayhost, Secret, Settings, TlsPolicy};
pub use view::{QueueDetail, QueueEntry, RecipientEntry};

/// Milliseconds since the unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
