//! The SMTP client against a scripted in-process server: pipelining (the server
//! answers nothing before it has DATA, so a client that waits for each reply would
//! time out), per-recipient outcomes, dot-stuffing and CRLF on the wire, connection
//! reuse, RSET after an abandoned transaction, QUIT; a reused connection the server
//! dropped (or answered 421) before MAIL FROM is reported as stale, a fresh one not.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_delivery::mx::MxHost;
use postern_delivery::smtp::{ClientCtx, Outgoing, Session};
use postern_delivery::tls::TlsClient;
use postern_delivery::{Handover, RcptOutcome, Settings, TlsPolicy};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Everything the server received, line by line, and each message's raw content.
#[derive(Default)]
struct Transcript {
    lines: Vec<String>,
    contents: Vec<Vec<u8>>,
}

async fn server(listener: TcpListener, log: Arc<Mutex<Transcript>>) {
    let (stream, _) = listener.accept().await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write.write_all(b"220 test ESMTP\r\n").await.unwrap();
    let mut pending: Vec<String> = Vec::new();
    loop {
        let mut line = Vec::new();
        if read.read_until(b'\n', &mut line).await.unwrap() == 0 {
            return;
        }
        assert!(line.ends_with(b"\r\n"), "{line:?}");
        let text = String::from_utf8(line[..line.len() - 2].to_vec()).unwrap();
        log.lock().unwrap().lines.push(text.clone());
        let verb = text.split(' ').next().unwrap().to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => write
                .write_all(b"250-test\r\n250-PIPELINING\r\n250 SIZE 100000\r\n")
                .await
                .unwrap(),
            "MAIL" | "RCPT" => pending.push(text),
            "DATA" => {
                // Answer the whole pipelined group only now.
                let mut replies = String::new();
                let mut any = false;
                for cmd in pending.drain(..) {
                    if cmd.contains("bad") {
                        replies.push_str("550 5.1.1 no such user\r\n");
                    } else {
                        any |= cmd.starts_with("RCPT");
                        replies.push_str("250 2.0.0 ok\r\n");
                    }
                }
                if !any {
                    replies.push_str("554 5.5.1 no valid recipients\r\n");
                    write.write_all(replies.as_bytes()).await.unwrap();
                    continue;
                }
                replies.push_str("354 go ahead\r\n");
                write.write_all(replies.as_bytes()).await.unwrap();
                let mut content = Vec::new();
                loop {
                    let mut l = Vec::new();
                    read.read_until(b'\n', &mut l).await.unwrap();
                    if l == b".\r\n" {
                        break;
                    }
                    content.extend_from_slice(&l);
                }
                log.lock().unwrap().contents.push(content);
                write.write_all(b"250 2.0.0 queued\r\n").await.unwrap();
            }
            "RSET" => write.write_all(b"250 2.0.0 ok\r\n").await.unwrap(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await.unwrap();
                return;
            }
            _ => write.write_all(b"502 5.5.2 what\r\n").await.unwrap(),
        }
    }
}

/// Send `body` to `rcpts` over `session`, which must not be stale: what became
/// of each recipient.
async fn send(
    session: &mut Session,
    settings: &Settings,
    rcpts: &[String],
    body: &[u8],
) -> Vec<(usize, RcptOutcome)> {
    let mut reader = body;
    session
        .deliver(settings, &outgoing(rcpts, body.len() as u64), &mut reader)
        .await
        .unwrap()
}

fn outgoing<'a>(rcpts: &'a [String], size: u64) -> Outgoing<'a> {
    Outgoing {
        sender: "alice@example.test",
        mail_params: &[],
        rcpts: rcpts
            .iter()
            .enumerate()
            .map(|(i, a)| (i, a.as_str(), &[][..]))
            .collect(),
        size,
        content: Default::default(),
    }
}

/// Client settings (plain SMTP, 3 s command time-out) and the one MX host
/// `mx.remote.test` at 127.0.0.1.
fn client_to_loopback() -> (ClientCtx, [MxHost; 1]) {
    let mut settings = Settings::new("mx.example.test", &[], Path::new("/nonexistent"));
    settings.tls = TlsPolicy::None;
    settings.command_timeout = Duration::from_secs(3);
    let ctx = ClientCtx {
        tls: TlsClient::new(&settings).unwrap(),
        settings: Arc::new(settings),
    };
    let hosts = [MxHost {
        name: "mx.remote.test".into(),
        addrs: vec!["127.0.0.1".parse().unwrap()],
    }];
    (ctx, hosts)
}

#[tokio::test]
async fn pipelined_transactions_over_one_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Transcript::default()));
    let srv = tokio::spawn(server(listener, log.clone()));

    let (ctx, hosts) = client_to_loopback();
    let mut session = Session::connect(&hosts, port, &ctx, false).await.unwrap();

    // 1: one good and one bad recipient; content needing stuffing and a bare LF.
    let message: &[u8] = b"Subject: x\r\n\r\n.leading dot\r\nbare\nlf\r\nno final newline";
    let rcpts = vec![
        "good@remote.test".to_string(),
        "bad@remote.test".to_string(),
    ];
    let out = send(&mut session, &ctx.settings, &rcpts, message).await;
    assert!(
        matches!(&out[0], (0, RcptOutcome::Delivered(Handover::Relayed, d)) if d.contains("relay=mx.remote.test[127.0.0.1]"))
    );
    assert!(matches!(&out[1], (1, RcptOutcome::Failed(d)) if d.status.to_string() == "5.1.1"));

    // 2: every recipient refused; the transaction is abandoned.
    let bad = vec!["bad@remote.test".to_string()];
    let out = send(&mut session, &ctx.settings, &bad, b"x\r\n").await;
    assert!(matches!(&out[0], (0, RcptOutcome::Failed(_))));

    // 3: the same connection again, after RSET.
    let good = vec!["good2@remote.test".to_string()];
    let out = send(&mut session, &ctx.settings, &good, b"second\r\n").await;
    assert!(matches!(&out[0], (0, RcptOutcome::Delivered(..))));
    assert!(session.reusable(100));
    session.quit().await;
    srv.await.unwrap();

    let log = log.lock().unwrap();
    assert_eq!(
        log.contents[0],
        b"Subject: x\r\n\r\n..leading dot\r\nbare\r\nlf\r\nno final newline\r\n"
    );
    assert_eq!(log.contents[1], b"second\r\n");
    let verbs: Vec<&str> = log
        .lines
        .iter()
        .filter(|l| !l.is_empty() && l.chars().next().unwrap().is_ascii_uppercase())
        .map(|l| l.split([' ', ':']).next().unwrap())
        .filter(|v| ["EHLO", "MAIL", "RCPT", "DATA", "RSET", "QUIT"].contains(v))
        .collect();
    assert_eq!(
        verbs,
        vec![
            "EHLO", "MAIL", "RCPT", "RCPT", "DATA", "MAIL", "RCPT", "DATA", "RSET", "MAIL", "RCPT",
            "DATA", "QUIT"
        ]
    );
    let mail = format!("MAIL FROM:<alice@example.test> SIZE={}", message.len());
    assert!(log.lines.contains(&mail), "{:?}", log.lines);
}

/// How the server ends a session after its first message.
#[derive(Clone, Copy)]
enum Hangup {
    /// Close the connection right after the 250 (an idle time-out, say).
    Close,
    /// Answer the next command with 421 and close.
    Reply421,
}

/// Accepts `sessions` connections; each takes one message, then hangs up.
async fn hangup_server(listener: TcpListener, sessions: usize, hangup: Hangup) {
    for _ in 0..sessions {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        write.write_all(b"220 test ESMTP\r\n").await.unwrap();
        let mut done = false;
        loop {
            let mut line = Vec::new();
            if read.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                break;
            }
            if done {
                if let Hangup::Reply421 = hangup {
                    let _ = write.write_all(b"421 4.4.2 test idle timeout\r\n").await;
                }
                break;
            }
            let verb = String::from_utf8_lossy(&line).to_ascii_uppercase();
            if verb.starts_with("EHLO") {
                write.write_all(b"250 test\r\n").await.unwrap();
            } else if verb.starts_with("DATA") {
                write.write_all(b"354 go ahead\r\n").await.unwrap();
                loop {
                    let mut l = Vec::new();
                    read.read_until(b'\n', &mut l).await.unwrap();
                    if l == b".\r\n" || l.is_empty() {
                        break;
                    }
                }
                write.write_all(b"250 2.0.0 queued\r\n").await.unwrap();
                done = true;
                if let Hangup::Close = hangup {
                    break;
                }
            } else {
                write.write_all(b"250 2.0.0 ok\r\n").await.unwrap();
            }
        }
    }
}

async fn stale_after_first_message(hangup: Hangup) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let srv = tokio::spawn(hangup_server(listener, 2, hangup));
    let (ctx, hosts) = client_to_loopback();
    let rcpts = vec!["a@remote.test".to_string()];
    let mut session = Session::connect(&hosts, port, &ctx, false).await.unwrap();
    let out = send(&mut session, &ctx.settings, &rcpts, b"one\r\n").await;
    assert!(matches!(&out[0], (0, RcptOutcome::Delivered(..))));
    // Let the hang-up arrive first, as it would on an idle cached connection.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut body: &[u8] = b"two\r\n";
    let stale = session
        .deliver(&ctx.settings, &outgoing(&rcpts, 5), &mut body)
        .await
        .expect_err("a dead reused connection is stale");
    assert_eq!(stale.0.status.class, 4, "{}", stale.0);
    assert_eq!(body, b"two\r\n", "the message was not read");
    assert!(!session.reusable(100));
    session.quit().await;

    // A fresh connection that fails the same way defers instead: it is no cache miss.
    let mut fresh = Session::connect(&hosts, port, &ctx, false).await.unwrap();
    let out = send(&mut fresh, &ctx.settings, &rcpts, b"three\r\n").await;
    assert!(matches!(&out[0], (0, RcptOutcome::Delivered(..))));
    tokio::time::sleep(Duration::from_millis(100)).await;
    fresh.messages = 0; // as if new: the failure is then an ordinary deferral
    let out = send(&mut fresh, &ctx.settings, &rcpts, b"four\r\n").await;
    assert!(matches!(&out[0], (0, RcptOutcome::Deferred(d)) if d.status.class == 4));
    srv.await.unwrap();
}

#[tokio::test]
async fn reused_connection_closed_by_the_server_is_stale() {
    stale_after_first_message(Hangup::Close).await;
}

#[tokio::test]
async fn reused_connection_answering_421_is_stale() {
    stale_after_first_message(Hangup::Reply421).await;
}
