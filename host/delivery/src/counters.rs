//! Process-wide delivery counters for the metrics endpoint: recipient
//! outcomes, attempts, retries, bounces, and the queue's size. Updated with
//! relaxed atomics by the queue manager; read at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Counters {
    /// Recipients accepted by the next hop or written to a mailbox.
    pub delivered: AtomicU64,
    /// Recipient attempts that failed temporarily (retried later).
    pub deferred: AtomicU64,
    /// Recipients that failed permanently.
    pub failed: AtomicU64,
    /// Recipients given up after `max_age`.
    pub expired: AtomicU64,
    /// Delivery attempts finished (one per message attempt).
    pub attempts: AtomicU64,
    /// Attempts after the first one of a message.
    pub retries: AtomicU64,
    /// Bounces (DSNs) queued.
    pub bounces: AtomicU64,
    /// Messages the queue manager knows (gauge).
    pub queued: AtomicU64,
    /// Deliveries in progress (gauge).
    pub active: AtomicU64,
}

pub static COUNTERS: Counters = Counters {
    delivered: AtomicU64::new(0),
    deferred: AtomicU64::new(0),
    failed: AtomicU64::new(0),
    expired: AtomicU64::new(0),
    attempts: AtomicU64::new(0),
    retries: AtomicU64::new(0),
    bounces: AtomicU64::new(0),
    queued: AtomicU64::new(0),
    active: AtomicU64::new(0),
};

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub(crate) fn set(c: &AtomicU64, n: u64) {
    c.store(n, Ordering::Relaxed);
}
