//! The operator as a child process: the binary built once, spawned with the chart's
//! ServiceAccount kubeconfig, its logs, readiness and metrics.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};

use super::SaToken;
use super::process::{artefact_dir, free_port, unique_name, workspace_root};

/// Path of the operator binary: `KEEPER_OPERATOR_BIN`, else `target/debug/keeper-operator`,
/// (re)built once per process with `cargo build --bin keeper-operator`.
pub fn operator_binary() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| build_operator().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn build_operator() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KEEPER_OPERATOR_BIN") {
        return Ok(PathBuf::from(p));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "keeper-operator",
            "--bin",
            "keeper-operator",
        ])
        .current_dir(workspace_root())
        .status()
        .context("running cargo build for the operator")?;
    ensure!(status.success(), "cargo build --bin keeper-operator failed");
    let bin = artefact_dir()
        .parent()
        .expect("target dir")
        .join("debug/keeper-operator");
    ensure!(bin.is_file(), "{} was not built", bin.display());
    Ok(bin)
}

/// Builder for an operator child process.
pub struct OperatorBuilder {
    kubeconfig: PathBuf,
    namespace: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log_file: PathBuf,
}

impl OperatorBuilder {
    pub fn new(kubeconfig: &Path, operator_namespace: &str) -> OperatorBuilder {
        OperatorBuilder {
            kubeconfig: kubeconfig.to_path_buf(),
            namespace: operator_namespace.to_string(),
            args: Vec::new(),
            env: Vec::new(),
            log_file: artefact_dir().join(format!("{}.log", unique_name("operator"))),
        }
    }

    /// An extra command-line argument after `run`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn log_file(mut self, path: PathBuf) -> Self {
        self.log_file = path;
        self
    }

    /// Starts the operator; it is killed when the returned handle drops.
    pub fn spawn(self) -> Result<Operator> {
        let bin = operator_binary()?;
        let metrics_port = free_port()?;
        if let Some(dir) = self.log_file.parent() {
            fs::create_dir_all(dir)?;
        }
        let log = fs::File::create(&self.log_file)?;
        let child = Command::new(&bin)
            .arg("run")
            .arg(format!("--metrics-bind-address=127.0.0.1:{metrics_port}"))
            .arg(format!("--operator-namespace={}", self.namespace))
            .arg("--log-format=json")
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("POD_NAMESPACE", &self.namespace)
            .env("RUST_BACKTRACE", "1")
            // The KSM test server listens on 127.0.0.1 (any port); a test may override this.
            .env("KEEPER_OPERATOR_KEEPER_ALLOWED_HOSTS", "127.0.0.1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        Ok(Operator {
            child,
            metrics_port,
            log_file: self.log_file,
        })
    }
}

/// A running operator process; killed on drop. Its stdout/stderr go to `log_file`.
pub struct Operator {
    child: Child,
    metrics_port: u16,
    log_file: PathBuf,
}

impl Operator {
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.metrics_port)
    }

    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// Everything the operator has logged so far.
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited (with its log tail).
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(30).collect();
            bail!(
                "operator exited ({status}); log {}:\n{}",
                self.log_file.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    /// `GET path` on the metrics port, with a bearer token if given: (status code, body).
    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Result<(u16, String)> {
        let mut req = http_client().get(format!("{}{path}", self.metrics_url()));
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.with_context(|| format!("GET {path}"))?;
        let code = resp.status().as_u16();
        Ok((code, resp.text().await?))
    }

    /// The operator's `/metrics`, read as a scraper holding `token` would (see
    /// [`TestEnv::metrics_reader_token`]).
    pub async fn scrape_metrics(&self, token: &SaToken) -> Result<String> {
        let (code, body) = self.get("/metrics", Some(token.secret())).await?;
        ensure!(code == 200, "GET /metrics answered {code}: {body}");
        Ok(body)
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let url = format!("{}/readyz", self.metrics_url());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.ensure_running()?;
            if http_get_ok(&url).await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "operator not ready after {timeout:?}; log: {}",
                    self.log_file.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Kills the process now (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

fn http_client() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client without TLS settings builds")
        })
        .clone()
}

/// A plain HTTP GET on loopback (no client library needed for /readyz); true on a 200.
async fn http_get_ok(url: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let Ok(mut s) = tokio::net::TcpStream::connect(host).await else {
        return false;
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200")
}
