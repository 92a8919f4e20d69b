//! Planning one delivery attempt of a message: its pending recipients grouped by
//! destination into jobs (at most `MAX_RCPTS` recipients each, RFC 5321 §4.5.3.1.8
//! guarantees servers accept 100), and immediate permanent failures for recipients
//! that cannot be routed. Input: the message state (trusted) and settings.

use std::collections::BTreeMap;
use std::sync::Arc;

use postern_spool::{Envelope, QueueId};

use crate::outcome::RcptOutcome;
use crate::policy::RouteChoice;
use crate::route::{Destination, route, route_as};
use crate::settings::Settings;
use crate::state::MessageState;

/// Recipients per SMTP transaction.
pub const MAX_RCPTS: usize = 100;

/// Some recipients of one message for one destination.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: QueueId,
    pub envelope: Arc<Envelope>,
    /// Message size in bytes.
    pub size: u64,
    /// Attempts of the message finished before this one.
    pub attempts: u32,
    /// Indexes into `envelope.recipients`.
    pub rcpts: Vec<usize>,
}

/// Outcomes of recipients by envelope index.
pub type Outcomes = Vec<(usize, RcptOutcome)>;

/// The jobs of an attempt, and outcomes already known (unroutable
/// recipients, and those a plugin refused or deferred). `choices` are the
/// delivery policy's routes for the pending recipients, when it routes.
pub fn plan(
    state: &MessageState,
    settings: &Settings,
    choices: Option<&[(usize, RouteChoice)]>,
) -> (Vec<(Destination, Job)>, Outcomes) {
    let mut groups: BTreeMap<Destination, Vec<usize>> = BTreeMap::new();
    let mut known = Vec::new();
    for i in state.pending() {
        let address = &state.rcpts[i].address;
        // `choices` follow `pending()`: ascending recipient indexes.
        let chosen = choices.and_then(|c| {
            c.binary_search_by_key(&i, |(r, _)| *r)
                .ok()
                .map(|k| &c[k].1)
        });
        let routed = match chosen {
            Some(choice) => route_as(address, choice, settings),
            None => route(address, settings),
        };
        match routed {
            Ok(dest) => groups.entry(dest).or_default().push(i),
            Err(d) => known.push((i, RcptOutcome::from_diagnostic(d))),
        }
    }
    let mut jobs = Vec::new();
    for (dest, rcpts) in groups {
        for chunk in rcpts.chunks(MAX_RCPTS) {
            jobs.push((
                dest.clone(),
                Job {
                    id: state.id,
                    envelope: state.envelope.clone(),
                    size: state.size,
                    attempts: state.attempts,
                    rcpts: chunk.to_vec(),
                },
            ));
        }
    }
    (jobs, known)
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_spool::Recipient;
    use std::path::Path;

    #[test]
    fn recipients_group_by_destination() {
        let mut recipients: Vec<Recipient> =
            ["a@example.test", "b@remote.test", "c@Remote.test", "bad"]
                .iter()
                .map(|a| Recipient {
                    address: a.to_string(),
                    params: vec![],
                })
                .collect();
        for n in 0..150 {
            recipients.push(Recipient {
                address: format!("r{n}@bulk.test"),
                params: vec![],
            });
        }
        let env = Envelope {
            queue_id: "0000000000000000000A".parse().unwrap(),
            received_at_unix_ms: 1,
            client: postern_spool::Client::at("::1", 1),
            mail_from: "s@x.test".into(),
            mail_params: vec![],
            recipients,
            session_id: "s".into(),
            quarantine: None,
        };
        let state = MessageState::new(env.queue_id, Arc::new(env), 1);
        let settings = Settings::new("mx.test", &["example.test".into()], Path::new("/d"));
        let (jobs, known) = plan(&state, &settings, None);
        let summary: Vec<(String, usize)> = jobs
            .iter()
            .map(|(d, j)| (d.to_string(), j.rcpts.len()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("local".to_string(), 1),
                ("bulk.test".to_string(), 100),
                ("bulk.test".to_string(), 50),
                ("remote.test".to_string(), 2),
            ]
        );
        assert_eq!(known.len(), 1);
        assert_eq!(known[0].0, 3);
    }
}
