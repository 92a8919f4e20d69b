//! Prometheus metrics (prometheus-client): process-wide counters updated on
//! the hot path with atomics, plus a collector that reads the plugin
//! runtime's per-plugin/per-stage statistics, the spool and the running
//! generation at scrape time. Served by a minimal HTTP endpoint on
//! `[metrics] listen` (`GET /metrics`). Input: scrapes from the network
//! (only the request line is looked at).

pub mod events;

use events::{Labels, get};

use crate::server::Shared;
use postern_plugin::{Generation, KvBackend as _, PluginStats};
use postern_spool::SpoolStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a scrape reads of the running server, and nothing more: a
/// read-only view (the server implements it over its shared state).
pub trait ServerView: Send + Sync {
    /// Open SMTP sessions.
    fn active_connections(&self) -> usize;
    /// The generation new sessions get.
    fn current_generation(&self) -> Arc<Generation>;
    /// Sessions still on generations a reload replaced.
    fn sessions_on_older_generations(&self) -> usize;
    fn spool_stats(&self) -> SpoolStats;
    /// `postern status`'s rollout document (canary, generations' health).
    fn rollout_status(&self) -> serde_json::Value;
    /// The kv store: whether it answers, and its kind.
    fn kv_state(&self) -> (bool, &'static str);
    /// Per-plugin statistics of the runtime.
    fn plugin_stats(&self) -> Vec<(String, Arc<PluginStats>)>;
}

impl ServerView for Shared {
    fn active_connections(&self) -> usize {
        Shared::active_connections(self)
    }
    fn current_generation(&self) -> Arc<Generation> {
        Shared::current_generation(self)
    }
    fn sessions_on_older_generations(&self) -> usize {
        self.generations
            .retired_in_use()
            .iter()
            .map(|(_, n)| n)
            .sum()
    }
    fn spool_stats(&self) -> SpoolStats {
        self.spool.stats()
    }
    fn rollout_status(&self) -> serde_json::Value {
        crate::server::rollout::status(&self.generations)
    }
    fn kv_state(&self) -> (bool, &'static str) {
        let kv = self.snapshot().kv.clone();
        (kv.is_up(), kv.kind())
    }
    fn plugin_stats(&self) -> Vec<(String, Arc<PluginStats>)> {
        self.runtime.stats().snapshot()
    }
}

/// Reads live state at scrape time.
struct StateCollector {
    server: Weak<dyn ServerView>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCollector")
    }
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        m.encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(v, None)?;
    }
    Ok(())
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

/// A counter kept elsewhere (the spool's, delivery's), read at scrape time.
fn total(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    let m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

/// Encode a table of scraped values, one `kind "name", "help", value;` a
/// row (`kind`: [`gauge`] or [`total`]).
macro_rules! scrape {
    ($enc:expr; $($kind:ident $name:literal, $help:literal, $v:expr;)*) => {
        $($kind($enc, $name, $help, $v)?;)*
    };
}

impl Collector for StateCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let Some(server) = self.server.upgrade() else {
            return Ok(());
        };
        let generation = server.current_generation();
        let older = server.sessions_on_older_generations();
        let spool = server.spool_stats();
        scrape!(&mut enc;
            gauge "sessions_active", "Open SMTP sessions", server.active_connections() as i64;
            gauge "generation", "Id of the running plugin generation", generation.id as i64;
            gauge "sessions_on_older_generations", "Sessions still running on a generation replaced by a reload", older as i64;
            gauge "spool_messages", "Messages in the spool", spool.messages as i64;
            gauge "spool_bytes", "Bytes in the spool", spool.bytes as i64;
            total "spool_commits", "Messages durably committed", spool.commits;
            total "spool_syncs", "fdatasyncs of the spool log: one per group-commit batch", spool.syncs;
            total "spool_dir_fsyncs", "Directory fsyncs (segments created or deleted)", spool.dir_fsyncs;
            gauge "spool_segments", "Segment files in the spool log", spool.segments as i64;
            gauge "spool_log_bytes", "Bytes in the spool log's segments", spool.log_bytes as i64;
            total "spool_records_compacted", "Records copied forward by compaction", spool.records_compacted;
        );
        encode_rollout(&mut enc, &*server)?;
        let (up, kind) = server.kv_state();
        let g = ConstGauge::new(up as i64);
        let mut m = enc.encode_descriptor(
            "kv_up",
            "1 when the last kv call found the store answering, by store",
            None,
            g.metric_type(),
        )?;
        g.encode(m.encode_family(&vec![("store", kind.to_string())])?)?;
        encode_delivery(&mut enc)?;
        encode_milters(&mut enc)?;
        encode_av(&mut enc)?;
        encode_plugins(&mut enc, &*server)
    }
}

fn encode_delivery(enc: &mut DescriptorEncoder) -> std::fmt::Result {
    use postern_delivery::counters::COUNTERS as C;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let outcome = |r: &str| vec![("result", r.to_string())];
    counter(
        enc,
        "delivery_recipients",
        "Recipient delivery outcomes: delivered, deferred (retried), failed (bounced), expired",
        &[
            (outcome("delivered"), load(&C.delivered)),
            (outcome("deferred"), load(&C.deferred)),
            (outcome("failed"), load(&C.failed)),
            (outcome("expired"), load(&C.expired)),
        ],
    )?;
    scrape!(enc;
        total "delivery_attempts", "Delivery attempts of queued messages", load(&C.attempts);
        total "delivery_retries", "Attempts after a message's first", load(&C.retries);
        total "delivery_bounces", "Delivery status notifications queued", load(&C.bounces);
        gauge "queue_messages", "Messages in the delivery queue", load(&C.queued) as i64;
        gauge "queue_active", "Deliveries in progress", load(&C.active) as i64;
    );
    Ok(())
}

/// The canary's share, and the current and canary generations' plugin
/// calls and failures (what automatic rollback watches).
fn encode_rollout(enc: &mut DescriptorEncoder, server: &dyn ServerView) -> std::fmt::Result {
    let r = server.rollout_status();
    gauge(
        enc,
        "canary_percent",
        "Share of new sessions given the canary generation (0: none runs)",
        r["canary"]["percent"].as_i64().unwrap_or(0),
    )?;
    for (metric, key, help) in [
        (
            "generation_plugin_calls",
            "calls",
            "Plugin calls made by a generation, by role",
        ),
        (
            "generation_plugin_failures",
            "failures",
            "Plugin calls of a generation that failed or were skipped by an open breaker, by role",
        ),
        (
            "generation_sessions",
            "sessions",
            "Sessions started on a generation, by role",
        ),
    ] {
        let mut m = enc.encode_descriptor(metric, help, None, MetricType::Gauge)?;
        for role in ["current", "canary"] {
            if let Some(v) = r[role][key].as_i64() {
                ConstGauge::new(v).encode(m.encode_family(&vec![("role", role.to_string())])?)?;
            }
        }
    }
    Ok(())
}

/// The virus scanner: scans by result and their total time.
fn encode_av(enc: &mut DescriptorEncoder) -> std::fmt::Result {
    let s = &*crate::server::av::STATS;
    let rows: Vec<(Labels, u64)> = [
        ("clean", &s.clean),
        ("infected", &s.infected),
        ("error", &s.errors),
    ]
    .into_iter()
    .map(|(r, n)| (vec![("result", r.to_string())], n.load(Ordering::Relaxed)))
    .collect();
    counter(enc, "av_scans", "Virus scans ([av] clamd) by result", &rows)?;
    let secs = s.micros.load(Ordering::Relaxed) as f64 / 1e6;
    let g = ConstGauge::new(secs);
    let m = enc.encode_descriptor(
        "av_scan_seconds_sum",
        "Total wall time of the virus scans",
        None,
        g.metric_type(),
    )?;
    g.encode(m)
}

/// Per milter: calls, failures (on_error applied), verdicts.
fn encode_milters(enc: &mut DescriptorEncoder) -> std::fmt::Result {
    use postern_plugin::VERDICT_KINDS;
    let stats = postern_plugin::milter_stats();
    let rows = |f: &dyn Fn(&postern_plugin::MilterStats) -> u64| -> Vec<(Labels, u64)> {
        stats
            .iter()
            .map(|(name, s)| (vec![("milter", name.clone())], f(s)))
            .collect()
    };
    counter(
        enc,
        "milter_calls",
        "Stage calls to each milter",
        &rows(&|s| s.calls.load(Ordering::Relaxed)),
    )?;
    counter(
        enc,
        "milter_failures",
        "Milter calls that failed (unreachable, time-out, protocol error): its on_error answered",
        &rows(&|s| s.failures.load(Ordering::Relaxed)),
    )?;
    let mut verdicts = Vec::new();
    for (name, s) in &stats {
        for (i, kind) in VERDICT_KINDS.iter().enumerate() {
            let v = s.verdicts[i].load(Ordering::Relaxed);
            if v > 0 {
                verdicts.push((
                    vec![("milter", name.clone()), ("verdict", kind.to_string())],
                    v,
                ));
            }
        }
    }
    counter(enc, "milter_verdicts", "Verdicts by milter", &verdicts)?;
    let mut m = enc.encode_descriptor(
        "milter_call_duration_seconds_sum",
        "Total wall time of each milter's calls",
        None,
        MetricType::Gauge,
    )?;
    for (name, s) in &stats {
        let secs = s.latency.sum_seconds();
        ConstGauge::new(secs).encode(m.encode_family(&vec![("milter", name.clone())])?)?;
    }
    Ok(())
}

fn encode_plugins(enc: &mut DescriptorEncoder, server: &dyn ServerView) -> std::fmt::Result {
    use postern_plugin::{ERROR_KINDS, LATENCY_BUCKETS_US, Stage, VERDICT_KINDS};
    let stats = server.plugin_stats();
    let mut verdicts = Vec::new();
    let mut errors = Vec::new();
    let mut inst = Vec::new();
    let mut reuses = Vec::new();
    let mut refusals = Vec::new();
    for (name, s) in &stats {
        let label = || vec![("plugin", name.clone())];
        inst.push((label(), s.instantiations.load(Ordering::Relaxed)));
        reuses.push((label(), s.reuses.load(Ordering::Relaxed)));
        refusals.push((label(), s.recycle_refusals.load(Ordering::Relaxed)));
        for stage in Stage::ALL {
            let st = &s.stages[stage as usize];
            // A non-zero count labelled with the plugin, the stage and `more`.
            let push = |out: &mut Vec<_>, more: &[(&'static str, &str)], v: u64| {
                if v > 0 {
                    let mut labels = vec![("plugin", name.clone()), ("stage", stage.name().into())];
                    labels.extend(more.iter().map(|&(k, v)| (k, v.to_string())));
                    out.push((labels, v));
                }
            };
            for (i, kind) in VERDICT_KINDS.iter().enumerate() {
                for (shadow, arr) in [("false", &st.verdicts), ("true", &st.shadow_verdicts)] {
                    let v = arr[i].load(Ordering::Relaxed);
                    push(&mut verdicts, &[("verdict", *kind), ("shadow", shadow)], v);
                }
            }
            for (i, kind) in ERROR_KINDS.iter().enumerate() {
                push(
                    &mut errors,
                    &[("kind", *kind)],
                    st.errors[i].load(Ordering::Relaxed),
                );
            }
        }
    }
    counter(
        enc,
        "plugin_verdicts",
        "Verdicts by plugin, stage and kind (shadow: logged, not enforced)",
        &verdicts,
    )?;
    counter(
        enc,
        "plugin_errors",
        "Plugin failures by kind: trap, timeout, memory, invalid, init, instantiate",
        &errors,
    )?;
    counter(
        enc,
        "plugin_instantiations",
        "Plugin instances created (fresh instances; see plugin_instance_reuses)",
        &inst,
    )?;
    counter(
        enc,
        "plugin_instance_reuses",
        "Idle instances handed on (to a new session, or to a session resuming after a pause) by plugins that export `recycle`",
        &reuses,
    )?;
    counter(
        enc,
        "plugin_recycle_refusals",
        "Pooled instances discarded because `recycle` refused, trapped or timed out",
        &refusals,
    )?;
    let mut breaker = enc.encode_descriptor(
        "plugin_breaker_state",
        "Circuit breaker of each plugin: 0 closed, 1 open (not called, on_error applies), 2 half-open",
        None,
        MetricType::Gauge,
    )?;
    for (name, s) in &stats {
        ConstGauge::new(i64::from(s.breaker_state.load(Ordering::Relaxed)))
            .encode(breaker.encode_family(&vec![("plugin", name.clone())])?)?;
    }
    let rows = |f: fn(&postern_plugin::PluginStats) -> u64| -> Vec<(Labels, u64)> {
        stats
            .iter()
            .map(|(name, s)| (vec![("plugin", name.clone())], f(s)))
            .collect()
    };
    counter(
        enc,
        "plugin_breaker_opened",
        "Times each plugin's circuit breaker opened",
        &rows(|s| s.breaker_opened.load(Ordering::Relaxed)),
    )?;
    counter(
        enc,
        "plugin_breaker_skipped",
        "Calls not made because the plugin's circuit breaker was open (its on_error applied)",
        &rows(|s| s.breaker_skipped.load(Ordering::Relaxed)),
    )?;
    let mut idle = enc.encode_descriptor(
        "plugin_idle_instances",
        "Instances of the running generation kept idle for reuse",
        None,
        MetricType::Gauge,
    )?;
    for (name, n) in server.current_generation().idle_instances() {
        ConstGauge::new(n as i64).encode(idle.encode_family(&vec![("plugin", name)])?)?;
    }
    type Pick = fn(&postern_plugin::StageStats) -> &postern_plugin::Histogram;
    let families: [(&str, &str, Pick); 2] = [
        (
            "plugin_call_duration_seconds",
            "Wall time of one plugin call, including instantiation or `recycle` when it happens",
            |st| &st.latency,
        ),
        (
            "plugin_call_cpu_seconds",
            "CPU time the calling thread spent in one plugin call: the guest, the host imports it called and the lowering of its arguments (work handed to other threads, such as DNS, not included)",
            |st| &st.cpu,
        ),
    ];
    for (family, help, pick) in families {
        let mut m = enc.encode_descriptor(family, help, None, MetricType::Histogram)?;
        for (name, s) in &stats {
            for stage in Stage::ALL {
                let h = pick(&s.stages[stage as usize]);
                let count = h.count.load(Ordering::Relaxed);
                if count == 0 {
                    continue;
                }
                // Counts per bucket (the encoder accumulates them), ending
                // with the +Inf bucket OpenMetrics requires.
                let (per, above) = h.per_bucket();
                let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_US
                    .iter()
                    .zip(per)
                    .map(|(b, n)| (*b as f64 / 1e6, n))
                    .collect();
                buckets.push((f64::INFINITY, above));
                let labels = vec![
                    ("plugin", name.clone()),
                    ("stage", stage.name().to_string()),
                ];
                m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                    h.sum_seconds(),
                    count,
                    &buckets,
                    None,
                )?;
            }
        }
    }
    Ok(())
}

/// Register each `name, help, field;` of the process-wide [`Metrics`].
macro_rules! register {
    ($r:ident, $m:ident; $($name:literal, $help:literal, $field:ident;)*) => {
        $($r.register($name, $help, $m.$field.clone());)*
    };
}

/// The registry for one server.
pub fn registry(server: Weak<dyn ServerView>) -> Registry {
    let mut r = Registry::with_prefix("postern");
    let m = get();
    // name, help, metric: one line each (rustfmt leaves the table alone).
    register!(r, m;
        "sessions", "SMTP sessions accepted", sessions;
        "replies", "SMTP replies sent, by code", replies;
        "messages", "Messages by result: queued, refused", messages;
        "auth", "AUTH attempts by result", auth;
        "reloads", "Reloads by result", reloads;
        "rollbacks", "Rollbacks of a canary or of a generation, manual or automatic", rollbacks;
        "promotions", "Canary generations promoted to current", promotions;
        "tls_handshakes", "TLS handshakes by result", tls_handshakes;
        "unknown_recipients", "Recipient-enumeration limits: refused RCPTs counted, RCPTs delayed, sessions closed by the session or client limit", unknown_recipients;
        "mail_auth", "Mail authentication results (SPF, DKIM, DMARC, ARC) by method and result", mail_auth;
        "kv_calls", "kv store calls by operation and result (ok, invalid, unavailable)", kv_calls;
        "kv_call_seconds", "kv store call latency by operation, deadline included", kv_seconds;
    );
    r.register_collector(Box::new(StateCollector { server }));
    r
}

/// Serve `GET /metrics` on `addr` until the task is aborted.
pub async fn serve(listener: TcpListener, server: Weak<dyn ServerView>) {
    let registry = Arc::new(registry(server));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            // Read until the end of the request head (or a small cap).
            while n < buf.len() {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    stream.read(&mut buf[n..]),
                )
                .await
                {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(k)) => n += k,
                }
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let first = head.lines().next().unwrap_or("");
            let (status, body) = if first.starts_with("GET /metrics ") || first == "GET /metrics" {
                let mut text = String::new();
                match prometheus_client::encoding::text::encode(&mut text, &registry) {
                    Ok(()) => ("200 OK", text),
                    Err(_) => ("500 Internal Server Error", "encoding failed\n".into()),
                }
            } else {
                ("404 Not Found", "try /metrics\n".into())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
        });
    }
}
