//! The TOML configuration (reference: `examples/postern.toml`). Input: an
//! operator's file, trusted for intent but not for form: unknown keys are
//! errors, and every error names the file and, where the parser knows it, the
//! line. Relative paths are resolved against the file's directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use postern_plugin::{Mode, OnError, PluginSpec, RuntimeConfig};

mod av;
mod delivery;
mod kv;
mod milter;
mod record;
mod rollout;
mod run_as;

pub use record::RecordSettings;
pub use rollout::RollbackSettings;

pub use kv::{KvSettings, KvStore};
pub use run_as::RunAs;

/// A configuration error, already rendered with file and line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    server: ServerSection,
    #[serde(default)]
    spool: SpoolSection,
    #[serde(default)]
    runtime: RuntimeSection,
    #[serde(default)]
    dns: DnsSection,
    #[serde(default)]
    log: LogSection,
    #[serde(default)]
    tls: Option<TlsSection>,
    #[serde(default)]
    auth: AuthSection,
    #[serde(default, rename = "listener")]
    listeners: Vec<ListenerSection>,
    #[serde(default)]
    metrics: MetricsSection,
    #[serde(default)]
    delivery: delivery::DeliverySection,
    #[serde(default)]
    kv: kv::KvSection,
    #[serde(default)]
    breaker: rollout::BreakerSection,
    #[serde(default)]
    rollback: rollout::RollbackSection,
    #[serde(default)]
    record: record::RecordSection,
    #[serde(default, rename = "plugin")]
    plugins: Vec<PluginSection>,
    #[serde(default, rename = "milter")]
    milters: Vec<milter::MilterSection>,
    #[serde(default)]
    av: av::AvSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSection {
    listen: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert: Spanned<String>,
    key: Spanned<String>,
    client_ca: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    #[serde(default = "defaults::auth_max_failures")]
    max_failures: u32,
    #[serde(default = "defaults::auth_client_failure_limit")]
    client_failure_limit: u32,
    #[serde(default = "defaults::auth_client_failure_window")]
    client_failure_window: Spanned<String>,
    #[serde(default = "defaults::zero")]
    remember_window: Spanned<String>,
    #[serde(default = "defaults::auth_namespace")]
    remember_namespace: String,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            max_failures: defaults::auth_max_failures(),
            client_failure_limit: defaults::auth_client_failure_limit(),
            client_failure_window: defaults::auth_client_failure_window(),
            remember_window: defaults::zero(),
            remember_namespace: defaults::auth_namespace(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain SMTP, no STARTTLS.
    None,
    /// STARTTLS offered (RFC 3207).
    Starttls,
    /// TLS from the first byte (RFC 8314 "implicit TLS", port 465 style).
    Implicit,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerSection {
    name: Spanned<String>,
    address: Spanned<String>,
    tls: Option<Spanned<TlsMode>>,
    #[serde(default)]
    require_auth: bool,
    #[serde(default)]
    allow_plaintext_auth: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    hostname: String,
    #[serde(default)]
    listen: Vec<Spanned<String>>,
    local_domains: Vec<String>,
    data_dir: Option<String>,
    #[serde(default = "defaults::max_message_size")]
    max_message_size: ByteSize,
    #[serde(default = "defaults::max_recipients")]
    max_recipients: usize,
    #[serde(default = "defaults::max_connections")]
    max_connections: usize,
    #[serde(default = "defaults::max_connections_per_ip")]
    max_connections_per_ip: usize,
    #[serde(default = "defaults::max_bad_commands")]
    max_bad_commands: u32,
    #[serde(default = "defaults::max_hops")]
    max_hops: usize,
    #[serde(default = "defaults::command_timeout")]
    command_timeout: Spanned<String>,
    #[serde(default = "defaults::data_timeout")]
    data_timeout: Spanned<String>,
    #[serde(default = "defaults::min_data_rate")]
    min_data_rate: u64,
    #[serde(default = "defaults::shutdown_timeout")]
    shutdown_timeout: Spanned<String>,
    #[serde(default = "defaults::max_unknown_recipients")]
    max_unknown_recipients: u32,
    #[serde(default = "defaults::unknown_recipient_delay")]
    unknown_recipient_delay: Spanned<String>,
    #[serde(default = "defaults::client_unknown_recipient_limit")]
    client_unknown_recipient_limit: u32,
    #[serde(default = "defaults::client_unknown_recipient_window")]
    client_unknown_recipient_window: Spanned<String>,
    #[serde(default)]
    unknown_recipient_exempt_networks: Vec<Spanned<String>>,
    #[serde(default)]
    watch: bool,
    admin_socket: Option<String>,
    /// The account `postern serve` switches to after binding (see `run_as`).
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    #[serde(default)]
    allow_root: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpoolSection {
    dir: Option<String>,
    #[serde(default = "defaults::yes")]
    group_commit: bool,
}

/// An omitted `[spool]` section means the same as an empty one.
impl Default for SpoolSection {
    fn default() -> Self {
        SpoolSection {
            dir: None,
            group_commit: defaults::yes(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuntimeSection {
    #[serde(default = "defaults::yes")]
    pooling: bool,
    #[serde(default = "defaults::max_instances")]
    max_instances: u32,
    #[serde(default = "defaults::max_memory_ceiling")]
    max_memory: ByteSize,
    #[serde(default = "defaults::yes")]
    cache: bool,
    cache_dir: Option<String>,
    #[serde(default = "defaults::keep_resident")]
    keep_resident: ByteSize,
    #[serde(default = "defaults::idle_instances")]
    idle_instances: usize,
    #[serde(default = "defaults::idle_timeout")]
    idle_timeout: Spanned<String>,
}

impl Default for RuntimeSection {
    fn default() -> Self {
        RuntimeSection {
            pooling: true,
            max_instances: defaults::max_instances(),
            max_memory: defaults::max_memory_ceiling(),
            cache: true,
            cache_dir: None,
            keep_resident: defaults::keep_resident(),
            idle_instances: defaults::idle_instances(),
            idle_timeout: defaults::idle_timeout(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DnsSection {
    #[serde(default)]
    nameservers: Vec<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSection {
    format: Option<LogFormat>,
    level: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

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
struct PluginSection {
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

/// A size in bytes: an integer, or a string such as "25MiB", "512KiB", "10M".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_size(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (examples: 1048576, \"512KiB\", \"25MiB\")"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" | "k" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {s:?} (use KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

mod defaults {
    use super::ByteSize;
    use toml::Spanned;

    pub fn yes() -> bool {
        true
    }
    pub fn max_message_size() -> ByteSize {
        ByteSize(25 << 20)
    }
    pub fn max_recipients() -> usize {
        100
    }
    pub fn max_connections() -> usize {
        1000
    }
    pub fn max_connections_per_ip() -> usize {
        20
    }
    pub fn max_bad_commands() -> u32 {
        10
    }
    /// RFC 5321 §6.3: servers that count `Received:` fields to detect
    /// loops "SHOULD use a large rejection threshold, normally at least 100".
    pub fn max_hops() -> usize {
        100
    }
    fn spanned(s: &str) -> Spanned<String> {
        Spanned::new(0..0, s.to_string())
    }
    pub fn command_timeout() -> Spanned<String> {
        spanned("5m")
    }
    pub fn data_timeout() -> Spanned<String> {
        spanned("3m")
    }
    /// Bytes per second a DATA transfer must keep up (Postfix's default).
    pub fn min_data_rate() -> u64 {
        500
    }
    pub fn idle_timeout() -> Spanned<String> {
        spanned("60s")
    }
    pub fn shutdown_timeout() -> Spanned<String> {
        spanned("30s")
    }
    pub fn max_instances() -> u32 {
        4096
    }
    pub fn idle_instances() -> usize {
        64
    }
    pub fn keep_resident() -> ByteSize {
        ByteSize(4 << 20)
    }
    pub fn max_memory_ceiling() -> ByteSize {
        ByteSize(512 << 20)
    }
    pub fn plugin_timeout_ms() -> u64 {
        2000
    }
    pub fn plugin_max_memory() -> ByteSize {
        ByteSize(64 << 20)
    }
    pub fn max_unknown_recipients() -> u32 {
        5
    }
    pub fn unknown_recipient_delay() -> Spanned<String> {
        spanned("1s")
    }
    pub fn client_unknown_recipient_limit() -> u32 {
        20
    }
    pub fn client_unknown_recipient_window() -> Spanned<String> {
        spanned("1h")
    }
    pub fn auth_max_failures() -> u32 {
        3
    }
    pub fn auth_client_failure_limit() -> u32 {
        10
    }
    pub fn auth_client_failure_window() -> Spanned<String> {
        spanned("15m")
    }
    pub fn zero() -> Spanned<String> {
        spanned("0s")
    }
    pub fn auth_namespace() -> String {
        "auth".into()
    }
}

/// One listening socket and how it treats clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub name: String,
    pub address: SocketAddr,
    pub tls: TlsMode,
    /// Submission: AUTH is required before MAIL (530 5.7.0).
    pub require_auth: bool,
    /// Offer and accept AUTH without TLS (off by default).
    pub allow_plaintext_auth: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    /// Where each key was set ("file:line"), for errors found when the
    /// files are loaded.
    pub cert_at: String,
    pub key_at: String,
    pub client_ca_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// Failed AUTH attempts in one session before 421 and close.
    pub max_failures: u32,
    /// Failed attempts per client address per window before AUTH is refused.
    pub client_failure_limit: u32,
    pub client_failure_window: Duration,
    /// After a successful AUTH, remember the client address this long in
    /// the kv namespace `remember_namespace` (key `recent-auth:<ip>`).
    pub remember_window: Duration,
    pub remember_namespace: String,
}

/// Recipient-enumeration limits (`[server]`, see `session/enumeration.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownRecipientLimits {
    /// Refused RCPT TO per session before every further RCPT is delayed
    /// (and, a few refusals later, the session closed); 0: off.
    pub per_session: u32,
    /// How long each RCPT past `per_session` waits for its answer.
    pub delay: Duration,
    /// Refused RCPT TO per client address and window before its sessions
    /// get 421 at RCPT; 0: off.
    pub per_client: u32,
    pub window: Duration,
    /// Clients never counted nor limited (authenticated sessions neither).
    pub exempt: Vec<ipnet::IpNet>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub hostname: String,
    pub listeners: Vec<ListenerSpec>,
    pub tls: Option<TlsFiles>,
    pub auth: AuthSettings,
    /// Prometheus endpoint address (`[metrics] listen`).
    pub metrics_listen: Option<SocketAddr>,
    pub local_domains: Vec<String>,
    pub data_dir: PathBuf,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_bad_commands: u32,
    /// A message already carrying this many `Received:` fields is looping
    /// (RFC 5321 §6.3): `554 5.4.6`. 0 turns the check off.
    pub max_hops: usize,
    /// A whole command line must arrive within this (slow clients cannot
    /// stretch it: see `conn::Deadline`).
    pub command_timeout: Duration,
    /// DATA must end within this of its start, extended by `min_data_rate`.
    pub data_timeout: Duration,
    /// Bytes per second of DATA that extend its deadline; 0: none.
    pub min_data_rate: u64,
    pub shutdown_timeout: Duration,
    pub unknown_recipients: UnknownRecipientLimits,
    /// Reload when the config or a plugin file changes.
    pub watch: bool,
    /// Admin socket path (default `<data_dir>/postern.sock`).
    pub admin_socket: Option<PathBuf>,
    /// `[server] user` / `group`: the account to switch to once the sockets
    /// are bound (none: keep the account postern was started as).
    pub run_as: Option<RunAs>,
    /// `[server] allow_root`: serve as root when no `user` is set.
    pub allow_root: bool,
    pub spool_dir: PathBuf,
    pub group_commit: bool,
    pub runtime: RuntimeConfig,
    pub nameservers: Vec<SocketAddr>,
    pub dns_timeout: Duration,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    pub plugins: Vec<PluginSpec>,
    /// `[delivery]`: the queue manager and delivery agents.
    pub delivery: postern_delivery::Settings,
    /// `[kv]`: where plugin and host state lives.
    pub kv: KvSettings,
    /// `[rollback]`: watching new generations and canaries.
    pub rollback: RollbackSettings,
    /// `[record]`: sessions recorded for `postern replay`.
    pub record: RecordSettings,
    /// `[[milter]]`: milters in the chain, among the plugins.
    pub milters: Vec<postern_plugin::MilterSpec>,
    /// `[av]`: the virus scanner for plugins granted "av-scan".
    pub av: crate::server::av::AvSettings,
}

/// Command-line overrides of the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Vec<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// A `[[plugin]]` or `[[milter]]` name: letters, digits, '-' or '_'.
fn member_name(cx: &Ctx, name: &Spanned<String>, kind: &str) -> Result<String, ConfigError> {
    let n = name.get_ref();
    if n.is_empty()
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(cx.at(
            name,
            format!("{kind} name {n:?} must be letters, digits, '-' or '_'"),
        ));
    }
    Ok(n.clone())
}

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    /// "file:line" of a value (just "file" for a default).
    fn location<T>(&self, span: &Spanned<T>) -> String {
        if span.span().end == 0 {
            self.path.display().to_string()
        } else {
            format!(
                "{}:{}",
                self.path.display(),
                line_of(self.text, span.span().start)
            )
        }
    }

    fn at<T>(&self, span: &Spanned<T>, msg: impl std::fmt::Display) -> ConfigError {
        ConfigError(format!("{}: {msg}", self.location(span)))
    }

    fn plain(&self, msg: impl std::fmt::Display) -> ConfigError {
        ConfigError(format!("{}: {msg}", self.path.display()))
    }

    fn duration(&self, v: &Spanned<String>, key: &str) -> Result<Duration, ConfigError> {
        humantime::parse_duration(v.get_ref().trim()).map_err(|e| {
            self.at(
                v,
                format!(
                    "{key}: invalid duration {:?} ({e}; examples: \"30s\", \"5m\")",
                    v.get_ref()
                ),
            )
        })
    }

    /// An optional duration that must be longer than zero (`default` when
    /// absent); `key` is the full name, e.g. "kv.timeout".
    fn positive_duration(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => {
                let d = self.duration(s, key)?;
                if d.is_zero() {
                    return Err(self.at(s, format!("{key} must be longer than 0")));
                }
                Ok(d)
            }
        }
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }
}

/// The `[server]` keys of recipient-enumeration resistance.
fn unknown_recipient_limits(
    cx: &Ctx<'_>,
    s: &ServerSection,
) -> Result<UnknownRecipientLimits, ConfigError> {
    let window = cx.duration(
        &s.client_unknown_recipient_window,
        "server.client_unknown_recipient_window",
    )?;
    if window.is_zero() && s.client_unknown_recipient_limit > 0 {
        return Err(cx.at(
            &s.client_unknown_recipient_window,
            "server.client_unknown_recipient_window must be greater than 0 (client_unknown_recipient_limit = 0 turns the limit off)",
        ));
    }
    let mut exempt = Vec::new();
    for n in &s.unknown_recipient_exempt_networks {
        let v = n.get_ref().trim();
        let net = v
            .parse::<ipnet::IpNet>()
            .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                cx.at(
                    n,
                    format!(
                        "server.unknown_recipient_exempt_networks: {v:?} is not a network (\"192.0.2.0/24\", \"2001:db8::/32\") or an address"
                    ),
                )
            })?;
        exempt.push(net.trunc());
    }
    Ok(UnknownRecipientLimits {
        per_session: s.max_unknown_recipients,
        delay: cx.duration(&s.unknown_recipient_delay, "server.unknown_recipient_delay")?,
        per_client: s.client_unknown_recipient_limit,
        window,
        exempt,
    })
}

impl Config {
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        Config::parse(path, &text, overrides)
    }

    pub fn parse(path: &Path, text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let cx = Ctx { path, text };
        let file: File = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            let msg = e.message().trim().to_string();
            match line {
                Some(l) => ConfigError(format!("{}:{l}: {msg}", path.display())),
                None => ConfigError(format!("{}: {msg}", path.display())),
            }
        })?;
        let s = &file.server;
        if s.hostname.trim().is_empty() || s.hostname.contains(char::is_whitespace) {
            return Err(cx.plain("server.hostname must be a host name without spaces"));
        }
        let tls = file.tls.as_ref().map(|t| TlsFiles {
            cert: cx.resolve(t.cert.get_ref()),
            key: cx.resolve(t.key.get_ref()),
            client_ca: t.client_ca.as_ref().map(|c| cx.resolve(c.get_ref())),
            cert_at: cx.location(&t.cert),
            key_at: cx.location(&t.key),
            client_ca_at: t
                .client_ca
                .as_ref()
                .map(|c| cx.location(c))
                .unwrap_or_default(),
        });
        let default_tls = if tls.is_some() {
            TlsMode::Starttls
        } else {
            TlsMode::None
        };
        let mut listeners = Vec::new();
        // Where each listener's address was set (none: `--listen`).
        let mut set_at: Vec<Option<&Spanned<String>>> = Vec::new();
        if overrides.listen.is_empty() {
            for l in &s.listen {
                let address: SocketAddr = l.get_ref().parse().map_err(|_| {
                    cx.at(
                        l,
                        format!(
                            "server.listen: {:?} is not an address:port such as \"127.0.0.1:2525\"",
                            l.get_ref()
                        ),
                    )
                })?;
                listeners.push(ListenerSpec {
                    name: "smtp".into(),
                    address,
                    tls: default_tls,
                    require_auth: false,
                    allow_plaintext_auth: false,
                });
                set_at.push(Some(l));
            }
        } else {
            for address in &overrides.listen {
                listeners.push(ListenerSpec {
                    name: "smtp".into(),
                    address: *address,
                    tls: default_tls,
                    require_auth: false,
                    allow_plaintext_auth: false,
                });
                set_at.push(None);
            }
        }
        for l in &file.listeners {
            let address: SocketAddr = l.address.get_ref().parse().map_err(|_| {
                cx.at(
                    &l.address,
                    format!(
                        "listener.address: {:?} is not an address:port",
                        l.address.get_ref()
                    ),
                )
            })?;
            let mode = l.tls.as_ref().map(|t| *t.get_ref()).unwrap_or(default_tls);
            if mode != TlsMode::None && tls.is_none() {
                let span = l
                    .tls
                    .as_ref()
                    .map(|t| cx.at(t, ""))
                    .unwrap_or_else(|| cx.at(&l.name, ""));
                return Err(ConfigError(format!(
                    "{}listener {:?} uses TLS but there is no [tls] section with cert and key",
                    span.0,
                    l.name.get_ref()
                )));
            }
            listeners.push(ListenerSpec {
                name: l.name.get_ref().clone(),
                address,
                tls: mode,
                require_auth: l.require_auth,
                allow_plaintext_auth: l.allow_plaintext_auth,
            });
            set_at.push(Some(&l.address));
        }
        if listeners.is_empty() {
            return Err(cx.plain("no listener: set server.listen or add a [[listener]]"));
        }
        let mut seen = std::collections::HashSet::new();
        for (l, at) in listeners.iter().zip(&set_at) {
            if l.address.port() != 0 && !seen.insert(l.address) {
                let msg = format!("listen address {} is used twice", l.address);
                return Err(match at {
                    Some(span) => cx.at(span, msg),
                    None => cx.plain(format!("{msg} (--listen)")),
                });
            }
        }
        let mut names = std::collections::HashSet::new();
        for l in file.listeners.iter() {
            let n = l.name.get_ref().as_str();
            if n == "smtp" || !names.insert(n) {
                return Err(cx.at(
                    &l.name,
                    format!("listener name {n:?} is used twice (\"smtp\" names the server.listen addresses)"),
                ));
            }
        }
        let metrics_listen = match &file.metrics.listen {
            Some(l) => Some(l.get_ref().parse::<SocketAddr>().map_err(|_| {
                cx.at(
                    l,
                    format!("metrics.listen: {:?} is not an address:port", l.get_ref()),
                )
            })?),
            None => None,
        };
        let auth = AuthSettings {
            max_failures: file.auth.max_failures.max(1),
            client_failure_limit: file.auth.client_failure_limit.max(1),
            client_failure_window: cx.duration(
                &file.auth.client_failure_window,
                "auth.client_failure_window",
            )?,
            remember_window: cx.duration(&file.auth.remember_window, "auth.remember_window")?,
            remember_namespace: file.auth.remember_namespace.clone(),
        };
        let local_domains: Vec<String> = s
            .local_domains
            .iter()
            .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
            .collect();
        if let Some(bad) = local_domains
            .iter()
            .find(|d| d.is_empty() || d.contains(['@', ' ']))
        {
            return Err(cx.plain(format!("server.local_domains: {bad:?} is not a domain")));
        }
        if s.max_recipients == 0 || s.max_connections == 0 || s.max_connections_per_ip == 0 {
            return Err(cx.plain(
                "server.max_recipients, max_connections and max_connections_per_ip must be at least 1",
            ));
        }
        let data_dir = match &overrides.data_dir {
            Some(d) => d.clone(),
            None => cx.resolve(s.data_dir.as_deref().unwrap_or("data")),
        };
        let spool_dir = match &file.spool.dir {
            Some(d) if overrides.data_dir.is_none() => cx.resolve(d),
            _ => data_dir.join("spool"),
        };
        let mut nameservers = Vec::new();
        for n in &file.dns.nameservers {
            let v = n.get_ref();
            let addr = v
                .parse::<SocketAddr>()
                .or_else(|_| {
                    v.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .map_err(|_| {
                    cx.at(
                        n,
                        format!("dns.nameservers: {v:?} is not an IP address or address:port"),
                    )
                })?;
            nameservers.push(addr);
        }
        let dns_timeout = match &file.dns.timeout {
            Some(t) => cx.duration(t, "dns.timeout")?,
            None => Duration::from_secs(5),
        };
        let idle_timeout = cx.duration(&file.runtime.idle_timeout, "runtime.idle_timeout")?;
        if idle_timeout.is_zero() {
            return Err(cx.at(
                &file.runtime.idle_timeout,
                "runtime.idle_timeout must be greater than 0 (idle_instances = 0 turns reuse off)",
            ));
        }
        let runtime = RuntimeConfig {
            pooling: file.runtime.pooling,
            max_instances: file.runtime.max_instances,
            max_memory_ceiling: file.runtime.max_memory.0 as usize,
            keep_resident: file.runtime.keep_resident.0 as usize,
            idle_instances: file.runtime.idle_instances,
            idle_timeout,
            cache_dir: file.runtime.cache.then(|| match &file.runtime.cache_dir {
                Some(d) => cx.resolve(d),
                None => data_dir.join("cache"),
            }),
            ..RuntimeConfig::default()
        };
        let mut plugins = Vec::new();
        let breaker = rollout::breaker(&cx, &file.breaker)?;
        for p in &file.plugins {
            let name = member_name(&cx, &p.name, "plugin")?;
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
        let unknown_recipients = unknown_recipient_limits(&cx, s)?;
        let run_as = run_as::build(&cx, s.user.as_ref(), s.group.as_ref())?;
        let delivery = delivery::build(
            &cx,
            &file.delivery,
            s.hostname.trim(),
            &local_domains,
            &data_dir,
        )?;
        let kv = kv::build(&cx, &file.kv, &data_dir)?;
        let rollback = rollout::rollback(&cx, &file.rollback)?;
        let record = record::build(&cx, &file.record, &data_dir)?;
        let av = av::build(&cx, &file.av)?;
        let milters = milter::build(
            &cx,
            &file.milters,
            &file
                .plugins
                .iter()
                .map(|p| p.name.span().start)
                .collect::<Vec<_>>(),
            &plugins.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
        )?;
        Ok(Config {
            delivery,
            kv,
            rollback,
            record,
            milters,
            av,
            path: path.to_path_buf(),
            hostname: s.hostname.trim().to_string(),
            listeners,
            tls,
            auth,
            metrics_listen,
            local_domains,
            data_dir,
            max_message_size: s.max_message_size.0,
            max_recipients: s.max_recipients,
            max_connections: s.max_connections,
            max_connections_per_ip: s.max_connections_per_ip,
            max_bad_commands: s.max_bad_commands,
            max_hops: s.max_hops,
            command_timeout: cx.duration(&s.command_timeout, "server.command_timeout")?,
            data_timeout: cx.duration(&s.data_timeout, "server.data_timeout")?,
            min_data_rate: s.min_data_rate,
            shutdown_timeout: cx.duration(&s.shutdown_timeout, "server.shutdown_timeout")?,
            unknown_recipients,
            watch: s.watch,
            admin_socket: s.admin_socket.as_deref().map(|p| cx.resolve(p)),
            run_as,
            allow_root: s.allow_root,
            spool_dir,
            group_commit: file.spool.group_commit,
            runtime,
            nameservers,
            dns_timeout,
            log_format: file.log.format,
            log_level: file.log.level.clone(),
            plugins,
        })
    }

    /// Whether `domain` (any case, optional trailing dot) is local.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        let d = domain.trim_end_matches('.');
        self.local_domains.iter().any(|l| l.eq_ignore_ascii_case(d))
    }
}

/// For the section modules' tests: a minimal file plus `extra` lines.
#[cfg(test)]
pub(crate) fn parse_minimal(extra: &str) -> Result<Config, ConfigError> {
    let min = "[server]\nhostname = \"mx.test\"\nlisten = [\"127.0.0.1:2525\"]\nlocal_domains = [\"example.test\"]\n";
    Config::parse(
        Path::new("/etc/postern/p.toml"),
        &format!("{min}{extra}"),
        &Overrides::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "[server]\nhostname = \"mx.test\"\nlisten = [\"127.0.0.1:2525\"]\nlocal_domains = [\"Example.TEST.\"]\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(
            Path::new("/etc/postern/p.toml"),
            text,
            &Overrides::default(),
        )
    }

    #[test]
    fn minimal_with_defaults() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.local_domains, vec!["example.test"]);
        assert!(c.is_local_domain("EXAMPLE.test."));
        assert_eq!(c.max_message_size, 25 << 20);
        assert_eq!(c.command_timeout, Duration::from_secs(300));
        assert_eq!(c.data_dir, PathBuf::from("/etc/postern/data"));
        assert_eq!(c.spool_dir, PathBuf::from("/etc/postern/data/spool"));
    }

    /// An omitted section means exactly what an empty one does (the
    /// README's defaults hold either way; `[spool] group_commit` once did not).
    #[test]
    fn omitted_sections_take_the_documented_defaults() {
        let empty = "[spool]\n[runtime]\n[dns]\n[log]\n[auth]\n[metrics]\n[delivery]\n";
        let omitted = parse(MIN).unwrap();
        let explicit = parse(&format!("{MIN}{empty}")).unwrap();
        assert_eq!(format!("{omitted:?}"), format!("{explicit:?}"));
        assert!(
            omitted.group_commit,
            "[spool] group_commit defaults to true"
        );
        assert_eq!(omitted.min_data_rate, 500);
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            (
                format!("{MIN}bogus = 1\n"),
                "p.toml:5",
                "unknown field `bogus`",
            ),
            (
                "[server]\nhostname = \"h\"\nlisten = [\"nope\"]\nlocal_domains = []\n".to_string(),
                "p.toml:3",
                "not an address",
            ),
            (
                format!(
                    "{MIN}[[plugin]]\nname = \"x\"\npath = \"x.wasm\"\non_error = \"explode\"\n"
                ),
                "p.toml:8",
                "unknown variant `explode`",
            ),
            (
                format!("{MIN}max_message_size = \"12 parsecs\"\n"),
                "p.toml",
                "invalid size unit",
            ),
            (
                format!("{MIN}command_timeout = \"soon\"\n"),
                "p.toml:5",
                "invalid duration",
            ),
            (
                format!("{MIN}[[listener]]\nname = \"again\"\naddress = \"127.0.0.1:2525\"\n"),
                "p.toml:7",
                "listen address 127.0.0.1:2525 is used twice",
            ),
            (
                "[server]\nhostname = \"h\"\nlocal_domains = []\nlisten = [\n  \"127.0.0.1:25\",\n  \"127.0.0.1:25\",\n]\n".to_string(),
                "p.toml:6",
                "is used twice",
            ),
            (
                format!("{MIN}[runtime]\nidle_timeout = \"0s\"\n"),
                "p.toml:6",
                "idle_timeout must be greater than 0",
            ),
            (
                format!("{MIN}[runtime]\nidle_timeout = \"a while\"\n"),
                "p.toml:6",
                "runtime.idle_timeout: invalid duration",
            ),
            ("[server\n".to_string(), "p.toml:1", ""),
            (
                format!("{MIN}[[plugin]]\nname = \"bad name\"\npath = \"x.wasm\"\n"),
                "p.toml:6",
                "must be letters",
            ),
            (
                format!(
                    "{MIN}[[plugin]]\nname = \"p\"\npath = \"x.wasm\"\nfiles = [\"/\",\n  \"/etc/postern/missing-dkim\"]\n"
                ),
                "p.toml:9",
                "files entry /etc/postern/missing-dkim is not a directory",
            ),
        ];
        for (text, at, msg) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(at), "{e:?} should contain {at:?}");
            assert!(e.contains(msg), "{e:?} should contain {msg:?}");
        }
    }

    #[test]
    fn plugins_and_overrides() {
        let text = format!(
            "{MIN}[[plugin]]\nname = \"p\"\npath = \"p.wasm\"\non_error = \"fail-open\"\nmax_memory = \"16MiB\"\nmode = \"shadow\"\n[plugin.config]\nlist = [1, 2]\n"
        );
        let o = Overrides {
            listen: vec!["127.0.0.1:1".parse().unwrap()],
            data_dir: Some("/tmp/d".into()),
        };
        let c = Config::parse(Path::new("/etc/p.toml"), &text, &o).unwrap();
        assert_eq!(c.listeners[0].address, o.listen[0]);
        assert_eq!(c.spool_dir, PathBuf::from("/tmp/d/spool"));
        let p = &c.plugins[0];
        assert_eq!(p.path, PathBuf::from("/etc/p.wasm"));
        assert_eq!(p.on_error, OnError::FailOpen);
        assert_eq!(p.mode, Mode::Shadow);
        assert_eq!(p.max_memory, 16 << 20);
        assert_eq!(p.config_json, r#"{"list":[1,2]}"#);
    }

    #[test]
    fn unknown_recipient_limits() {
        let d = parse(MIN).unwrap().unknown_recipients;
        assert_eq!(
            d,
            UnknownRecipientLimits {
                per_session: 5,
                delay: Duration::from_secs(1),
                per_client: 20,
                window: Duration::from_secs(3600),
                exempt: vec![],
            }
        );
        let text = format!(
            "{MIN}max_unknown_recipients = 0\nunknown_recipient_delay = \"250ms\"\nclient_unknown_recipient_limit = 0\nclient_unknown_recipient_window = \"0s\"\nunknown_recipient_exempt_networks = [\"192.0.2.7/24\", \"2001:db8::1\"]\n"
        );
        let c = parse(&text).unwrap().unknown_recipients;
        assert_eq!((c.per_session, c.per_client), (0, 0));
        assert_eq!(c.delay, Duration::from_millis(250));
        let nets: Vec<String> = c.exempt.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["192.0.2.0/24", "2001:db8::1/128"]);
        for (extra, at, msg) in [
            (
                "unknown_recipient_delay = \"slowly\"\n",
                "p.toml:5",
                "server.unknown_recipient_delay: invalid duration",
            ),
            (
                "client_unknown_recipient_window = \"0s\"\n",
                "p.toml:5",
                "client_unknown_recipient_window must be greater than 0",
            ),
            (
                "unknown_recipient_exempt_networks = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/33\",\n]\n",
                "p.toml:7",
                "\"10.0.0.0/33\" is not a network",
            ),
        ] {
            let e = parse(&format!("{MIN}{extra}")).unwrap_err().to_string();
            assert!(e.contains(at) && e.contains(msg), "{e:?}: {at} {msg}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10").unwrap(), 10);
        assert_eq!(parse_size("2KiB").unwrap(), 2048);
        assert_eq!(parse_size("25MiB").unwrap(), 25 << 20);
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }
}
