//! The limits at each stage: connection rate (connect), message size from
//! the SIZE parameter (MAIL FROM, RFC 1870 §6.1) and from the received
//! message (DATA), message rate (MAIL FROM) and recipients per message (RCPT
//! TO, RFC 5321 §4.5.3.1.8 and §4.5.3.1.10: 452 for too many recipients).
//! Counters live in the host KV (fixed windows). Trusts the host's session;
//! ESMTP parameters are client-supplied. KV trouble fails safe (4xx) unless
//! `on_kv_error = "allow"`.

use postern_sdk::{
    EnvelopeAddress, KvError, Level, Session, Verdict, defer, disconnect, pass, reject,
};

use crate::class::{Class, Settings, client_key};
use crate::config::OnKvError;

/// The host KV counter and log, as the limits need them.
pub trait Store {
    fn increment(&self, key: &str, delta: i64, window_ms: u64) -> Result<i64, KvError>;
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]);
}

pub const RATE_TEXT: &str = "Rate limit exceeded, try again later";
pub const RCPT_TEXT: &str = "Too many recipients";
pub const KV_TEXT: &str = "Rate limit check unavailable, try again later";

fn too_big(class: &Class) -> Verdict {
    reject(
        552,
        "5.3.4",
        format!("Message size exceeds limit for {}", class.name),
    )
}

/// How a KV failure ends: `Err(verdict)` refuses, `Ok(())` lets through.
fn kv_failure(
    settings: &Settings,
    store: &impl Store,
    error: KvError,
    refusal: Verdict,
) -> Result<(), Verdict> {
    match &error {
        KvError::Denied => store.log(
            Level::Error,
            "message-limits needs the \"kv\" capability for rate limits: add capabilities = [\"kv\"] to its [[plugin]] entry",
            &[],
        ),
        KvError::Unavailable(why) | KvError::Invalid(why) => {
            store.log(Level::Warn, "kv counter failed", &[("error", why)])
        }
    }
    match settings.on_kv_error {
        OnKvError::Tempfail => Err(refusal),
        OnKvError::Allow => Ok(()),
    }
}

/// Count one event at `key`; `Some(verdict)` when over `limit` or when the
/// store failed and the failure refuses.
fn count(
    settings: &Settings,
    store: &impl Store,
    key: &str,
    limit: u32,
    window_ms: u64,
    over: Verdict,
    kv_refusal: Verdict,
) -> Option<Verdict> {
    match store.increment(key, 1, window_ms) {
        Ok(n) if n > i64::from(limit) => {
            store.log(
                Level::Info,
                "rate limit exceeded",
                &[
                    ("key", key),
                    ("count", &n.to_string()),
                    ("limit", &limit.to_string()),
                ],
            );
            Some(over)
        }
        Ok(_) => None,
        Err(e) => kv_failure(settings, store, e, kv_refusal).err(),
    }
}

/// Connect: the connection rate of the client's address.
pub fn on_connect(settings: &Settings, session: &Session, store: &impl Store) -> Verdict {
    let class = settings.class_of(session);
    let Some(limit) = class.limits.max_connections_rate else {
        return pass();
    };
    let ip = client_key(session);
    let over = disconnect(
        421,
        "4.7.0",
        format!("Too many connections from {ip}, slow down"),
    );
    let kv = disconnect(421, "4.3.0", KV_TEXT);
    count(
        settings,
        store,
        &format!("conn:{ip}"),
        limit,
        class.limits.window_ms,
        over,
        kv,
    )
    .unwrap_or_else(pass)
}

/// The SIZE= parameter of MAIL FROM, when present and numeric.
fn declared_size(sender: &EnvelopeAddress) -> Option<u64> {
    sender
        .params
        .iter()
        .find(|p| p.keyword.eq_ignore_ascii_case("SIZE"))
        .and_then(|p| p.value.as_deref())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// MAIL FROM: the declared size, then the message rate.
pub fn on_mail_from(
    settings: &Settings,
    session: &Session,
    sender: &EnvelopeAddress,
    store: &impl Store,
) -> Verdict {
    let class = settings.class_of(session);
    if let (Some(max), Some(size)) = (class.limits.max_message_size, declared_size(sender))
        && size > max
    {
        return too_big(class);
    }
    let Some(limit) = class.limits.max_messages else {
        return pass();
    };
    let key = format!("msgs:{}", client_key(session));
    let over = disconnect(421, "4.7.0", RATE_TEXT);
    let kv = defer(451, "4.3.0", KV_TEXT);
    count(
        settings,
        store,
        &key,
        limit,
        class.limits.window_ms,
        over,
        kv,
    )
    .unwrap_or_else(pass)
}

/// RCPT TO: recipients already accepted in this transaction.
pub fn on_rcpt_to(settings: &Settings, session: &Session) -> Verdict {
    let class = settings.class_of(session);
    match class.limits.max_recipients {
        Some(max) if session.recipients().len() >= max as usize => defer(452, "4.5.3", RCPT_TEXT),
        _ => pass(),
    }
}

/// DATA: the size of the message as received.
pub fn on_data(settings: &Settings, session: &Session, size: u64) -> Verdict {
    let class = settings.class_of(session);
    match class.limits.max_message_size {
        Some(max) if size > max => too_big(class),
        _ => pass(),
    }
}

#[cfg(test)]
mod tests;
