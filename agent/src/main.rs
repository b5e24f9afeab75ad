//! `pilothouse-agent`: the process that runs on each managed server.
//!
//! Owns the command line, logging set-up, where the self-update launcher runs (the
//! first thing `run` does, before any runtime or lock), the current-thread runtime
//! and the exit codes: 0 on success (and when `run` ends for a self-update, and for
//! `--help` and `--version`), 2 for bad usage (what [`agent::cli`] refuses, an
//! unreadable token file, a malformed token or server URL) and for a CA pin
//! mismatch, 1 for every other failure. Errors are printed as one sentence on
//! stderr.

use agent::cli::{Command, Exit, TokenSource};
use agent::register::{register, RegisterOptions};
use agent::AgentError;
use std::io::Write as _;
use std::process::ExitCode;

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
    if let Err(e) = agent::forbid_core_dumps() {
        eprintln!("pilothouse-agent: cannot turn core dumps off: {e}");
    }
    let command = match agent::cli::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(exit) => {
            // A closed stdout (`--help | head -1`) is no failure: the exit code stands.
            let _ = match &exit {
                Exit::Print(text) => std::io::stdout().write_all(text.as_bytes()),
                Exit::Usage(text) => std::io::stderr().write_all(text.as_bytes()),
            };
            return ExitCode::from(exit.code());
        }
    };
    init_logging();
    // Nothing else may pick a provider: every configuration names aws-lc-rs, and
    // this makes any default-provider lookup agree.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let result = match command {
        Command::Register {
            server,
            token,
            state_dir,
            hostname,
            no_pqc,
            force,
        } => {
            let token = match token {
                TokenSource::Arg(t) => t,
                TokenSource::File(path) => match read_token(&path) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!(
                            "pilothouse-agent: cannot read the registration token from {}: {e}",
                            path.display()
                        );
                        return ExitCode::from(2);
                    }
                },
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
