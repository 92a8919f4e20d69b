//! Host calls on demand: at a configured stage the probe calls the `kv` or
//! `dns` host interface and reports exactly what it got back — the value or
//! the error variant (`denied`, `temporary(timeout)`, ...) — so tests can
//! prove capability denial, kv namespace isolation and DNS time-outs.

use postern_sdk::prelude::*;

/// The host function to call.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    KvGet,
    KvSet,
    DnsA,
    DnsAaaa,
    DnsMx,
    DnsTxt,
    DnsPtr,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::KvGet => "kv-get",
            Op::KvSet => "kv-set",
            Op::DnsA => "dns-a",
            Op::DnsAaaa => "dns-aaaa",
            Op::DnsMx => "dns-mx",
            Op::DnsTxt => "dns-txt",
            Op::DnsPtr => "dns-ptr",
        }
    }
}

/// One host call: `op` on `arg` (the key, name or address) at `stage`;
/// `value` is what `kv-set` stores.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct HostCall {
    pub stage: String,
    pub op: Op,
    #[serde(default)]
    pub arg: String,
    #[serde(default)]
    pub value: String,
}

fn kv_error(e: KvError) -> String {
    match e {
        KvError::Denied => "denied".into(),
        KvError::Unavailable(m) => format!("unavailable({m})"),
        KvError::Invalid(m) => format!("invalid({m})"),
    }
}

fn dns_error(e: DnsError) -> String {
    match e {
        DnsError::NxDomain => "nx-domain".into(),
        DnsError::NoRecords => "no-records".into(),
        DnsError::Temporary(m) => format!("temporary({m})"),
        DnsError::Invalid(m) => format!("invalid({m})"),
        DnsError::Denied => "denied".into(),
    }
}

fn listed(r: Result<Vec<String>, DnsError>) -> String {
    r.map(|v| format!("ok({})", v.join(",")))
        .unwrap_or_else(dns_error)
}

impl HostCall {
    /// Make the call; the outcome as text, e.g. `some(v)`, `none`, `ok`,
    /// `ok(127.0.0.2)`, `denied`, `temporary(timeout)`.
    pub fn run(&self) -> String {
        let a = self.arg.as_str();
        match self.op {
            Op::KvGet => match kv::get(a) {
                Ok(Some(v)) => format!("some({v})"),
                Ok(None) => "none".into(),
                Err(e) => kv_error(e),
            },
            Op::KvSet => kv::set(a, &self.value, None)
                .map(|()| "ok".to_string())
                .unwrap_or_else(kv_error),
            Op::DnsA => listed(dns::lookup_a(a)),
            Op::DnsAaaa => listed(dns::lookup_aaaa(a)),
            Op::DnsMx => listed(dns::lookup_mx(a).map(|v| {
                v.into_iter()
                    .map(|m| format!("{} {}", m.preference, m.exchange))
                    .collect()
            })),
            Op::DnsTxt => listed(dns::lookup_txt(a)),
            Op::DnsPtr => listed(dns::lookup_ptr(a)),
        }
    }

    /// `op(arg)=outcome`, as reported.
    pub fn report(&self, outcome: &str) -> String {
        format!("{}({})={outcome}", self.op.name(), self.arg)
    }
}

/// A valid SMTP reply text: printable ASCII only, at most 300 bytes.
pub fn reply_text(parts: &[String]) -> String {
    let text: String = parts
        .join("; ")
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .take(300)
        .collect();
    if text.is_empty() { "-".into() } else { text }
}
