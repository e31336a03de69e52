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
            let v: serde_json::Value =
                serde_json::from_str(text.trim()).map_err(|_| ConfigError("not JSON".into()))?;
            Ok(KsmConfig {
                hostname: v["hostname"].as_str().unwrap_or_default().to_string(),
                client_id: v["clientId"]
                    .as_str()
                    .ok_or_else(|| ConfigError("clientId missing".into()))?
                    .to_string(),
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

pub mod client {
    use super::{config::KsmConfig, error::KsmError};
    use crate::ksm::record::{KeeperFile, Vault};
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
            Err(KsmError::Unavailable {
                message: "shim".into(),
            })
        }
        pub async fn download_file(
            &self,
            _file: &KeeperFile,
        ) -> Result<Zeroizing<Vec<u8>>, KsmError> {
            Err(KsmError::Unavailable {
                message: "shim".into(),
            })
        }
    }
}
