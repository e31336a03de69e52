//! The `keeper-operator` binary: `run` (the operator) and `keeper` (checking KSM credentials
//! by hand); installed as `kubectl-keeper`, the `kubectl keeper` plugin. Everything else lives
//! in the library.

use std::process::ExitCode;

use clap::Parser;
use keeper_operator::cli::keeper::run_keeper_command;
use keeper_operator::cli::plugin::{PluginCli, run_plugin};
use keeper_operator::cli::{Cli, Command};
use keeper_operator::runtime::run::run;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    // Installed as `kubectl-keeper`, the binary is a kubectl plugin.
    let as_plugin = std::env::args_os()
        .next()
        .and_then(|arg0| {
            let name = std::path::Path::new(&arg0).file_stem()?.to_owned();
            Some(name == "kubectl-keeper")
        })
        .unwrap_or(false);
    let result = if as_plugin {
        quiet_diagnostics();
        run_plugin(PluginCli::parse()).await
    } else {
        match Cli::parse().command {
            Command::Run(args) => run(args).await,
            Command::Keeper(args) => {
                quiet_diagnostics();
                run_keeper_command(args).await
            }
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

/// The CLIs print results on stdout; diagnostics go to stderr, quiet by default.
fn quiet_diagnostics() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
}
