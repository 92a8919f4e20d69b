//! The `[kv]` section: which store holds the plugins' and the host's state
//! (`embedded` by default, `memory`, or `redis`), and the deadline every kv
//! call gets. Input: the operator's file; errors name the file and line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use postern_kv::{RedisSettings, RedisTopology};
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Ctx};

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Backend {
    #[default]
    Embedded,
    Memory,
    Redis,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Memory => "memory",
            Backend::Redis => "redis",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Topology {
    #[default]
    Standalone,
    Cluster,
    Sentinel,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KvSection {
    #[serde(default)]
    backend: Option<Spanned<Backend>>,
    timeout: Option<Spanned<String>>,
    outage_log_interval: Option<Spanned<String>>,
    path: Option<String>,
    flush_interval: Option<Spanned<String>>,
    redis: Option<Spanned<RedisSection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisSection {
    url: Option<Spanned<String>>,
    urls: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    topology: Topology,
    sentinel_master: Option<Spanned<String>>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<Spanned<String>>,
    prefix: Option<String>,
    connect_timeout: Option<Spanned<String>>,
    connections: Option<Spanned<usize>>,
    tls_ca_file: Option<String>,
}

/// Where the state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvStore {
    Memory,
    Embedded {
        path: PathBuf,
        flush_interval: Duration,
    },
    Redis(RedisSettings),
}

/// The validated `[kv]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvSettings {
    pub store: KvStore,
    /// Bound on every kv call, whatever the store (default 250 ms: well
    /// under a plugin's deadline, so the plugin still decides).
    pub timeout: Duration,
    /// An outage is logged once per this interval (failures in between are
    /// counted in the metrics).
    pub outage_log_interval: Duration,
}

pub(super) fn build(cx: &Ctx, k: &KvSection, data_dir: &Path) -> Result<KvSettings, ConfigError> {
    let backend = k.backend.as_ref().map(|b| *b.get_ref()).unwrap_or_default();
    let timeout = cx.positive_duration(&k.timeout, "kv.timeout", Duration::from_millis(250))?;
    let outage_log_interval = cx.positive_duration(
        &k.outage_log_interval,
        "kv.outage_log_interval",
        Duration::from_secs(30),
    )?;
    // Settings of another backend are a mistake worth naming.
    let misplaced = |what: &str| {
        let at = k
            .backend
            .as_ref()
            .map(|b| cx.location(b))
            .unwrap_or_else(|| cx.path.display().to_string());
        ConfigError(format!(
            "{at}: kv.{what} is set but kv.backend is \"{}\"",
            backend.name()
        ))
    };
    if backend != Backend::Redis && k.redis.is_some() {
        return Err(misplaced("redis"));
    }
    if backend != Backend::Embedded && (k.path.is_some() || k.flush_interval.is_some()) {
        return Err(misplaced(if k.path.is_some() {
            "path"
        } else {
            "flush_interval"
        }));
    }
    let store = match backend {
        Backend::Memory => KvStore::Memory,
        Backend::Embedded => KvStore::Embedded {
            path: match &k.path {
                Some(p) if Path::new(p).is_absolute() => PathBuf::from(p),
                Some(p) => data_dir.join(p),
                None => data_dir.join("kv.redb"),
            },
            flush_interval: cx.positive_duration(
                &k.flush_interval,
                "kv.flush_interval",
                Duration::from_secs(1),
            )?,
        },
        Backend::Redis => {
            let Some(r) = &k.redis else {
                let at = k
                    .backend
                    .as_ref()
                    .map(|b| cx.location(b))
                    .unwrap_or_default();
                return Err(ConfigError(format!(
                    "{at}: kv.backend = \"redis\" needs a [kv.redis] section with url (or urls)"
                )));
            };
            KvStore::Redis(redis(cx, r, timeout)?)
        }
    };
    Ok(KvSettings {
        store,
        timeout,
        outage_log_interval,
    })
}

fn redis(
    cx: &Ctx,
    r: &Spanned<RedisSection>,
    timeout: Duration,
) -> Result<RedisSettings, ConfigError> {
    let s = r.get_ref();
    let urls = match (&s.url, &s.urls) {
        (Some(u), None) => vec![u.get_ref().clone()],
        (None, Some(list)) if !list.get_ref().is_empty() => list.get_ref().clone(),
        (Some(u), Some(_)) => {
            return Err(cx.at(u, "kv.redis: set url or urls, not both"));
        }
        _ => return Err(cx.at(r, "kv.redis needs url (or urls, for a cluster)")),
    };
    let topology = match (s.topology, &s.sentinel_master) {
        (Topology::Standalone, None) => RedisTopology::Standalone,
        (Topology::Cluster, None) => RedisTopology::Cluster,
        (Topology::Sentinel, Some(m)) if !m.get_ref().trim().is_empty() => {
            RedisTopology::Sentinel {
                master: m.get_ref().trim().to_string(),
            }
        }
        (Topology::Sentinel, _) => {
            return Err(cx.at(
                r,
                "kv.redis: topology = \"sentinel\" needs sentinel_master (the monitored service's name)",
            ));
        }
        (_, Some(m)) => {
            return Err(cx.at(m, "kv.redis.sentinel_master needs topology = \"sentinel\""));
        }
    };
    // Errors about the addresses point at the line that gave them.
    let at_urls = |msg: String| match (&s.url, &s.urls) {
        (Some(u), _) => cx.at(u, msg),
        (None, Some(u)) => cx.at(u, msg),
        (None, None) => cx.at(r, msg),
    };
    if topology == RedisTopology::Standalone && urls.len() > 1 {
        return Err(at_urls(
            "kv.redis: several urls are a cluster's seed nodes: add topology = \"cluster\"".into(),
        ));
    }
    const SCHEMES: [&str; 4] = ["redis://", "rediss://", "redis+unix://", "unix://"];
    if let Some(u) = urls
        .iter()
        .find(|u| !SCHEMES.iter().any(|p| u.starts_with(p)))
    {
        return Err(at_urls(format!(
            "kv.redis: {u:?} is not a redis://, rediss:// or redis+unix:// address"
        )));
    }
    let password = match (&s.password, &s.password_file) {
        (Some(_), Some(f)) => {
            return Err(cx.at(f, "kv.redis: set password or password_file, not both"));
        }
        (Some(p), None) => Some(p.clone()),
        (None, Some(f)) => {
            let path = cx.resolve(f.get_ref());
            let text = std::fs::read_to_string(&path)
                .map_err(|e| cx.at(f, format!("kv.redis.password_file {}: {e}", path.display())))?;
            Some(text.trim_end_matches(['\r', '\n']).to_string())
        }
        (None, None) => None,
    };
    let connections = match &s.connections {
        None => 2,
        Some(n) if (1..=64).contains(n.get_ref()) => *n.get_ref(),
        Some(n) => return Err(cx.at(n, "kv.redis.connections must be 1 to 64")),
    };
    Ok(RedisSettings {
        urls,
        topology,
        username: s.username.clone(),
        password,
        prefix: s.prefix.clone().unwrap_or_else(|| "postern:".into()),
        connect_timeout: cx.positive_duration(
            &s.connect_timeout,
            "kv.redis.connect_timeout",
            Duration::from_secs(1),
        )?,
        timeout,
        connections,
        tls_ca_file: s.tls_ca_file.as_deref().map(|p| cx.resolve(p)),
    })
}

#[cfg(test)]
mod tests {
    use super::super::parse_minimal;
    use super::*;

    fn err(extra: &str) -> String {
        parse_minimal(extra).err().unwrap().0
    }

    /// The Redis settings `extra` configures (it must choose the redis backend).
    fn parsed_redis(extra: &str) -> RedisSettings {
        match parse_minimal(extra).unwrap().kv.store {
            KvStore::Redis(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn embedded_is_the_default() {
        let c = parse_minimal("").unwrap();
        assert_eq!(
            c.kv.store,
            KvStore::Embedded {
                path: c.data_dir.join("kv.redb"),
                flush_interval: Duration::from_secs(1)
            }
        );
        assert_eq!(c.kv.timeout, Duration::from_millis(250));
    }

    #[test]
    fn redis_settings() {
        let r = parsed_redis(
            "[kv]\nbackend = \"redis\"\ntimeout = \"100ms\"\n[kv.redis]\nurl = \"redis://127.0.0.1:6379/2\"\nprefix = \"mx:\"\nusername = \"postern\"\npassword = \"s\"\n",
        );
        assert_eq!(r.urls, ["redis://127.0.0.1:6379/2"]);
        assert_eq!(r.prefix, "mx:");
        assert_eq!(r.timeout, Duration::from_millis(100));
        assert_eq!(r.connections, 2);
        assert_eq!(r.password.as_deref(), Some("s"));
    }

    #[test]
    fn sentinel_settings() {
        let r = parsed_redis(
            "[kv]\nbackend = \"redis\"\n[kv.redis]\nurls = [\"redis://s1:26379\", \"redis://s2:26379\"]\ntopology = \"sentinel\"\nsentinel_master = \"mymaster\"\n",
        );
        assert_eq!(
            r.topology,
            RedisTopology::Sentinel {
                master: "mymaster".into()
            }
        );
        assert_eq!(r.urls.len(), 2);
    }

    #[test]
    fn mistakes_are_named_with_their_line() {
        let e = err("[kv]\nbackend = \"redis\"\n");
        assert!(e.contains(":") && e.contains("[kv.redis]"), "{e}");
        let e = err("[kv]\nbackend = \"memory\"\n[kv.redis]\nurl = \"redis://x\"\n");
        assert!(
            e.contains("kv.redis is set but kv.backend is \"memory\""),
            "{e}"
        );
        let e =
            err("[kv]\nbackend = \"redis\"\n[kv.redis]\nurls = [\"redis://a\", \"redis://b\"]\n");
        assert!(
            e.contains("topology = \\\"cluster\\\"") || e.contains("topology = \"cluster\""),
            "{e}"
        );
        let e = err("[kv]\nbackend = \"redis\"\n[kv.redis]\nurl = \"http://x\"\n");
        assert!(e.contains("not a redis://"), "{e}");
        let e = err(
            "[kv]\nbackend = \"redis\"\n[kv.redis]\nurl = \"redis://s:26379\"\ntopology = \"sentinel\"\n",
        );
        assert!(e.contains("needs sentinel_master"), "{e}");
        let e = err("[kv]\ntimeout = \"0s\"\n");
        assert!(e.contains("kv.timeout must be longer than 0"), "{e}");
        let e = err("[kv]\nbackend = \"sqlite\"\n");
        assert!(e.contains("unknown variant"), "{e}");
    }
}
