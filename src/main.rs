use clap::{Parser, Subcommand};
use keeper_operator::cli::keeper::{KeeperArgs, run_keeper_command};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "keeper-operator",
    version,
    about = "Syncs Keeper Secrets Manager records into Kubernetes Secrets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check and debug Keeper Secrets Manager credentials
    Keeper(KeeperArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let result = match cli.command {
        Command::Keeper(args) => run_keeper_command(args).await,
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
