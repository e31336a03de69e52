//! Runs the KSM-compatible test server as a process, for shell scripts and other languages.
//!
//! Writes into `--state-dir`: `ca.pem`, `token` (a fresh one-time token for the app),
//! `config.b64` (a config of an already-bound device) and, last, `server.json`
//! (`{hostname, serverPublicKeyId, serverPublicKey, adminUrl, app, caFile}`), so a script can
//! wait for `server.json` and then read the rest. Runs until SIGTERM or SIGINT.

use anyhow::Context;
use clap::Parser;
use keeper_e2e::ksm_server::{ServerOptions, TestServer, VaultSpec, sample_vault};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(about = "KSM-compatible test server (HTTPS API + plain-HTTP admin API on loopback)")]
struct Args {
    /// Vault spec JSON (default: the bundled e2e/testdata/sample-vault.json).
    #[arg(long)]
    vault: Option<PathBuf>,
    /// HTTPS API address; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Admin API address (plain HTTP, loopback only); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    admin_listen: SocketAddr,
    /// Where to write ca.pem, server.json, token and config.b64.
    #[arg(long)]
    state_dir: PathBuf,
    /// App for the token and config (default: the first app in the vault).
    #[arg(long)]
    app: Option<String>,
    /// Numeric id of the server key.
    #[arg(long, default_value = "10")]
    key_id: String,
}

/// Writes via a temporary file and a rename, so readers never see half a file.
fn write_file(dir: &Path, name: &str, contents: &str, mode: u32) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let vault = match &args.vault {
        Some(path) => VaultSpec::from_json(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )?,
        None => sample_vault(),
    };
    let app = match args.app {
        Some(app) => app,
        None => vault
            .apps
            .first()
            .map(|a| a.name.clone())
            .context("the vault has no apps")?,
    };
    let options = ServerOptions {
        listen: args.listen,
        key_id: args.key_id,
    };
    let server = TestServer::start_with(vault, options).await?;
    let admin = server.serve_admin(args.admin_listen).await?;

    std::fs::create_dir_all(&args.state_dir)?;
    let dir = args.state_dir.as_path();
    write_file(dir, "ca.pem", server.ca_pem(), 0o644)?;
    write_file(
        dir,
        "token",
        &format!("{}\n", server.issue_token(&app)?),
        0o600,
    )?;
    write_file(dir, "config.b64", &server.bound_config(&app)?, 0o600)?;
    let (key_id, key) = server.server_public_key();
    let info = serde_json::json!({
        "hostname": server.hostname(),
        "serverPublicKeyId": key_id,
        "serverPublicKey": key,
        "adminUrl": format!("http://{admin}"),
        "app": app,
        "caFile": dir.join("ca.pem"),
    });
    write_file(
        dir,
        "server.json",
        &serde_json::to_string_pretty(&info)?,
        0o644,
    )?;
    tracing::info!(hostname = %server.hostname(), admin = %admin, "ksm-test-server ready");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("ksm-test-server stopping");
    Ok(())
}
