//! `rbac-audit`: proves the chart grants the operator exactly the RBAC it uses. It reads the e2e
//! control plane's audit log (`e2e/cluster.sh` logs every ServiceAccount request, metadata only),
//! renders the chart with its default values and with the values the e2e harness installs it
//! with, and fails if a permission granted to the operator's ServiceAccount was never used by
//! the operator during the run, or if any request of the operator was denied (unless allowed
//! when retried, or granted and refused while the API server was starting: a starting API
//! server refuses everything until it has loaded RBAC). `e2e/test.sh` runs
//! it after the test suite:
//!
//! ```text
//! rbac-audit --audit-dir "$E2E_STATE_DIR/logs" --since 2026-12-01T17:00:00Z
//! ```

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use jiff::Timestamp;
use keeper_e2e::harness::{KUBE_VERSION, run, workspace_root};
use keeper_e2e::rbac_audit::{
    ApiServerStart, Exception, Usage, granted, may_be_operator, parse_line, parse_starts,
};

/// Checks the chart's RBAC against what the operator did during an e2e run.
#[derive(Parser)]
struct Args {
    /// Directory with kube-apiserver's audit log (audit.log and its rotated audit-*.log).
    #[arg(long)]
    audit_dir: PathBuf,
    /// Only requests received from this time on (RFC 3339) count: the run being checked.
    #[arg(long)]
    since: Timestamp,
    /// The helm binary.
    #[arg(long, default_value = "helm")]
    helm: PathBuf,
}

/// Granted permissions the e2e suite cannot exercise. Empty: every rule the chart grants is
/// used by some test. An entry needs a reason why no test can reach it.
const EXCEPTIONS: &[Exception] = &[];

/// Release (and so ServiceAccount, the chart's fullname) and namespace of the renderings.
const RELEASE: &str = "keeper-operator";
/// The harness installs the chart with `watchNamespace` set to another namespace, and turns
/// `rbac.rolloutRestart` on where a test restarts workloads.
const RENDERINGS: [&[&str]; 3] = [
    &[],
    &["--set", "watchNamespace=apps"],
    &["--set", "rbac.rolloutRestart=true"],
];

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    let mut grants = BTreeSet::new();
    for values in RENDERINGS {
        let mut helm = Command::new(&args.helm);
        helm.args(["template", RELEASE])
            .arg(workspace_root().join("helm/keeper-operator"))
            .args(["--namespace", RELEASE, "--kube-version", KUBE_VERSION])
            .args(values);
        let manifest = run(&mut helm, None)?.stdout;
        grants.extend(
            granted(&manifest, RELEASE, RELEASE)
                .with_context(|| format!("the chart rendered with {values:?}"))?,
        );
    }
    ensure!(
        !grants.is_empty(),
        "the chart grants its ServiceAccount nothing"
    );

    let usage = read_usage(&args)?;
    ensure!(
        usage.requests > 0,
        "the audit log in {} holds no request of the operator since {}: was the suite run \
         against this control plane, with audit logging on (e2e/cluster.sh up)?",
        args.audit_dir.display(),
        args.since
    );
    println!(
        "{} operator requests since {} from {} ServiceAccounts\n",
        usage.requests,
        args.since,
        usage.users.len()
    );
    print!("{}", usage.table(&grants));
    let starts = read_starts(&args)?;
    for d in usage
        .denied
        .iter()
        .filter(|d| usage.excused(d, &grants, &starts))
    {
        println!("refused while the API server was starting: {}", d.text);
    }
    for e in EXCEPTIONS {
        let (verb, group, resource) = e.grant;
        println!("exception: {verb} {group}/{resource}: {}", e.why);
    }
    let problems = usage.verdict(&grants, EXCEPTIONS, &starts);
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("rbac-audit: {p}");
        }
        eprintln!("rbac-audit: {} RBAC problem(s)", problems.len());
        return Ok(ExitCode::FAILURE);
    }
    println!("\nrbac-audit: every granted permission was used; no request was denied");
    Ok(ExitCode::SUCCESS)
}

/// The API server's starts `e2e/cluster.sh` recorded beside the audit log (none before it kept
/// that record).
fn read_starts(args: &Args) -> Result<Vec<ApiServerStart>> {
    let path = args.audit_dir.join("apiserver-starts");
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_starts(&text).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn read_usage(args: &Args) -> Result<Usage> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&args.audit_dir)
        .with_context(|| format!("reading {}", args.audit_dir.display()))?
    {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("audit") && name.ends_with(".log") {
            files.push(path);
        }
    }
    files.sort();
    let mut usage = Usage::default();
    for file in &files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            if !may_be_operator(line) {
                continue;
            }
            let event =
                parse_line(line).with_context(|| format!("{}:{}", file.display(), n + 1))?;
            if let Some(event) = event {
                usage.add(&event, args.since);
            }
        }
    }
    Ok(usage)
}
