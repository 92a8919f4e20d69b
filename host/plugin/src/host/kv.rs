//! `postern:policy/kv`: the shared key-value store, only for plugins granted
//! the "kv" capability. Keys are prefixed with the plugin's namespace so
//! plugins cannot read each other's state unless configured to share one.

use std::time::Duration;

use crate::bindings::postern::policy::kv::{Host, KvError};
use crate::capability::KvFailure;
use crate::state::PluginState;

type Answer<T> = wasmtime::Result<Result<T, KvError>>;

fn to_wit(f: KvFailure) -> KvError {
    match f {
        KvFailure::Unavailable(m) => KvError::Unavailable(m),
        KvFailure::Invalid(m) => KvError::Invalid(m),
    }
}

impl PluginState {
    fn kv_key(&self, key: &str) -> Result<String, KvError> {
        if !self.meta.grants.kv {
            self.log_denied("kv access", "kv");
            return Err(KvError::Denied);
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
            Err(e) => return Ok(Err(e)),
        }
    };
}

impl Host for PluginState {
    async fn get(&mut self, key: String) -> Answer<Option<String>> {
        let k = key_or_deny!(self, key);
        Ok(self.services.kv.get(k).await.map_err(to_wit))
    }

    async fn set(&mut self, key: String, value: String, ttl_ms: Option<u64>) -> Answer<()> {
        let k = key_or_deny!(self, key);
        Ok(self
            .services
            .kv
            .set(k, value, ttl(ttl_ms))
            .await
            .map_err(to_wit))
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
            .map_err(to_wit))
    }

    async fn delete(&mut self, key: String) -> Answer<bool> {
        let k = key_or_deny!(self, key);
        Ok(self.services.kv.delete(k).await.map_err(to_wit))
    }

    async fn increment(&mut self, key: String, delta: i64, window_ms: u64) -> Answer<i64> {
        let k = key_or_deny!(self, key);
        Ok(self
            .services
            .kv
            .increment(k, delta, Duration::from_millis(window_ms.max(1)))
            .await
            .map_err(to_wit))
    }
}
