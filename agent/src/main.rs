//! `pilothouse-agent`: the process that runs on each managed server.
//!
//! Owns the command line, logging set-up, where the self-update launcher runs (the
//! first thing `run` does, before any runtime or lock), the current-thread runtime
//! and the exit codes: 0 on success (and when `run` ends for a self-update), 2 for
//! bad usage (clap's own errors, a malformed token or server URL) and for a CA pin
//! mismatch, 1 for every other failure. Errors are printed as one sentence on
//! stderr.

use agent::register::{register, RegisterOptions};
use agent::AgentError;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "pilothouse-agent",
    version,
    about = "The Pilothouse agent: dials out to the control plane, runs the operations it signs and reports metrics.",
    subcommand_required = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register this server with a control plane, using a one-time token.
    Register {
        /// The control plane's agent gateway, https://HOST:PORT.
        #[arg(long, value_name = "URL")]
        server: String,
        /// The registration token from the dashboard (pht1_...). Visible to
        /// other users in `ps` while the command runs: prefer --token-file.
        #[arg(
            long,
            value_name = "TOKEN",
            required_unless_present = "token_file",
            conflicts_with = "token_file"
        )]
        token: Option<String>,
        /// Read the registration token from this file, or from standard input with `-`.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Where the agent keeps its keys and state.
        #[arg(long, value_name = "DIR", default_value = agent::state::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// The name to register under (default: the kernel's host name).
        #[arg(long, value_name = "NAME")]
        hostname: Option<String>,
        /// Register without a post-quantum (X-Wing) key: "Classical fallback".
        #[arg(long)]
        no_pqc: bool,
        /// Replace an existing registration.
        #[arg(long)]
        force: bool,
    },
    /// Run the agent (normally started by systemd).
    Run {
        #[arg(long, value_name = "DIR", default_value = agent::state::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Configuration file [default: /etc/pilothouse/agent.toml, if present].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Show the registration, keys, certificate and last contact.
    Status {
        #[arg(long, value_name = "DIR", default_value = agent::state::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
}

/// Logs to stderr at `warn` unless `RUST_LOG` says otherwise (`info`,
/// `agent=debug,warn`, ...), and keeps the last warning or error for the
/// health report whatever `RUST_LOG` says ([`agent::health`]).
fn init_logging() {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let default = || Targets::new().with_default(tracing::Level::WARN);
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => v.parse::<Targets>().unwrap_or_else(|e| {
            eprintln!("pilothouse-agent: ignoring RUST_LOG ({e}); logging at warn");
            default()
        }),
        _ => default(),
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_filter(filter),
        )
        .with(agent::health::LastErrorLayer.with_filter(default()))
        .init();
}

fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, AgentError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AgentError::Failed(format!("cannot start the runtime: {e}")))?;
    Ok(rt.block_on(f))
}

/// The token from a file, or from standard input for `-`: the first line, trimmed.
fn read_token(path: &std::path::Path) -> std::io::Result<String> {
    let text = if path.as_os_str() == "-" {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line
    } else {
        std::fs::read_to_string(path)?
    };
    Ok(text.lines().next().unwrap_or_default().trim().to_string())
}

fn main() -> ExitCode {
    agent::health::mark_started();
    let cli = Cli::parse();
    init_logging();
    // Nothing else may pick a provider: every configuration names aws-lc-rs, and
    // this makes any default-provider lookup agree.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let result = match cli.command {
        Command::Register {
            server,
            token,
            token_file,
            state_dir,
            hostname,
            no_pqc,
            force,
        } => {
            let token = match (token, token_file) {
                (Some(t), _) => t,
                (None, Some(path)) => match read_token(&path) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!(
                            "pilothouse-agent: cannot read the registration token from {}: {e}",
                            path.display()
                        );
                        return ExitCode::from(2);
                    }
                },
                (None, None) => {
                    eprintln!("pilothouse-agent: give --token or --token-file");
                    return ExitCode::from(2);
                }
            };
            block_on(register(RegisterOptions {
            server,
            token,
            state_dir,
            hostname,
            no_pqc,
            force,
        }))
        .and_then(|r| r)
        .map(|r| {
            println!("{}", r.agent_id);
            eprintln!(
                "pilothouse-agent: registered as {} with {} ({}). Start it with `systemctl enable --now pilothouse-agent`.",
                r.agent_id,
                r.server_url,
                agent::pqc_state(r.post_quantum)
            );
        })
        }
        Command::Run { state_dir, config } => {
            // Execs the self-updated binary if there is one; returns to run here.
            agent::update::launch(&state_dir);
            block_on(agent::run::run(&state_dir, config.as_deref())).and_then(|r| r)
        }
        Command::Status { state_dir } => {
            agent::status::status(&state_dir, agent::now_ms()).map(|s| print!("{s}"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pilothouse-agent: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
