//! Postern's durable message spool: the SMTP server hands each accepted message to
//! [`Spool::commit`] and answers `250` only after it returns Ok (RFC 5321 §6.1). Trusts
//! the session for envelope contents and nothing on disk. One file per message (format
//! in [`format`](mod@format)), written to `tmp/`, fdatasync'ed, renamed into `queue/`, made durable
//! by a group-committed directory fsync; recovered and verified at open.

mod committer;
mod envelope;
mod error;
pub mod format;
mod fsio;
mod id;
mod paths;
mod reader;
mod recovery;
mod spool;
mod stats;
mod writer;

pub use envelope::{Envelope, Recipient};
pub use error::SpoolError;
pub use id::{QUEUE_ID_LEN, QueueId};
pub use reader::QueuedMessage;
pub use recovery::RecoveryReport;
pub use spool::{Spool, SpoolConfig};
pub use stats::SpoolStats;
