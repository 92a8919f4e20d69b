//! What the queue manager tells delivery-side plugins (`postern:policy/
//! delivery@0.2.0`), shared by the delivery crate that asks and the runtime
//! that converts: one type each, no copies between them.

/// A queued message, as the delivery hooks see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedMessage {
    pub queue_id: String,
    /// `""` for the null sender.
    pub sender: String,
    pub size: u64,
    pub received_ms: u64,
    /// Attempts finished before this one.
    pub attempts: u32,
    pub client_ip: String,
    pub auth_user: Option<String>,
}

/// A delivery status notification about to be queued, by what it reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BounceInfo {
    /// The message it reports on.
    pub queue_id: String,
    /// Who gets it (that message's sender).
    pub recipient: String,
    pub failed: Vec<String>,
    pub delayed: Vec<String>,
    pub delivered: Vec<String>,
}
