//! `postern queue list|show ID|flush|release ID|delete ID`: the command line
//! that asks the running server (`server::queue_admin` answers) and prints
//! the answers. When no
//! server answers on the admin socket, the command opens the spool itself — its
//! lock guarantees no server is using it — and works on the log (a flush then
//! takes effect when the server next starts). Input: operator arguments and queue
//! ids (validated as `QueueId` before they name anything).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use postern_protocol::date;
use postern_spool::{Spool, SpoolConfig, SpoolError};
use serde_json::Value;

use super::AdminArgs;
use crate::config::{Config, Overrides};
use crate::server::queue_admin::{answer, parse_id};

#[derive(Subcommand)]
pub enum QueueAction {
    /// List queued messages with their recipients and last errors.
    List {
        /// Only the messages held in quarantine (with their reasons).
        #[arg(long)]
        quarantined: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show one message: envelope, each recipient's state, bounces, headers.
    Show {
        /// The queue id.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Retry every deferred message now.
    Flush(AdminArgs),
    /// Release a message held in quarantine: it is delivered like a fresh one.
    Release {
        /// The queue id.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove a message from the queue without a bounce.
    Delete {
        /// The queue id.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// The admin socket of the configuration (or `--socket`), and the configuration
/// when it parses (needed for offline access).
fn locate(args: &AdminArgs) -> (PathBuf, Option<Config>) {
    if let Some(s) = &args.socket {
        return (s.clone(), None);
    }
    let Some(c) = &args.config else {
        unreachable!("clap requires --config or --socket")
    };
    let overrides = Overrides {
        listen: Vec::new(),
        data_dir: args.data_dir.clone(),
    };
    match Config::load(c, &overrides) {
        Ok(cfg) => (crate::server::admin::socket_path(&cfg), Some(cfg)),
        Err(_) => (
            crate::server::admin::socket_path_lenient(c, args.data_dir.as_deref()),
            None,
        ),
    }
}

/// Run a queue command; prints the outcome.
pub fn run(action: QueueAction) -> ExitCode {
    let (args, command) = match &action {
        QueueAction::List { quarantined, admin } => (
            admin,
            if *quarantined {
                "queue list --quarantined".to_string()
            } else {
                "queue list".to_string()
            },
        ),
        QueueAction::Release { id, admin } => (admin, format!("queue release {}", id.trim())),
        QueueAction::Show { id, admin } => (admin, format!("queue show {}", id.trim())),
        QueueAction::Flush(a) => (a, "queue flush".to_string()),
        QueueAction::Delete { id, admin } => (admin, format!("queue delete {}", id.trim())),
    };
    let (socket, config) = locate(args);
    let rt = super::runtime();
    let running = std::os::unix::net::UnixStream::connect(&socket).is_ok();
    let (answer, offline) = if running {
        match rt.block_on(super::admin::request(&socket, &command)) {
            Ok(a) => (a, false),
            Err(e) => {
                eprintln!("postern: {e:#}");
                return ExitCode::from(2);
            }
        }
    } else {
        let Some(cfg) = config else {
            eprintln!(
                "postern: no server answers at {} and without a valid --config the spool cannot be opened directly",
                socket.display()
            );
            return ExitCode::from(2);
        };
        match rt.block_on(offline(&cfg, &action)) {
            Ok(a) => (a, true),
            Err(e) => {
                eprintln!("postern: {e}");
                return ExitCode::from(2);
            }
        }
    };
    super::show_answer(args.json, &answer, |a| print(&action, a, offline))
}

/// The same commands against the spool directory (no server running). `list` and
/// `show` open it read-only (nothing is repaired or changed) once it exists.
async fn offline(cfg: &Config, action: &QueueAction) -> Result<Value, String> {
    // Never create a spool here: a missing one most often means the server
    // runs with another data directory, and an empty new spool would answer
    // "nothing queued" for a queue that holds mail.
    if !cfg.spool.dir.join("log").is_dir() {
        return Err(format!(
            "no spool at {} and no server answers on its admin socket: nothing was ever \
             queued there (a server started with --data-dir needs the same --data-dir here)",
            cfg.spool.dir.display()
        ));
    }
    let reads_only = matches!(action, QueueAction::List { .. } | QueueAction::Show { .. });
    // Run as root with `[server] user`: what a change writes belongs to that
    // account, as when the server writes it (see `crate::server::privilege`).
    let plan = match crate::server::privilege::for_tool(cfg) {
        crate::server::privilege::Plan::Switch(r) if !reads_only => Some(r),
        _ => None,
    };
    if let Some(r) = &plan {
        crate::server::privilege::prepare(cfg, r).map_err(|e| e.to_string())?;
    }
    let (spool, _) = Spool::open(SpoolConfig {
        group_commit: cfg.spool.group_commit,
        read_only: reads_only,
        ..SpoolConfig::new(&cfg.spool.dir)
    })
    .map_err(|e| match e {
        SpoolError::Locked { .. } => {
            format!("{e}, but its admin socket does not answer (is the server starting or stuck?)")
        }
        e => e.to_string(),
    })?;
    if let Some(r) = &plan {
        crate::server::privilege::adopt_spool(cfg, r).map_err(|e| e.to_string())?;
        crate::server::privilege::switch(r).map_err(|e| e.to_string())?;
    }
    let spool = Arc::new(spool);
    use postern_delivery::inspect;
    let e = |e: SpoolError| e.to_string();
    Ok(match action {
        QueueAction::List { quarantined, .. } => {
            answer::list(inspect::list(&spool).map_err(e)?, *quarantined)
        }
        QueueAction::Show { id, .. } => {
            let id = parse_id(id)?;
            answer::show(&id, inspect::show(&spool, &id).map_err(e)?)
        }
        QueueAction::Flush(_) => answer::flush(inspect::flush(&spool).await.map_err(e)?),
        QueueAction::Release { id, .. } => {
            let id = parse_id(id)?;
            answer::release(&id, inspect::release(&spool, &id).await.map_err(e)?)
        }
        QueueAction::Delete { id, .. } => {
            let id = parse_id(id)?;
            answer::delete(&id, inspect::delete(&spool, &id).await.map_err(e)?)
        }
    })
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

fn when(v: &Value) -> String {
    match v.as_u64() {
        Some(0) => "now".into(),
        Some(ms) => date::iso(ms),
        None => "-".into(),
    }
}

fn sender(v: &Value) -> String {
    match text(v, "sender") {
        "" => "<>".to_string(),
        s => s.to_string(),
    }
}

fn print(action: &QueueAction, a: &Value, offline: bool) {
    if a["ok"].as_bool() != Some(true) {
        eprintln!(
            "postern: {}",
            a["error"].as_str().unwrap_or("queue command failed")
        );
        return;
    }
    if offline {
        println!("(no server running: read from the spool directly)");
    }
    match action {
        QueueAction::List { .. } => {
            print_list(a["messages"].as_array().map(Vec::as_slice).unwrap_or(&[]))
        }
        QueueAction::Release { .. } if offline => println!(
            "released {}: it is delivered when the server starts",
            text(a, "released")
        ),
        QueueAction::Release { .. } => println!("released {}", text(a, "released")),
        QueueAction::Show { .. } => print_show(&a["message"]),
        QueueAction::Flush(_) if offline => println!(
            "{} messages will be retried as soon as the server starts",
            a["flushed"]
        ),
        QueueAction::Flush(_) => println!(
            "flushed: {} messages scheduled for delivery now",
            a["flushed"]
        ),
        QueueAction::Delete { .. } => println!("deleted {}", text(a, "deleted")),
    }
}

fn print_list(messages: &[Value]) {
    if messages.is_empty() {
        println!("queue is empty");
        return;
    }
    println!(
        "{:<20} {:>9}  {:<20}  {:<8}  SENDER",
        "QUEUE ID", "SIZE", "ARRIVED", "STATE"
    );
    let mut bytes = 0;
    for m in messages {
        bytes += m["size"].as_u64().unwrap_or(0);
        println!(
            "{:<20} {:>9}  {:<20}  {:<8}  {}",
            text(m, "id"),
            m["size"].as_u64().unwrap_or(0),
            when(&m["arrival_unix_ms"]),
            text(m, "state"),
            sender(m)
        );
        if m["attempts"].as_u64().unwrap_or(0) > 0 || !m["last_error"].is_null() {
            println!(
                "    attempts {}, next {}{}",
                m["attempts"],
                when(&m["next_attempt_unix_ms"]),
                m["last_error"]
                    .as_str()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
        if let Some(reason) = m["quarantine"].as_str() {
            println!("    quarantined: {reason}");
        }
        for r in m["recipients"].as_array().into_iter().flatten() {
            println!("    -> {} ({})", text(r, "address"), text(r, "status"));
        }
    }
    println!(
        "-- {} message{}, {bytes} bytes",
        messages.len(),
        if messages.len() == 1 { "" } else { "s" }
    );
}

fn print_show(m: &Value) {
    println!("queue id:  {}", text(m, "id"));
    println!(
        "state:     {} (attempts {}, next {})",
        text(m, "state"),
        m["attempts"],
        when(&m["next_attempt_unix_ms"])
    );
    println!(
        "arrived:   {} from [{}]:{} helo={} tls={} auth={} session={}",
        when(&m["arrival_unix_ms"]),
        text(m, "client_ip"),
        m["client_port"],
        m["helo"].as_str().unwrap_or("-"),
        m["tls"],
        m["auth_user"].as_str().unwrap_or("-"),
        text(m, "session_id")
    );
    let params: Vec<&str> = m["mail_params"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str())
        .collect();
    println!("sender:    <{}> {}", text(m, "sender"), params.join(" "));
    println!("size:      {} bytes", m["size"]);
    if let Some(reason) = m["quarantine"].as_str() {
        println!("quarantine: {reason}");
    }
    for r in m["recipients"].as_array().into_iter().flatten() {
        println!("recipient: {} {}", text(r, "address"), text(r, "status"));
        if let Some(d) = r["detail"].as_str() {
            println!("           {d}");
        }
        if let Some(d) = r["diagnostic"].as_str() {
            println!("           {d}");
        }
    }
    for b in m["dsns"].as_array().into_iter().flatten() {
        println!("bounce:    {}", b.as_str().unwrap_or(""));
    }
    println!("headers:");
    for line in text(m, "headers").lines() {
        println!("  {line}");
    }
}
