//! A message for two destinations: the local one takes it at once, the remote
//! one hangs (it never greets). Its local delivery must be in the journal
//! before the attempt ends, so a crash then (here: the runtime torn down and
//! the spool reopened from disk) does not deliver it locally a second time.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_capability::NoDns;
use postern_delivery::journal::{self, Record};
use postern_delivery::state::{MessageState, RcptStatus};
use postern_delivery::{QueueManager, Relayhost, Settings, TlsPolicy};
use postern_spool::{Client, Envelope, QueueId, Recipient, Spool, SpoolConfig, SpoolError};

fn envelope(id: &QueueId, rcpts: &[&str]) -> Envelope {
    Envelope {
        queue_id: *id,
        received_at_unix_ms: postern_delivery::now_ms(),
        client: Client::at("127.0.0.1", 1),
        mail_from: "sender@client.test".into(),
        mail_params: vec![],
        recipients: rcpts
            .iter()
            .map(|a| Recipient {
                address: a.to_string(),
                params: vec![],
            })
            .collect(),
        session_id: "s".into(),
        quarantine: None,
    }
}

fn open_spool(dir: &Path) -> Spool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Spool::open(SpoolConfig::new(dir)) {
            Ok((spool, _)) => return spool,
            // The crashed instance's threads are still letting go of the lock.
            Err(SpoolError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("cannot reopen the spool: {e}"),
        }
    }
}

#[test]
fn a_crash_after_one_destination_delivered_remembers_it() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    // A relayhost that accepts connections and never greets.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut settings = Settings::new("mx.test", &["example.test".into()], dir.path());
    settings.relayhost = Some(Relayhost {
        host: "127.0.0.1".into(),
        port: silent.local_addr().unwrap().port(),
    });
    settings.tls = TlsPolicy::None;
    let id = QueueId::generate();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let spool = Arc::new(open_spool(&spool_dir));
    let journaled = rt.block_on(async {
        let env = envelope(&id, &["alice@example.test", "bob@remote.test"]);
        spool
            .commit(&env, &[b"Subject: two destinations\r\n\r\nHi.\r\n"])
            .await
            .unwrap();
        let handle = QueueManager::start(
            spool.clone(),
            Arc::new(NoDns),
            settings,
            Arc::new(postern_delivery::NoPolicy),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let records = journal::read(&spool, &id).unwrap();
            if records
                .iter()
                .any(|r| matches!(r, Record::Delivered { rcpt: 0, .. }))
            {
                drop(handle);
                return records;
            }
            assert!(
                Instant::now() < deadline,
                "the local delivery was not journaled while the remote one still ran: {records:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // Nothing about the hanging recipient yet: its attempt has not ended.
    assert!(
        journaled
            .iter()
            .all(|r| matches!(r, Record::Delivered { rcpt: 0, .. })),
        "{journaled:?}"
    );

    // Crash: every task dropped mid-attempt, no finalization.
    drop(spool);
    rt.shutdown_background();
    let spool = open_spool(&spool_dir);
    let state = MessageState::load(&spool, &id).unwrap();
    assert_eq!(state.rcpts[0].status, RcptStatus::Delivered);
    assert_eq!(state.rcpts[1].status, RcptStatus::Pending);
    assert_eq!(state.pending(), vec![1]);
    let new = dir.path().join("mail/example.test/alice/new");
    assert_eq!(std::fs::read_dir(new).unwrap().count(), 1);
}
