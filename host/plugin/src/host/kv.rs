//! `postern:policy/kv`: the shared key-value store, only for plugins granted
//! the "kv" capability. Keys are prefixed with the plugin's namespace so
//! plugins cannot read each other's state unless configured to share one.

use std::time::Duration;

use super::Refused;
use crate::capability::KvFailure;
use crate::state::PluginState;

impl PluginState {
    fn kv_key(&self, key: &str) -> Result<String, Refused<KvFailure>> {
        if !self.meta.grants.kv {
            self.log_denied("kv access", "kv");
            return Err(Refused::Denied);
        }
        Ok(format!("{}{key}", self.meta.kv_prefix))
    }
}

fn ttl(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

macro_rules! key_or_deny {
    ($self:ident, $key:expr) => {
        match $self.kv_key(&$key) {
            Ok(k) => k,
            Err(e) => return Ok(Err(to_wit(e))),
        }
    };
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
                    let k = key_or_deny!(self, key);
                    Ok(self
                        .services
                        .kv
                        .get(k)
                        .await
                        .map_err(|f| to_wit(Refused::Failed(f))))
                }

                async fn set(
                    &mut self,
                    key: String,
                    value: String,
                    ttl_ms: Option<u64>,
                ) -> Answer<()> {
                    let k = key_or_deny!(self, key);
                    Ok(self
                        .services
                        .kv
                        .set(k, value, ttl(ttl_ms))
                        .await
                        .map_err(|f| to_wit(Refused::Failed(f))))
                }

                async fn set_if_absent(
                    &mut self,
                    key: String,
                    value: String,
                    ttl_ms: Option<u64>,
                ) -> Answer<bool> {
                    let k = key_or_deny!(self, key);
                    Ok(self
                        .services
                        .kv
                        .set_if_absent(k, value, ttl(ttl_ms))
                        .await
                        .map_err(|f| to_wit(Refused::Failed(f))))
                }

                async fn delete(&mut self, key: String) -> Answer<bool> {
                    let k = key_or_deny!(self, key);
                    Ok(self
                        .services
                        .kv
                        .delete(k)
                        .await
                        .map_err(|f| to_wit(Refused::Failed(f))))
                }

                async fn increment(
                    &mut self,
                    key: String,
                    delta: i64,
                    window_ms: u64,
                ) -> Answer<i64> {
                    let k = key_or_deny!(self, key);
                    Ok(self
                        .services
                        .kv
                        .increment(k, delta, Duration::from_millis(window_ms.max(1)))
                        .await
                        .map_err(|f| to_wit(Refused::Failed(f))))
                }
            }
        };
    };
}

kv_host!(v01);
kv_host!(v02);
