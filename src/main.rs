//! The `keeper-operator` binary: `run` (the operator) and `keeper` (checking KSM credentials
//! by hand). Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use keeper_operator::cli::keeper::run_keeper_command;
use keeper_operator::cli::{Cli, Command};
use keeper_operator::runtime::run::run;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::Keeper(args) => {
            // The CLI prints values on stdout; diagnostics go to stderr, quiet by default.
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(
                    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
                )
                .init();
            run_keeper_command(args).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and its causes joined by ": ".
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
