//! A milter client (the Sendmail milter protocol, version 6, as Postfix
//! speaks it), for the filters operators already run (rspamd's proxy,
//! clamav-milter, OpenDKIM, OpenDMARC, MIMEDefang): `codec` is the wire
//! format (pure), `Conn` one SMTP session's connection to one milter, with
//! its option negotiation and per-stage dialogue. The host maps replies to
//! verdicts and modifications to message changes. Input: everything a
//! milter sends is untrusted (bounded packets, checked replies, a deadline
//! on every wait).

pub mod codec;

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use codec::{Command, step};
pub use codec::{Modification, Response};

/// Where a milter listens: `unix:/path` or `inet:host:port` (Postfix's
/// spelling; Sendmail's `inet:port@host` is read too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    Inet(String),
}

impl std::str::FromStr for Address {
    type Err = String;
    fn from_str(s: &str) -> Result<Address, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            return Ok(Address::Unix(p.into()));
        }
        let Some(rest) = s.strip_prefix("inet:") else {
            return Err(format!("{s:?}: expected unix:/path or inet:host:port"));
        };
        let hostport = match rest.split_once('@') {
            Some((port, host)) => format!("{host}:{port}"),
            None => rest.to_string(),
        };
        match hostport.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {
                Ok(Address::Inet(hostport))
            }
            _ => Err(format!("{s:?}: expected inet:host:port")),
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Inet(h) => write!(f, "inet:{h}"),
        }
    }
}

/// How long each wait may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// A reply to a command (connect, HELO, MAIL, RCPT, headers, body).
    pub command: Duration,
    /// The final reply to the end of a message.
    pub end_of_message: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            command: Duration::from_secs(10),
            end_of_message: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("protocol error: {0}")]
    Protocol(String),
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One session's connection to one milter, after option negotiation.
pub struct Conn {
    io: Box<dyn Stream>,
    /// The steps the milter asked for (what not to send, what it leaves
    /// unanswered).
    steps: u32,
    /// The actions it may take.
    pub actions: u32,
    timeouts: Timeouts,
}

/// The macros sent before a command (name, value).
pub type Macros = Vec<(String, String)>;

impl Conn {
    /// Connect and negotiate: version 6, every action and step offered.
    pub async fn open(addr: &Address, timeouts: Timeouts) -> Result<Conn, Error> {
        let io: Box<dyn Stream> = match tokio::time::timeout(timeouts.connect, async {
            match addr {
                Address::Unix(p) => tokio::net::UnixStream::connect(p)
                    .await
                    .map(|s| Box::new(s) as Box<dyn Stream>),
                Address::Inet(h) => tokio::net::TcpStream::connect(h).await.map(|s| {
                    let _ = s.set_nodelay(true);
                    Box::new(s) as Box<dyn Stream>
                }),
            }
        })
        .await
        {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => return Err(Error::Connect(e)),
            Err(_) => return Err(Error::Timeout(timeouts.connect)),
        };
        let mut c = Conn {
            io,
            steps: 0,
            actions: 0,
            timeouts,
        };
        c.send(&Command::OptNeg {
            actions: codec::OFFERED_ACTIONS,
            steps: codec::OFFERED_STEPS,
        })
        .await?;
        match c.read(timeouts.command).await? {
            Response::OptNeg {
                version,
                actions,
                steps,
            } => {
                if !(2..=6).contains(&version) {
                    return Err(Error::Protocol(format!(
                        "milter protocol version {version}"
                    )));
                }
                if actions & !codec::OFFERED_ACTIONS != 0 || steps & !codec::OFFERED_STEPS != 0 {
                    return Err(Error::Protocol(format!(
                        "the milter asks for actions {actions:#x} / steps {steps:#x} beyond those offered"
                    )));
                }
                c.actions = actions;
                c.steps = steps;
                Ok(c)
            }
            other => Err(Error::Protocol(format!(
                "expected the option negotiation reply, got {other:?}"
            ))),
        }
    }

    async fn send(&mut self, cmd: &Command<'_>) -> Result<(), Error> {
        let packet = cmd.encode();
        match tokio::time::timeout(self.timeouts.command, self.io.write_all(&packet)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(Error::Timeout(self.timeouts.command)),
        }
    }

    /// The next reply (progress replies extend the wait).
    async fn read(&mut self, limit: Duration) -> Result<Response, Error> {
        loop {
            let r = tokio::time::timeout(limit, async {
                let mut header = [0u8; 4];
                self.io.read_exact(&mut header).await?;
                let n = codec::packet_len(header).map_err(|e| Error::Protocol(e.to_string()))?;
                let mut buf = vec![0u8; n];
                self.io.read_exact(&mut buf).await?;
                codec::decode(buf[0], &buf[1..]).map_err(|e| Error::Protocol(e.to_string()))
            })
            .await;
            match r {
                Ok(Ok(Response::Progress)) => continue,
                Ok(r) => return r,
                Err(_) => return Err(Error::Timeout(limit)),
            }
        }
    }

    /// Send `macros` (for the command) and the command, unless the milter
    /// asked not to get it (`skip` step), and read its reply unless it
    /// asked not to answer (`no_reply` step): `Continue` then.
    async fn ask(
        &mut self,
        macros: &Macros,
        cmd: Command<'_>,
        skip: u32,
        no_reply: u32,
    ) -> Result<Response, Error> {
        if self.steps & skip != 0 {
            return Ok(Response::Continue);
        }
        if !macros.is_empty() {
            self.send(&Command::Macro {
                for_cmd: cmd.code(),
                pairs: macros,
            })
            .await?;
        }
        self.send(&cmd).await?;
        if self.steps & no_reply != 0 {
            return Ok(Response::Continue);
        }
        match self.read(self.timeouts.command).await? {
            Response::Modify(m) => Err(Error::Protocol(format!(
                "a modification ({m:?}) outside the end of a message"
            ))),
            r => Ok(r),
        }
    }

    pub async fn connect(
        &mut self,
        macros: &Macros,
        hostname: &str,
        addr: Option<std::net::SocketAddr>,
    ) -> Result<Response, Error> {
        let cmd = Command::Connect { hostname, addr };
        self.ask(macros, cmd, step::NOCONNECT, step::NR_CONN).await
    }

    pub async fn helo(&mut self, macros: &Macros, name: &str) -> Result<Response, Error> {
        self.ask(macros, Command::Helo(name), step::NOHELO, step::NR_HELO)
            .await
    }

    /// `args`: `<address>` then the ESMTP parameters.
    pub async fn mail(&mut self, macros: &Macros, args: &[String]) -> Result<Response, Error> {
        self.ask(macros, Command::Mail(args), step::NOMAIL, step::NR_MAIL)
            .await
    }

    pub async fn rcpt(&mut self, macros: &Macros, args: &[String]) -> Result<Response, Error> {
        self.ask(macros, Command::Rcpt(args), step::NORCPT, step::NR_RCPT)
            .await
    }

    /// The message: DATA, each header field, end of headers, the body in
    /// chunks (`body(offset)` gives the chunk at `offset`, empty at the
    /// end), end of message. Returns the final reply and the modifications
    /// asked for before it (none unless the final reply accepts).
    pub async fn message(
        &mut self,
        macros: &Macros,
        headers: &[(String, String)],
        body: &mut (dyn FnMut(u64) -> std::io::Result<Vec<u8>> + Send),
    ) -> Result<(Response, Vec<Modification>), Error> {
        let none = Macros::new();
        let r = self
            .ask(macros, Command::Data, step::NODATA, step::NR_DATA)
            .await?;
        if r != Response::Continue {
            return Ok((r, Vec::new()));
        }
        for (name, value) in headers {
            let r = self
                .ask(
                    &none,
                    Command::Header { name, value },
                    step::NOHDRS,
                    step::NR_HDR,
                )
                .await?;
            if r != Response::Continue {
                return Ok((r, Vec::new()));
            }
        }
        let r = self
            .ask(&none, Command::EndOfHeaders, step::NOEOH, step::NR_EOH)
            .await?;
        if r != Response::Continue {
            return Ok((r, Vec::new()));
        }
        let mut offset = 0u64;
        loop {
            if self.steps & step::NOBODY != 0 {
                break;
            }
            let chunk = body(offset)?;
            if chunk.is_empty() {
                break;
            }
            offset += chunk.len() as u64;
            match self
                .ask(&none, Command::Body(&chunk), step::NOBODY, step::NR_BODY)
                .await?
            {
                Response::Continue => {}
                Response::Skip => break,
                r => return Ok((r, Vec::new())),
            }
        }
        self.send(&Command::EndOfMessage).await?;
        let mut mods = Vec::new();
        loop {
            match self.read(self.timeouts.end_of_message).await? {
                Response::Modify(m) => mods.push(m),
                Response::OptNeg { .. } | Response::Skip => {
                    return Err(Error::Protocol("unexpected reply to end of message".into()));
                }
                r => return Ok((r, mods)),
            }
        }
    }

    /// The transaction ended without a message (RSET, a refused MAIL...).
    pub async fn abort(&mut self) -> Result<(), Error> {
        self.send(&Command::Abort).await
    }

    /// The session ends.
    pub async fn quit(mut self) {
        let _ = self.send(&Command::Quit).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            "unix:/run/m.sock".parse::<Address>(),
            Ok(Address::Unix("/run/m.sock".into()))
        );
        assert_eq!(
            "inet:127.0.0.1:11332".parse::<Address>(),
            Ok(Address::Inet("127.0.0.1:11332".into()))
        );
        assert_eq!(
            "inet:8891@localhost".parse::<Address>(),
            Ok(Address::Inet("localhost:8891".into()))
        );
        for bad in [
            "tcp:1.2.3.4:5",
            "inet:host",
            "inet::25",
            "unix:",
            "inet:h:99999",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }

    /// A scripted milter on a socket pair: negotiation, a rejected RCPT
    /// and the modifications of an end of message.
    #[tokio::test]
    async fn dialogue_with_a_scripted_milter() {
        let dir = std::env::temp_dir().join(format!("milter-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("m.sock");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let reply = |code: u8, data: &[u8]| {
                let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
                p.push(code);
                p.extend_from_slice(data);
                p
            };
            loop {
                let mut h = [0u8; 4];
                if s.read_exact(&mut h).await.is_err() {
                    break;
                }
                let mut buf = vec![0u8; u32::from_be_bytes(h) as usize];
                s.read_exact(&mut buf).await.unwrap();
                seen.push(buf[0]);
                let out = match buf[0] {
                    b'O' => {
                        let mut d = 6u32.to_be_bytes().to_vec();
                        d.extend_from_slice(
                            &(codec::action::ADDHDRS | codec::action::CHGHDRS).to_be_bytes(),
                        );
                        d.extend_from_slice(&step::NR_HDR.to_be_bytes());
                        reply(b'O', &d)
                    }
                    b'D' | b'L' | b'A' => continue,
                    b'R' if buf[1..].starts_with(b"<bad@") => {
                        reply(b'y', b"550 5.1.1 no such user\0")
                    }
                    b'B' => [reply(b'p', b""), reply(b'c', b"")].concat(),
                    b'E' => [
                        reply(b'h', b"X-Scanned\0yes\0"),
                        reply(b'm', b"\0\0\0\x01Subject\0\0"),
                        reply(b'c', b""),
                    ]
                    .concat(),
                    b'Q' => break,
                    _ => reply(b'c', b""),
                };
                s.write_all(&out).await.unwrap();
            }
            seen
        });
        let mut c = Conn::open(&Address::Unix(path.clone()), Timeouts::default())
            .await
            .unwrap();
        let m: Macros = vec![("j".into(), "mx.test".into())];
        assert_eq!(
            c.connect(&m, "c.test", "192.0.2.1:1".parse().ok())
                .await
                .unwrap(),
            Response::Continue
        );
        assert_eq!(
            c.helo(&Macros::new(), "c.test").await.unwrap(),
            Response::Continue
        );
        assert_eq!(
            c.mail(&m, &["<a@c.test>".into()]).await.unwrap(),
            Response::Continue
        );
        assert_eq!(
            c.rcpt(&m, &["<bad@x.test>".into()]).await.unwrap(),
            Response::ReplyCode("550 5.1.1 no such user".into())
        );
        assert_eq!(
            c.rcpt(&m, &["<ok@x.test>".into()]).await.unwrap(),
            Response::Continue
        );
        let headers = vec![("Subject".to_string(), "hi".to_string())];
        let body = b"hello\r\n".to_vec();
        let mut next = |at: u64| Ok(body.get(at as usize..).unwrap_or_default().to_vec());
        let (r, mods) = c.message(&m, &headers, &mut next).await.unwrap();
        assert_eq!(r, Response::Continue);
        assert_eq!(mods.len(), 2);
        c.quit().await;
        let seen = server.await.unwrap();
        assert_eq!(seen, b"ODCHDMDRDRDTLNBEQ");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
