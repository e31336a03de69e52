//! Scale benchmark, run on purpose through `e2e/bench.sh`: N KeeperSecrets over C
//! credentials against the real local control plane, the operator binary (as the chart's
//! ServiceAccount) and the in-process KSM test server. Writes JSON and prints a table.
//!
//! Phases, in order: cold start (create all CRs, wait all Ready), steady refresh waves (Keeper
//! calls per wave and between waves), change propagation (edit a record every Secret depends
//! on), an outage (Keeper down, then back), two restarts of the operator (Keeper up, then
//! Keeper down so it serves the sealed copy), and last the raw API-server baseline (the same
//! number of Secrets created straight by a minimal client at the same concurrency), so the
//! baseline's writes never overlap the operator's.

use std::borrow::Borrow;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use keeper_e2e::harness::{Operator, TestEnv};
use keeper_e2e::ksm_server::{AppSpec, DownMode, TestServer, VaultSpec};
use keeper_operator::api::KeeperSecret;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde::Serialize;
use serde_json::{Value, json};

/// Records in the generated vault; KeeperSecret i maps record i mod RECORDS plus record 0.
const RECORDS: usize = 100;
const SECRET_LABEL: &str = "app.kubernetes.io/managed-by=keeper-operator";
/// The label each shard's `--watch-label-selector` selects on.
const SHARD_LABEL: &str = "sharding.keeper-operator.dev/key";
/// The control-plane processes whose CPU time each phase reports (PID files of e2e/cluster.sh).
const CONTROL_PLANE: [&str; 3] = ["kube-apiserver", "etcd", "kube-controller-manager"];

#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    keeper_secrets: usize,
    #[arg(long, default_value_t = 1)]
    credentials: usize,
    #[arg(long)]
    out: PathBuf,
    /// refreshInterval of every KeeperSecret (also the wave length).
    #[arg(long, default_value = "10s")]
    refresh: String,
    /// Refresh waves observed in the steady phase.
    #[arg(long, default_value_t = 3)]
    waves: u32,
    /// Operator `--concurrency` and the concurrency of every bulk client write.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// How long Keeper stays down in the outage phase, in refresh intervals.
    #[arg(long, default_value_t = 2)]
    outage_waves: u32,
    /// Operator processes, one per shard: KeeperSecret i is labelled
    /// `sharding.keeper-operator.dev/key=shard-<i mod S>` and shard k runs with
    /// `--watch-label-selector` on `shard-k`. 1: one operator, no label, no selector.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Phases to leave out (`change-propagation`, `outage`), to keep the largest runs short;
    /// their figures stay zero and the table says "skipped".
    #[arg(long = "skip", value_enum)]
    skip: Vec<Optional>,
    /// Give up on any phase after this long.
    #[arg(long, default_value = "1800")]
    timeout_seconds: u64,
}

/// The phases a run may leave out.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Optional {
    ChangePropagation,
    Outage,
}

/// Requests the bench itself makes to the resources counted in `apiserver_requests`.
#[derive(Default)]
struct OwnRequests(u64);

struct Bench {
    args: Args,
    env: TestEnv,
    server: TestServer,
    apps: Vec<String>,
    record_uids: Vec<String>,
    refresh: Duration,
    timeout: Duration,
    own: OwnRequests,
    /// Every KeeperSecret and managed Secret of the bench namespace, kept by one watch each:
    /// the bench's polls read these instead of LISTing (a LIST of 50,000 objects a second
    /// would load the API server more than the operator does).
    watched_keeper_secrets: Store<KeeperSecret>,
    watched_secrets: Store<Secret>,
    control_plane: Vec<(&'static str, u32)>,
}

/// The bench's result: what the JSON file holds and the table shows. Typed, so a renamed field
/// fails to compile wherever it is read. Each phase fills its part.
#[derive(Debug, Default, Serialize)]
struct Report {
    keeper_secrets: usize,
    credentials: usize,
    refresh_interval_seconds: f64,
    concurrency: usize,
    operator_binary: String,
    apply_seconds: f64,
    ready_seconds: f64,
    sync_latency_ms: SyncLatency,
    keeper_calls_cold_start: u64,
    keeper_calls_per_wave: f64,
    keeper_calls_between_waves: u64,
    steady_window: SteadyWindow,
    change_propagation_seconds: f64,
    outage: Outage,
    /// Requests at the API server during the steady waves (the bench makes none then).
    apiserver_requests_steady: u64,
    restart_keeper_up: Restart,
    restart_keeper_down: Restart,
    operator_rss_peak_mib: f64,
    operator_rss_steady_mib: f64,
    /// What the steady RSS is made of: heap and stacks vs the binary's resident code and data.
    operator_rss_steady_anon_mib: f64,
    operator_rss_steady_file_mib: f64,
    operator_cpu_seconds: f64,
    shards: usize,
    skipped_phases: Vec<Optional>,
    /// The largest single shard's peak RSS (the RSS figures above add up every shard).
    operator_rss_peak_largest_shard_mib: f64,
    /// CPU seconds per process over each phase (and the phase's wall time): who was busy.
    cpu_seconds_by_phase: BTreeMap<String, BTreeMap<String, f64>>,
    apiserver_requests: u64,
    apiserver_requests_by_verb: BTreeMap<String, u64>,
    bench_own_requests_subtracted: u64,
    /// Per phase, including the bench's own requests (its creates and once-a-second LISTs).
    apiserver_requests_by_phase: BTreeMap<String, BTreeMap<String, u64>>,
    raw_apiserver_seconds: f64,
    ready_to_raw_ratio: f64,
    raw_same_writes_seconds: f64,
    ready_to_same_writes_ratio: f64,
    load_average: LoadAverage,
}

#[derive(Debug, Default, Serialize)]
struct SyncLatency {
    p50: f64,
    p95: f64,
    p99: f64,
    resolution_ms: u64,
}

#[derive(Debug, Default, Serialize)]
struct SteadyWindow {
    waves: u32,
    keeper_requests_all_endpoints: u64,
    get_secret: u64,
}

#[derive(Debug, Default, Serialize)]
struct Outage {
    seconds: f64,
    keeper_calls_during: u64,
    keeper_calls_without_sharing: u64,
    all_secrets_kept: bool,
    all_ready_throughout: bool,
    recovery_seconds: f64,
}

/// A restart of the operator over the settled objects.
#[derive(Debug, Default, Serialize)]
struct Restart {
    /// From the restart until `/readyz` (the initial lists are in).
    ready_seconds: f64,
    /// From the restart until every KeeperSecret was reconciled once.
    settle_seconds: f64,
    secrets_rewritten: usize,
    statuses_rewritten: usize,
    keeper_calls: u64,
    /// Peak RSS of the restarted operator (all shards) until settled: it re-lists every object.
    operator_rss_peak_mib: f64,
    /// The operator's requests at the API server until settled, by verb (the bench's own
    /// LISTs before and after are not included).
    apiserver_requests: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
struct LoadAverage {
    start: String,
    end: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.keeper_secrets > 0 && args.credentials > 0,
        "N and C must be positive"
    );
    let refresh: Duration = args
        .refresh
        .parse::<kube::core::Duration>()
        .context("--refresh")?
        .into();
    let load_start = loadavg();
    let mut bench = Bench::start(args, refresh).await?;
    let mut fleet = bench.spawn_fleet().await?;
    let mut out = Report {
        keeper_secrets: bench.args.keeper_secrets,
        credentials: bench.args.credentials,
        shards: bench.args.shards,
        skipped_phases: bench.args.skip.clone(),
        refresh_interval_seconds: refresh.as_secs_f64(),
        concurrency: bench.args.concurrency,
        operator_binary: std::env::var("KEEPER_OPERATOR_BIN")
            .unwrap_or_else(|_| "target/debug".into()),
        ..Report::default()
    };

    let client = bench.env.cluster.client();
    let api_before = apiserver_counts(&client).await?;
    let mut phases = BTreeMap::new();
    let mut phase_start = api_before.1.clone();
    let pids = fleet.pids();
    let control_plane = bench.control_plane.clone();
    let mut cpu_start = CpuTimes::read(&control_plane, &pids);
    let mut cpu_phases = BTreeMap::new();
    let mut end_phase = async |name: &str| -> Result<()> {
        let now = apiserver_counts(&client).await?.1;
        phases.insert(name.to_string(), diff_by_verb(&phase_start, &now));
        phase_start = now;
        let cpu = CpuTimes::read(&control_plane, &pids);
        cpu_phases.insert(name.to_string(), cpu.since(&cpu_start));
        cpu_start = cpu;
        Ok(())
    };
    bench.cold_start(&mut out).await?;
    end_phase("cold_start").await?;
    fleet.ensure_running()?;
    bench.steady_waves(&mut out).await?;
    end_phase("steady_waves").await?;
    let steady = fleet.rss()?;
    if !bench.args.skip.contains(&Optional::ChangePropagation) {
        bench.change_propagation(&mut out).await?;
        end_phase("change_propagation").await?;
    }
    if !bench.args.skip.contains(&Optional::Outage) {
        bench.outage(&mut out).await?;
        end_phase("outage").await?;
    }
    fleet.ensure_running()?;
    out.apiserver_requests_steady = phases
        .get("steady_waves")
        .map_or(0, |verbs| verbs.values().sum());
    let api_after = apiserver_counts(&client).await?;
    // The kernel updates VmHWM lazily (not on every page fault), so an earlier VmRSS reading
    // can exceed a later VmHWM: the peak is the highest of all readings.
    let last = fleet.rss()?;
    out.operator_rss_peak_mib = round2(last.peak.max(steady.peak).max(steady.now));
    out.operator_rss_peak_largest_shard_mib = round2(last.largest_peak.max(steady.largest_peak));
    out.operator_rss_steady_mib = round2(steady.now);
    out.operator_rss_steady_anon_mib = round2(steady.anon);
    out.operator_rss_steady_file_mib = round2(steady.file);
    out.operator_cpu_seconds = round2(fleet.cpu_seconds()?);
    out.apiserver_requests = (api_after.0 - api_before.0).saturating_sub(bench.own.0);
    out.apiserver_requests_by_verb = diff_by_verb(&api_before.1, &api_after.1);
    out.bench_own_requests_subtracted = bench.own.0;
    out.apiserver_requests_by_phase = phases;
    out.cpu_seconds_by_phase = cpu_phases;
    out.restart_keeper_up = bench.restart(&mut fleet, true).await?;
    out.restart_keeper_down = bench.restart(&mut fleet, false).await?;
    drop(fleet);

    bench.raw_apiserver(&mut out).await?;
    bench.raw_same_writes(&mut out).await?;
    out.load_average = LoadAverage {
        start: load_start,
        end: loadavg(),
    };
    bench.cleanup().await;

    // Through a JSON value, whose keys are sorted: the file keeps the key order it always had.
    let text = serde_json::to_string_pretty(&serde_json::to_value(&out)?)?;
    if let Some(dir) = bench.args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&bench.args.out, format!("{text}\n"))?;
    print_table(&out);
    eprintln!("wrote {}", bench.args.out.display());
    let png = bench.args.out.with_extension("png");
    chart(&png, &out)?;
    eprintln!("wrote {}", png.display());
    Ok(())
}

impl Bench {
    async fn start(args: Args, refresh: Duration) -> Result<Bench> {
        // As users install it: with the chart's own API priority level.
        let env = TestEnv::with_values("bench", &[("flowControl.enabled", "true")]).await?;
        let mut vault = VaultSpec::generated(RECORDS);
        let folder = vault.shared_folders[0].uid.clone();
        let apps: Vec<String> = (0..args.credentials).map(|c| format!("app-{c}")).collect();
        vault.apps = apps
            .iter()
            .map(|name| AppSpec {
                name: name.clone(),
                title: None,
                shared_folders: vec![folder.clone()],
                records: Vec::new(),
            })
            .collect();
        let record_uids = vault.records.iter().map(|r| r.uid.clone()).collect();
        let server = TestServer::start(vault).await?;
        std::fs::create_dir_all(env.dir())?;
        for (c, app) in apps.iter().enumerate() {
            let config = server.bound_config(app)?;
            env.create_credential_secret(&format!("ksm-cred-{c}"), &config)
                .await?;
        }
        let timeout = Duration::from_secs(args.timeout_seconds);
        let watched_keeper_secrets = watch(env.api(), watcher::Config::default()).await?;
        let watched_secrets =
            watch(env.api(), watcher::Config::default().labels(SECRET_LABEL)).await?;
        let control_plane = control_plane_pids();
        Ok(Bench {
            args,
            env,
            server,
            apps,
            record_uids,
            refresh,
            timeout,
            own: OwnRequests::default(),
            watched_keeper_secrets,
            watched_secrets,
            control_plane,
        })
    }

    /// Starts the operator, one process per shard, and waits until every one is ready.
    async fn spawn_fleet(&self) -> Result<Fleet> {
        let mut shards = Vec::with_capacity(self.args.shards);
        for k in 0..self.args.shards {
            let mut operator = self
                .env
                .operator_for(&self.server)?
                .arg(format!("--concurrency={}", self.args.concurrency))
                .arg("--log-level=warn")
                // The bench reads the reconcile counter from /metrics; only it can reach the port.
                .arg("--metrics-auth=false");
            if self.args.shards > 1 {
                operator = operator.arg(format!("--watch-label-selector={SHARD_LABEL}=shard-{k}"));
            }
            shards.push(operator.spawn()?);
        }
        for operator in &mut shards {
            operator.wait_ready(Duration::from_secs(120)).await?;
        }
        Ok(Fleet(shards))
    }

    /// CPU times of the control plane and of `operators` now.
    fn cpu(&self, operators: &[u32]) -> CpuTimes {
        CpuTimes::read(&self.control_plane, operators)
    }

    fn keeper_secrets(&self) -> Api<KeeperSecret> {
        self.env.api()
    }

    fn app_calls(&self) -> Vec<u64> {
        let counters = self.server.counters();
        self.apps.iter().map(|a| counters.app(a)).collect()
    }

    fn get_secret_calls(&self) -> u64 {
        self.server.counters().endpoint("get_secret")
    }

    /// Lists every KeeperSecret (counted as the bench's own request).
    async fn list_all(&mut self) -> Result<Vec<KeeperSecret>> {
        self.own.0 += 1;
        Ok(self
            .keeper_secrets()
            .list(&ListParams::default())
            .await?
            .items)
    }

    async fn list_secrets(&mut self) -> Result<Vec<Secret>> {
        self.own.0 += 1;
        let api: Api<Secret> = self.env.api();
        Ok(api
            .list(&ListParams::default().labels(SECRET_LABEL))
            .await?
            .items)
    }

    /// Checks the watched KeeperSecrets every 100 ms until `done` holds for all N.
    async fn wait_all(
        &mut self,
        what: &str,
        done: impl Fn(&KeeperSecret) -> bool,
    ) -> Result<Vec<Arc<KeeperSecret>>> {
        let n = self.args.keeper_secrets;
        let deadline = Instant::now() + self.timeout;
        loop {
            let all = self.watched_keeper_secrets.state();
            let count = all.iter().filter(|ks| done(ks)).count();
            if all.len() == n && count == n {
                return Ok(all);
            }
            ensure!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {count}/{n}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn cold_start(&mut self, out: &mut Report) -> Result<()> {
        let n = self.args.keeper_secrets;
        let calls_before = self.get_secret_calls();
        let api = self.keeper_secrets();
        let start = Instant::now();
        let docs: Vec<Value> = (0..n).map(|i| self.manifest(i)).collect();
        concurrently(docs, self.args.concurrency, |doc| {
            let api = api.clone();
            async move {
                let ks: KeeperSecret = serde_json::from_value(doc)?;
                api.create(&PostParams::default(), &ks).await?;
                Ok(())
            }
        })
        .await?;
        self.own.0 += n as u64;
        let applied = start.elapsed();
        let all = self.wait_all("all Ready", is_synced).await?;
        let ready = start.elapsed();
        let mut latencies: Vec<f64> = all.iter().filter_map(|ks| sync_latency_ms(ks)).collect();
        ensure!(latencies.len() == n, "some KeeperSecrets lack timestamps");
        latencies.sort_by(f64::total_cmp);
        out.apply_seconds = round2(applied.as_secs_f64());
        out.ready_seconds = round2(ready.as_secs_f64());
        out.sync_latency_ms = SyncLatency {
            p50: percentile(&latencies, 50.0),
            p95: percentile(&latencies, 95.0),
            p99: percentile(&latencies, 99.0),
            resolution_ms: 1000,
        };
        out.keeper_calls_cold_start = self.get_secret_calls() - calls_before;
        Ok(())
    }

    /// Samples per-credential counters over `waves` refresh intervals. Each shard reads each
    /// credential once a wave: a call that follows the same credential's S-th previous call (S
    /// shards) by less than half an interval is not a new wave, it is counted "between waves".
    async fn steady_waves(&mut self, out: &mut Report) -> Result<()> {
        // Let the cold start's jittered first refreshes line up before measuring.
        tokio::time::sleep(self.refresh).await;
        let window = self.refresh * self.args.waves;
        let start = Instant::now();
        let mut last = self.app_calls();
        let shards = self.args.shards;
        let mut last_calls: Vec<VecDeque<Instant>> = vec![VecDeque::new(); self.apps.len()];
        let (mut total, mut between) = (0u64, 0u64);
        let get_before = self.get_secret_calls();
        while start.elapsed() < window {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.app_calls();
            for (c, (&new, old)) in now.iter().zip(last.iter_mut()).enumerate() {
                for _ in *old..new {
                    total += 1;
                    let t = Instant::now();
                    let calls = &mut last_calls[c];
                    if calls.len() == shards {
                        if calls.front().is_some_and(|p| t - *p < self.refresh / 2) {
                            between += 1;
                        }
                        calls.pop_front();
                    }
                    calls.push_back(t);
                }
                *old = new;
            }
        }
        let get_secret = self.get_secret_calls() - get_before;
        let waves = f64::from(self.args.waves);
        out.keeper_calls_per_wave = round2(get_secret as f64 / waves);
        out.keeper_calls_between_waves = between;
        out.steady_window = SteadyWindow {
            waves: self.args.waves,
            keeper_requests_all_endpoints: total,
            get_secret,
        };
        Ok(())
    }

    /// Edits record 0 (mapped by every KeeperSecret under key `shared`) and waits until every
    /// managed Secret holds the new value.
    async fn change_propagation(&mut self, out: &mut Report) -> Result<()> {
        let uid = self.record_uids[0].clone();
        let value = format!("rotated-{}", std::process::id());
        let record = self.server.record(&uid)?.password(&value);
        let start = Instant::now();
        self.server.set_record(record)?;
        let n = self.args.keeper_secrets;
        let deadline = start + self.timeout;
        loop {
            let done = self
                .watched_secrets
                .state()
                .iter()
                .filter(|s| data_value(s, "shared").as_deref() == Some(value.as_str()))
                .count();
            if done == n {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "change reached {done}/{n} Secrets"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        out.change_propagation_seconds = round2(start.elapsed().as_secs_f64());
        Ok(())
    }

    /// Keeper refuses service for `outage_waves` intervals; every Secret must stay unchanged and
    /// every KeeperSecret Ready (from the last good copy), then recover once Keeper is back.
    async fn outage(&mut self, out: &mut Report) -> Result<()> {
        let before = secret_data(&self.list_secrets().await?);
        let n = self.args.keeper_secrets;
        ensure!(
            before.len() == n,
            "{} of {n} Secrets before the outage",
            before.len()
        );
        let calls_before = self.get_secret_calls();
        let duration = self.refresh * self.args.outage_waves;
        self.server.faults().set_down(DownMode::Unavailable);
        let start = Instant::now();
        let mut kept = true;
        let mut ready_throughout = true;
        while start.elapsed() < duration {
            tokio::time::sleep(Duration::from_millis(500)).await;
            kept &= secret_data(&self.watched_secrets.state()) == before;
            ready_throughout &= self
                .watched_keeper_secrets
                .state()
                .iter()
                .all(|ks| is_ready(ks));
        }
        let calls = self.get_secret_calls() - calls_before;
        self.server.faults().set_down(DownMode::Up);
        let back = Instant::now();
        self.wait_all("recovery to Synced", is_synced).await?;
        out.outage = Outage {
            seconds: round2(duration.as_secs_f64()),
            keeper_calls_during: calls,
            keeper_calls_without_sharing: n as u64 * u64::from(self.args.outage_waves),
            all_secrets_kept: kept && secret_data(&self.list_secrets().await?).len() == n,
            all_ready_throughout: ready_throughout,
            recovery_seconds: round2(back.elapsed().as_secs_f64()),
        };
        Ok(())
    }

    /// Restarts the operator over the settled objects (with Keeper answering, or down so the
    /// new process serves the sealed copy) and measures what settling costs: a restart should
    /// rewrite no Secret, and with Keeper up no status.
    async fn restart(&mut self, fleet: &mut Fleet, keeper_up: bool) -> Result<Restart> {
        let n = self.args.keeper_secrets;
        let secrets = versions(&self.list_secrets().await?);
        let statuses = versions(&self.list_all().await?);
        ensure!(secrets.len() == n, "{} of {n} Secrets", secrets.len());
        if !keeper_up {
            self.server.faults().set_down(DownMode::Unavailable);
        }
        let calls_before = self.get_secret_calls();
        let client = self.env.cluster.client();
        let api_before = apiserver_counts(&client).await?.1;
        fleet.kill();
        let start = Instant::now();
        *fleet = self.spawn_fleet().await?;
        let ready = start.elapsed();
        let deadline = start + self.timeout;
        loop {
            if fleet.reconciles().await? >= n as f64 {
                break;
            }
            ensure!(Instant::now() < deadline, "the restart did not settle");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let settled = start.elapsed();
        let rss = fleet.rss()?;
        let requests = diff_by_verb(&api_before, &apiserver_counts(&client).await?.1);
        let keeper_calls = self.get_secret_calls() - calls_before;
        let rewritten = |before: &BTreeMap<String, String>, after: BTreeMap<String, String>| {
            after
                .iter()
                .filter(|(name, rv)| before.get(*name) != Some(rv))
                .count()
        };
        let restart = Restart {
            ready_seconds: round2(ready.as_secs_f64()),
            settle_seconds: round2(settled.as_secs_f64()),
            secrets_rewritten: rewritten(&secrets, versions(&self.list_secrets().await?)),
            statuses_rewritten: rewritten(&statuses, versions(&self.list_all().await?)),
            keeper_calls,
            operator_rss_peak_mib: round2(rss.peak.max(rss.now)),
            apiserver_requests: requests,
        };
        if !keeper_up {
            self.server.faults().set_down(DownMode::Up);
            self.wait_all("recovery after the restart", is_synced)
                .await?;
        }
        Ok(restart)
    }

    /// The limit: N Secrets created straight at the API server with the same concurrency.
    async fn raw_apiserver(&mut self, out: &mut Report) -> Result<()> {
        let ns = self.env.cluster.fresh_namespace("bench-raw").await?;
        let api: Api<Secret> = Api::namespaced(self.env.cluster.client(), &ns);
        let n = self.args.keeper_secrets;
        let cpu = self.cpu(&[]);
        let start = Instant::now();
        concurrently(0..n, self.args.concurrency, |i| {
            let api = api.clone();
            async move {
                let secret = raw_secret(&format!("raw-{i:05}"));
                api.create(&PostParams::default(), &secret).await?;
                Ok(())
            }
        })
        .await?;
        let (raw, ratio) = baseline(out, start.elapsed());
        let cpu = self.cpu(&[]).since(&cpu);
        out.cpu_seconds_by_phase.insert("raw_secrets".into(), cpu);
        out.raw_apiserver_seconds = raw;
        out.ready_to_raw_ratio = ratio;
        delete_namespace(&self.env.cluster.client(), &ns).await;
        Ok(())
    }

    /// The limit for the same writes: what a cold start cannot do without (the user's create of
    /// each KeeperSecret, the create of its Secret, one status write), issued by a minimal client
    /// one object after another at the same concurrency, in a namespace no operator watches.
    async fn raw_same_writes(&mut self, out: &mut Report) -> Result<()> {
        let client = self.env.cluster.client();
        let ns = self.env.cluster.fresh_namespace("bench-raw-same").await?;
        let keeper_secrets: Api<KeeperSecret> = Api::namespaced(client.clone(), &ns);
        let secrets: Api<Secret> = Api::namespaced(client, &ns);
        let docs: Vec<Value> = (0..self.args.keeper_secrets)
            .map(|i| self.manifest(i))
            .collect();
        let cpu = self.cpu(&[]);
        let start = Instant::now();
        concurrently(docs, self.args.concurrency, |doc| {
            let (keeper_secrets, secrets) = (keeper_secrets.clone(), secrets.clone());
            async move {
                let ks: KeeperSecret = serde_json::from_value(doc)?;
                let name = ks.metadata.name.clone().unwrap_or_default();
                keeper_secrets.create(&PostParams::default(), &ks).await?;
                secrets
                    .create(&PostParams::default(), &raw_secret(&name))
                    .await?;
                let status = json!({
                    "apiVersion": "keeper-operator.dev/v1alpha1",
                    "kind": "KeeperSecret",
                    "status": {
                        "observedGeneration": 1,
                        "conditions": [{
                            "type": "Ready", "status": "True", "reason": "Synced",
                            "message": "2 keys from 2 records",
                            "lastTransitionTime": "2026-01-01T00:00:00Z",
                            "observedGeneration": 1
                        }],
                        "secretName": name,
                    }
                });
                keeper_secrets
                    .patch_status(&name, &PatchParams::apply("bench"), &Patch::Apply(status))
                    .await?;
                Ok(())
            }
        })
        .await?;
        let (raw, ratio) = baseline(out, start.elapsed());
        let cpu = self.cpu(&[]).since(&cpu);
        out.cpu_seconds_by_phase
            .insert("raw_same_writes".into(), cpu);
        out.raw_same_writes_seconds = raw;
        out.ready_to_same_writes_ratio = ratio;
        delete_namespace(&self.env.cluster.client(), &ns).await;
        Ok(())
    }

    async fn cleanup(&self) {
        let client = self.env.cluster.client();
        delete_namespace(&client, &self.env.app_namespace).await;
        delete_namespace(&client, &self.env.chart.namespace).await;
    }

    fn manifest(&self, i: usize) -> Value {
        let name = format!("bench-{i:05}");
        let record = &self.record_uids[i % self.record_uids.len()];
        let shared = &self.record_uids[0];
        let labels = if self.args.shards > 1 {
            json!({ SHARD_LABEL: format!("shard-{}", i % self.args.shards) })
        } else {
            json!({})
        };
        json!({
            "apiVersion": "keeper-operator.dev/v1alpha1",
            "kind": "KeeperSecret",
            "metadata": { "name": name, "labels": labels },
            "spec": {
                "auth": { "secretRef": {
                    "name": format!("ksm-cred-{}", i % self.apps.len()), "key": "config" } },
                "refreshInterval": self.args.refresh,
                "target": { "name": name },
                "data": [
                    { "key": "password", "notation": format!("keeper://{record}/field/password") },
                    { "key": "shared", "notation": format!("keeper://{shared}/field/password") }
                ]
            }
        })
    }
}

/// Runs `write` for every item, `concurrency` at a time, stopping at the first error.
async fn concurrently<T, F, Fut>(
    items: impl IntoIterator<Item = T>,
    concurrency: usize,
    write: F,
) -> Result<()>
where
    F: FnMut(T) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    stream::iter(items)
        .map(write)
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// A raw baseline's time and the operator's ready time as a ratio to it, both rounded.
fn baseline(out: &Report, took: Duration) -> (f64, f64) {
    let raw = took.as_secs_f64();
    (round2(raw), round2(out.ready_seconds / raw))
}

/// A Secret shaped like the ones the operator writes in the bench (two keys).
fn raw_secret(name: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([
            (
                "password".into(),
                ByteString(format!("password-{name}").into()),
            ),
            ("shared".into(), ByteString(b"password-0".to_vec())),
        ])),
        ..Secret::default()
    }
}

async fn delete_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
}

/// Each object's `resourceVersion` by name: it moves with every write, status included.
fn versions<K: kube::Resource>(objects: &[K]) -> BTreeMap<String, String> {
    objects
        .iter()
        .map(|o| {
            let meta = o.meta();
            let name = meta.name.clone().unwrap_or_default();
            (name, meta.resource_version.clone().unwrap_or_default())
        })
        .collect()
}

/// Reconciles so far, from the operator's `/metrics` text, over every outcome.
fn reconciles(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("keeper_operator_reconciles_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn is_ready(ks: &KeeperSecret) -> bool {
    ks.ready_condition().is_some_and(|c| c.status == "True")
}

fn is_synced(ks: &KeeperSecret) -> bool {
    ks.ready_condition()
        .is_some_and(|c| c.status == "True" && c.reason == "Synced")
}

/// Ready lastTransitionTime minus creationTimestamp (both whole seconds in the API).
fn sync_latency_ms(ks: &KeeperSecret) -> Option<f64> {
    let created = ks.metadata.creation_timestamp.as_ref()?.0;
    let ready = ks.ready_condition()?.last_transition_time.0;
    Some(ready.duration_since(created).as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn data_value(secret: &Secret, key: &str) -> Option<String> {
    let v = secret.data.as_ref()?.get(key)?;
    Some(String::from_utf8_lossy(&v.0).into_owned())
}

fn secret_data<S: Borrow<Secret>>(secrets: &[S]) -> BTreeMap<String, BTreeMap<String, ByteString>> {
    secrets
        .iter()
        .map(|s| {
            let s = s.borrow();
            (
                s.metadata.name.clone().unwrap_or_default(),
                s.data.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// Resources whose requests are counted: what the operator reads and writes.
const COUNTED: [&str; 3] = [
    "resource=\"keepersecrets\"",
    "resource=\"secrets\"",
    "resource=\"events\"",
];

/// The API server's `apiserver_request_total` summed over [`COUNTED`] resources, and by verb.
async fn apiserver_counts(client: &Client) -> Result<(u64, BTreeMap<String, u64>)> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    let mut total = 0u64;
    let mut by_verb = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        if !COUNTED.iter().any(|r| labels.contains(r)) {
            continue;
        }
        let v = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        total += v;
        let verb = label(labels, "verb").unwrap_or_default();
        let resource = label(labels, "resource").unwrap_or_default();
        let sub = label(labels, "subresource").unwrap_or_default();
        let key = if sub.is_empty() {
            format!("{verb} {resource}")
        } else {
            format!("{verb} {resource}/{sub}")
        };
        *by_verb.entry(key).or_default() += v;
    }
    Ok((total, by_verb))
}

fn label(labels: &str, name: &str) -> Option<String> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let end = labels[start..].find('"')?;
    Some(labels[start..start + end].to_string())
}

fn diff_by_verb(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Starts a watch of every `K` that `config` selects in the bench namespace, kept in memory
/// by a background task, and waits for its first list.
async fn watch<K>(api: Api<K>, config: watcher::Config) -> Result<Store<K>>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let events = watcher(api, config).default_backoff().reflect(writer);
    tokio::spawn(events.for_each(|_| async {}));
    store.wait_until_ready().await?;
    Ok(store)
}

/// The PIDs of the control plane started by e2e/cluster.sh in `E2E_STATE_DIR` (none when the
/// bench runs against another control plane: then only the operator's CPU is reported).
fn control_plane_pids() -> Vec<(&'static str, u32)> {
    let Ok(state) = std::env::var("E2E_STATE_DIR") else {
        return Vec::new();
    };
    CONTROL_PLANE
        .iter()
        .filter_map(|name| {
            let pid = std::fs::read_to_string(format!("{state}/run/{name}.pid")).ok()?;
            Some((*name, pid.trim().parse().ok()?))
        })
        .collect()
}

/// CPU seconds (user + system) of each process sharing the machine, read at one moment.
struct CpuTimes(BTreeMap<String, f64>);

impl CpuTimes {
    /// The control plane, the operator processes (together, as "operator") and the bench.
    fn read(control_plane: &[(&'static str, u32)], operators: &[u32]) -> CpuTimes {
        let mut times: BTreeMap<String, f64> = control_plane
            .iter()
            .filter_map(|(name, pid)| Some((name.to_string(), cpu_seconds(*pid).ok()?)))
            .collect();
        if !operators.is_empty() {
            let operator = operators.iter().filter_map(|p| cpu_seconds(*p).ok()).sum();
            times.insert("operator".into(), operator);
        }
        if let Ok(bench) = cpu_seconds(std::process::id()) {
            times.insert("bench".into(), bench);
        }
        times.insert("wall".into(), wall_seconds());
        CpuTimes(times)
    }

    /// What each process used since `start` (and the wall time between), rounded.
    fn since(&self, start: &CpuTimes) -> BTreeMap<String, f64> {
        self.0
            .iter()
            .filter_map(|(name, now)| Some((name.clone(), round2(now - start.0.get(name)?))))
            .collect()
    }
}

/// Seconds since the Unix epoch, for phase wall times.
fn wall_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The operator under test: one process, or one per shard.
struct Fleet(Vec<Operator>);

impl Fleet {
    fn pids(&self) -> Vec<u32> {
        self.0.iter().map(Operator::pid).collect()
    }

    fn ensure_running(&mut self) -> Result<()> {
        self.0.iter_mut().try_for_each(Operator::ensure_running)
    }

    fn kill(&mut self) {
        self.0.iter_mut().for_each(Operator::kill);
    }

    /// Reconciles so far, over every shard.
    async fn reconciles(&self) -> Result<f64> {
        let mut total = 0.0;
        for operator in &self.0 {
            let (code, body) = operator.get("/metrics", None).await?;
            ensure!(code == 200, "GET /metrics answered {code}");
            total += reconciles(&body);
        }
        Ok(total)
    }

    /// Resident memory of all shards together (and the largest shard's peak).
    fn rss(&self) -> Result<Rss> {
        let mut sum = Rss::default();
        for pid in self.pids() {
            let one = rss_mib(pid)?;
            sum.now += one.now;
            sum.peak += one.peak;
            sum.anon += one.anon;
            sum.file += one.file;
            sum.largest_peak = sum.largest_peak.max(one.peak).max(one.now);
        }
        Ok(sum)
    }

    fn cpu_seconds(&self) -> Result<f64> {
        self.pids().into_iter().map(cpu_seconds).sum()
    }
}

/// Resident memory, in MiB, from /proc/<pid>/status.
#[derive(Default)]
struct Rss {
    now: f64,
    peak: f64,
    anon: f64,
    file: f64,
    largest_peak: f64,
}

fn rss_mib(pid: u32) -> Result<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("{key} in /proc/{pid}/status"))?;
        let v: f64 = line.split_whitespace().nth(1).context("value")?.parse()?;
        Ok(v / 1024.0)
    };
    let peak = kib("VmHWM:")?;
    Ok(Rss {
        now: kib("VmRSS:")?,
        peak,
        anon: kib("RssAnon:")?,
        file: kib("RssFile:")?,
        largest_peak: peak,
    })
}

/// utime + stime of a process, from /proc/<pid>/stat, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').context("stat format")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    Ok(ticks / hz)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn print_table(r: &Report) {
    let unless_skipped = |phase: Optional, v: Value| {
        if r.skipped_phases.contains(&phase) {
            json!("skipped")
        } else {
            v
        }
    };
    let rows = [
        ("KeeperSecrets", json!(r.keeper_secrets)),
        ("credentials", json!(r.credentials)),
        ("ready (s)", json!(r.ready_seconds)),
        ("raw API server (s)", json!(r.raw_apiserver_seconds)),
        ("ready / raw", json!(r.ready_to_raw_ratio)),
        ("raw same writes (s)", json!(r.raw_same_writes_seconds)),
        (
            "ready / raw same writes",
            json!(r.ready_to_same_writes_ratio),
        ),
        ("sync latency p50 (ms)", json!(r.sync_latency_ms.p50)),
        ("sync latency p95 (ms)", json!(r.sync_latency_ms.p95)),
        ("sync latency p99 (ms)", json!(r.sync_latency_ms.p99)),
        (
            "change propagation (s)",
            unless_skipped(
                Optional::ChangePropagation,
                json!(r.change_propagation_seconds),
            ),
        ),
        ("Keeper calls cold start", json!(r.keeper_calls_cold_start)),
        ("Keeper calls per wave", json!(r.keeper_calls_per_wave)),
        (
            "Keeper calls between waves",
            json!(r.keeper_calls_between_waves),
        ),
        (
            "outage: Keeper calls",
            unless_skipped(Optional::Outage, json!(r.outage.keeper_calls_during)),
        ),
        (
            "outage: Secrets kept",
            unless_skipped(Optional::Outage, json!(r.outage.all_secrets_kept)),
        ),
        (
            "outage: recovery (s)",
            unless_skipped(Optional::Outage, json!(r.outage.recovery_seconds)),
        ),
        ("steady: API requests", json!(r.apiserver_requests_steady)),
        (
            "restart: settle (s)",
            json!(r.restart_keeper_up.settle_seconds),
        ),
        (
            "restart: Secrets/statuses rewritten",
            json!(format!(
                "{} / {}",
                r.restart_keeper_up.secrets_rewritten, r.restart_keeper_up.statuses_rewritten
            )),
        ),
        (
            "restart: RSS peak (MiB)",
            json!(r.restart_keeper_up.operator_rss_peak_mib),
        ),
        (
            "restart, Keeper down: settle (s)",
            json!(r.restart_keeper_down.settle_seconds),
        ),
        (
            "restart, Keeper down: rewritten",
            json!(format!(
                "{} / {}",
                r.restart_keeper_down.secrets_rewritten, r.restart_keeper_down.statuses_rewritten
            )),
        ),
        ("operator RSS peak (MiB)", json!(r.operator_rss_peak_mib)),
        (
            "operator RSS steady (MiB)",
            json!(r.operator_rss_steady_mib),
        ),
        (
            "  of it heap+stacks (MiB)",
            json!(r.operator_rss_steady_anon_mib),
        ),
        (
            "  of it code+data (MiB)",
            json!(r.operator_rss_steady_file_mib),
        ),
        ("operator CPU (s)", json!(r.operator_cpu_seconds)),
        ("shards", json!(r.shards)),
        (
            "largest shard's RSS peak (MiB)",
            json!(r.operator_rss_peak_largest_shard_mib),
        ),
        ("CPU in cold start (s)", cpu_row(r, "cold_start")),
        ("CPU in raw same writes (s)", cpu_row(r, "raw_same_writes")),
        ("API server requests", json!(r.apiserver_requests)),
        ("load average start", json!(r.load_average.start)),
        ("load average end", json!(r.load_average.end)),
    ];
    // Values as the JSON file shows them (a whole f64 keeps its ".0", NaN is null).
    for (name, v) in rows {
        let shown = match v {
            Value::String(s) => s,
            other => other.to_string(),
        };
        println!("{name:<36} {shown}");
    }
}

/// One phase's CPU seconds per process, for the table ("process seconds, ...").
fn cpu_row(r: &Report, phase: &str) -> Value {
    let shown = r.cpu_seconds_by_phase.get(phase).map(|cpu| {
        cpu.iter()
            .map(|(process, seconds)| format!("{process} {seconds}"))
            .collect::<Vec<_>>()
            .join(", ")
    });
    json!(shown.unwrap_or_default())
}

/// A PNG of the cold start against its baselines, captioned with the memory and Keeper figures.
fn chart(path: &std::path::Path, r: &Report) -> Result<()> {
    let caption = format!(
        "{} KeeperSecrets on {} credential(s): RSS peak {:.1} MiB, {} Keeper calls per wave",
        r.keeper_secrets as f64,
        r.credentials as f64,
        r.operator_rss_peak_mib,
        r.keeper_calls_per_wave,
    );
    let bars = [
        ("operator: all Ready", r.ready_seconds),
        ("raw: the same writes", r.raw_same_writes_seconds),
        ("raw: Secret creates", r.raw_apiserver_seconds),
        ("bench: KeeperSecret creates", r.apply_seconds),
    ]
    .map(|(label, value)| (label.to_string(), value));
    keeper_e2e::plot::bars(path, &caption, "seconds", &bars)
}
