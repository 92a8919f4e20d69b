//! The process-wide event counters (prometheus-client, atomics on the hot
//! path): sessions, replies, messages, AUTH, reloads, rollbacks and
//! promotions, TLS handshakes, enumeration refusals, mail authentication
//! results and kv calls. Every part of the server bumps them; they depend on
//! nothing of it, so they sit below everything that counts. Input: none from
//! outside (labels are fixed names chosen by the callers).

use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

pub(super) type Labels = Vec<(&'static str, String)>;

/// Counters bumped by sessions.
pub struct Metrics {
    pub sessions: Counter,
    pub replies: Family<Labels, Counter>,
    pub messages: Family<Labels, Counter>,
    pub auth: Family<Labels, Counter>,
    pub reloads: Family<Labels, Counter>,
    pub tls_handshakes: Family<Labels, Counter>,
    pub unknown_recipients: Family<Labels, Counter>,
    /// Mail authentication results (method: spf, dkim, dmarc, arc).
    pub mail_auth: Family<Labels, Counter>,
    /// kv calls by operation and result, and their latency by operation.
    pub kv_calls: Family<Labels, Counter>,
    pub kv_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    pub rollbacks: Family<Labels, Counter>,
    pub promotions: Counter,
}

fn kv_histogram() -> Histogram {
    // 10 µs to ~1.3 s.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            sessions: Counter::default(),
            replies: Family::default(),
            messages: Family::default(),
            auth: Family::default(),
            reloads: Family::default(),
            tls_handshakes: Family::default(),
            unknown_recipients: Family::default(),
            mail_auth: Family::default(),
            kv_calls: Family::default(),
            kv_seconds: Family::new_with_constructor(kv_histogram),
            rollbacks: Family::default(),
            promotions: Counter::default(),
        }
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

pub fn get() -> &'static Metrics {
    METRICS.get_or_init(Metrics::default)
}

/// The kv operations the host's guard reports, in a fixed order.
const KV_OPS: [&str; 6] = ["get", "set", "set_if_absent", "delete", "increment", "ping"];
const KV_RESULTS: [&str; 3] = ["ok", "invalid", "unavailable"];

/// One operation's counters (by result) and latency histogram, resolved
/// from their families once: a kv call then costs two atomic updates, not
/// label allocations and family look-ups.
struct KvOpMetrics {
    calls: [Counter; 3],
    seconds: Histogram,
}

static KV_METRICS: OnceLock<Vec<KvOpMetrics>> = OnceLock::new();

/// One kv call: `result` is ok, invalid or unavailable (time-outs included).
pub fn kv_call(op: &'static str, result: &'static str, took: std::time::Duration) {
    let all = KV_METRICS.get_or_init(|| {
        let m = get();
        KV_OPS
            .iter()
            .map(|op| KvOpMetrics {
                calls: KV_RESULTS.map(|r| {
                    m.kv_calls
                        .get_or_create(&vec![("op", op.to_string()), ("result", r.to_string())])
                        .clone()
                }),
                seconds: m
                    .kv_seconds
                    .get_or_create(&vec![("op", op.to_string())])
                    .clone(),
            })
            .collect()
    });
    let (Some(o), Some(r)) = (
        KV_OPS.iter().position(|x| *x == op),
        KV_RESULTS.iter().position(|x| *x == result),
    ) else {
        return;
    };
    all[o].calls[r].inc();
    all[o].seconds.observe(took.as_secs_f64());
}

/// Count one event of a family with a single label.
fn bump(family: &Family<Labels, Counter>, label: &'static str, value: impl ToString) {
    family
        .get_or_create(&vec![(label, value.to_string())])
        .inc();
}

/// Count one event of a family with several labels.
fn bump_labels(family: &Family<Labels, Counter>, labels: &[(&'static str, &str)]) {
    let labels: Labels = labels.iter().map(|&(k, v)| (k, v.to_string())).collect();
    family.get_or_create(&labels).inc();
}

pub fn reply(code: u16) {
    bump(&get().replies, "code", code);
}

pub fn message(result: &'static str) {
    bump(&get().messages, "result", result);
}

pub fn auth(result: &'static str) {
    bump(&get().auth, "result", result);
}

pub fn reload(ok: bool) {
    let r = if ok { "ok" } else { "refused" };
    bump(&get().reloads, "result", r);
}

/// A rollback: of a `canary` or of a `generation`, `manual` or `automatic`.
pub fn rollback(kind: &'static str, trigger: &str) {
    bump_labels(&get().rollbacks, &[("kind", kind), ("trigger", trigger)]);
}

pub fn promotion() {
    get().promotions.inc();
}

pub fn tls_handshake(ok: bool) {
    let r = if ok { "ok" } else { "failed" };
    bump(&get().tls_handshakes, "result", r);
}

/// Recipient-enumeration resistance (`session/enumeration.rs`): `refused`
/// (a refused RCPT counted against the limits), `delayed` (an RCPT answered
/// after `unknown_recipient_delay`), `session_limit` and `client_limit`
/// (421 and close).
pub fn unknown_recipient(event: &'static str) {
    bump(&get().unknown_recipients, "event", event);
}

/// One mail-auth result: `method` is spf, dkim, dmarc or arc; `result` an
/// RFC 8601 result name.
pub fn mail_auth(method: &'static str, result: &'static str) {
    bump_labels(&get().mail_auth, &[("method", method), ("result", result)]);
}
