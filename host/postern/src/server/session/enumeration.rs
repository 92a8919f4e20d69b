//! Recipient-enumeration resistance (as Postfix's smtpd_soft/hard_error_limit,
//! and like the AUTH failure limits in `auth.rs`): RCPT TO commands that the
//! policy refused with a permanent failure (5xx: unknown user, relay denied,
//! whatever plugin or host refused them) are counted per session and, in the
//! host key-value store, per client address and window. Once a session had
//! `max_unknown_recipients` refused, every further RCPT is answered only
//! after `unknown_recipient_delay` (a timer: other sessions go on, and
//! shutdown cuts it short), and a refusal beyond [`GRACE`] more is answered
//! `421 4.7.1` instead and the session closed; a client address that reached
//! `client_unknown_recipient_limit` within the window gets `421 4.7.1` at the
//! first RCPT of its sessions until the window has passed. Temporary
//! refusals (4xx: greylisting, limits) and protocol errors are not counted.
//! Authenticated sessions and clients in `unknown_recipient_exempt_networks`
//! are neither counted nor limited. When the kv store fails, the per-client
//! limit lets the session through (as the AUTH limit does). Replies: RFC
//! 5321 §3.8 (421 and close), RFC 3463 X.7.1. Input: the verdicts of the
//! RCPT TO stage for an untrusted client.

use std::net::IpAddr;

use std::time::Duration;

use super::{Session, Step, replies};

/// Refusals answered (after the delay) past the per-session limit; the
/// next one closes the session. Recipients that exist are still accepted
/// (after the delay), so a sender with a few stale addresses more than the
/// limit gets its message through, and a prober learns two names more.
pub const GRACE: u32 = 2;

/// Whether the next RCPT of a session that had `refused` recipients
/// refused waits for its answer, with the per-session limit `limit`
/// (0: off).
pub fn delayed(limit: u32, refused: u32) -> bool {
    limit > 0 && refused >= limit
}

/// Whether a session's `refused`-th refusal ends it (421 instead of the
/// refusal), with the per-session limit `limit` (0: off).
pub fn session_over(limit: u32, refused: u32) -> bool {
    limit > 0 && refused > limit.saturating_add(GRACE)
}

/// Whether a client address whose window holds `count` refusals is over
/// the per-client limit `limit` (0: off). `count` is what the kv store
/// answered before this session's first RCPT, or after a refusal it
/// counted (then a count above the limit means another session of the same
/// client used the last one).
pub fn client_over(limit: u32, count: i64) -> bool {
    limit > 0 && count >= i64::from(limit)
}

/// What a session knows of its own and its client's refusals.
#[derive(Debug, Default)]
pub struct Tally {
    /// Recipients refused (5xx) in this session.
    refused: u32,
    /// The client's count in the kv store, as last read or incremented;
    /// `None` until the session's first RCPT looked it up.
    client: Option<i64>,
}

/// What [`Session::recipient_guard`] decided before the chain runs.
#[derive(Debug, Clone, Copy)]
pub struct Guard {
    /// Neither counted nor limited.
    exempt: bool,
    /// Answer only after the delay.
    delayed: bool,
}

impl Session {
    /// The kv key of the per-client count: one per IPv4 address or IPv6 /64,
    /// as the per-client connection limit counts clients.
    fn unknown_recipient_key(&self) -> String {
        format!(
            "postern\u{1f}unknown-rcpt:{}",
            limit_key(self.ctx.client.ip())
        )
    }

    fn enumeration_exempt(&self) -> bool {
        let ip = self.ctx.client.ip();
        self.ctx.auth_user.is_some()
            || self
                .config
                .unknown_recipients
                .exempt
                .iter()
                .any(|n| n.contains(&ip))
    }

    /// Before the chain decides on a recipient: `Err` with the 421 that ends
    /// a session over its limits, else whether to answer after the delay.
    pub(super) async fn recipient_guard(&mut self) -> Result<Guard, Step> {
        let limits = &self.config.unknown_recipients;
        if self.enumeration_exempt() || (limits.per_session == 0 && limits.per_client == 0) {
            return Ok(Guard {
                exempt: true,
                delayed: false,
            });
        }
        let per_client = limits.per_client;
        if per_client > 0 && self.unknown.client.is_none() {
            // As the AUTH limit: a kv failure lets the session through.
            let n = match self.kv.get(self.unknown_recipient_key()).await {
                Ok(Some(v)) => v.parse::<i64>().unwrap_or(0),
                _ => 0,
            };
            self.unknown.client = Some(n);
        }
        if let Some(n) = self.unknown.client
            && client_over(per_client, n)
        {
            return Err(self.client_limit_reached(n));
        }
        Ok(Guard {
            exempt: false,
            delayed: delayed(
                self.config.unknown_recipients.per_session,
                self.unknown.refused,
            ),
        })
    }

    /// After the chain decided: count a permanent refusal (for the session
    /// and, in kv, for the client), and answer after the delay if the guard
    /// said so.
    pub(super) async fn recipient_counted(&mut self, guard: Guard, step: Step) -> Step {
        let refused = matches!(&step, Step::Reply(r) if (500..600).contains(&r.code));
        if guard.exempt || !refused {
            return self.paced(guard, step).await;
        }
        crate::server::metrics::events::unknown_recipient("refused");
        self.unknown.refused = self.unknown.refused.saturating_add(1);
        let limits = &self.config.unknown_recipients;
        if limits.per_client > 0 {
            let window = limits.window;
            let per_client = limits.per_client;
            if let Ok(n) = self
                .kv
                .increment(self.unknown_recipient_key(), 1, window)
                .await
            {
                self.unknown.client = Some(n);
                // Another session of this client used the last refusal.
                if n > i64::from(per_client) {
                    return self.paced(guard, self.client_limit_reached(n)).await;
                }
            }
        }
        if session_over(
            self.config.unknown_recipients.per_session,
            self.unknown.refused,
        ) {
            crate::server::metrics::events::unknown_recipient("session_limit");
            tracing::info!(
                refused = self.unknown.refused,
                "too many unknown recipients, closing the session"
            );
            let close = Step::Close(replies::too_many_unknown_recipients(&self.config.hostname));
            return self.paced(guard, close).await;
        }
        self.paced(guard, step).await
    }

    fn client_limit_reached(&self, count: i64) -> Step {
        crate::server::metrics::events::unknown_recipient("client_limit");
        tracing::info!(
            count,
            limit = self.config.unknown_recipients.per_client,
            "client over its unknown-recipient limit, closing the session"
        );
        Step::Close(replies::client_too_many_unknown_recipients(
            &self.config.hostname,
        ))
    }

    async fn paced(&mut self, guard: Guard, step: Step) -> Step {
        if !guard.delayed {
            return step;
        }
        match self.pause().await {
            Some(stop) => stop,
            None => step,
        }
    }

    /// Wait `unknown_recipient_delay` before answering: a timer, so other
    /// sessions go on; the plugin instances go back to their pools
    /// meanwhile. A shutdown ends the wait with the shutdown notice.
    async fn pause(&mut self) -> Option<Step> {
        let delay: Duration = self.config.unknown_recipients.delay;
        if delay.is_zero() {
            return None;
        }
        crate::server::metrics::events::unknown_recipient("delayed");
        self.chain.release();
        let mut stop = self.shutdown.clone();
        let stopping = async move {
            if stop.wait_for(|s| *s).await.is_err() {
                // No one can stop us any more: only the timer ends the wait.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => None,
            _ = stopping => Some(self.shutdown()),
        }
    }
}

/// The unit `max_connections_per_ip` counts: an IPv4 address, or an IPv6 /64
/// (one site's subnet: a client holding a /64 must not get a fresh allowance
/// for each of its 2^64 addresses).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_limit_delays_then_closes() {
        // Limit 5: five refusals answered at once; every RCPT after them
        // waits; a refusal after GRACE more closes the session.
        let waits: Vec<bool> = (0..9).map(|refused| delayed(5, refused)).collect();
        assert_eq!(
            waits,
            [false, false, false, false, false, true, true, true, true]
        );
        let closes: Vec<u32> = (1..12).filter(|&n| session_over(5, n)).collect();
        assert_eq!(closes, [8, 9, 10, 11], "the eighth refusal closes");
        assert!(!delayed(1, 0) && delayed(1, 1));
        assert!(!session_over(1, 1 + GRACE) && session_over(1, 2 + GRACE));
        // Near the top of the range: saturating, no overflow.
        assert!(delayed(u32::MAX, u32::MAX));
        assert!(!session_over(u32::MAX, u32::MAX));
    }

    #[test]
    fn zero_turns_each_limit_off() {
        assert!((0..1000).all(|n| !delayed(0, n) && !session_over(0, n)));
        assert!(!client_over(0, i64::MAX));
    }

    #[test]
    fn the_client_limit_holds_at_the_limit() {
        assert!(!client_over(20, 0));
        assert!(!client_over(20, 19));
        assert!(client_over(20, 20));
        assert!(client_over(20, 21));
        assert!(!client_over(1, 0));
        assert!(client_over(1, 1));
        assert!(!client_over(20, -3), "a garbled negative count is no block");
    }
}
