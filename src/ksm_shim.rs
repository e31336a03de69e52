//! TEMPORARY stand-in for Interface A (src/ksm/*) until helper "client" lands it in main.
//! Removed on `git merge main`; nothing here is used in production.
#![allow(dead_code)]

pub mod error {
    use std::time::Duration;
    #[derive(Debug, thiserror::Error)]
    pub enum KsmError {
        #[error("keeper unavailable: {message}")]
        Unavailable { message: String },
        #[error("throttled")]
        Throttled { retry_after: Option<Duration> },
        #[error("access denied: {message}")]
        AccessDenied { message: String },
        #[error("invalid response")]
        InvalidResponse,
        #[error("invalid config: {0}")]
        Config(String),
    }
    impl KsmError {
        pub fn reason(&self) -> &'static str {
            match self {
                Self::Unavailable { .. } => "KeeperUnavailable",
                Self::Throttled { .. } => "Throttled",
                Self::AccessDenied { .. } => "AuthFailed",
                Self::InvalidResponse => "InvalidResponse",
                Self::Config(_) => "InvalidConfig",
            }
        }
    }
}

pub mod config {
    #[derive(Clone)]
    pub struct KsmConfig {
        hostname: String,
        client_id: String,
    }
    impl std::fmt::Debug for KsmConfig {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("KsmConfig(..)")
        }
    }
    #[derive(Debug, thiserror::Error)]
    #[error("invalid KSM config: {0}")]
    pub struct ConfigError(pub String);
    impl KsmConfig {
        pub fn parse(text: &str) -> Result<KsmConfig, ConfigError> {
            let v: serde_json::Value = serde_json::from_str(text.trim())
                .map_err(|_| ConfigError("not JSON".into()))?;
            Ok(KsmConfig {
                hostname: v["hostname"].as_str().unwrap_or_default().to_string(),
                client_id: v["clientId"].as_str().ok_or_else(|| ConfigError("clientId missing".into()))?.to_string(),
            })
        }
        pub fn hostname(&self) -> &str {
            &self.hostname
        }
        pub fn client_id(&self) -> &str {
            &self.client_id
        }
    }
}

pub mod record {
    #[derive(Clone, Debug, Default)]
    pub struct Record {
        pub uid: String,
        pub title: String,
        pub record_type: String,
        pub revision: i64,
        pub folder_uid: Option<String>,
        pub inner_folder_uid: Option<String>,
        pub fields: Vec<Field>,
        pub custom: Vec<Field>,
        pub notes: Option<String>,
        pub files: Vec<KeeperFile>,
    }
    #[derive(Clone, Debug, Default)]
    pub struct Field {
        pub field_type: String,
        pub label: Option<String>,
        pub value: Vec<serde_json::Value>,
    }
    #[derive(Clone, Debug, Default)]
    pub struct KeeperFile {
        pub uid: String,
        pub name: String,
        pub title: String,
        pub mime_type: Option<String>,
        pub size: Option<u64>,
        pub url: Option<String>,
    }
    #[derive(Clone, Debug, Default)]
    pub struct Vault {
        pub records: Vec<Record>,
        pub folders: Vec<SharedFolder>,
        pub warnings: Vec<String>,
    }
    #[derive(Clone, Debug, Default)]
    pub struct SharedFolder {
        pub uid: String,
        pub name: Option<String>,
        pub parent_uid: Option<String>,
    }
}

pub mod client {
    use super::{config::KsmConfig, error::KsmError, record::*};
    use std::time::Duration;
    use zeroize::Zeroizing;
    #[derive(Clone, Debug, Default)]
    pub struct Query {
        pub records: Vec<String>,
        pub folders: Vec<String>,
    }
    #[derive(Clone, Debug, Default)]
    pub struct ClientOptions {
        pub extra_ca_pem: Option<Vec<u8>>,
        pub timeout: Duration,
    }
    #[derive(Clone)]
    pub struct KsmClient;
    impl KsmClient {
        pub fn new(_config: KsmConfig, _options: &ClientOptions) -> Result<KsmClient, KsmError> {
            Ok(KsmClient)
        }
        pub async fn get_secrets(&self, _query: &Query) -> Result<Vault, KsmError> {
            Err(KsmError::Unavailable { message: "shim".into() })
        }
        pub async fn download_file(&self, _file: &KeeperFile) -> Result<Zeroizing<Vec<u8>>, KsmError> {
            Err(KsmError::Unavailable { message: "shim".into() })
        }
    }
}

pub mod notation {
    use super::record::*;
    #[derive(Debug, Clone)]
    pub struct Notation {
        record: String,
        kind: String,
        param: String,
    }
    #[derive(Debug, thiserror::Error)]
    pub enum NotationError {
        #[error("syntax: {0}")]
        Syntax(String),
        #[error("record not found: {0}")]
        RecordNotFound(String),
        #[error("ambiguous title {title}: {count}")]
        AmbiguousTitle { title: String, count: usize },
        #[error("field not found: {0}")]
        FieldNotFound(String),
        #[error("file not found: {0}")]
        FileNotFound(String),
    }
    impl NotationError {
        pub fn reason(&self) -> &'static str {
            match self {
                Self::Syntax(_) => "InvalidSpec",
                Self::RecordNotFound(_) => "RecordNotFound",
                Self::AmbiguousTitle { .. } => "AmbiguousTitle",
                Self::FieldNotFound(_) | Self::FileNotFound(_) => "FieldNotFound",
            }
        }
    }
    pub enum NotationValue {
        Text(String),
        Json(serde_json::Value),
        File(KeeperFile),
    }
    impl std::str::FromStr for Notation {
        type Err = NotationError;
        fn from_str(s: &str) -> Result<Self, Self::Err> {
            let s = s.strip_prefix("keeper://").unwrap_or(s);
            let parts: Vec<&str> = s.splitn(3, '/').collect();
            if parts.len() != 3 {
                return Err(NotationError::Syntax("bad".into()));
            }
            Ok(Notation { record: parts[0].into(), kind: parts[1].into(), param: parts[2].into() })
        }
    }
    pub fn resolve(records: &[Record], n: &Notation) -> Result<Vec<NotationValue>, NotationError> {
        let matches: Vec<&Record> = records.iter().filter(|r| r.uid == n.record || r.title == n.record).collect();
        let r = match matches.as_slice() {
            [] => return Err(NotationError::RecordNotFound(n.record.clone())),
            [r] => *r,
            _ => return Err(NotationError::AmbiguousTitle { title: n.record.clone(), count: matches.len() }),
        };
        match n.kind.as_str() {
            "file" => r
                .files
                .iter()
                .find(|f| f.name == n.param)
                .map(|f| vec![NotationValue::File(f.clone())])
                .ok_or_else(|| NotationError::FileNotFound(n.param.clone())),
            _ => {
                let fields = if n.kind == "custom_field" { &r.custom } else { &r.fields };
                let f = fields
                    .iter()
                    .find(|f| f.label.as_deref() == Some(&n.param) || f.field_type == n.param)
                    .ok_or_else(|| NotationError::FieldNotFound(n.param.clone()))?;
                Ok(f.value
                    .iter()
                    .map(|v| match v {
                        serde_json::Value::String(s) => NotationValue::Text(s.clone()),
                        other => NotationValue::Json(other.clone()),
                    })
                    .collect())
            }
        }
    }
}
