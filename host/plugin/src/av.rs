//! The "av-scan" capability as the runtime sees it: a scanner backend the
//! host lends to plugins (`postern:policy/av-scan`). The server implements
//! it with clamd (`[av]`); without a scanner every scan is `unavailable`.
//! Input: the host's own copy of a message (plugins only name it).

use std::sync::Arc;

use crate::capability::BoxFuture;
use crate::message::MessageData;

/// What a scan found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanResult {
    Clean,
    /// The signature's name.
    Infected(String),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("scanner unavailable: {0}")]
    Unavailable(String),
    #[error("message larger than the scanner accepts")]
    TooLarge,
}

pub trait AvBackend: Send + Sync {
    fn scan(&self, message: Arc<MessageData>) -> BoxFuture<'_, Result<ScanResult, ScanError>>;
}

/// No `[av]` scanner configured.
pub struct NoAv;

impl AvBackend for NoAv {
    fn scan(&self, _message: Arc<MessageData>) -> BoxFuture<'_, Result<ScanResult, ScanError>> {
        Box::pin(async {
            Err(ScanError::Unavailable(
                "no scanner configured ([av] clamd)".into(),
            ))
        })
    }
}
