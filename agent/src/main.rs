//! `pilothouse-agent`: the process that runs on each managed server.
//!
//! This build only prints its usage; registration, the long-poll and command
//! execution arrive with the agent channel.

use std::process::ExitCode;

const USAGE: &str = "\
pilothouse-agent: the Pilothouse agent (protocol v{v})

Usage:
  pilothouse-agent register --server https://HOST:PORT --token TOKEN [--state-dir DIR]
  pilothouse-agent run [--state-dir DIR] [--config FILE]
  pilothouse-agent status

This build does not implement these commands yet.";

fn main() -> ExitCode {
    let usage = USAGE.replace("{v}", &channel::PROTOCOL_VERSION.to_string());
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => {
            println!("{usage}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("pilothouse-agent: `{other}` is not available in this build.\n\n{usage}");
            ExitCode::from(2)
        }
    }
}
