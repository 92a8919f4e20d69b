//! Helpers shared by the runtime's integration tests: the embedded services
//! and a small runtime.

#![allow(dead_code, reason = "each test file uses a subset")]

use std::sync::Arc;

use postern_plugin::{MemoryKv, NoDns, Runtime, RuntimeConfig, Services};

pub fn services() -> Services {
    Services {
        dns: Arc::new(NoDns),
        kv: Arc::new(MemoryKv::default()),
    }
}

pub fn runtime() -> Arc<Runtime> {
    Runtime::new(RuntimeConfig {
        max_instances: 64,
        ..RuntimeConfig::default()
    })
    .unwrap()
}
