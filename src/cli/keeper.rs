//! `keeper-operator keeper …`: check and debug KSM credentials from the command line.
//!
//! ```text
//! export KSM_CONFIG="$(cat ksm-config.b64)"          # or --config FILE (JSON or base64)
//! keeper-operator keeper get 'keeper://6ya_fdc6XTsZ7i7x9Jcodg/field/password' 'My DB/field/login'
//! keeper-operator keeper get 'Web Certificate/file/cert.pem' > cert.pem   # raw bytes
//! keeper-operator keeper records 6ya_fdc6XTsZ7i7x9Jcodg | jq '.[0].fields'
//! keeper-operator keeper redeem --token US:ONE_TIME_TOKEN > ksm-config.b64
//! keeper-operator keeper redeem --token TOKEN --hostname 127.0.0.1:8443 \
//!     --server-public-key 10:BASE64URL_POINT --ca-file ca.pem
//! ```
//!
//! Failures exit non-zero with one line on stderr, e.g.
//! `error: resolving keeper://Web/field/pasword: field "pasword" not found`.

use crate::ksm::client::MAX_RESPONSE_BYTES;
use crate::ksm::record::notation::{Notation, NotationValue, resolve};
use crate::ksm::record::{Field, Record};
use crate::ksm::{ClientOptions, KsmClient, KsmConfig, Query, redeem_token};
use anyhow::{Context, bail};
use serde::Serialize;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use zeroize::Zeroizing;

/// Inspect Keeper Secrets Manager records with a KSM config, or redeem a one-time token.
#[derive(clap::Args)]
pub struct KeeperArgs {
    /// KSM config file (JSON or base64, as the Keeper SDKs take it) [default: $KSM_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// PEM file with extra CA certificates to trust for the Keeper endpoint
    #[arg(long, global = true, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Request timeout in seconds
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: KeeperCommand,
}

#[derive(clap::Subcommand)]
pub enum KeeperCommand {
    /// Resolve Keeper notations (keeper://RECORD/field/password …); one value per line, or a
    /// file's raw bytes when a single file is asked for
    Get {
        #[arg(required = true, value_name = "NOTATION")]
        notations: Vec<String>,
    },
    /// Print records (all, or the given UIDs) as JSON
    Records {
        #[arg(value_name = "UID")]
        uids: Vec<String>,
    },
    /// Bind a one-time access token and print the resulting base64 KSM config
    Redeem {
        /// One-time token, [REGION:]KEY or IL5:KEY:KEY_ID:SERVER_KEY
        #[arg(long, env = "KSM_TOKEN", hide_env_values = true)]
        token: String,
        /// Keeper API host, HOST[:PORT] or a region code (overrides the token prefix)
        #[arg(long, value_name = "HOST[:PORT]")]
        hostname: Option<String>,
        /// Custom server public key (isolated deployments, test servers)
        #[arg(long, value_name = "ID:KEY")]
        server_public_key: Option<String>,
    },
}

impl fmt::Debug for KeeperArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let command = match &self.command {
            KeeperCommand::Get { .. } => "get",
            KeeperCommand::Records { .. } => "records",
            KeeperCommand::Redeem { .. } => "redeem",
        };
        f.debug_struct("KeeperArgs")
            .field("config", &self.config)
            .field("ca_file", &self.ca_file)
            .field("command", &command)
            .finish_non_exhaustive()
    }
}

/// Runs a `keeper` subcommand, writing results to stdout and vault warnings to stderr.
pub async fn run_keeper_command(args: KeeperArgs) -> anyhow::Result<()> {
    let options = ClientOptions {
        extra_ca_pem: args
            .ca_file
            .as_ref()
            .map(|path| {
                std::fs::read(path).with_context(|| format!("reading CA file {}", path.display()))
            })
            .transpose()?,
        timeout: Duration::from_secs(args.timeout.max(1)),
        ..ClientOptions::default()
    };
    let mut stdout = std::io::stdout().lock();
    match args.command {
        KeeperCommand::Get { notations } => {
            let client = KsmClient::new(load_config(args.config.as_ref())?, &options)?;
            get(&client, &notations, &mut stdout).await
        }
        KeeperCommand::Records { uids } => {
            let client = KsmClient::new(load_config(args.config.as_ref())?, &options)?;
            records(&client, uids, &mut stdout).await
        }
        KeeperCommand::Redeem {
            token,
            hostname,
            server_public_key,
        } => {
            let server_key = server_public_key
                .as_deref()
                .map(split_server_key)
                .transpose()?;
            let config = redeem_token(&token, hostname.as_deref(), server_key, &options).await?;
            writeln!(stdout, "{}", config.to_base64())?;
            Ok(())
        }
    }
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<KsmConfig> {
    Ok(KsmConfig::parse(&load_config_text(path)?)?)
}

/// The KSM config text of `path`, else of `$KSM_CONFIG`.
pub(crate) fn load_config_text(path: Option<&PathBuf>) -> anyhow::Result<Zeroizing<String>> {
    Ok(Zeroizing::new(match path {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?,
        None => match std::env::var("KSM_CONFIG") {
            Ok(text) => text,
            Err(_) => bail!("no KSM config: pass --config FILE or set KSM_CONFIG"),
        },
    }))
}

fn split_server_key(text: &str) -> anyhow::Result<(String, String)> {
    match text.split_once(':') {
        Some((id, key)) if !id.is_empty() && !key.is_empty() => {
            Ok((id.to_string(), key.to_string()))
        }
        _ => bail!("--server-public-key must be ID:KEY (e.g. 10:BNYI…)"),
    }
}

pub(crate) fn print_warnings(warnings: &[String]) {
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
}

async fn get(client: &KsmClient, notations: &[String], out: &mut impl Write) -> anyhow::Result<()> {
    let parsed = notations
        .iter()
        .map(|text| text.parse::<Notation>())
        .collect::<Result<Vec<_>, _>>()?;
    let vault = client.get_secrets(&Query::default()).await?;
    print_warnings(&vault.warnings);
    // Resolve everything before printing anything: a failure prints no partial output.
    let mut values = Vec::new();
    for notation in &parsed {
        let resolved =
            resolve(&vault.records, notation).with_context(|| format!("resolving {notation}"))?;
        values.extend(resolved);
    }
    if let [NotationValue::File(file)] = values.as_slice()
        && parsed.len() == 1
    {
        out.write_all(&client.download_file(file, MAX_RESPONSE_BYTES).await?)?;
        return Ok(());
    }
    let mut lines = Vec::with_capacity(values.len());
    for value in &values {
        lines.push(match value {
            // Several values: a file becomes base64url, as the SDKs' notation results.
            NotationValue::File(file) => {
                crate::ksm::crypto::b64_url(&client.download_file(file, MAX_RESPONSE_BYTES).await?)
            }
            other => other.to_text().unwrap_or_default(),
        });
    }
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

async fn records(
    client: &KsmClient,
    uids: Vec<String>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let vault = client
        .get_secrets(&Query {
            records: uids.clone(),
            folders: Vec::new(),
        })
        .await?;
    print_warnings(&vault.warnings);
    let missing: Vec<&str> = uids
        .iter()
        .filter(|uid| !vault.records.iter().any(|r| &r.uid == *uid))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        bail!("record(s) not found: {}", missing.join(", "));
    }
    let views: Vec<RecordView<'_>> = vault.records.iter().map(RecordView::from).collect();
    serde_json::to_writer_pretty(&mut *out, &views)?;
    writeln!(out)?;
    Ok(())
}

/// The JSON shape of `keeper records`: stable keys, file metadata without keys or URLs.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecordView<'a> {
    uid: &'a str,
    title: &'a str,
    #[serde(rename = "type")]
    record_type: &'a str,
    revision: i64,
    folder_uid: Option<&'a str>,
    inner_folder_uid: Option<&'a str>,
    fields: Vec<FieldView<'a>>,
    custom: Vec<FieldView<'a>>,
    notes: Option<&'a str>,
    files: Vec<FileView<'a>>,
}

#[derive(Serialize)]
struct FieldView<'a> {
    #[serde(rename = "type")]
    field_type: &'a str,
    label: Option<&'a str>,
    value: &'a [serde_json::Value],
}

#[derive(Serialize)]
struct FileView<'a> {
    uid: &'a str,
    name: &'a str,
    title: &'a str,
    #[serde(rename = "type")]
    mime_type: Option<&'a str>,
    size: Option<u64>,
}

impl<'a> From<&'a Field> for FieldView<'a> {
    fn from(field: &'a Field) -> Self {
        FieldView {
            field_type: &field.field_type,
            label: field.label.as_deref(),
            value: &field.value,
        }
    }
}

impl<'a> From<&'a Record> for RecordView<'a> {
    fn from(r: &'a Record) -> Self {
        RecordView {
            uid: &r.uid,
            title: &r.title,
            record_type: &r.record_type,
            revision: r.revision,
            folder_uid: r.folder_uid.as_deref(),
            inner_folder_uid: r.inner_folder_uid.as_deref(),
            fields: r.fields.iter().map(FieldView::from).collect(),
            custom: r.custom.iter().map(FieldView::from).collect(),
            notes: r.notes.as_deref(),
            files: r
                .files
                .iter()
                .map(|f| FileView {
                    uid: &f.uid,
                    name: &f.name,
                    title: &f.title,
                    mime_type: f.mime_type.as_deref(),
                    size: f.size,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ksm::crypto::AesKey;
    use crate::ksm::record::KeeperFile;
    use serde_json::json;

    #[test]
    fn record_json_shape_is_stable_and_keyless() {
        let record = Record {
            uid: "u".into(),
            title: "t".into(),
            record_type: "login".into(),
            revision: 3,
            folder_uid: Some("f".into()),
            inner_folder_uid: None,
            fields: vec![Field {
                field_type: "password".into(),
                label: None,
                value: vec![json!("p")],
            }],
            custom: vec![],
            notes: None,
            files: vec![KeeperFile {
                uid: "fu".into(),
                name: "a.pem".into(),
                title: "A".into(),
                mime_type: None,
                size: Some(9),
                url: Some("https://signed".into()),
                key: AesKey::random(),
            }],
        };
        let value = serde_json::to_value(RecordView::from(&record)).unwrap();
        assert_eq!(
            value,
            json!({"uid":"u","title":"t","type":"login","revision":3,"folderUid":"f",
                   "innerFolderUid":null,"fields":[{"type":"password","label":null,"value":["p"]}],
                   "custom":[],"notes":null,
                   "files":[{"uid":"fu","name":"a.pem","title":"A","type":null,"size":9}]})
        );
    }

    #[tokio::test]
    async fn get_and_records_output() {
        use crate::ksm::fixtures::{FILE_CONTENT, FakeKsm};
        let ksm = FakeKsm::start().await;
        let client = ksm.bound_client().await;
        let run_get = |notations: &[&str]| {
            let notations: Vec<String> = notations.iter().map(|n| n.to_string()).collect();
            let client = client.clone();
            async move {
                let mut out = Vec::new();
                get(&client, &notations, &mut out).await.map(|()| out)
            }
        };
        let out = run_get(&[
            "Web/field/login",
            "keeper://6ya_fdc6XTsZ7i7x9Jcodg/field/password",
        ])
        .await
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "admin\ns3cr3t\n");
        // One file alone: raw bytes; next to other values: base64url on its own line.
        assert_eq!(run_get(&["Web/file/cert.pem"]).await.unwrap(), FILE_CONTENT);
        let out = run_get(&["Web/type", "Web/file/Cert"]).await.unwrap();
        let expected = format!("login\n{}\n", crate::ksm::crypto::b64_url(FILE_CONTENT));
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        // Nothing is printed when any notation fails.
        let err = run_get(&["Web/type", "Web/field/pasword"])
            .await
            .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "resolving keeper://Web/field/pasword: field \"pasword\" not found"
        );

        let mut out = Vec::new();
        records(&client, vec![], &mut out).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json[0]["uid"], "6ya_fdc6XTsZ7i7x9Jcodg");
        assert_eq!(json[0]["files"][0]["name"], "cert.pem");
        let err = records(&client, vec!["missing".into()], &mut Vec::new())
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "record(s) not found: missing");
    }

    #[test]
    fn server_key_argument() {
        assert_eq!(
            split_server_key("10:BNYI").unwrap(),
            ("10".to_string(), "BNYI".to_string())
        );
        assert!(split_server_key("BNYI").is_err());
        assert!(split_server_key(":x").is_err());
    }

    fn args(config: Option<PathBuf>, command: KeeperCommand) -> KeeperArgs {
        KeeperArgs {
            config,
            ca_file: None,
            timeout: 5,
            command,
        }
    }

    #[tokio::test]
    async fn errors_are_specific_and_do_not_echo_input() {
        let dir = std::env::temp_dir().join(format!("keeper-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        std::fs::write(
            &path,
            r#"{"hostname":"h","clientId":"c","privateKey":"secret"}"#,
        )
        .unwrap();
        let err = run_keeper_command(args(
            Some(path.clone()),
            KeeperCommand::Records { uids: vec![] },
        ))
        .await
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("privateKey"), "{text}");
        assert!(!text.contains("secret"), "{text}");

        let err = run_keeper_command(args(
            Some(dir.join("missing.json")),
            KeeperCommand::Get {
                notations: vec!["x/type".into()],
            },
        ))
        .await
        .unwrap_err();
        assert!(format!("{err:#}").starts_with("reading config file"));

        let err = run_keeper_command(args(
            None,
            KeeperCommand::Redeem {
                token: "not-a-token".into(),
                hostname: Some("127.0.0.1:1".into()),
                server_public_key: None,
            },
        ))
        .await
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "invalid one-time token: token client key must be 32 bytes of base64url"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
