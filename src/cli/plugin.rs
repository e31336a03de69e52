//! `kubectl keeper …`: the operator binary installed as `kubectl-keeper` (a kubectl plugin).
//!
//! `status`, `refresh` and `why` read and annotate KeeperSecrets with the caller's own
//! kubeconfig; `render` is a dry run against Keeper with a local KSM config that prints key
//! names, sizes and keyed hashes, never a value.

use std::borrow::Cow;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use crate::api::conditions;
use crate::api::{
    ClusterKeeperStore, ConditionStatus, ConditionType, FORCE_SYNC_ANNOTATION, KeeperSecret,
};
use crate::cli::keeper::{load_config_text, print_warnings};
use crate::error::Error;
use crate::ksm::record::{KeeperFile, Vault};
use crate::ksm::{ClientOptions, KsmClient, KsmConfig, Query};
use crate::sync::allowlist::AllowList;
use crate::sync::build;
use crate::sync::desired::{Desired, HashKey};
use crate::sync::mapping::Bytes;

/// KeeperSecrets from the command line: status, refresh, render, why.
#[derive(Debug, clap::Parser)]
#[command(name = "kubectl keeper", version)]
pub struct PluginCli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// Subcommands of `kubectl keeper`.
#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Every KeeperSecret with Ready, reason, staleness and the age of its data.
    Status {
        /// In every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Ask for a sync now (the force-sync annotation) and wait until it is answered.
    Refresh {
        /// The KeeperSecret.
        name: String,
        /// How long to wait for the answer.
        #[arg(long, default_value = "60s")]
        timeout: kube::core::Duration,
    },
    /// Dry run: what a KeeperSecret manifest would write, as key names, sizes and keyed hashes.
    ///
    /// Runs the operator's checks (allow-list, undecryptable data, deletion policy, decoding,
    /// template, size limit) and fails with the reason the operator would report. Reads nothing
    /// from the cluster: templateFrom is refused, a storeRef's allow-list applies only with
    /// --store, and the target Secret's ownership is not checked.
    Render {
        /// The KeeperSecret manifest (YAML or JSON).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// KSM config file (JSON or base64) [default: $KSM_CONFIG].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// PEM file with extra CA certificates to trust for the Keeper endpoint.
        #[arg(long, value_name = "PEM")]
        ca_file: Option<PathBuf>,
        /// The ClusterKeeperStore manifest (YAML or JSON) the KeeperSecret's storeRef names:
        /// render reads nothing from the cluster, so only with it does the store's allow-list
        /// apply; without it, every record the local config reads is allowed.
        #[arg(long, value_name = "FILE")]
        store: Option<PathBuf>,
    },
    /// Why a KeeperSecret is in its state: its conditions and latest events, in plain words.
    Why {
        /// The KeeperSecret.
        name: String,
    },
}

/// Runs a `kubectl keeper` subcommand, writing to stdout.
pub async fn run_plugin(cli: PluginCli) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if let PluginCommand::Render {
        file,
        config,
        ca_file,
        store,
    } = cli.command
    {
        return render(
            &file,
            config.as_ref(),
            ca_file.as_ref(),
            store.as_ref(),
            &mut out,
        )
        .await;
    }
    let client = Client::try_default()
        .await
        .context("connecting to the cluster (kubeconfig)")?;
    let namespace = cli
        .namespace
        .unwrap_or_else(|| client.default_namespace().to_string());
    let api: Api<KeeperSecret> = Api::namespaced(client.clone(), &namespace);
    match cli.command {
        PluginCommand::Status { all_namespaces } => {
            let api = if all_namespaces {
                Api::all(client)
            } else {
                api
            };
            let list = api.list(&ListParams::default()).await?.items;
            write!(out, "{}", status_table(&list, Timestamp::now()))?;
        }
        PluginCommand::Refresh { name, timeout } => {
            let answer = refresh(&api, &name, timeout.into()).await?;
            writeln!(out, "{answer}")?;
        }
        PluginCommand::Why { name } => {
            let ks = api.get(&name).await?;
            let events: Api<Event> = Api::namespaced(client, &namespace);
            let selector = format!("involvedObject.kind=KeeperSecret,involvedObject.name={name}");
            let mut events = events
                .list(&ListParams::default().fields(&selector))
                .await?
                .items;
            events.sort_by_key(event_time);
            write!(out, "{}", explain(&ks, &events))?;
        }
        PluginCommand::Render { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// One line per KeeperSecret: namespace, name, Ready, reason, Stale, data age, Secret.
pub fn status_table(list: &[KeeperSecret], now: Timestamp) -> String {
    let mut rows = vec![
        [
            "NAMESPACE",
            "NAME",
            "READY",
            "REASON",
            "STALE",
            "DATA AGE",
            "SECRET",
        ]
        .map(String::from),
    ];
    for ks in list {
        let status = ks.status.clone().unwrap_or_default();
        let condition = |type_| conditions::find(&status.conditions, type_);
        let ready = condition(ConditionType::Ready);
        let age = status.last_sync_time.as_ref().map(|t| {
            let secs = now.duration_since(t.0).as_secs().max(0);
            short_age(Duration::from_secs(secs.unsigned_abs()))
        });
        rows.push([
            ks.namespace().unwrap_or_default(),
            ks.name_any(),
            ready
                .map_or(ConditionStatus::Unknown.as_str(), |c| c.status.as_str())
                .to_string(),
            ready.map_or("", |c| c.reason.as_str()).to_string(),
            condition(ConditionType::Stale)
                .map_or("", |c| c.status.as_str())
                .to_string(),
            age.unwrap_or_else(|| "-".into()),
            ks.target_name(),
        ]);
    }
    table(&rows)
}

/// Text from the cluster (names, reasons, messages, events: anyone who may write them chose
/// them), made safe to print on a terminal: control characters and bidirectional overrides
/// become visible escapes, so nothing read can move the cursor, recolour or retitle the
/// terminal, or forge a line of output.
fn printable(s: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Left-aligned columns, three spaces apart, as kubectl prints them.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let rows: Vec<[String; N]> = rows
        .iter()
        .map(|r| r.clone().map(|cell| printable(&cell).into_owned()))
        .collect();
    let rows = &rows;
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        text.push_str(cells.join("   ").trim_end());
        text.push('\n');
    }
    text
}

/// kubectl's age format: `42s`, `5m`, `3h`, `2d`.
fn short_age(age: Duration) -> String {
    let s = age.as_secs();
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Sets the force-sync annotation to a new value and waits until the status answers it.
async fn refresh(api: &Api<KeeperSecret>, name: &str, timeout: Duration) -> anyhow::Result<String> {
    let request = Timestamp::now().to_string();
    let patch = serde_json::json!({"metadata": {"annotations": {FORCE_SYNC_ANNOTATION: request}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let ks = api.get(name).await?;
        let handled = ks
            .status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.as_deref());
        // With Flux's annotation also set, the status joins both values.
        if handled.is_some_and(|h| h.split(',').any(|v| v == request)) {
            let ready = ks.ready_condition();
            return Ok(format!(
                "keepersecret/{name} synced: Ready={} ({})",
                printable(ready.map_or(ConditionStatus::Unknown.as_str(), |c| c.status.as_str())),
                printable(ready.map_or("", |c| c.reason.as_str()))
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "keepersecret/{name} did not answer the sync request within {}s; is the operator running? (`kubectl keeper why {name}`)",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn event_time(e: &Event) -> Option<Timestamp> {
    e.event_time
        .as_ref()
        .map(|t| t.0)
        .or(e.last_timestamp.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Conditions and the latest events of `ks`, in plain words.
pub fn explain(ks: &KeeperSecret, events: &[Event]) -> String {
    const EVENTS: usize = 10;
    let name = ks.name_any();
    let mut text = String::new();
    let status = ks.status.clone().unwrap_or_default();
    let synced = status.observed_generation == ks.metadata.generation;
    text.push_str(&match status.observed_generation {
        None => format!("keepersecret/{name} has no status yet: the operator has not handled it (is it running, and does it watch this namespace?)\n"),
        Some(_) if !synced => format!("keepersecret/{name}: the operator has not handled its latest spec (generation {}) yet\n", ks.metadata.generation.unwrap_or_default()),
        Some(_) => format!("keepersecret/{name} writes Secret {}\n", printable(&ks.target_name())),
    });
    for c in &status.conditions {
        let holds = c.status == ConditionStatus::True.as_str();
        let state = match (ConditionType::parse(&c.type_), holds) {
            (Some(ConditionType::Ready), true) => "is ready",
            (Some(ConditionType::Ready), false) => "is NOT ready",
            (Some(ConditionType::Stale), true) => "serves the last good copy",
            (Some(ConditionType::Stale), false) => "has current data",
            (Some(ConditionType::Reconciling), true) => "is still reconciling this spec",
            (Some(ConditionType::Reconciling), false) => "has synced this spec",
            (Some(ConditionType::Stalled), true) => "is stalled until someone changes something",
            (Some(ConditionType::Stalled), false) => "is not stalled",
            (None, _) => "",
        };
        text.push_str(&format!(
            "  {} {state} ({}={}, {}): {}\n",
            printable(&c.type_),
            printable(&c.type_),
            printable(&c.status),
            printable(&c.reason),
            printable(&c.message)
        ));
    }
    if let Some(t) = &status.last_sync_time {
        text.push_str(&format!("  data fetched from Keeper at {}\n", t.0));
    }
    let latest: Vec<&Event> = events.iter().rev().take(EVENTS).collect();
    if latest.is_empty() {
        text.push_str("No recent events.\n");
    } else {
        text.push_str("Latest events (newest first):\n");
        for e in latest {
            let at = event_time(e).map_or_else(|| "?".into(), |t| t.to_string());
            text.push_str(&format!(
                "  {at} {} {}: {}\n",
                printable(e.type_.as_deref().unwrap_or("Normal")),
                printable(e.reason.as_deref().unwrap_or_default()),
                printable(e.message.as_deref().unwrap_or_default())
            ));
        }
    }
    text
}

/// The dry run of `render`: reads Keeper with the local config and prints what would be written.
async fn render(
    file: &PathBuf,
    config: Option<&PathBuf>,
    ca_file: Option<&PathBuf>,
    store: Option<&PathBuf>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let manifest =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let ks: KeeperSecret = serde_yaml_ng::from_str(&manifest)
        .with_context(|| format!("{} is not a KeeperSecret manifest", file.display()))?;
    if ks
        .spec
        .target
        .as_ref()
        .and_then(|t| t.template.as_ref())
        .is_some_and(|t| !t.template_from.is_empty())
    {
        bail!(
            "render uses inline templates only: templateFrom reads ConfigMaps and Secrets in the cluster"
        );
    }
    let allow = store_allow_list(&ks, store)?;
    let text = load_config_text(config)?;
    let options = ClientOptions {
        extra_ca_pem: ca_file
            .map(|p| std::fs::read(p).with_context(|| format!("reading CA file {}", p.display())))
            .transpose()?,
        ..ClientOptions::default()
    };
    let client = KsmClient::new(KsmConfig::parse(&text)?, &options)?;
    let vault = client.get_secrets(&Query::default()).await?;
    print_warnings(&vault.warnings);
    let key = render_key(&text);
    let text = dry_run(&ks, allow.as_ref(), &vault, &key, &Downloads(&client)).await?;
    write!(out, "{text}")?;
    Ok(())
}

/// The allow-list of the ClusterKeeperStore manifest in `store`, for a KeeperSecret that names
/// it. Render reads nothing from the cluster, so without the manifest a store's allow-list is
/// unknown here: said on stderr, and the local config's whole vault is read.
fn store_allow_list(
    ks: &KeeperSecret,
    store: Option<&PathBuf>,
) -> anyhow::Result<Option<AllowList>> {
    let named = ks.spec.auth.store_ref.as_ref().map(|s| s.name.as_str());
    let Some(path) = store else {
        if let Some(name) = named {
            eprintln!(
                "warning: ClusterKeeperStore {} may allow fewer records than the local config reads; pass --store with its manifest to apply its allow-list",
                printable(name)
            );
        }
        return Ok(None);
    };
    let manifest =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let store: ClusterKeeperStore = serde_yaml_ng::from_str(&manifest)
        .with_context(|| format!("{} is not a ClusterKeeperStore manifest", path.display()))?;
    let name = store.name_any();
    if named != Some(name.as_str()) {
        bail!(
            "--store is ClusterKeeperStore {}, and the KeeperSecret's auth.storeRef does not name it",
            printable(&name)
        );
    }
    Ok(AllowList::of_store(&name, &store.spec))
}

/// The key of render's hashes: derived from the KSM config, so only someone holding it can test
/// a guess against a hash. Not the operator's key (that one also takes the KeeperSecret's UID,
/// which a manifest does not have yet).
pub fn render_key(config_text: &str) -> HashKey {
    HashKey::derive(config_text.as_bytes(), "kubectl-keeper-render")
}

/// File downloads with the CLI's own client.
struct Downloads<'a>(&'a KsmClient);

impl build::Inputs for Downloads<'_> {
    type Error = Error;

    async fn file(&self, file: &KeeperFile, _revision: i64, room: usize) -> Result<Bytes, Error> {
        Ok(self.0.download_file(file, room as u64).await?)
    }
}

/// What the operator would do with `ks` given `vault`, through the same build and checks
/// ([`build::build`]); a refusal is the reason and message the operator's status would show.
async fn dry_run(
    ks: &KeeperSecret,
    allow: Option<&AllowList>,
    vault: &Vault,
    key: &HashKey,
    inputs: &impl build::Inputs<Error = Error>,
) -> anyhow::Result<String> {
    let built = build::build(ks, allow, vault, key, inputs)
        .await
        .map_err(|e| {
            anyhow!(
                "the operator would refuse this KeeperSecret ({}): {e}",
                e.reason()
            )
        })?;
    for gone in &built.gone {
        eprintln!(
            "warning: {} is not in Keeper; the deletion policy leaves its keys out",
            printable(gone)
        );
    }
    Ok(match &built.write {
        build::Write::Apply(desired) => render_table(ks, desired, key),
        build::Write::Delete { .. } => format!(
            "Secret {} would be deleted: every record it maps is gone from Keeper (deletionPolicy Delete)\n",
            printable(&ks.target_name())
        ),
    })
}

/// Key, size and keyed hash of each value, and the hash of all of them (as the operator's
/// data-hash annotation computes it, but with `key`).
pub fn render_table(ks: &KeeperSecret, desired: &Desired, key: &HashKey) -> String {
    let data = desired.secret.data.clone().unwrap_or_default();
    let mut rows = vec![["KEY", "BYTES", "HASH"].map(String::from)];
    for (k, v) in &data {
        let hash = key.hash([(k.as_str(), v.0.as_slice())]);
        rows.push([k.clone(), v.0.len().to_string(), hash]);
    }
    format!(
        "Secret {} ({} keys, data hash {}):\n{}",
        printable(&ks.target_name()),
        data.len(),
        desired.hash,
        table(&rows)
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::sync::status;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn ks(name: &str) -> KeeperSecret {
        let mut ks = crate::api::test_keeper_secret();
        ks.metadata.name = Some(name.into());
        ks.metadata.namespace = Some("shop".into());
        ks.metadata.generation = Some(1);
        ks
    }

    #[test]
    fn status_lines_show_ready_reason_staleness_and_age() {
        let mut ok = ks("db");
        ok.status = Some(status::failed(
            &ok,
            t(0),
            crate::api::Reason::RecordNotFound,
            "record x not found",
        ));
        ok.status.as_mut().unwrap().last_sync_time = Some(Time(t(0)));
        let fresh = ks("new");
        let text = status_table(&[ok, fresh], t(5400));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NAMESPACE   NAME   READY     REASON           STALE   DATA AGE   SECRET"
        );
        assert_eq!(
            lines[1],
            "shop        db     False     RecordNotFound           90m        db"
        );
        assert_eq!(
            lines[2],
            "shop        new    Unknown                            -          new"
        );
    }

    #[test]
    fn ages_read_like_kubectls() {
        let age = |s| short_age(Duration::from_secs(s));
        assert_eq!(
            [age(5), age(300), age(10_800), age(345_600)],
            ["5s", "5m", "3h", "4d"]
        );
    }

    #[test]
    fn why_puts_conditions_and_events_in_words() {
        let mut failed = ks("db");
        failed.status = Some(status::failed(
            &failed,
            t(0),
            crate::api::Reason::NotAllowed,
            "store s refuses ns shop",
        ));
        let event = Event {
            type_: Some("Warning".into()),
            reason: Some("NotAllowed".into()),
            message: Some("store s refuses ns shop".into()),
            event_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                t(1),
            )),
            ..Event::default()
        };
        let text = explain(&failed, &[event]);
        assert!(
            text.contains("Ready is NOT ready (Ready=False, NotAllowed): store s refuses ns shop"),
            "{text}"
        );
        assert!(
            text.contains("Stalled is stalled until someone changes something"),
            "{text}"
        );
        assert!(
            text.contains("Warning NotAllowed: store s refuses ns shop"),
            "{text}"
        );
        let text = explain(&ks("new"), &[]);
        assert!(
            text.starts_with("keepersecret/new has no status yet"),
            "{text}"
        );
        assert!(text.ends_with("No recent events.\n"), "{text}");
    }

    #[test]
    fn text_from_the_cluster_cannot_drive_the_terminal() {
        let hostile = "ok\u{1b}]0;pwned\u{7}\u{1b}[2J\r\nReady=True\u{202e}txt.exe\u{9b}31m";
        let mut failed = ks("db");
        failed.status = Some(status::failed(
            &failed,
            t(0),
            crate::api::Reason::NotAllowed,
            hostile,
        ));
        let event = Event {
            reason: Some(hostile.into()),
            message: Some(hostile.into()),
            ..Event::default()
        };
        let text = explain(&failed, &[event]) + &status_table(&[failed], t(1));
        for bad in ['\u{1b}', '\u{7}', '\r', '\u{202e}', '\u{9b}'] {
            assert!(!text.contains(bad), "{bad:?} printed raw: {text:?}");
        }
        assert!(
            text.contains(
                "ok\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{d}\\u{a}Ready=True\\u{202e}txt.exe"
            ),
            "{text}"
        );
        // Ordinary text, accents included, is printed as it is.
        assert_eq!(printable("Zürich – ok"), "Zürich – ok");
    }

    #[test]
    fn render_shows_sizes_and_keyed_hashes_never_values() {
        let data = [(
            "password".to_string(),
            zeroize::Zeroizing::new(b"hunter2".to_vec()),
        )]
        .into();
        let key = render_key("config");
        let desired = crate::sync::desired::secret(&ks("db"), data, &key).unwrap();
        let text = render_table(&ks("db"), &desired, &key);
        let header = format!("Secret db (1 keys, data hash {}):\n", desired.hash);
        assert!(
            text.starts_with(&(header + "KEY        BYTES   HASH\npassword   7       ")),
            "{text}"
        );
        assert!(!text.contains("hunter2"));
        let other = render_table(&ks("db"), &desired, &render_key("other"));
        assert_ne!(text, other, "the hash depends on the credential");
    }

    /// Render has no files to offer: none of these specs maps one.
    struct NoFiles;

    impl build::Inputs for NoFiles {
        type Error = Error;

        async fn file(&self, _: &KeeperFile, _: i64, _: usize) -> Result<Bytes, Error> {
            Err(Error::Keeper(crate::ksm::error::KsmError::Download(
                "no files here".into(),
            )))
        }
    }

    const UID: &str = "AAAAAAAAAAAAAAAAAAAAAA";

    fn vault(password: &str) -> Vault {
        let record = crate::ksm::record::Record {
            uid: UID.into(),
            title: "db".into(),
            record_type: "login".into(),
            revision: 1,
            folder_uid: None,
            inner_folder_uid: None,
            fields: vec![crate::ksm::record::Field {
                field_type: "password".into(),
                label: None,
                value: vec![serde_json::json!(password)],
            }],
            custom: vec![],
            notes: None,
            files: vec![],
        };
        Vault {
            records: vec![record],
            ..Vault::default()
        }
    }

    /// The reason and message of render's refusal of `ks` reading `vault`.
    async fn refusal(ks: &KeeperSecret, allow: Option<&AllowList>, vault: &Vault) -> String {
        dry_run(ks, allow, vault, &render_key("config"), &NoFiles)
            .await
            .unwrap_err()
            .to_string()
    }

    #[tokio::test]
    async fn render_refuses_what_the_operator_refuses() {
        let ks: KeeperSecret = serde_json::from_value(serde_json::json!({
            "apiVersion": "keeper-operator.dev/v1alpha1", "kind": "KeeperSecret",
            "metadata": {"name": "db"},
            "spec": {
                "auth": {"storeRef": {"name": "shared"}},
                "data": [{"key": "password", "record": {"uid": UID}, "field": "password"}],
            },
        }))
        .unwrap();
        let text = dry_run(&ks, None, &vault("pw"), &render_key("config"), &NoFiles)
            .await
            .unwrap();
        assert!(text.starts_with("Secret db (1 keys"), "{text}");

        // Keeper's answer lost the record: not RecordNotFound, and nothing rendered.
        let mut broken = vault("pw");
        broken.records.clear();
        broken.skipped.records.insert(UID.into());
        let text = refusal(&ks, None, &broken).await;
        assert!(
            text.starts_with("the operator would refuse this KeeperSecret (InvalidResponse): ")
                && text.contains("did not decrypt"),
            "{text}"
        );

        let big = "x".repeat(crate::sync::desired::MAX_SECRET_BYTES);
        let text = refusal(&ks, None, &vault(&big)).await;
        assert!(text.contains("(TooLarge)"), "{text}");

        let store: crate::api::ClusterKeeperStoreSpec = serde_json::from_value(serde_json::json!({
            "credentialsSecretRef": {"name": "ksm", "key": "config"},
            "allowedRecords": ["BBBBBBBBBBBBBBBBBBBBBB"],
        }))
        .unwrap();
        let allow = AllowList::of_store("shared", &store);
        let text = refusal(&ks, allow.as_ref(), &vault("pw")).await;
        assert!(
            text.contains("(NotAllowed): ClusterKeeperStore shared does not allow reading record"),
            "{text}"
        );
    }
}
