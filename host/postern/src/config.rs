//! The TOML configuration (reference: `examples/postern.toml`). Input: an
//! operator's file, trusted for intent but not for form: unknown keys are
//! errors, and every error names the file and, where the parser knows it, the
//! line. Relative paths are resolved against the file's directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use postern_plugin::{PluginSpec, RuntimeConfig};

mod av;
mod delivery;
mod kv;
mod listeners;
mod milter;
mod plugins;
mod record;
mod rollout;
mod run_as;
mod server;

pub use record::RecordSettings;
pub use rollout::RollbackSettings;

pub use kv::{KvSettings, KvStore};
pub use listeners::{ListenerSpec, TlsFiles, TlsMode};
pub use run_as::RunAs;
pub use server::{SessionLimits, Timeouts, UnknownRecipientLimits};

/// A configuration error, already rendered with file and line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    server: server::ServerSection,
    #[serde(default)]
    spool: SpoolSection,
    #[serde(default)]
    runtime: RuntimeSection,
    #[serde(default)]
    dns: DnsSection,
    #[serde(default)]
    log: LogSettings,
    #[serde(default)]
    tls: Option<listeners::TlsSection>,
    #[serde(default)]
    auth: AuthSection,
    #[serde(default, rename = "listener")]
    listeners: Vec<listeners::ListenerSection>,
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
    plugins: Vec<plugins::PluginSection>,
    #[serde(default, rename = "milter")]
    milters: Vec<milter::MilterSection>,
    #[serde(default)]
    av: av::AvSection,
}

impl File {
    /// The TOML itself: its syntax, unknown keys, value types, and what
    /// deserializing checks (sizes, enumerations). The error names the line
    /// when the parser knows it.
    fn from_toml(cx: &Ctx) -> Result<File, ConfigError> {
        toml::from_str(cx.text).map_err(|e| {
            let line = e.span().map(|s| line_of(cx.text, s.start));
            let msg = e.message().trim().to_string();
            match line {
                Some(l) => ConfigError(format!("{}:{l}: {msg}", cx.path.display())),
                None => cx.plain(msg),
            }
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSection {
    listen: Option<Spanned<String>>,
}

/// `[metrics] listen`, when set, must be an address:port.
fn build_metrics(cx: &Ctx, s: &MetricsSection) -> Result<Option<SocketAddr>, ConfigError> {
    match &s.listen {
        Some(l) => Ok(Some(l.get_ref().parse::<SocketAddr>().map_err(|_| {
            cx.at(
                l,
                format!("metrics.listen: {:?} is not an address:port", l.get_ref()),
            )
        })?)),
        None => Ok(None),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    max_failures: Option<Spanned<u32>>,
    client_failure_limit: Option<Spanned<u32>>,
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
            max_failures: None,
            client_failure_limit: None,
            client_failure_window: defaults::auth_client_failure_window(),
            remember_window: defaults::zero(),
            remember_namespace: defaults::auth_namespace(),
        }
    }
}

/// `[auth]`: the failure limits at least 1, then `client_failure_window`
/// and `remember_window` durations.
fn build_auth(cx: &Ctx, s: &AuthSection) -> Result<AuthSettings, ConfigError> {
    Ok(AuthSettings {
        max_failures: cx.at_least_one(
            &s.max_failures,
            "auth.max_failures",
            defaults::auth_max_failures(),
        )?,
        client_failure_limit: cx.at_least_one(
            &s.client_failure_limit,
            "auth.client_failure_limit",
            defaults::auth_client_failure_limit(),
        )?,
        client_failure_window: cx
            .duration(&s.client_failure_window, "auth.client_failure_window")?,
        remember_window: cx.duration(&s.remember_window, "auth.remember_window")?,
        remember_namespace: s.remember_namespace.clone(),
    })
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

/// `[spool]`: where the spool lives and whether its log commits in groups.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    pub group_commit: bool,
}

/// `[spool] dir`, default `<data_dir>/spool`; `--data-dir` overrides it
/// too. Nothing to check.
fn build_spool(
    cx: &Ctx,
    s: &SpoolSection,
    data_dir: &Path,
    overrides: &Overrides,
) -> SpoolSettings {
    let dir = match &s.dir {
        Some(d) if overrides.data_dir.is_none() => cx.resolve(d),
        _ => data_dir.join("spool"),
    };
    SpoolSettings {
        dir,
        group_commit: s.group_commit,
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

/// `[runtime]`: `idle_timeout` must be a duration longer than 0; the
/// compilation cache, when on, defaults to `<data_dir>/cache`.
fn build_runtime(
    cx: &Ctx,
    s: &RuntimeSection,
    data_dir: &Path,
) -> Result<RuntimeConfig, ConfigError> {
    let idle_timeout = cx.duration(&s.idle_timeout, "runtime.idle_timeout")?;
    if idle_timeout.is_zero() {
        return Err(cx.at(
            &s.idle_timeout,
            "runtime.idle_timeout must be greater than 0 (idle_instances = 0 turns reuse off)",
        ));
    }
    Ok(RuntimeConfig {
        pooling: s.pooling,
        max_instances: s.max_instances,
        max_memory_ceiling: s.max_memory.0 as usize,
        keep_resident: s.keep_resident.0 as usize,
        idle_instances: s.idle_instances,
        idle_timeout,
        cache_dir: s.cache.then(|| match &s.cache_dir {
            Some(d) => cx.resolve(d),
            None => data_dir.join("cache"),
        }),
        ..RuntimeConfig::default()
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DnsSection {
    #[serde(default)]
    nameservers: Vec<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

/// `[dns]`: the servers the resolver asks (none: the system's) and how long
/// it waits for an answer.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    pub nameservers: Vec<SocketAddr>,
    pub timeout: Duration,
}

/// `[dns]`: each nameserver an IP address (port 53) or address:port, then
/// `timeout` a duration (default 5s).
fn build_dns(cx: &Ctx, s: &DnsSection) -> Result<DnsSettings, ConfigError> {
    let mut nameservers = Vec::new();
    for n in &s.nameservers {
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
    let timeout = match &s.timeout {
        Some(t) => cx.duration(t, "dns.timeout")?,
        None => Duration::from_secs(5),
    };
    Ok(DnsSettings {
        nameservers,
        timeout,
    })
}

/// `[log]`: copied as it is (`--log-format` and `RUST_LOG` may override it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: Option<LogFormat>,
    pub level: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A size in bytes: an integer, or a string such as "25MiB", "512KiB", "10M".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    /// A number of bytes or a string with a unit. A visitor, not an
    /// untagged enum, so that a bad value's error keeps its line.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Size;
        impl serde::de::Visitor<'_> for Size {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size: bytes, or a string such as \"25MiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("a size cannot be negative ({n})")))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                parse_size(s).map(ByteSize).map_err(E::custom)
            }
        }
        d.deserialize_any(Size)
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
    /// `[server]` limits of a session, its messages and the connections.
    pub limits: SessionLimits,
    /// `[server]` timeouts of a session and of shutting down.
    pub timeouts: Timeouts,
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
    pub spool: SpoolSettings,
    pub runtime: RuntimeConfig,
    pub dns: DnsSettings,
    pub log: LogSettings,
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
        let Some(s) = v else {
            return Ok(default);
        };
        let d = self.duration(s, key)?;
        if d.is_zero() {
            return Err(self.at(s, format!("{key} must be longer than 0")));
        }
        Ok(d)
    }

    /// An optional whole number that must be at least 1 (`default` when
    /// absent); `key` is the full name, e.g. "auth.max_failures".
    fn at_least_one<T: Copy + PartialOrd + From<u8>>(
        &self,
        v: &Option<Spanned<T>>,
        key: &str,
        default: T,
    ) -> Result<T, ConfigError> {
        match v {
            None => Ok(default),
            Some(n) if *n.get_ref() >= T::from(1) => Ok(*n.get_ref()),
            Some(n) => Err(self.at(n, format!("{key} must be at least 1"))),
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

impl Config {
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        Config::parse(path, &text, overrides)
    }

    /// Builds the configuration section by section; where two sections are
    /// wrong, the error of the one built first is reported.
    pub fn parse(path: &Path, text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let cx = Ctx { path, text };
        let file = File::from_toml(&cx)?;
        let s = &file.server;
        let hostname = server::hostname(&cx, s)?;
        let tls = listeners::tls(&cx, file.tls.as_ref());
        let listeners =
            listeners::build(&cx, &s.listen, &file.listeners, tls.is_some(), overrides)?;
        let metrics_listen = build_metrics(&cx, &file.metrics)?;
        let auth = build_auth(&cx, &file.auth)?;
        let local_domains = server::local_domains(&cx, s)?;
        let limits = server::limits(&cx, s)?;
        let data_dir = server::data_dir(&cx, s, overrides);
        let spool = build_spool(&cx, &file.spool, &data_dir, overrides);
        let dns = build_dns(&cx, &file.dns)?;
        let runtime = build_runtime(&cx, &file.runtime, &data_dir)?;
        let breaker = rollout::breaker(&cx, &file.breaker)?;
        let plugins = plugins::build(&cx, &file.plugins, breaker)?;
        let unknown_recipients = server::unknown_recipient_limits(&cx, s)?;
        let run_as = server::run_as(&cx, s)?;
        let delivery = delivery::build(&cx, &file.delivery, &hostname, &local_domains, &data_dir)?;
        let kv = kv::build(&cx, &file.kv, &data_dir)?;
        let rollback = rollout::rollback(&cx, &file.rollback)?;
        let record = record::build(&cx, &file.record, &data_dir)?;
        let av = av::build(&cx, &file.av)?;
        let plugin_names: Vec<String> = plugins.iter().map(|p| p.name.clone()).collect();
        let plugin_offsets = plugins::offsets(&file.plugins);
        let milters = milter::build(&cx, &file.milters, &plugin_offsets, &plugin_names)?;
        // Checked last, as they always were: another section's error is
        // reported before theirs.
        let timeouts = server::timeouts(&cx, s)?;
        Ok(Config {
            path: path.to_path_buf(),
            hostname,
            listeners,
            tls,
            auth,
            metrics_listen,
            local_domains,
            data_dir,
            limits,
            timeouts,
            unknown_recipients,
            watch: s.watch,
            admin_socket: server::admin_socket(&cx, s),
            run_as,
            allow_root: s.allow_root,
            spool,
            runtime,
            dns,
            log: file.log,
            plugins,
            delivery,
            kv,
            rollback,
            record,
            milters,
            av,
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
    use postern_plugin::{Mode, OnError};

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
        assert_eq!(c.limits.max_message_size, 25 << 20);
        assert_eq!(c.timeouts.command, Duration::from_secs(300));
        assert_eq!(c.data_dir, PathBuf::from("/etc/postern/data"));
        assert_eq!(c.spool.dir, PathBuf::from("/etc/postern/data/spool"));
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
            omitted.spool.group_commit,
            "[spool] group_commit defaults to true"
        );
        assert_eq!(omitted.timeouts.min_data_rate, 500);
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
                "p.toml:5",
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
                format!("{MIN}command_timeout = \"0s\"\n"),
                "p.toml:5",
                "server.command_timeout must be longer than 0",
            ),
            (
                format!("{MIN}data_timeout = \"0s\"\n"),
                "p.toml:5",
                "server.data_timeout must be longer than 0",
            ),
            (
                format!("{MIN}[auth]\nmax_failures = 0\n"),
                "p.toml:6",
                "auth.max_failures must be at least 1",
            ),
            (
                format!("{MIN}[auth]\nclient_failure_limit = 0\n"),
                "p.toml:6",
                "auth.client_failure_limit must be at least 1",
            ),
            (
                format!("{MIN}[[listener]]\nname = \"smtp\"\naddress = \"127.0.0.1:2600\"\n"),
                "p.toml:6",
                "listener name \"smtp\" is reserved",
            ),
            (
                format!("{MIN}[[listener]]\nname = \"sub\"\naddress = \"127.0.0.1:2600\"\n[[listener]]\nname = \"sub\"\naddress = \"127.0.0.1:2601\"\n"),
                "p.toml:9",
                "listener name \"sub\" is used twice",
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
        assert_eq!(c.spool.dir, PathBuf::from("/tmp/d/spool"));
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
