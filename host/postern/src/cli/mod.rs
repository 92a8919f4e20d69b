//! The `postern` command line: `serve`, `check`, `reload`, `status`, `queue`,
//! `plugin new`, `replay`, `spf`, `dkim keygen`, `gen-cert`, `--version`; the
//! admin socket's client and the printers of its answers. It starts the
//! server (`crate::server`) and never the other way round. Input: operator
//! arguments (trusted) and the configuration file they name. Errors are
//! printed with the file, line or plugin concerned and exit non-zero.

mod admin;
mod dkim_keygen;
mod queue;
mod replay;
mod scaffold;

use crate::server::{self, kv, logging, mail_auth, privilege, received, tls};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat, Overrides};

#[derive(Parser)]
#[command(
    name = "postern",
    version,
    about = "A programmable mail transfer agent with WebAssembly policy plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Listen address (repeatable); replaces `server.listen`.
        #[arg(long = "listen", value_name = "ADDR")]
        listen: Vec<SocketAddr>,
        /// Data directory (spool, cache); replaces `server.data_dir`.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Log format; overrides `[log] format`.
        #[arg(long, value_enum)]
        log_format: Option<CliLogFormat>,
    },
    /// Load the configuration, compile every plugin and run its init; exit 0
    /// when everything is valid.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Write a self-signed certificate and key (cert.pem, key.pem) into DIR
    /// unless they exist (for trying STARTTLS locally; use real certificates
    /// in production).
    GenCert {
        /// Host name to put in the certificate.
        #[arg(long)]
        hostname: String,
        /// Output directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// DKIM keys for the mail-auth plugin.
    Dkim {
        #[command(subcommand)]
        action: DkimAction,
    },
    /// Evaluate SPF (RFC 7208) for a client as the mail-auth plugin would
    /// see it, with the configuration's resolver (`[dns]`), and print the
    /// MAIL FROM and HELO results.
    Spf {
        #[arg(short, long)]
        config: PathBuf,
        /// The client's address.
        #[arg(long)]
        ip: std::net::IpAddr,
        /// The HELO/EHLO name.
        #[arg(long)]
        helo: String,
        /// The MAIL FROM address (omit for the null sender).
        #[arg(long, default_value = "")]
        mail_from: String,
    },
    /// Hash a password for the auth-file plugin (argon2id, PHC string);
    /// reads the password from standard input.
    HashPassword,
    /// Ask the running server to reload its configuration and plugins;
    /// prints the outcome and exits non-zero when the reload was refused.
    Reload {
        #[command(flatten)]
        args: AdminArgs,
        /// Load the new generation as a canary for PERCENT of new sessions
        /// (1-99); the others keep the current one until `postern promote`
        /// (or `postern rollback`).
        #[arg(long, value_name = "PERCENT")]
        canary: Option<u8>,
    },
    /// Make the running canary the current generation.
    Promote(AdminArgs),
    /// Run recorded sessions ([record]) through a configuration's chain
    /// offline and report the decisions that differ (from the recording,
    /// or from --against OLD.toml); exits 1 past the threshold.
    Replay(replay::ReplayArgs),
    /// Drop the running canary, or go back to the previous generation while
    /// it is kept (`[rollback] watch` after a reload).
    Rollback(AdminArgs),
    /// Show the running generation, its plugins and sessions.
    Status(AdminArgs),
    /// Export or import the key-value store's entries (JSON lines), e.g. to
    /// move from the embedded store to Redis.
    Kv {
        #[command(subcommand)]
        action: kv::KvAction,
    },
    /// Inspect and manage the delivery queue (through the running server, or
    /// the spool directly when no server runs).
    Queue {
        #[command(subcommand)]
        action: queue::QueueAction,
    },
    /// Plugin authoring: `postern plugin new NAME --lang rust|python|javascript`.
    Plugin {
        #[command(subcommand)]
        action: scaffold::PluginAction,
    },
}

#[derive(Subcommand)]
enum DkimAction {
    /// Write a new private key (DIR/DOMAIN.SELECTOR.pem, mode 0600) and print
    /// the DNS TXT record to publish.
    Keygen {
        #[arg(long)]
        domain: String,
        #[arg(long)]
        selector: String,
        #[arg(long, value_enum, default_value = "rsa")]
        algorithm: dkim_keygen::Algorithm,
        /// Output directory (e.g. /etc/postern/dkim).
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct AdminArgs {
    /// The server's configuration file (locates its admin socket).
    #[arg(short, long, required_unless_present = "socket")]
    config: Option<PathBuf>,
    /// The admin socket, instead of --config.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Data directory override the server was started with.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Print the raw JSON answer.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CliLogFormat {
    Text,
    Json,
}

fn runtime() -> tokio::runtime::Runtime {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var("POSTERN_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        b.worker_threads(n);
    }
    b.enable_all()
        .thread_name("postern")
        .build()
        .expect("cannot start the tokio runtime")
}

/// Run the command line (the `postern` binary's `main`).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Cmd::Serve { .. }) {
        // A command's output piped into `head` ends quietly when the reader
        // goes away, as Unix tools do, instead of a panic in println!. (The
        // server keeps Rust's ignored SIGPIPE: a client that vanishes is an
        // error on its socket, not the end of the process.)
        // SAFETY: restoring the default disposition of one signal, before
        // any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cli.command {
        Cmd::Serve {
            config,
            listen,
            data_dir,
            log_format,
        } => {
            let overrides = Overrides { listen, data_dir };
            let cfg = match load_config(&config, &overrides) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let plan = match privilege::decide(&cfg) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("postern: {e}");
                    return ExitCode::from(2);
                }
            };
            let format = match log_format {
                Some(CliLogFormat::Json) => LogFormat::Json,
                Some(CliLogFormat::Text) => LogFormat::Text,
                None => cfg.log.format.unwrap_or(LogFormat::Text),
            };
            let log = logging::init(format, cfg.log.level.as_deref());
            let result = runtime().block_on(server::serve(cfg, overrides, plan));
            if let Err(e) = &result {
                tracing::error!("{e:#}");
            }
            drop(log);
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("postern: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Check { config } => {
            let cfg = match load_config(&config, &Overrides::default()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let _log = logging::init(LogFormat::Text, Some("warn"));
            if let Err(privilege::PrivilegeError::RootRefused { .. }) = privilege::decide(&cfg) {
                eprintln!(
                    "postern: note: `postern serve` started as root refuses this file: set \
                     [server] user (or allow_root = true)"
                );
            }
            // As root with `user` set: read the certificates as root, as serve
            // does, then load the plugins as that account (the compiled-plugin
            // cache it writes is that account's).
            let plan = privilege::for_tool(&cfg);
            let result = runtime().block_on(async {
                if let Some(r) = plan.run_as() {
                    privilege::prepare(&cfg, r)?;
                }
                server::load_tls(&cfg).map_err(|e| anyhow::anyhow!(e))?;
                if let Some(r) = plan.run_as() {
                    privilege::switch(r)?;
                }
                let store = kv::check(&cfg.kv)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: [kv]: {e}", cfg.path.display()))?;
                let rt = postern_plugin::Runtime::new(cfg.runtime.clone())?;
                // The plugins' init runs against a scratch store: checking
                // must not touch the state of a running server.
                let kv: std::sync::Arc<dyn postern_plugin::KvBackend> =
                    std::sync::Arc::new(postern_plugin::MemoryKv::default());
                let generation = server::load_generation(
                    &rt,
                    &cfg,
                    0,
                    server::services(&cfg, server::resolver(&cfg), kv, None),
                )
                .await?;
                anyhow::Ok((store, generation.plugins()))
            });
            match result {
                Ok((store, plugins)) => {
                    println!("{}: ok", config.display());
                    println!("  kv store {store}");
                    for p in &plugins {
                        let stages: Vec<&str> = p.stages.iter().map(|s| s.name()).collect();
                        println!(
                            "  plugin {:<16} {} stages: {}",
                            p.name,
                            &p.sha256[..16],
                            stages.join(", ")
                        );
                    }
                    for w in plugins.iter().filter_map(server::ungranted_warning) {
                        eprintln!("postern: warning: {w}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("postern: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Plugin { action } => match scaffold::run(action) {
            Ok(dir) => {
                println!("wrote {}", dir.display());
                println!(
                    "  see {}/README.md: build, test, load (mode = \"shadow\" first)",
                    dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("postern: plugin new: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::GenCert { hostname, dir } => match tls::ensure_self_signed(&hostname, &dir) {
            Ok(true) => {
                println!(
                    "wrote {}/cert.pem and key.pem for {hostname}",
                    dir.display()
                );
                ExitCode::SUCCESS
            }
            Ok(false) => {
                println!("{}/cert.pem and key.pem already exist", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("postern: {e:#}");
                ExitCode::from(1)
            }
        },
        Cmd::Dkim {
            action:
                DkimAction::Keygen {
                    domain,
                    selector,
                    algorithm,
                    dir,
                },
        } => match dkim_keygen::keygen(&domain, &selector, algorithm, &dir) {
            Ok((path, record)) => {
                eprintln!("wrote {}; publish this record:", path.display());
                println!("{record}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("postern: {e:#}");
                ExitCode::from(1)
            }
        },
        Cmd::Spf {
            config,
            ip,
            helo,
            mail_from,
        } => spf_command(&config, ip, helo, mail_from),
        Cmd::HashPassword => hash_password(),
        Cmd::Reload { args, canary } => admin_command(args, "reload", canary),
        Cmd::Promote(args) => admin_command(args, "promote", None),
        Cmd::Replay(args) => replay::run(args, &runtime()),
        Cmd::Rollback(args) => admin_command(args, "rollback", None),
        Cmd::Status(args) => admin_command(args, "status", None),
        Cmd::Queue { action } => queue::run(action),
        Cmd::Kv { action } => kv::command(action, &runtime()),
    }
}

/// The configuration, or exit code 2 after printing the error (which names
/// the file and line).
fn load_config(path: &std::path::Path, overrides: &Overrides) -> Result<Config, ExitCode> {
    Config::load(path, overrides).map_err(|e| {
        eprintln!("postern: {e}");
        ExitCode::from(2)
    })
}

fn spf_command(
    config: &std::path::Path,
    client_ip: std::net::IpAddr,
    helo: String,
    mail_from: String,
) -> ExitCode {
    let cfg = match load_config(config, &Overrides::default()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let _log = logging::init(LogFormat::Text, Some("warn"));
    let ids = postern_plugin::Identities {
        client_ip,
        helo,
        mail_from,
    };
    let out = runtime().block_on(async {
        let auth = mail_auth::MailAuth::new(&cfg.dns.nameservers, cfg.dns.timeout, &cfg.hostname)?;
        anyhow::Ok(auth.spf(ids).await)
    });
    match out {
        Ok(out) => {
            for (identity, check) in [("mail-from", &out.mail_from), ("helo", &out.helo)] {
                let mut line = format!("{identity}: {}", check.result.name());
                if !check.domain.is_empty() {
                    line.push_str(&format!(" ({})", check.domain));
                }
                if let Some(e) = &check.explanation {
                    line.push_str(&format!(": {e}"));
                }
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("postern: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn hash_password() -> ExitCode {
    use argon2::PasswordHasher;
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        eprintln!("postern: cannot read the password from standard input");
        return ExitCode::from(2);
    }
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        eprintln!("postern: empty password");
        return ExitCode::from(2);
    }
    let salt =
        argon2::password_hash::SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    match argon2::Argon2::default().hash_password(password.as_bytes(), &salt) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("postern: {e}");
            ExitCode::from(1)
        }
    }
}

fn admin_command(args: AdminArgs, command: &str, canary: Option<u8>) -> ExitCode {
    let path = match (&args.socket, &args.config) {
        (Some(s), _) => s.clone(),
        (None, Some(c)) => {
            let overrides = Overrides {
                listen: Vec::new(),
                data_dir: args.data_dir.clone(),
            };
            match Config::load(c, &overrides) {
                Ok(cfg) => server::admin::socket_path(&cfg),
                // A broken file must still reach the server, which reports
                // (and logs) the precise error and keeps serving.
                Err(_) => server::admin::socket_path_lenient(c, args.data_dir.as_deref()),
            }
        }
        (None, None) => unreachable!("clap requires --config or --socket"),
    };
    // `reload --config FILE` reloads FILE, whichever file the server ran.
    let mut request = match (command, &args.config) {
        ("reload", Some(c)) => match c.canonicalize() {
            Ok(p) if !p.to_string_lossy().contains('\n') => format!("reload {}", p.display()),
            Ok(_) => "reload".to_string(),
            Err(e) => {
                eprintln!("postern: {}: {e}", c.display());
                return ExitCode::from(2);
            }
        },
        _ => command.to_string(),
    };
    if let Some(p) = canary {
        request = request.replacen("reload", &format!("reload --canary {p}"), 1);
    }
    let answer = match runtime().block_on(admin::request(&path, &request)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("postern: {e:#}");
            return ExitCode::from(2);
        }
    };
    show_answer(args.json, &answer, |a| print_answer(command, a))
}

/// Show a server's (or the offline spool's) answer: as JSON with `--json`, else
/// as `human` prints it. The exit code says whether it was ok.
fn show_answer(
    json: bool,
    answer: &serde_json::Value,
    human: impl FnOnce(&serde_json::Value),
) -> ExitCode {
    if json {
        println!("{answer}");
    } else {
        human(answer);
    }
    if answer["ok"].as_bool() == Some(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_answer(command: &str, a: &serde_json::Value) {
    if a["ok"].as_bool() != Some(true) {
        eprintln!(
            "postern: {command} refused: {}",
            a["error"].as_str().unwrap_or("unknown error")
        );
        eprintln!("postern: the previous configuration keeps serving");
        return;
    }
    if command == "reload" {
        let r = &a["reload"];
        println!(
            "reloaded: generation {} from {} ({} plugins compiled, {} from cache, {} ms)",
            r["generation"],
            r["config"].as_str().unwrap_or(""),
            r["compiled"],
            r["cached"],
            r["took_ms"]
        );
        if let Some(from) = r["switched_from"].as_str() {
            println!(
                "  the server ran {from} until now: this file is its configuration from now on \
                 (SIGHUP and file watching follow it)"
            );
        }
        for p in r["plugins"].as_array().into_iter().flatten() {
            println!("  plugin {}", p.as_str().unwrap_or(""));
        }
        for c in r["listener_changes"].as_array().into_iter().flatten() {
            println!("  {}", c.as_str().unwrap_or(""));
        }
        for s in r["restart_required"].as_array().into_iter().flatten() {
            println!("  not applied until restart: {}", s.as_str().unwrap_or(""));
        }
        if let Some(p) = r["canary_percent"].as_u64() {
            println!(
                "  canary: {p}% of new sessions get generation {}; `postern status` compares it, \
                 `postern promote` or `postern rollback` ends it",
                r["generation"]
            );
        }
        return;
    }
    if command == "promote" || command == "rollback" {
        println!("{}", a["message"].as_str().unwrap_or(""));
        return;
    }
    let s = &a["status"];
    println!(
        "postern {} — generation {} from {}",
        s["version"].as_str().unwrap_or(""),
        s["generation"],
        s["config"].as_str().unwrap_or("")
    );
    let loaded = s["loaded_at_unix_ms"].as_u64().unwrap_or(0);
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_millis(loaded);
    println!("  loaded at {}", received::rfc5322_date(when));
    println!("  listeners: {}", s["listeners"]);
    println!(
        "  connections: {}, sessions on this generation: {}, on older generations: {}",
        s["connections"], s["sessions"], s["sessions_on_older_generations"]
    );
    let older: Vec<String> = s["older_generations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| format!("{} ({} sessions)", g["generation"], g["sessions"]))
        .collect();
    println!(
        "  older generations in memory: {}",
        if older.is_empty() {
            "none".to_string()
        } else {
            older.join(", ")
        }
    );
    for p in s["plugins"].as_array().into_iter().flatten() {
        let shadow = if p["mode"].as_str() == Some("shadow") {
            format!(
                " (shadow: {} verdicts would have differed)",
                p["shadow_differed"]
            )
        } else {
            String::new()
        };
        let breaker = match p["breaker"].as_str() {
            Some(b) if b != "closed" => format!(" (circuit breaker {b})"),
            _ => String::new(),
        };
        println!(
            "  plugin {:<16} {} {:<8} stages: {}{shadow}{breaker}",
            p["name"].as_str().unwrap_or(""),
            p["sha256"].as_str().unwrap_or(""),
            p["mode"].as_str().unwrap_or(""),
            p["stages"]
                .as_array()
                .map(|v| v
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        );
    }
    if s["av"].is_object() {
        println!(
            "  virus scanner {}: {} clean, {} infected, {} failed",
            s["av"]["clamd"].as_str().unwrap_or(""),
            s["av"]["clean"],
            s["av"]["infected"],
            s["av"]["errors"]
        );
    }
    for m in s["milters"].as_array().into_iter().flatten() {
        println!(
            "  milter {:<16} {} on_error {}: {} calls, {} failed",
            m["name"].as_str().unwrap_or(""),
            m["address"].as_str().unwrap_or(""),
            m["on_error"].as_str().unwrap_or(""),
            m["calls"],
            m["failures"]
        );
    }
    print_rollout(&s["rollout"]);
    println!(
        "  spool: {} messages, {} bytes",
        s["spool"]["messages"], s["spool"]["bytes"]
    );
    if s["kv"].is_object() {
        println!(
            "  kv: {} ({})",
            s["kv"]["store"].as_str().unwrap_or(""),
            if s["kv"]["up"].as_bool() == Some(false) {
                "unavailable at the last call"
            } else {
                "answering"
            }
        );
    }
    let q = &s["queue"];
    if q.is_object() {
        println!(
            "  delivery: {} messages known, {} being delivered, {} connections{}",
            q["messages"],
            q["active"],
            q["workers"],
            if q["enabled"].as_bool() == Some(false) {
                " (on hold: delivery.enabled = false)"
            } else {
                ""
            }
        );
    }
}

/// The canary, the previous generation kept for rollback and the last
/// rollout event, as `postern status` prints them.
fn print_rollout(r: &serde_json::Value) {
    let line = |role: &str, g: &serde_json::Value| {
        format!(
            "  {role} generation {}: {} sessions, {} plugin calls, {} failed ({:.1}%), \
             {} rejects, {} defers, {} disconnects",
            g["generation"],
            g["sessions"],
            g["calls"],
            g["failures"],
            g["failure_rate"].as_f64().unwrap_or(0.0) * 100.0,
            g["rejects"],
            g["defers"],
            g["disconnects"]
        )
    };
    if r["canary"].is_object() {
        println!("{}", line("current", &r["current"]));
        println!(
            "{} — {}% of new sessions, for {} s",
            line("canary ", &r["canary"]),
            r["canary"]["percent"],
            r["canary"]["running_s"]
        );
    }
    if r["previous"].is_object() {
        println!(
            "  previous generation {} kept for rollback for {} s more",
            r["previous"]["generation"], r["previous"]["kept_for_s"]
        );
    }
    if let Some(t) = r["last_event"]["text"].as_str() {
        println!("  last rollout event: {t}");
    }
}
