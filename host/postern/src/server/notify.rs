//! Readiness notifications to the service manager (systemd `Type=notify`,
//! sd_notify(3)): `READY=1` once every socket is bound and the first plugin
//! generation serves, `RELOADING=1` with `MONOTONIC_USEC` (which systemd 253
//! and later require to accept it) while a reload runs, then `READY=1` again,
//! and `STOPPING=1` when shutdown begins. A no-op without `$NOTIFY_SOCKET`.
//! Input: none from outside; the socket path comes from the service manager.

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager ($NOTIFY_SOCKET): {e}");
    }
}

/// Start-up is complete: mail is accepted from now on.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => {
            tracing::warn!("cannot read the monotonic clock for RELOADING=1: {e}");
            send(&[NotifyState::Reloading]);
        }
    }
}

/// A reload ended (applied or refused: either way the server serves).
pub fn reloaded(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Shutdown begins.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}
