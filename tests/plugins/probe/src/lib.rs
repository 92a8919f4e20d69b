//! Test plugin for the end-to-end suite. At every stage it logs one JSON
//! line (`probe:` prefix) with its tag, the stage, the argument and the full
//! session context, then answers according to its configuration:
//! `rules` pick a verdict when the stage matches and the argument contains a
//! substring; `fail` makes it trap, loop forever or grab memory; `headers`
//! are added at the data stage; `calls` make `kv`/`dns` host calls at a
//! stage and log their outcomes (`report_calls` also rejects with them).

mod calls;

use calls::HostCall;
use postern_sdk::prelude::*;
use serde_json::{Value, json};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rule {
    stage: String,
    #[serde(default)]
    contains: String,
    kind: String,
    #[serde(default)]
    code: u16,
    #[serde(default)]
    enhanced: String,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    tag: String,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    fail: Vec<Rule>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    /// Refuse the configuration with this message (tests `init` errors).
    #[serde(default)]
    refuse: Option<String>,
    /// At connect, try what a sandboxed plugin must not be able to do and
    /// log what happened (plus a line on stdout).
    #[serde(default)]
    sandbox: Option<u16>,
    /// Host calls to make (in order) when their stage runs; logged as a
    /// `host-calls` record.
    #[serde(default)]
    calls: Vec<HostCall>,
    /// At a stage that made host calls, reject with `550 5.7.0` and the
    /// outcomes as the reply text (before any rule is consulted).
    #[serde(default)]
    report_calls: bool,
    /// Answer `recycle` with false: every session gets a fresh instance.
    #[serde(default)]
    refuse_recycle: bool,
    /// Changes to ask for at the data stage (0.2).
    #[serde(default)]
    changes: Changes,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Changes {
    #[serde(default)]
    remove_headers: Vec<String>,
    #[serde(default)]
    replace_headers: Vec<(String, String)>,
    #[serde(default)]
    set_sender: Option<String>,
    #[serde(default)]
    add_recipients: Vec<String>,
    #[serde(default)]
    remove_recipients: Vec<String>,
    #[serde(default)]
    quarantine: Option<String>,
}

struct Probe(Config);

impl Plugin for Probe {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        if let Some(msg) = &config.refuse {
            return Err(msg.clone());
        }
        Ok(Probe(config))
    }
    fn recycle(&self) -> bool {
        !self.0.refuse_recycle
    }
}

fn addr(a: &EnvelopeAddress) -> Value {
    json!({
        "address": a.address, "local_part": a.local_part, "domain": a.domain,
        "params": a.params.iter().map(|p| json!([p.keyword, p.value])).collect::<Vec<_>>(),
        "is_local": a.is_local,
    })
}

fn session_json(s: &Session) -> Value {
    json!({
        "id": s.id(), "client_ip": s.client_ip(), "client_port": s.client_port(),
        "client_name": s.client_name(), "local_ip": s.local_ip(), "local_port": s.local_port(),
        "listener": s.listener(), "server_name": s.server_name(), "helo": s.helo(), "esmtp": s.esmtp(),
        "tls": s.tls().as_ref().map(|t| json!({"protocol": t.protocol, "cipher": t.cipher,
            "client_certificate": t.client_certificate, "server_name": t.server_name})),
        "auth_user": s.auth_user(), "mail_from": s.mail_from().as_ref().map(addr),
        "recipients": s.recipients().iter().map(addr).collect::<Vec<_>>(),
        "messages_accepted": s.messages_accepted(),
    })
}

impl Probe {
    fn record(&self, stage: &str, s: &Session, arg: Value) {
        let line =
            json!({"tag": self.0.tag, "stage": stage, "arg": arg, "session": session_json(s)});
        log::info(&format!("probe:{line}"));
    }

    fn misbehave(&self, stage: &str, arg: &str) {
        for f in &self.0.fail {
            if f.stage == stage && arg.contains(&f.contains) {
                match f.kind.as_str() {
                    "trap" => panic!("probe: asked to trap at {stage}"),
                    "loop" => {
                        let mut x: u64 = 0;
                        loop {
                            x = std::hint::black_box(x.wrapping_add(1));
                        }
                    }
                    "alloc" => {
                        let mut hog: Vec<Vec<u8>> = Vec::new();
                        loop {
                            hog.push(vec![1u8; 1 << 20]);
                            std::hint::black_box(&hog);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Make this stage's host calls; their outcomes, when there were any.
    fn host_calls(&self, stage: &str, s: &Session) -> Option<Vec<String>> {
        let done: Vec<(&HostCall, String)> = self
            .0
            .calls
            .iter()
            .filter(|c| c.stage == stage)
            .map(|c| (c, c.run()))
            .collect();
        if done.is_empty() {
            return None;
        }
        let arg: Vec<Value> = done
            .iter()
            .map(|(c, r)| json!({"op": c.op.name(), "arg": c.arg, "result": r}))
            .collect();
        self.record("host-calls", s, json!(arg));
        Some(done.iter().map(|(c, r)| c.report(r)).collect())
    }

    fn decide(&self, stage: &str, s: &Session, arg: &str) -> Verdict {
        self.misbehave(stage, arg);
        if let Some(outcomes) = self.host_calls(stage, s)
            && self.0.report_calls
        {
            return reject(550, "5.7.0", calls::reply_text(&outcomes));
        }
        for r in &self.0.rules {
            if r.stage == stage && arg.contains(&r.contains) {
                return match r.kind.as_str() {
                    "accept" => accept(),
                    "accept-with" => accept_with(r.code, &r.enhanced, r.text.clone()),
                    "reject" => reject(r.code, &r.enhanced, r.text.clone()),
                    "defer" => defer(r.code, &r.enhanced, r.text.clone()),
                    "disconnect" => disconnect(r.code, &r.enhanced, r.text.clone()),
                    _ => pass(),
                };
            }
        }
        pass()
    }
}

/// What the sandbox allowed: file system, environment, arguments, network.
fn sandbox_report(port: u16) -> Value {
    println!("probe says hello on stdout");
    eprintln!("probe says hello on stderr");
    let fs_root = std::fs::read_dir("/")
        .map(|d| d.count())
        .map_err(|e| e.to_string());
    let passwd = std::fs::read("/etc/passwd")
        .map(|b| b.len())
        .map_err(|e| e.to_string());
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port))
        .map(|_| "connected".to_string())
        .map_err(|e| e.to_string());
    json!({
        "fs_root": format!("{fs_root:?}"),
        "passwd": format!("{passwd:?}"),
        "env": std::env::vars().count(),
        "args": std::env::args().count(),
        "tcp": format!("{tcp:?}"),
    })
}

impl Connect for Probe {
    fn on_connect(&self, s: &Session) -> Verdict {
        if let Some(port) = self.0.sandbox {
            let line = json!({"tag": self.0.tag, "stage": "sandbox", "arg": sandbox_report(port), "session": session_json(s)});
            log::info(&format!("probe:{line}"));
        }
        self.record("connect", s, Value::Null);
        self.decide("connect", s, &s.client_ip())
    }
}
impl Helo for Probe {
    fn on_helo(&self, s: &Session, name: &str, extended: bool) -> Verdict {
        self.record("helo", s, json!({"name": name, "extended": extended}));
        self.decide("helo", s, name)
    }
}
impl Auth for Probe {
    fn on_auth(&self, s: &Session, c: &Credentials) -> Verdict {
        self.record(
            "auth",
            s,
            json!({"mechanism": c.mechanism, "username": c.username}),
        );
        self.decide("auth", s, &c.username)
    }
}
impl MailFrom for Probe {
    fn on_mail_from(&self, s: &Session, sender: &EnvelopeAddress) -> Verdict {
        self.record("mail-from", s, addr(sender));
        self.decide("mail-from", s, &sender.address)
    }
}
impl RcptTo for Probe {
    fn on_rcpt_to(&self, s: &Session, rcpt: &EnvelopeAddress) -> Verdict {
        self.record("rcpt-to", s, addr(rcpt));
        self.decide("rcpt-to", s, &rcpt.address)
    }
}
impl Data for Probe {
    fn on_data(&self, s: &Session, m: &Message) -> DataResult {
        let subject = m.header("subject").unwrap_or_default();
        let body = m.read_body(0, 64);
        self.record(
            "data",
            s,
            json!({"size": m.size(), "subject": subject, "body_start": String::from_utf8_lossy(&body),
                   "header_count": m.headers().len()}),
        );
        let mut r = DataResult::verdict(self.decide("data", s, &subject));
        for (n, v) in &self.0.headers {
            r = r.add_header(n, v);
        }
        let c = &self.0.changes;
        for n in &c.remove_headers {
            r = r.remove_header(n);
        }
        for (n, v) in &c.replace_headers {
            r = r.replace_header(n, v);
        }
        if let Some(a) = &c.set_sender {
            r = r.set_sender(a);
        }
        for a in &c.add_recipients {
            r = r.add_recipient(a);
        }
        for a in &c.remove_recipients {
            r = r.remove_recipient(a);
        }
        if let Some(reason) = &c.quarantine {
            r = r.quarantine(reason);
        }
        r
    }
}
impl Vrfy for Probe {
    fn on_vrfy(&self, s: &Session, a: &str) -> Verdict {
        self.record("vrfy", s, json!(a));
        self.decide("vrfy", s, a)
    }
}
impl Expn for Probe {
    fn on_expn(&self, s: &Session, a: &str) -> Verdict {
        self.record("expn", s, json!(a));
        self.decide("expn", s, a)
    }
}
impl Observe for Probe {
    /// One line per outcome, with the size of the batch it came in and the
    /// session's state when it was decided.
    fn on_outcomes(&self, s: &Session, outcomes: &[Outcome]) {
        for o in outcomes {
            self.record(
                "outcome",
                s,
                json!({"stage": format!("{:?}", o.stage), "argument": o.argument, "code": o.code,
                       "decided_by": o.decided_by, "batch": outcomes.len(), "helo": o.helo,
                       "auth_user": o.auth_user, "mail_from": o.mail_from,
                       "recipient_count": o.recipient_count}),
            );
        }
    }
}

export_plugin!(
    Probe,
    [
        connect, helo, auth, mail_from, rcpt_to, data, vrfy, expn, outcome
    ],
    recycle
);
