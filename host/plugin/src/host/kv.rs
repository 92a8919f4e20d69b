//! `postern:policy/kv`: the shared key-value store, only for plugins granted
//! the "kv" capability. Keys are prefixed with the plugin's namespace so
//! plugins cannot read each other's state unless configured to share one.

use std::time::Duration;

use super::Refused;
use crate::capability::{KvBackend, KvFailure, KvFuture};
use crate::state::PluginState;

impl PluginState {
    /// Run one store operation on `key` in the plugin's namespace; a plugin
    /// without the "kv" grant is denied (and the denial logged).
    /// (`&mut`: the future holds the state, which is `Send` but not `Sync`.)
    async fn on_key<T>(
        &mut self,
        key: &str,
        op: impl for<'a> FnOnce(&'a dyn KvBackend, String) -> KvFuture<'a, T>,
    ) -> Result<T, Refused<KvFailure>> {
        if !self.meta.grants.kv {
            self.log_denied("kv access", "kv");
            return Err(Refused::Denied);
        }
        let key = format!("{}{key}", self.meta.kv_prefix);
        op(&*self.services.kv, key).await.map_err(Refused::Failed)
    }
}

fn ttl(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

/// The `kv` interface of one contract version (the same functions in both).
macro_rules! kv_host {
    ($v:ident) => {
        const _: () = {
            use crate::bindings::$v::postern::policy::kv::{Host, KvError};

            type Answer<T> = wasmtime::Result<Result<T, KvError>>;

            fn to_wit(f: Refused<KvFailure>) -> KvError {
                match f {
                    Refused::Denied => KvError::Denied,
                    Refused::Failed(KvFailure::Unavailable(m)) => KvError::Unavailable(m),
                    Refused::Failed(KvFailure::Invalid(m)) => KvError::Invalid(m),
                }
            }

            impl Host for PluginState {
                async fn get(&mut self, key: String) -> Answer<Option<String>> {
                    Ok(self.on_key(&key, |kv, k| kv.get(k)).await.map_err(to_wit))
                }

                async fn set(
                    &mut self,
                    key: String,
                    val: String,
                    ttl_ms: Option<u64>,
                ) -> Answer<()> {
                    Ok(self
                        .on_key(&key, |kv, k| kv.set(k, val, ttl(ttl_ms)))
                        .await
                        .map_err(to_wit))
                }

                async fn set_if_absent(
                    &mut self,
                    key: String,
                    val: String,
                    ttl_ms: Option<u64>,
                ) -> Answer<bool> {
                    Ok(self
                        .on_key(&key, |kv, k| kv.set_if_absent(k, val, ttl(ttl_ms)))
                        .await
                        .map_err(to_wit))
                }

                async fn delete(&mut self, key: String) -> Answer<bool> {
                    Ok(self
                        .on_key(&key, |kv, k| kv.delete(k))
                        .await
                        .map_err(to_wit))
                }

                async fn increment(
                    &mut self,
                    key: String,
                    delta: i64,
                    window_ms: u64,
                ) -> Answer<i64> {
                    let window = Duration::from_millis(window_ms.max(1));
                    Ok(self
                        .on_key(&key, |kv, k| kv.increment(k, delta, window))
                        .await
                        .map_err(to_wit))
                }
            }
        };
    };
}

kv_host!(v01);
kv_host!(v02);
