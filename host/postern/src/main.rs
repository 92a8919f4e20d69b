//! The `postern` command line: `serve`, `check`, `--version`. Input: operator
//! arguments (trusted) and the configuration file they name. Errors are
//! printed with the file, line or plugin concerned and exit non-zero.

mod config;
mod conn;
mod dns;
mod logging;
mod received;
mod server;
mod session;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use config::{Config, LogFormat, Overrides};

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
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CliLogFormat {
    Text,
    Json,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("postern")
        .build()
        .expect("cannot start the tokio runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve {
            config,
            listen,
            data_dir,
            log_format,
        } => {
            let overrides = Overrides { listen, data_dir };
            let cfg = match Config::load(&config, &overrides) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("postern: {e}");
                    return ExitCode::from(2);
                }
            };
            let format = match log_format {
                Some(CliLogFormat::Json) => LogFormat::Json,
                Some(CliLogFormat::Text) => LogFormat::Text,
                None => cfg.log_format.unwrap_or(LogFormat::Text),
            };
            logging::init(format, cfg.log_level.as_deref());
            match runtime().block_on(server::serve(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("postern: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Check { config } => {
            let cfg = match Config::load(&config, &Overrides::default()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("postern: {e}");
                    return ExitCode::from(2);
                }
            };
            logging::init(LogFormat::Text, Some("warn"));
            let result = runtime().block_on(async {
                let rt = postern_plugin::Runtime::new(cfg.runtime.clone())?;
                let generation =
                    server::load_generation(&rt, &cfg, 0, server::services(&cfg)?).await?;
                anyhow::Ok(generation.plugins())
            });
            match result {
                Ok(plugins) => {
                    println!("{}: ok", config.display());
                    for p in plugins {
                        let stages: Vec<&str> = p.stages.iter().map(|s| s.name()).collect();
                        println!(
                            "  plugin {:<16} {} stages: {}",
                            p.name,
                            &p.sha256[..16],
                            stages.join(", ")
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("postern: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
