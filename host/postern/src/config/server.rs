//! `[server]`: the host name and local domains, the data directory, the
//! session limits and timeouts, recipient-enumeration resistance and the
//! account to run as. `server.listen` is built with the `[[listener]]`
//! entries (see `listeners`). Input: the operator's file; errors name the
//! file and, where the key's value carries it, the line.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ByteSize, ConfigError, Ctx, Overrides, RunAs, defaults};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerSection {
    hostname: String,
    #[serde(default)]
    pub(super) listen: Vec<Spanned<String>>,
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
    pub(super) watch: bool,
    admin_socket: Option<String>,
    /// The account `postern serve` switches to after binding (see `run_as`).
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) allow_root: bool,
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

/// The `[server]` limits of a session, its messages and the connections.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_bad_commands: u32,
    /// A message already carrying this many `Received:` fields is looping
    /// (RFC 5321 §6.3): `554 5.4.6`. 0 turns the check off.
    pub max_hops: usize,
}

/// `server.command_timeout`, `data_timeout`, `min_data_rate` and
/// `shutdown_timeout`.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// A whole command line must arrive within this (slow clients cannot
    /// stretch it: see `conn::Deadline`).
    pub command: Duration,
    /// DATA must end within this of its start, extended by `min_data_rate`.
    pub data: Duration,
    /// Bytes per second of DATA that extend its deadline; 0: none.
    pub min_data_rate: u64,
    pub shutdown: Duration,
}

/// `server.hostname`: not empty and without spaces (returned trimmed).
pub(super) fn hostname(cx: &Ctx, s: &ServerSection) -> Result<String, ConfigError> {
    if s.hostname.trim().is_empty() || s.hostname.contains(char::is_whitespace) {
        return Err(cx.plain("server.hostname must be a host name without spaces"));
    }
    Ok(s.hostname.trim().to_string())
}

/// `server.local_domains`, lowercased and without a trailing dot: none may
/// be empty or contain '@' or a space.
pub(super) fn local_domains(cx: &Ctx, s: &ServerSection) -> Result<Vec<String>, ConfigError> {
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
    Ok(local_domains)
}

/// The session limits: `max_recipients`, `max_connections` and
/// `max_connections_per_ip` must be at least 1 (the others are taken as
/// they are).
pub(super) fn limits(cx: &Ctx, s: &ServerSection) -> Result<SessionLimits, ConfigError> {
    if s.max_recipients == 0 || s.max_connections == 0 || s.max_connections_per_ip == 0 {
        return Err(cx.plain(
            "server.max_recipients, max_connections and max_connections_per_ip must be at least 1",
        ));
    }
    Ok(SessionLimits {
        max_message_size: s.max_message_size.0,
        max_recipients: s.max_recipients,
        max_connections: s.max_connections,
        max_connections_per_ip: s.max_connections_per_ip,
        max_bad_commands: s.max_bad_commands,
        max_hops: s.max_hops,
    })
}

/// `server.data_dir` (default "data" beside the file), unless `--data-dir`
/// overrides it. Nothing to check.
pub(super) fn data_dir(cx: &Ctx, s: &ServerSection, overrides: &Overrides) -> PathBuf {
    match &overrides.data_dir {
        Some(d) => d.clone(),
        None => cx.resolve(s.data_dir.as_deref().unwrap_or("data")),
    }
}

/// The `[server]` keys of recipient-enumeration resistance: the client
/// window must be a duration, longer than 0 while the client limit is on;
/// each exempt entry a network or an address; the delay a duration.
pub(super) fn unknown_recipient_limits(
    cx: &Ctx,
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

/// `server.user` and `group`: existing accounts (see `run_as`).
pub(super) fn run_as(cx: &Ctx, s: &ServerSection) -> Result<Option<RunAs>, ConfigError> {
    super::run_as::build(cx, s.user.as_ref(), s.group.as_ref())
}

/// `server.admin_socket`, resolved against the file's directory. Nothing to
/// check.
pub(super) fn admin_socket(cx: &Ctx, s: &ServerSection) -> Option<PathBuf> {
    s.admin_socket.as_deref().map(|p| cx.resolve(p))
}

/// `server.command_timeout`, `data_timeout` and `shutdown_timeout`: each a
/// duration; the first two longer than 0 (a zero one would end every
/// session at once), `shutdown_timeout` may be 0 (do not wait).
/// `min_data_rate` is taken as it is.
pub(super) fn timeouts(cx: &Ctx, s: &ServerSection) -> Result<Timeouts, ConfigError> {
    let positive = |v: &Spanned<String>, key: &str| {
        let d = cx.duration(v, key)?;
        match d.is_zero() {
            true => Err(cx.at(v, format!("{key} must be longer than 0"))),
            false => Ok(d),
        }
    };
    Ok(Timeouts {
        command: positive(&s.command_timeout, "server.command_timeout")?,
        data: positive(&s.data_timeout, "server.data_timeout")?,
        min_data_rate: s.min_data_rate,
        shutdown: cx.duration(&s.shutdown_timeout, "server.shutdown_timeout")?,
    })
}
