//! `[av]`: the virus scanner lent to plugins granted "av-scan": ClamAV's
//! clamd, fed each message with `zINSTREAM` (4-octet big-endian chunk
//! lengths, a zero length to end) over a unix or TCP socket, one connection
//! per scan. Calls, latency and results are counted for the metrics.
//! Input: clamd's answers (checked: anything but "stream: OK" or
//! "stream: NAME FOUND" is an error); the message is the host's copy.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use postern_plugin::{AvBackend, BoxFuture, MessageData, ScanError, ScanResult};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Where clamd listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClamdAddress {
    Unix(std::path::PathBuf),
    Inet(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvSettings {
    pub clamd: Option<ClamdAddress>,
    pub timeout: Duration,
    pub max_size: u64,
}

/// Counters by result, for the metrics and `postern status`.
#[derive(Default)]
pub struct AvStats {
    pub clean: AtomicU64,
    pub infected: AtomicU64,
    pub errors: AtomicU64,
    pub micros: AtomicU64,
}

pub static STATS: std::sync::LazyLock<AvStats> = std::sync::LazyLock::new(AvStats::default);

pub struct Clamd {
    settings: AvSettings,
    address: ClamdAddress,
}

/// The scanner for `[av]`, or none.
pub fn backend(settings: &AvSettings) -> Arc<dyn AvBackend> {
    match &settings.clamd {
        Some(a) => Arc::new(Clamd {
            settings: settings.clone(),
            address: a.clone(),
        }),
        None => Arc::new(postern_plugin::NoAv),
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The block sent per INSTREAM chunk.
const CHUNK: u32 = 64 * 1024;

impl Clamd {
    async fn connect(&self) -> std::io::Result<Box<dyn Io>> {
        Ok(match &self.address {
            ClamdAddress::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
            ClamdAddress::Inet(h) => Box::new(tokio::net::TcpStream::connect(h).await?),
        })
    }

    async fn instream(&self, message: &MessageData) -> Result<ScanResult, ScanError> {
        let io_err = |e: std::io::Error| ScanError::Unavailable(format!("clamd: {e}"));
        let mut s = self.connect().await.map_err(io_err)?;
        s.write_all(b"zINSTREAM\0").await.map_err(io_err)?;
        let size = message.size();
        let mut at = 0u64;
        while at < size {
            let chunk = message.read(at, CHUNK).map_err(io_err)?;
            if chunk.is_empty() {
                break;
            }
            s.write_all(&(chunk.len() as u32).to_be_bytes())
                .await
                .map_err(io_err)?;
            s.write_all(&chunk).await.map_err(io_err)?;
            at += chunk.len() as u64;
        }
        s.write_all(&0u32.to_be_bytes()).await.map_err(io_err)?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.map_err(io_err)?;
        parse(&answer)
    }
}

/// clamd's answer to INSTREAM.
fn parse(answer: &[u8]) -> Result<ScanResult, ScanError> {
    let text = String::from_utf8_lossy(answer);
    let text = text.trim_end_matches(['\0', '\n']).trim();
    let body = text.strip_prefix("stream:").map(str::trim).unwrap_or(text);
    if body == "OK" {
        return Ok(ScanResult::Clean);
    }
    if let Some(name) = body.strip_suffix(" FOUND") {
        let name = name.trim();
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic()) {
            return Ok(ScanResult::Infected(name.to_string()));
        }
    }
    if body.contains("size limit exceeded") {
        return Err(ScanError::TooLarge);
    }
    Err(ScanError::Unavailable(format!("clamd answered {body:?}")))
}

impl AvBackend for Clamd {
    fn scan(&self, message: Arc<MessageData>) -> BoxFuture<'_, Result<ScanResult, ScanError>> {
        Box::pin(async move {
            let started = Instant::now();
            let r = if message.size() > self.settings.max_size {
                Err(ScanError::TooLarge)
            } else {
                match tokio::time::timeout(self.settings.timeout, self.instream(&message)).await {
                    Ok(r) => r,
                    Err(_) => Err(ScanError::Unavailable(format!(
                        "clamd did not answer within {:?}",
                        self.settings.timeout
                    ))),
                }
            };
            let s = &*STATS;
            s.micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            match &r {
                Ok(ScanResult::Clean) => s.clean.fetch_add(1, Ordering::Relaxed),
                Ok(ScanResult::Infected(_)) => s.infected.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!("virus scan failed: {e}");
                    s.errors.fetch_add(1, Ordering::Relaxed)
                }
            };
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamd_answers() {
        assert_eq!(parse(b"stream: OK\0"), Ok(ScanResult::Clean));
        assert_eq!(
            parse(b"stream: Eicar-Signature FOUND\0"),
            Ok(ScanResult::Infected("Eicar-Signature".into()))
        );
        assert_eq!(
            parse(b"INSTREAM size limit exceeded. ERROR\0"),
            Err(ScanError::TooLarge)
        );
        assert!(matches!(
            parse(b"stream: x\x01y FOUND\0"),
            Err(ScanError::Unavailable(_))
        ));
        assert!(matches!(parse(b""), Err(ScanError::Unavailable(_))));
    }
}
