//! `postern replay`: run recorded sessions (`[record]`) through the plugin
//! chain of a configuration, offline — no network listener, no spool, no
//! delivery; a fresh in-memory kv store; DNS answered from the recording
//! (`--dns recorded`, the default: a question not in it is a temporary
//! failure) or by the configuration's resolver (`--dns resolver`) — and
//! report, per stage, how many decisions differ from the recording (or,
//! with `--against OLD`, from OLD's chain), with examples. Exits 1 when the
//! differences cross `--max-differences` / `--max-difference-rate`, so an
//! operator's CI can run it before `postern reload`. What replay cannot
//! reproduce: AUTH (passwords are never recorded: those calls are skipped
//! and counted), milters (network services: not asked), message bodies
//! beyond `[record] max_body`, the clock (a
//! plugin that reads the time sees today's), kv state built by sessions
//! that were not recorded, and mail-auth checks with `--dns recorded`.
//! Input: recording files (checked line by line: a bad line is an error
//! naming the file and line) and the configurations (as `postern check`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use postern_plugin::record::{DecisionRecord, Replayed, SessionRecord};
use postern_plugin::{
    BoxFuture, DnsAnswer, DnsBackend, DnsFailure, DnsQuery, Generation, KvBackend, MemoryKv,
    Runtime, Services,
};
use serde_json::json;

use crate::config::{Config, Overrides};
use crate::server::record::{DnsLine, Line};

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The configuration whose chain replays the sessions.
    #[arg(short, long)]
    config: PathBuf,
    /// Recording files (sessions-*.jsonl) or directories holding them.
    #[arg(long, num_args = 1.., required = true, value_name = "FILE")]
    sessions: Vec<PathBuf>,
    /// Compare with this configuration's chain instead of the recorded
    /// decisions.
    #[arg(long, value_name = "OLD.toml")]
    against: Option<PathBuf>,
    /// Where DNS answers come from.
    #[arg(long, value_enum, default_value = "recorded")]
    dns: DnsSource,
    /// Most differing decisions allowed before the exit status is 1.
    #[arg(long, default_value_t = 0, value_name = "N")]
    max_differences: u64,
    /// Largest share of differing decisions (0-1) allowed before the exit
    /// status is 1.
    #[arg(long, value_name = "RATE")]
    max_difference_rate: Option<f64>,
    /// Examples shown per stage.
    #[arg(long, default_value_t = 3, value_name = "N")]
    examples: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DnsSource {
    Recorded,
    Resolver,
}

/// DNS answers from the recording.
struct RecordedDns(HashMap<DnsQuery, Result<DnsAnswer, DnsFailure>>);

impl DnsBackend for RecordedDns {
    fn lookup(&self, query: DnsQuery) -> BoxFuture<'_, Result<DnsAnswer, DnsFailure>> {
        let r = self.0.get(&query).cloned().unwrap_or_else(|| {
            Err(DnsFailure::Temporary(
                "not in the recording (replay with --dns resolver to ask the DNS)".into(),
            ))
        });
        Box::pin(async move { r })
    }
}

/// The recording files named (directories: their sessions-*.jsonl).
fn inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let files = crate::server::record::files(p);
            if files.is_empty() {
                return Err(format!(
                    "{}: no sessions-*.jsonl recordings in it",
                    p.display()
                ));
            }
            out.extend(files);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such file or directory", p.display()));
        }
    }
    Ok(out)
}

type DnsTable = HashMap<DnsQuery, Result<DnsAnswer, DnsFailure>>;

fn read(files: &[PathBuf]) -> Result<(Vec<SessionRecord>, DnsTable), String> {
    let mut sessions = Vec::new();
    let mut dns = HashMap::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Line>(line) {
                Ok(Line::Session(s)) if s.v == postern_plugin::record::FORMAT => sessions.push(s),
                Ok(Line::Session(s)) => {
                    return Err(format!(
                        "{}:{}: recording format {} (this postern reads {})",
                        f.display(),
                        i + 1,
                        s.v,
                        postern_plugin::record::FORMAT
                    ));
                }
                Ok(Line::Dns {
                    dns: DnsLine { query, result },
                }) => {
                    dns.insert(query, result);
                }
                Err(e) => {
                    return Err(format!(
                        "{}:{}: not a recording line: {e}",
                        f.display(),
                        i + 1
                    ));
                }
            }
        }
    }
    Ok((sessions, dns))
}

async fn generation(
    rt: &Arc<Runtime>,
    cfg: &Config,
    id: u64,
    dns: &Option<Arc<RecordedDns>>,
) -> anyhow::Result<Arc<Generation>> {
    let kv: Arc<dyn KvBackend> = Arc::new(MemoryKv::default());
    let services = match dns {
        Some(d) => Services {
            dns: d.clone(),
            kv,
            mail_auth: Arc::new(postern_plugin::NoMailAuth),
            av: Arc::new(postern_plugin::NoAv),
        },
        None => crate::server::services(cfg, crate::server::resolver(cfg), kv, None),
    };
    // Milters are network services: replay is offline and does not ask
    // them (their recorded decisions show up as differences).
    let mut offline = cfg.clone();
    offline.milters.clear();
    Ok(Arc::new(
        crate::server::load_generation(rt, &offline, id, services).await?,
    ))
}

#[derive(Default)]
struct StageReport {
    calls: u64,
    differ: u64,
    skipped: u64,
    examples: Vec<serde_json::Value>,
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path, &Overrides::default()).map_err(|e| {
        eprintln!("postern: {e}");
        ExitCode::from(2)
    })
}

pub fn run(args: ReplayArgs, rt: &tokio::runtime::Runtime) -> ExitCode {
    let new = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let old = match args.against.as_deref().map(load).transpose() {
        Ok(c) => c,
        Err(code) => return code,
    };
    if args
        .max_difference_rate
        .is_some_and(|r| !(0.0..=1.0).contains(&r))
    {
        eprintln!("postern: --max-difference-rate is a share from 0 to 1");
        return ExitCode::from(2);
    }
    let (sessions, dns_table) = match inputs(&args.sessions).and_then(|f| read(&f).map(|r| (f, r)))
    {
        Ok((_, r)) => r,
        Err(e) => {
            eprintln!("postern: replay: {e}");
            return ExitCode::from(2);
        }
    };
    let _log = crate::server::logging::init(crate::config::LogFormat::Text, Some("warn"));
    let dns = (args.dns == DnsSource::Recorded).then(|| Arc::new(RecordedDns(dns_table)));
    let result = rt.block_on(async {
        let runtime = Runtime::new(new.runtime.clone())?;
        let g_new = generation(&runtime, &new, 1, &dns).await?;
        let g_old = match &old {
            Some(o) => Some(generation(&runtime, o, 0, &dns).await?),
            None => None,
        };
        let mut stages: BTreeMap<usize, (String, StageReport)> = BTreeMap::new();
        for s in &sessions {
            let id: Arc<str> = s.session.as_str().into();
            let now = g_new
                .session(id.clone())
                .replay(s)
                .await
                .map_err(|e| anyhow::anyhow!("session {}: {e}", s.session))?;
            let reference: Vec<Replayed> = match &g_old {
                Some(g) => g
                    .session(id)
                    .replay(s)
                    .await
                    .map_err(|e| anyhow::anyhow!("session {}: {e}", s.session))?,
                None => s
                    .calls
                    .iter()
                    .map(|c| Replayed::Decided(c.decision.clone()))
                    .collect(),
            };
            for ((call, got), want) in s.calls.iter().zip(&now).zip(&reference) {
                let order = postern_plugin::Stage::ALL
                    .iter()
                    .position(|x| x.name() == call.stage)
                    .unwrap_or(99);
                let (_, r) = stages
                    .entry(order)
                    .or_insert_with(|| (call.stage.clone(), StageReport::default()));
                r.calls += 1;
                let (Replayed::Decided(got), Replayed::Decided(want)) = (got, want) else {
                    r.skipped += 1;
                    continue;
                };
                if !got.same_answer(want) {
                    r.differ += 1;
                    if r.examples.len() < args.examples {
                        r.examples.push(example(s, call, want, got, old.is_some()));
                    }
                }
            }
        }
        anyhow::Ok(stages)
    });
    let stages = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("postern: replay: {e:#}");
            return ExitCode::from(2);
        }
    };
    let calls: u64 = stages.values().map(|(_, r)| r.calls - r.skipped).sum();
    let differ: u64 = stages.values().map(|(_, r)| r.differ).sum();
    let rate = if calls == 0 {
        0.0
    } else {
        differ as f64 / calls as f64
    };
    let over =
        differ > args.max_differences && args.max_difference_rate.is_none_or(|max| rate > max);
    let against = match &old {
        Some(o) => format!("{}", o.path.display()),
        None => "the recorded decisions".to_string(),
    };
    if args.json {
        let report = json!({
            "config": new.path.display().to_string(),
            "against": against,
            "sessions": sessions.len(),
            "calls": calls,
            "differences": differ,
            "difference_rate": rate,
            "threshold_crossed": over,
            "milters_not_asked": new.milters.len(),
            "stages": stages.values().map(|(name, r)| json!({
                "stage": name,
                "calls": r.calls,
                "skipped": r.skipped,
                "differences": r.differ,
                "examples": r.examples,
            })).collect::<Vec<_>>(),
        });
        println!("{report}");
    } else {
        println!(
            "replayed {} sessions ({calls} stage calls) through {} against {against}",
            sessions.len(),
            new.path.display()
        );
        println!("  {:<10} {:>8} {:>8}", "stage", "calls", "differ");
        for (name, r) in stages.values() {
            let skipped = if r.skipped > 0 {
                format!(
                    "  ({} not replayed: passwords are never recorded)",
                    r.skipped
                )
            } else {
                String::new()
            };
            println!("  {name:<10} {:>8} {:>8}{skipped}", r.calls, r.differ);
            for e in &r.examples {
                println!(
                    "      session {} {}: {} {}, now {}",
                    e["session"].as_str().unwrap_or(""),
                    e["argument"].as_str().unwrap_or(""),
                    if old.is_some() { "before" } else { "recorded" },
                    e["before"].as_str().unwrap_or(""),
                    e["now"].as_str().unwrap_or("")
                );
            }
        }
        if !new.milters.is_empty() {
            println!(
                "  ({} milter(s) of {} not asked: replay is offline)",
                new.milters.len(),
                new.path.display()
            );
        }
        let limit = match args.max_difference_rate {
            Some(r) => format!("at most {} or {:.2}%", args.max_differences, r * 100.0),
            None => format!("at most {}", args.max_differences),
        };
        println!(
            "{differ} differing decisions ({:.2}%); allowed {limit}: {}",
            rate * 100.0,
            if over { "threshold crossed" } else { "ok" }
        );
    }
    if over {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn example(
    s: &SessionRecord,
    call: &postern_plugin::record::CallRecord,
    before: &DecisionRecord,
    now: &DecisionRecord,
    _against: bool,
) -> serde_json::Value {
    use postern_plugin::record::ArgRecord;
    let argument = match &call.arg {
        ArgRecord::None => String::new(),
        ArgRecord::Helo { name, .. } => name.clone(),
        ArgRecord::Auth { username, .. } => username.clone(),
        ArgRecord::Address(a) => format!("<{}>", a.address),
        ArgRecord::Message { body_size, .. } => format!("message of {body_size} body bytes"),
        ArgRecord::Text { argument } => argument.clone(),
    };
    json!({
        "session": s.session,
        "stage": call.stage,
        "client": call.ctx.client.ip().to_string(),
        "argument": format!("{} {argument}", call.stage),
        "before": before.describe(),
        "now": now.describe(),
    })
}
