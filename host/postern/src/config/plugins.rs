//! `[[plugin]]`: the WebAssembly plugins in the policy chain, in the order
//! of the file. Input: the operator's file; errors name the file and line.

use std::time::Duration;

use postern_plugin::{BreakerSettings, Mode, OnError, PluginSpec};
use serde::Deserialize;
use toml::Spanned;

use super::{ByteSize, ConfigError, Ctx, defaults};

#[derive(Debug, Clone, Copy, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
enum OnErrorSetting {
    #[default]
    Tempfail,
    FailOpen,
    FailClosed,
}

#[derive(Debug, Clone, Copy, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum ModeSetting {
    #[default]
    Enforce,
    Shadow,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PluginSection {
    name: Spanned<String>,
    path: String,
    #[serde(default)]
    on_error: OnErrorSetting,
    #[serde(default = "defaults::plugin_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "defaults::plugin_max_memory")]
    max_memory: ByteSize,
    #[serde(default)]
    capabilities: Vec<String>,
    kv_namespace: Option<String>,
    #[serde(default)]
    mode: ModeSetting,
    /// None: reuse instances when the plugin exports `recycle`.
    reuse: Option<bool>,
    /// Directories the plugin may read (read-only, same path in the sandbox).
    #[serde(default)]
    files: Vec<Spanned<String>>,
    #[serde(default)]
    config: toml::Table,
}

/// Each `[[plugin]]`, in order: its name must be letters, digits, '-' or
/// '_', `timeout_ms` between 1 and 60000, its `config` table must encode as
/// JSON and each `files` entry must be an existing directory. Every plugin
/// gets the `[breaker]` settings.
pub(super) fn build(
    cx: &Ctx,
    sections: &[PluginSection],
    breaker: BreakerSettings,
) -> Result<Vec<PluginSpec>, ConfigError> {
    let mut plugins = Vec::new();
    for p in sections {
        let name = super::member_name(cx, &p.name, "plugin")?;
        if p.timeout_ms == 0 || p.timeout_ms > 60_000 {
            return Err(cx.at(
                &p.name,
                format!("plugin {name:?}: timeout_ms must be between 1 and 60000"),
            ));
        }
        let config_json = serde_json::to_string(&p.config).map_err(|e| {
            cx.at(
                &p.name,
                format!("plugin {name:?}: config cannot be encoded: {e}"),
            )
        })?;
        let mut files = Vec::new();
        for f in &p.files {
            let dir = cx.resolve(f.get_ref());
            if !dir.is_dir() {
                return Err(cx.at(
                    f,
                    format!(
                        "plugin {name:?}: files entry {} is not a directory",
                        dir.display()
                    ),
                ));
            }
            files.push(dir);
        }
        plugins.push(PluginSpec {
            name,
            path: cx.resolve(&p.path),
            config_json,
            on_error: match p.on_error {
                OnErrorSetting::Tempfail => OnError::Tempfail,
                OnErrorSetting::FailOpen => OnError::FailOpen,
                OnErrorSetting::FailClosed => OnError::FailClosed,
            },
            timeout: Duration::from_millis(p.timeout_ms),
            max_memory: p.max_memory.0 as usize,
            capabilities: p.capabilities.clone(),
            kv_namespace: p.kv_namespace.clone(),
            mode: match p.mode {
                ModeSetting::Enforce => Mode::Enforce,
                ModeSetting::Shadow => Mode::Shadow,
            },
            reuse: p.reuse.unwrap_or(true),
            files,
            breaker,
        });
    }
    Ok(plugins)
}

/// Where each `[[plugin]]` entry starts in the file, for placing the
/// `[[milter]]` entries among them.
pub(super) fn offsets(sections: &[PluginSection]) -> Vec<usize> {
    sections.iter().map(|p| p.name.span().start).collect()
}
