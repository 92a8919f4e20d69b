//! The client's connection: a TCP stream, upgraded in place by STARTTLS, with a
//! bounded read buffer that yields reply lines and a time-out on every read and
//! write (RFC 5321 §4.5.3.2). Input: bytes from a remote server (hostile): lines
//! longer than `MAX_LINE` and oversized replies (see `ReplyParser`) end the session,
//! and data the server sends ahead of the TLS handshake is refused (RFC 3207 §4.2,
//! the STARTTLS response-injection attack).

use std::fmt;
use std::time::Duration;

use postern_protocol::{Reply, ReplyParseError, ReplyParser};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Longest reply line accepted (RFC 5321 §4.5.3.1.5 says 512; be generous).
pub const MAX_LINE: usize = 4096;

/// Why the connection failed.
#[derive(Debug)]
pub enum IoError {
    Timeout,
    Closed,
    Io(std::io::Error),
    LineTooLong,
    BadReply(ReplyParseError),
    /// The server broke the protocol in a way the parser cannot see.
    Protocol(&'static str),
    Tls(std::io::Error),
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoError::Timeout => f.write_str("timed out"),
            IoError::Closed => f.write_str("connection closed by the server"),
            IoError::Io(e) => write!(f, "{e}"),
            IoError::LineTooLong => write!(f, "reply line longer than {MAX_LINE} octets"),
            IoError::BadReply(e) => write!(f, "malformed reply: {e}"),
            IoError::Protocol(what) => f.write_str(what),
            IoError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Gone,
}

/// One SMTP connection.
pub struct Connection {
    stream: Stream,
    buf: Vec<u8>,
}

impl Connection {
    pub fn new(tcp: TcpStream) -> Connection {
        let _ = tcp.set_nodelay(true);
        Connection {
            stream: Stream::Plain(tcp),
            buf: Vec::with_capacity(4096),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// "TLSv1_3 TLS13_AES_256_GCM_SHA384" for logs.
    pub fn tls_summary(&self) -> Option<String> {
        let Stream::Tls(s) = &self.stream else {
            return None;
        };
        let (_, conn) = s.get_ref();
        Some(format!(
            "{:?} {:?}",
            conn.protocol_version()?,
            conn.negotiated_cipher_suite()?.suite()
        ))
    }

    async fn read_some(&mut self) -> Result<(), IoError> {
        let mut chunk = [0u8; 8192];
        let n = match &mut self.stream {
            Stream::Plain(s) => s.read(&mut chunk).await,
            Stream::Tls(s) => s.read(&mut chunk).await,
            Stream::Gone => return Err(IoError::Closed),
        }
        .map_err(IoError::Io)?;
        if n == 0 {
            return Err(IoError::Closed);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// The next line without its line end (CRLF, or a lone LF from sloppy servers).
    fn take_line(&mut self) -> Result<Option<Vec<u8>>, IoError> {
        match self.buf.iter().position(|&b| b == b'\n') {
            Some(i) if i > MAX_LINE => Err(IoError::LineTooLong),
            Some(i) => {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Ok(Some(line))
            }
            None if self.buf.len() > MAX_LINE => Err(IoError::LineTooLong),
            None => Ok(None),
        }
    }

    /// Read one complete (possibly multi-line) reply within `limit`.
    pub async fn read_reply(&mut self, limit: Duration) -> Result<Reply, IoError> {
        let mut parser = ReplyParser::new();
        tokio::time::timeout(limit, async {
            loop {
                while let Some(line) = self.take_line()? {
                    if let Some(reply) = parser.feed_line(&line).map_err(IoError::BadReply)? {
                        return Ok(reply);
                    }
                }
                self.read_some().await?;
            }
        })
        .await
        .map_err(|_| IoError::Timeout)?
    }

    /// Write all of `data` and flush within `limit`.
    pub async fn send(&mut self, data: &[u8], limit: Duration) -> Result<(), IoError> {
        tokio::time::timeout(limit, async {
            match &mut self.stream {
                Stream::Plain(s) => {
                    s.write_all(data).await?;
                    s.flush().await
                }
                Stream::Tls(s) => {
                    s.write_all(data).await?;
                    s.flush().await
                }
                Stream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
            }
        })
        .await
        .map_err(|_| IoError::Timeout)?
        .map_err(IoError::Io)
    }

    /// Send a command line and read its reply.
    pub async fn command(&mut self, line: &str, limit: Duration) -> Result<Reply, IoError> {
        self.send(line.as_bytes(), limit).await?;
        self.read_reply(limit).await
    }

    /// Run the TLS handshake after a `220` to STARTTLS.
    pub async fn starttls(
        &mut self,
        connector: TlsConnector,
        name: ServerName<'static>,
        limit: Duration,
    ) -> Result<(), IoError> {
        if !self.buf.is_empty() {
            return Err(IoError::Protocol(
                "server sent data ahead of the TLS handshake",
            ));
        }
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(IoError::Protocol("STARTTLS on a TLS connection"));
        };
        let tls = tokio::time::timeout(limit, connector.connect(name, tcp))
            .await
            .map_err(|_| IoError::Timeout)?
            .map_err(IoError::Tls)?;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// Close without ceremony.
    pub async fn shutdown(&mut self) {
        let limit = Duration::from_secs(2);
        match std::mem::replace(&mut self.stream, Stream::Gone) {
            Stream::Plain(mut s) => {
                let _ = tokio::time::timeout(limit, s.shutdown()).await;
            }
            Stream::Tls(mut s) => {
                let _ = tokio::time::timeout(limit, s.shutdown()).await;
            }
            Stream::Gone => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair(server_says: &'static [u8]) -> Connection {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(server_says).await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
        });
        Connection::new(TcpStream::connect(addr).await.unwrap())
    }

    #[tokio::test]
    async fn replies_are_framed_and_bounded() {
        let mut c = pair(b"220-mx.test hi\r\n220 ready\r\n250 ok\n").await;
        let t = Duration::from_secs(2);
        let r = c.read_reply(t).await.unwrap();
        assert_eq!((r.code, r.lines.len()), (220, 2));
        assert_eq!(c.read_reply(t).await.unwrap().code, 250);
        assert!(matches!(
            c.read_reply(Duration::from_millis(100)).await,
            Err(IoError::Timeout)
        ));

        let long: &'static [u8] = Box::leak(vec![b'2'; MAX_LINE + 10].into_boxed_slice());
        let mut c = pair(long).await;
        assert!(matches!(c.read_reply(t).await, Err(IoError::LineTooLong)));

        let mut c = pair(b"hello\r\n").await;
        assert!(matches!(c.read_reply(t).await, Err(IoError::BadReply(_))));
    }
}
