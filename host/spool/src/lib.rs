//! Postern's durable message spool: the SMTP server hands each accepted message to
//! [`Spool::commit`] and answers `250` only after it returns Ok (RFC 5321 §6.1). Trusts
//! the session for envelope contents and nothing on disk. Format version 2: a log of
//! checksummed records (messages, delivery-state records, tombstones; see
//! [`format`](mod@format)) in segment files, appended by one committer thread that
//! fdatasyncs once per batch of concurrent commits (group commit); verified and
//! repaired at open, reclaimed by deleting and compacting segments.

mod committer;
mod envelope;
mod error;
pub mod format;
mod fsio;
mod id;
mod index;
mod janitor;
mod legacy;
mod paths;
mod reader;
mod recovery;
mod segment;
mod spill;
mod spool;
mod stats;

pub use envelope::{Client, Envelope, Recipient};
pub use error::SpoolError;
pub use id::{QUEUE_ID_LEN, QueueId};
pub use janitor::Maintenance;
pub use reader::{MessageReader, QueuedMessage};
pub use recovery::RecoveryReport;
pub use spool::{Committed, Spool, SpoolConfig};
pub use stats::SpoolStats;
