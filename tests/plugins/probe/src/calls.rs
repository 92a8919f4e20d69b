//! Host calls on demand: at a configured stage the probe calls the `kv`,
//! `dns` or `mail-auth` host interface, or reads or writes a file, and reports exactly what it got back — the value or
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
    /// Read the file `arg` (the `files` grant): `ok(<bytes>)` or `err(<kind>)`.
    FileRead,
    /// Write `value` to the file `arg`: `ok` or `err(<kind>)`.
    FileWrite,
    /// The host's SPF check of 127.0.0.1 for the sender `arg`.
    MailAuthSpf,
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
            Op::FileRead => "file-read",
            Op::FileWrite => "file-write",
            Op::MailAuthSpf => "mail-auth-spf",
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
            Op::FileRead => std::fs::read(a)
                .map(|b| format!("ok({})", b.len()))
                .unwrap_or_else(|e| format!("err({:?})", e.kind())),
            Op::FileWrite => std::fs::write(a, &self.value)
                .map(|()| "ok".to_string())
                .unwrap_or_else(|e| format!("err({:?})", e.kind())),
            Op::MailAuthSpf => match mail_auth::check_spf("127.0.0.1", "client.test", a) {
                Ok(o) => format!("ok({:?})", o.mail_from.result),
                Err(mail_auth::MailAuthError::Denied) => "denied".into(),
                Err(mail_auth::MailAuthError::Invalid(m)) => format!("invalid({m})"),
            },
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
