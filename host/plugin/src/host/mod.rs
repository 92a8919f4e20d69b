//! Host imports of the WIT contract (`wit/host.wit`, `wit/hooks.wit`'s
//! `message`): what a plugin may call. Input: arguments from untrusted
//! plugins; capability grants are checked on every call.

mod dns;
mod kv;
mod log;
mod mail_auth;
mod message;

use crate::bindings::postern::policy::{clock, types};
use crate::state::PluginState;

impl types::Host for PluginState {}

impl clock::Host for PluginState {
    async fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0))
    }
}

impl PluginState {
    /// Log a host call refused because the plugin lacks `capability`
    /// (`what`: "dns look-up", "kv access", ...).
    pub(super) fn log_denied(&self, what: &str, capability: &str) {
        tracing::warn!(
            target: "postern::plugin",
            plugin = %self.meta.name,
            session = %self.session_id,
            "{what} denied: capability \"{capability}\" not granted"
        );
    }
}
