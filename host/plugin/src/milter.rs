//! Milters as members of the policy chain (`[[milter]]`, in configuration
//! order among the plugins): one connection per SMTP session, opened at its
//! first stage, fed the stages a milter knows (connect, HELO, MAIL, RCPT,
//! the message) with Postfix's macros, its replies mapped to verdicts and
//! its end-of-message modifications to message changes (checked like a
//! plugin's). A milter that cannot be reached, times out or breaks the
//! protocol costs the stage its `on_error`, and is not asked again in that
//! session. Input: everything from the milter is untrusted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use postern_milter::{Address, Conn, Macros, Modification, Response, Timeouts};

use crate::Stage;
use crate::context::{EnvelopeChange, HeaderChange, MessageChanges, SessionContext};
use crate::hooks::{Ask, Call, DataReturn};
use crate::load::OnError;
use crate::verdict::{PluginReply, Verdict};

/// One `[[milter]]` entry.
#[derive(Clone, Debug)]
pub struct MilterSpec {
    pub name: String,
    pub address: Address,
    pub timeouts: Timeouts,
    pub on_error: OnError,
    /// How many `[[plugin]]` entries come before it in the file.
    pub position: usize,
}

/// Calls, failures, verdicts and latency of one milter (by name, since the
/// server started), for the metrics and `postern status`.
#[derive(Default)]
pub struct MilterStats {
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    /// Indexed like `VERDICT_KINDS`.
    pub verdicts: [AtomicU64; 6],
    pub latency: crate::stats::Histogram,
}

static STATS: LazyLock<Mutex<BTreeMap<String, Arc<MilterStats>>>> = LazyLock::new(Default::default);

fn stats_for(name: &str) -> Arc<MilterStats> {
    STATS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(name.to_string())
        .or_default()
        .clone()
}

/// Every milter's stats.
pub fn milter_stats() -> Vec<(String, Arc<MilterStats>)> {
    STATS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Count one call of a milter and its verdict (`failed`: it failed and its
/// on_error gave the verdict).
pub(crate) fn observe(name: &str, verdict: &Verdict, took: Duration, failed: bool) {
    let s = stats_for(name);
    s.calls.fetch_add(1, Ordering::Relaxed);
    s.latency.observe(took);
    if failed {
        s.failures.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(i) = crate::stats::VERDICT_KINDS
        .iter()
        .position(|k| *k == verdict.kind())
    {
        s.verdicts[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// The stages a milter takes part in.
pub const MILTER_STAGES: [Stage; 5] = [
    Stage::Connect,
    Stage::Helo,
    Stage::MailFrom,
    Stage::RcptTo,
    Stage::Data,
];

/// One session's state with one milter.
#[derive(Default)]
pub(crate) struct MilterSession {
    conn: Option<Conn>,
    /// It failed: its `on_error` answers for the rest of the session.
    failed: bool,
    /// It accepted the connection (or the message): not asked again.
    done_connection: bool,
    done_message: bool,
    /// It asked for the message to be discarded.
    discard: bool,
    /// MAIL was sent and the message has not ended.
    in_transaction: bool,
}

fn reply(code: u16, enhanced: &str, text: String) -> PluginReply {
    PluginReply {
        code,
        enhanced: Some(enhanced.into()),
        text,
    }
}

/// "550 5.7.1 text" (or "550 text", "550-…") as a verdict.
fn custom(text: &str) -> Result<Verdict, String> {
    let t = text.trim();
    let (code, rest) = t.split_at(t.len().min(3));
    let code: u16 = code
        .parse()
        .map_err(|_| format!("reply {t:?} has no code"))?;
    let rest = rest.trim_start_matches(['-', ' ']);
    let (enhanced, text) = match rest.split_once(' ') {
        Some((e, tail))
            if e.split('.').count() == 3 && e.split('.').all(|p| p.parse::<u16>().is_ok()) =>
        {
            (Some(e.to_string()), tail.to_string())
        }
        _ => (None, rest.to_string()),
    };
    let r = PluginReply {
        code,
        enhanced,
        text: if text.is_empty() {
            "Refused".into()
        } else {
            text
        },
    };
    match code {
        400..=499 => Ok(Verdict::Defer(r)),
        500..=599 => Ok(Verdict::Reject(r)),
        _ => Err(format!("reply {t:?} is not a 4xx or 5xx")),
    }
}

/// Postfix's macros, as far as Postern knows them at this stage.
fn macros(ctx: &SessionContext, stage: Stage) -> Macros {
    let mut m: Macros = vec![
        ("j".into(), ctx.server_name.to_string()),
        ("{daemon_name}".into(), "postern".into()),
        ("v".into(), format!("Postern {}", env!("CARGO_PKG_VERSION"))),
        ("i".into(), ctx.id.to_string()),
    ];
    match stage {
        Stage::Connect => {
            let name = ctx.client_name.clone().unwrap_or_else(|| "unknown".into());
            m.push(("_".into(), format!("{name} [{}]", ctx.client.ip())));
            m.push(("{client_addr}".into(), ctx.client.ip().to_string()));
            m.push(("{client_port}".into(), ctx.client.port().to_string()));
            m.push(("{client_name}".into(), name));
            m.push(("{daemon_addr}".into(), ctx.local.ip().to_string()));
        }
        Stage::Helo => {
            if let Some(t) = &ctx.tls {
                m.push(("{tls_version}".into(), t.protocol.clone()));
                m.push(("{cipher}".into(), t.cipher.clone()));
            }
        }
        Stage::MailFrom => {
            if let Some(u) = &ctx.auth_user {
                m.push(("{auth_type}".into(), "PLAIN".into()));
                m.push(("{auth_authen}".into(), u.clone()));
            }
        }
        _ => {}
    }
    m
}

fn angle(a: &str) -> String {
    format!("<{a}>")
}

fn params(p: &[(String, Option<String>)]) -> impl Iterator<Item = String> + '_ {
    p.iter().map(|(k, v)| match v {
        Some(v) => format!("{k}={v}"),
        None => k.clone(),
    })
}

fn strip_angles(a: &str) -> String {
    a.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

impl MilterSession {
    /// Run one stage through this milter: its verdict and, at the data
    /// stage, the changes it asked for. `Err` is a failure (the caller
    /// applies `on_error`).
    pub(crate) async fn call(
        &mut self,
        spec: &MilterSpec,
        ctx: &Arc<SessionContext>,
        call: &Call<'_>,
    ) -> Result<(Verdict, DataReturn), String> {
        let stage = call.stage();
        if self.failed {
            return Err("failed earlier in this session".into());
        }
        if self.done_connection {
            return Ok((Verdict::Pass, DataReturn::default()));
        }
        if stage == Stage::MailFrom {
            self.done_message = false;
            self.discard = false;
        }
        if self.done_message && matches!(stage, Stage::RcptTo | Stage::Data) {
            let mut ret = DataReturn::default();
            if stage == Stage::Data && self.discard {
                ret.changes.quarantine = Some("discarded by a milter".into());
            }
            return Ok((Verdict::Pass, ret));
        }
        let result = self.exchange(spec, ctx, call).await;
        match result {
            Ok((r, mods)) => self.verdict(stage, r, mods),
            Err(e) => {
                self.failed = true;
                if let Some(c) = self.conn.take() {
                    drop(c);
                }
                Err(e)
            }
        }
    }

    async fn exchange(
        &mut self,
        spec: &MilterSpec,
        ctx: &Arc<SessionContext>,
        call: &Call<'_>,
    ) -> Result<(Response, Vec<Modification>), String> {
        let stage = call.stage();
        let fresh = self.conn.is_none();
        if fresh {
            let c = Conn::open(&spec.address, spec.timeouts)
                .await
                .map_err(|e| format!("{}: {e}", spec.address))?;
            self.conn = Some(c);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("no connection".into());
        };
        let e = |e: postern_milter::Error| e.to_string();
        // A milter joining after the connect stage still hears of the
        // connection first.
        if fresh && stage != Stage::Connect {
            let r = conn
                .connect(
                    &macros(ctx, Stage::Connect),
                    &client_name(ctx),
                    Some(ctx.client),
                )
                .await
                .map_err(e)?;
            if r != Response::Continue {
                return Ok((r, Vec::new()));
            }
        }
        let m = macros(ctx, stage);
        let r = match call {
            Call::Smtp(Ask::Connect) => conn
                .connect(&m, &client_name(ctx), Some(ctx.client))
                .await
                .map_err(e)?,
            Call::Smtp(Ask::Helo { name, .. }) => conn.helo(&m, name).await.map_err(e)?,
            Call::Smtp(Ask::MailFrom(a)) => {
                if self.in_transaction {
                    conn.abort().await.map_err(e)?;
                }
                self.in_transaction = true;
                let mut args = vec![angle(&a.address)];
                args.extend(params(&a.params));
                conn.mail(&m, &args).await.map_err(e)?
            }
            Call::Smtp(Ask::RcptTo(a)) => {
                let mut args = vec![angle(&a.address)];
                args.extend(params(&a.params));
                conn.rcpt(&m, &args).await.map_err(e)?
            }
            Call::Smtp(Ask::Data(message)) => {
                self.in_transaction = false;
                let headers = message.headers().to_vec();
                let msg = Arc::clone(message);
                let mut body =
                    move |at: u64| msg.read_body(at, postern_milter::codec::BODY_CHUNK as u32);
                return conn.message(&m, &headers, &mut body).await.map_err(e);
            }
            _ => Response::Continue,
        };
        Ok((r, Vec::new()))
    }

    fn verdict(
        &mut self,
        stage: Stage,
        r: Response,
        mods: Vec<Modification>,
    ) -> Result<(Verdict, DataReturn), String> {
        let mut ret = DataReturn::default();
        let v = match r {
            Response::Continue => Verdict::Pass,
            Response::Accept => {
                if matches!(stage, Stage::Connect | Stage::Helo) {
                    self.done_connection = true;
                } else {
                    self.done_message = true;
                }
                Verdict::Pass
            }
            Response::Discard => {
                self.discard = true;
                self.done_message = true;
                Verdict::Pass
            }
            Response::Reject => Verdict::Reject(match stage {
                Stage::RcptTo => reply(550, "5.7.1", "Recipient rejected".into()),
                Stage::Data => reply(554, "5.7.1", "Message rejected".into()),
                _ => reply(550, "5.7.1", "Command rejected".into()),
            }),
            Response::Tempfail => Verdict::Defer(reply(
                451,
                "4.7.1",
                "Service unavailable - try again later".into(),
            )),
            Response::ReplyCode(t) => custom(&t)?,
            other => return Err(format!("unexpected reply {other:?}")),
        };
        if stage == Stage::Data {
            if self.discard {
                ret.changes.quarantine = Some("discarded by a milter".into());
            }
            if matches!(v, Verdict::Pass) {
                apply(mods, &mut ret)?;
            }
        }
        Ok((v, ret))
    }
}

fn client_name(ctx: &SessionContext) -> String {
    ctx.client_name
        .clone()
        .unwrap_or_else(|| format!("[{}]", ctx.client.ip()))
}

/// A header value as a milter sends it (folded with LF or CRLF before a
/// space or tab, as libmilter passes them) as a field value folded with
/// CRLF; anything else that would break the header section is refused.
fn fold(name: &str, value: &str) -> Result<String, String> {
    crate::verdict::check_field(name, "").map_err(|e| e.to_string())?;
    let mut out = String::with_capacity(value.len() + 8);
    for (i, line) in value.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.contains(['\r', '\0']) {
            return Err(format!("header {name:?}: CR or NUL in value"));
        }
        if i > 0 {
            if !line.starts_with([' ', '\t']) {
                return Err(format!(
                    "header {name:?}: a line break not followed by a space"
                ));
            }
            out.push_str("\r\n");
        }
        if line.len() > 990 {
            return Err(format!("header {name:?}: a line longer than 998 bytes"));
        }
        out.push_str(line);
    }
    Ok(out)
}

fn address(a: &str, may_be_empty: bool) -> Result<String, String> {
    let a = strip_angles(a);
    crate::verdict::check_address(&a, may_be_empty).map_err(|e| e.to_string())?;
    Ok(a)
}

/// End-of-message modifications as message changes, each checked.
fn apply(mods: Vec<Modification>, ret: &mut DataReturn) -> Result<(), String> {
    let mut changes = MessageChanges::default();
    for m in mods {
        match m {
            Modification::AddHeader { name, value } => {
                let value = fold(&name, &value)?;
                ret.add_headers.push((name, value))
            }
            Modification::InsertHeader { name, value, .. } => {
                let value = fold(&name, &value)?;
                ret.add_headers.insert(0, (name, value))
            }
            Modification::ChangeHeader { index, name, value } => {
                let value = if value.is_empty() {
                    None
                } else {
                    Some(fold(&name, value.trim_start())?)
                };
                crate::verdict::check_field(&name, "").map_err(|e| e.to_string())?;
                changes.headers.push(HeaderChange::Change {
                    index: index.max(1),
                    value,
                    name,
                })
            }
            Modification::AddRecipient(a) => changes
                .envelope
                .push(EnvelopeChange::AddRecipient(address(&a, false)?)),
            Modification::DeleteRecipient(a) => changes
                .envelope
                .push(EnvelopeChange::RemoveRecipient(address(&a, false)?)),
            Modification::ChangeSender(a) => changes
                .envelope
                .push(EnvelopeChange::SetSender(address(&a, true)?)),
            Modification::Quarantine(reason) => {
                changes
                    .quarantine
                    .get_or_insert(format!("milter: {reason}"));
            }
            Modification::ReplaceBody(chunk) => {
                changes.body.get_or_insert_with(Vec::new).extend(chunk)
            }
        }
    }
    ret.changes.extend(changes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_replies() {
        assert_eq!(
            custom("550 5.7.1 Spam message rejected"),
            Ok(Verdict::Reject(PluginReply {
                code: 550,
                enhanced: Some("5.7.1".into()),
                text: "Spam message rejected".into()
            }))
        );
        assert!(matches!(custom("451 try later"), Ok(Verdict::Defer(r)) if r.enhanced.is_none()));
        assert!(custom("250 ok").is_err());
        assert!(custom("abc").is_err());
    }
}
