//! Loading queued messages into the manager: the envelope and the replayed journal
//! of each, read on the blocking pool. A message that cannot be read (an I/O error,
//! not "gone") is loaded again later on the retry schedule, and each failure is
//! logged, so a passing disk problem does not leave it undelivered until a restart.
//! Input: queue ids from the spool (trusted) and its files (verified by the spool).

use postern_spool::{Committed, QueueId, Spool, SpoolError};

use super::{Entry, Event, Manager, Phase};
use crate::now_ms;
use crate::state::MessageState;

impl Manager {
    pub(super) fn load_initial(&mut self, ids: Vec<QueueId>) {
        if ids.is_empty() {
            return;
        }
        self.loading.extend(ids.iter().copied());
        let spool = self.spool.clone();
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || {
            for id in ids {
                let _ = events.send(load_one(&spool, id));
            }
        });
    }

    /// A message the spool just made durable: its envelope came with the
    /// notice and it has no journal yet, so nothing needs to be read back.
    pub(super) fn committed(&mut self, c: Committed) {
        if self.entries.contains_key(&c.id) || self.loading.contains(&c.id) {
            return;
        }
        self.loaded(MessageState::new(c.id, c.envelope, c.message_len));
    }

    pub(super) fn load(&mut self, id: QueueId) {
        if self.entries.contains_key(&id) || !self.loading.insert(id) {
            return;
        }
        let spool = self.spool.clone();
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || {
            let _ = events.send(load_one(&spool, id));
        });
    }

    pub(super) fn loaded(&mut self, state: MessageState) {
        let id = state.id;
        self.loading.remove(&id);
        self.load_failures.remove(&id);
        if self.entries.contains_key(&id) {
            return;
        }
        if state.is_held() {
            tracing::info!(queue_id = %id, reason = state.envelope.quarantine.as_deref().unwrap_or(""),
                "message held in quarantine");
        } else {
            self.timers.insert((state.next_ms, id));
        }
        self.entries.insert(
            id,
            Entry {
                state,
                phase: Phase::Waiting,
                delete: false,
            },
        );
    }

    /// Loading `id` failed: with `error` (the message is there but unreadable) try
    /// again after the retry interval for the number of failures so far.
    pub(super) fn load_failed(&mut self, id: QueueId, error: Option<String>) {
        self.loading.remove(&id);
        let Some(error) = error else {
            // Gone: removed meanwhile.
            self.load_failures.remove(&id);
            return;
        };
        let failures = self.load_failures.entry(id).or_insert(0);
        *failures = failures.saturating_add(1);
        let delay = self.settings.retry.delay_after(*failures);
        let at = now_ms().saturating_add(delay.as_millis() as u64);
        tracing::error!(queue_id = %id, %error, failures = *failures,
            retry_in_s = delay.as_secs(), "cannot load queued message; will try again");
        self.reloads.insert((at, id));
    }

    /// Start loads whose retry time has come.
    pub(super) fn run_reloads(&mut self) {
        if self.stopping {
            return;
        }
        let now = now_ms();
        while let Some(&(at, id)) = self.reloads.first() {
            if at > now {
                break;
            }
            self.reloads.pop_first();
            self.load(id);
        }
    }
}

fn load_one(spool: &Spool, id: QueueId) -> Event {
    match MessageState::load(spool, &id) {
        Ok(state) => Event::Loaded(Box::new(state)),
        Err(SpoolError::NotFound(_)) => Event::LoadFailed(id, None),
        Err(e) => Event::LoadFailed(id, Some(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use postern_capability::NoDns;
    use postern_spool::SpoolConfig;
    use tokio::sync::mpsc;

    use super::*;
    use crate::settings::Settings;
    use crate::tls::TlsClient;

    #[tokio::test]
    async fn unreadable_messages_are_loaded_again_with_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
        let mut settings = Settings::new("mx.test", &[], Path::new("/d"));
        settings.retry.intervals = vec![Duration::from_secs(60), Duration::from_secs(300)];
        let tls = TlsClient::new(&settings).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut m = Manager::new(
            Arc::new(spool),
            Arc::new(NoDns),
            Arc::new(settings),
            tls,
            tx,
        );
        let id = QueueId::generate();
        let delays = |m: &Manager| -> Vec<u64> {
            let now = now_ms();
            m.reloads
                .iter()
                .map(|(at, _)| (at - now + 500) / 1000)
                .collect()
        };

        m.loading.insert(id);
        m.load_failed(id, Some("I/O error".into()));
        assert!(!m.loading.contains(&id));
        assert_eq!(delays(&m), vec![60]);
        m.reloads.clear();
        m.load_failed(id, Some("I/O error".into()));
        assert_eq!(delays(&m), vec![300]);
        assert_eq!(m.load_failures.get(&id), Some(&2));

        // Due: loaded again (here the message is gone, which ends the retries).
        m.reloads = [(0, id)].into_iter().collect();
        m.run_reloads();
        assert!(m.reloads.is_empty() && m.loading.contains(&id));
        let Some(Event::LoadFailed(got, None)) = rx.recv().await else {
            panic!("expected a load failure for a missing message");
        };
        m.load_failed(got, None);
        assert!(m.load_failures.is_empty() && m.reloads.is_empty());
        assert!(m.loading.is_empty());
    }
}
