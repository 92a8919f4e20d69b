//! Per-instance store data: the sandbox a plugin runs in. WASI is present only
//! because guest toolchains link it; it grants no network, environment or
//! arguments and no filesystem beyond the plugin's read-only `files`
//! directories, and stdout/stderr go to the log under the plugin's name.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::capability::{DnsBackend, Grants, KvBackend};
use crate::mail_auth::MailAuthBackend;
use crate::stdio::LogOutput;

/// Services the host lends to plugins.
#[derive(Clone)]
pub struct Services {
    pub dns: Arc<dyn DnsBackend>,
    pub kv: Arc<dyn KvBackend>,
    /// SPF/DKIM/ARC/DMARC checks and DKIM signing (the "mail-auth" grant).
    pub mail_auth: Arc<dyn MailAuthBackend>,
    /// The virus scanner (the "av-scan" grant).
    pub av: Arc<dyn crate::av::AvBackend>,
}

/// Static facts about one loaded plugin, shared by all its instances.
#[derive(Debug)]
pub struct PluginMeta {
    pub name: Arc<str>,
    pub grants: Grants,
    /// Prefix prepended to every kv key ("<namespace>\x1f").
    pub kv_prefix: String,
    pub max_memory: usize,
    /// Read-only directory grants (`files = [...]`).
    pub files: Vec<std::path::PathBuf>,
}

pub struct PluginState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) meta: Arc<PluginMeta>,
    pub(crate) session_id: Arc<str>,
    /// The stdout/stderr sinks, kept to retag them when the instance is reused.
    out: [LogOutput; 2],
    pub(crate) services: Services,
    /// Wall-clock deadline of the call in progress.
    pub(crate) deadline: Instant,
}

impl PluginState {
    pub fn new(meta: Arc<PluginMeta>, session_id: Arc<str>, services: Services) -> Self {
        let out = [
            LogOutput::new(meta.name.clone(), "stdout", session_id.clone()),
            LogOutput::new(meta.name.clone(), "stderr", session_id.clone()),
        ];
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(out[0].clone())
            .stderr(out[1].clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for dir in &meta.files {
            // Checked to be a directory when the configuration was read; one
            // that vanished since is simply not visible (the plugin's read
            // fails and it answers as its configuration says).
            if let Err(e) = wasi.preopened_dir(dir, dir.to_string_lossy(), FsPerms::ReadOnly) {
                tracing::warn!(
                    target: "postern::plugin",
                    plugin = %meta.name,
                    dir = %dir.display(),
                    "files grant unavailable: {e:#}"
                );
            }
        }
        let wasi = wasi.build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(meta.max_memory)
            .trap_on_grow_failure(true)
            .build();
        PluginState {
            wasi,
            table: ResourceTable::new(),
            limits,
            meta,
            session_id,
            out,
            services,
            deadline: Instant::now(),
        }
    }

    /// Hand a reused instance to another session: its host-call logs and
    /// output are tagged with the new session's id from now on.
    pub(crate) fn set_session(&mut self, session_id: Arc<str>) {
        for o in &self.out {
            o.set_session(session_id.clone());
        }
        self.session_id = session_id;
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
