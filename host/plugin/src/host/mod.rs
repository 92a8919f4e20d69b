//! Host imports of the WIT contract (`wit/host.wit`, `wit/hooks.wit`'s
//! `message`): what a plugin may call. Input: arguments from untrusted
//! plugins; capability grants are checked on every call.

mod av_scan;
mod dns;
mod kv;
mod log;
mod mail_auth;
mod message;

use crate::state::PluginState;

/// A host call refused: the capability is not granted, or the call failed
/// (each interface maps this to its own WIT error).
pub(crate) enum Refused<F> {
    Denied,
    Failed(F),
}

/// `types` (nothing to call in 0.1; 0.2's `session` resource is in
/// `crate::session`) and `clock`, for one contract version.
macro_rules! common_host {
    ($v:ident) => {
        impl crate::bindings::$v::postern::policy::types::Host for PluginState {}

        impl crate::bindings::$v::postern::policy::clock::Host for PluginState {
            async fn now_ms(&mut self) -> wasmtime::Result<u64> {
                Ok(std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0))
            }
        }
    };
}

common_host!(v01);
common_host!(v02);

/// `delivery` (0.2) only defines the delivery-side hooks' types.
impl crate::bindings::v02::postern::policy::delivery::Host for PluginState {}

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
