//! The reconcile error: one variant per failure kind, each with a stable `reason()` used as the
//! status condition reason, the event reason and the metric label. Messages are written for the
//! person reading `kubectl describe` and never contain secret values.

use std::time::Duration;

use crate::api::Reason;
use crate::backoff;
use crate::ksm::error::KsmError;
use crate::sync::desired::DesiredError;
use crate::sync::incomplete::Incomplete;
use crate::sync::mapping::MappingError;
use crate::sync::template::{SourceError, TemplateError};

/// Why a reconcile did not reach Ready=True. `Debug` prints the reason and the message, so it
/// is as free of values as `Display`.
#[derive(thiserror::Error)]
pub enum Error {
    /// Keeper could not be read (down, throttled, refused the credential, bad response).
    #[error("reading Keeper failed: {0}")]
    Keeper(#[from] KsmError),
    /// The records do not contain what the spec asks for.
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// A template did not render.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// A value did not decode as its `decodingStrategy` says.
    #[error(transparent)]
    Decoding(#[from] crate::sync::decoding::DecodingError),
    /// A `templateFrom` ConfigMap or Secret is missing or unusable.
    #[error(transparent)]
    TemplateSource(#[from] SourceError),
    /// The rendered Secret is not acceptable.
    #[error(transparent)]
    Desired(#[from] DesiredError),
    /// The credential could not be read or parsed.
    #[error(transparent)]
    Auth(#[from] CredentialError),
    /// A one-time token in the credential Secret could not be redeemed (or is being redeemed).
    #[error(transparent)]
    TokenRedemption(#[from] Redemption),
    /// A ClusterKeeperStore, or the operator, refuses this KeeperSecret.
    #[error(transparent)]
    NotAllowed(#[from] Refusal),
    /// The target Secret belongs to someone else, or did not invite this KeeperSecret.
    #[error(transparent)]
    Target(#[from] crate::sync::desired::TargetRefusal),
    /// Merge needs an existing Secret, and the target Secret of this name does not exist.
    #[error(
        "creationPolicy Merge adds keys to an existing Secret, and Secret {name} does not exist; create it or use Owner"
    )]
    TargetNotFound { name: String },
    /// The spec cannot work as written.
    #[error(transparent)]
    InvalidSpec(#[from] SpecError),
    /// Keeper refused the credential (not an outage): nothing is written until it accepts one.
    #[error(
        "Keeper refused the credential ({}: {}); the Secret is kept as it is, and nothing is created or re-created from the last good copy",
        .0.reason(),
        .0
    )]
    CredentialRefused(KsmError),
    /// A deletion policy would remove data, but Keeper's answer does not prove the records gone.
    #[error("not in Keeper's answer: {gone}; the Secret keeps their keys: {}", .why.explain())]
    DeletionHeld {
        why: crate::sync::hold::HoldReason,
        gone: String,
    },
    /// The write would lose data while Keeper is unchanged.
    #[error(transparent)]
    Guard(#[from] crate::sync::write_guard::GuardError),
    /// The Kubernetes API failed. Shown through [`kube_summary`], never with the API's message.
    #[error("Kubernetes API: {}", kube_summary(.0))]
    Kube(#[from] kube::Error),
}

/// What refuses a KeeperSecret ([`Reason::NotAllowed`]).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Its namespace is the operator's own.
    #[error(
        "KeeperSecrets are not allowed in the operator namespace {ns}: it holds the ClusterKeeperStore credentials and the operator's cache"
    )]
    OperatorNamespace { ns: String },
    /// The store it names does not exist.
    #[error("ClusterKeeperStore {store} does not exist")]
    NoStore { store: String },
    /// The store's namespaceSelector does not parse.
    #[error("ClusterKeeperStore {store} has an invalid namespaceSelector: {error}")]
    InvalidSelector { store: String, error: String },
    /// The store does not lend itself to its namespace.
    #[error(
        "ClusterKeeperStore {store} does not allow namespace {ns}; ask an administrator to add it to spec.namespaces or spec.namespaceSelector"
    )]
    Namespace { store: String, ns: String },
    /// The store's allow-lists do not cover what it reads.
    #[error(transparent)]
    Read(#[from] crate::sync::allowlist::Denied),
}

/// Why the credential Secret is unusable ([`Reason::AuthFailed`]); `secret` reads
/// `Secret NAMESPACE/NAME`. Messages never echo the Secret's content.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{secret} (the KSM credential) does not exist")]
    Missing { secret: String },
    #[error("{secret} has no key {key:?}")]
    NoKey { secret: String, key: String },
    #[error("{secret} key {key:?} is not text")]
    NotText { secret: String, key: String },
    #[error(
        "{secret} key {key:?} is neither a KSM configuration (base64 or JSON, as written by `ksm init` or the SDKs) nor a one-time access token ([REGION:]TOKEN): {error}"
    )]
    Unparsable {
        secret: String,
        key: String,
        error: String,
    },
    #[error("{secret} key {key:?} holds a malformed one-time token: {error}")]
    MalformedToken {
        secret: String,
        key: String,
        error: String,
    },
    #[error(
        "{secret} key {key:?} holds a one-time token without a region prefix; prefix it (e.g. US:) or add key {:?} with the Keeper hostname",
        crate::api::HOSTNAME_KEY
    )]
    NoRegion { secret: String, key: String },
    #[error(
        "{secret} key {:?} must be ID:KEY (numeric key id, base64url public key)",
        crate::api::SERVER_KEY_KEY
    )]
    BadServerKey { secret: String },
}

/// Why a one-time token was not redeemed ([`Reason::TokenRedemptionFailed`]); `secret` reads
/// `Secret NAMESPACE/NAME`.
#[derive(Debug, thiserror::Error)]
pub enum Redemption {
    /// Another replica claimed the token `age_secs` ago.
    #[error(
        "{secret}: another operator replica is redeeming its one-time token (claimed {age_secs}s ago); waiting for it"
    )]
    InProgress { secret: String, age_secs: u64 },
    /// The Secret changed under the claim.
    #[error("{secret} changed while claiming its one-time token; retrying")]
    Conflict { secret: String },
    /// Keeper did not redeem the token.
    #[error(
        "{secret} key {key:?}: redeeming the one-time token failed: {error}. A token can be redeemed once and expires; if it was used or expired, generate a new one (Keeper vault → Secrets Manager → application → Devices → Add Device) and store it, or store a KSM config instead"
    )]
    Failed {
        secret: String,
        key: String,
        error: KsmError,
    },
    /// The token is spent, but the bound config was not stored (`error`: the API's summary).
    #[error(
        "{secret}: the one-time token was redeemed but storing the bound config failed ({error}); the token is spent: generate a new one"
    )]
    NotStored { secret: String, error: String },
    /// The Secret still holds a token after a redemption stored the config.
    #[error("{secret} still holds a token after redemption")]
    StillToken { secret: String },
}

impl Redemption {
    /// Whether retrying later can help without anyone replacing the token.
    fn is_transient(&self) -> bool {
        match self {
            Redemption::InProgress { .. }
            | Redemption::Conflict { .. }
            | Redemption::StillToken { .. } => true,
            Redemption::Failed { error, .. } => error.is_transient(),
            Redemption::NotStored { .. } => false,
        }
    }
}

/// Why a spec cannot work as written ([`Reason::InvalidSpec`]).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// It names a ClusterKeeperStore, whose credential lives in the operator namespace, and the
    /// operator does not know its namespace.
    #[error("{}", crate::k8s::credentials::NO_OPERATOR_NAMESPACE)]
    NoOperatorNamespace,
    /// `spec.auth` names no credential, or two.
    #[error("spec.auth needs exactly one of secretRef or storeRef")]
    Auth,
    /// `refreshInterval` does not parse or is out of range (the message says how).
    #[error("{0}")]
    RefreshInterval(String),
}

impl From<crate::sync::allowlist::Denied> for Error {
    fn from(denied: crate::sync::allowlist::Denied) -> Self {
        Error::NotAllowed(denied.into())
    }
}

/// A refused build is the error of the step that refused, with that step's reason.
impl From<crate::sync::build::BuildError> for Error {
    fn from(error: crate::sync::build::BuildError) -> Self {
        use crate::sync::build::BuildError;
        match error {
            BuildError::Denied(e) => e.into(),
            BuildError::Incomplete(e) => e.into(),
            BuildError::Decoding(e) => e.into(),
            BuildError::Template(e) => e.into(),
            BuildError::Desired(e) => e.into(),
        }
    }
}

impl From<Incomplete> for Error {
    fn from(e: Incomplete) -> Self {
        match e {
            Incomplete::Mapping(e) => Error::Mapping(e),
            // Reported as Keeper's own undecryptable answers are.
            Incomplete::Undecryptable(_) => Error::Keeper(KsmError::Undecryptable(e.to_string())),
        }
    }
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple(self.reason().as_str())
            .field(&self.to_string())
            .finish()
    }
}

/// Causes of an API error listed at most (the rest are counted).
const MAX_CAUSES: usize = 5;

/// What a Kubernetes API error may show: HTTP code, reason, the object and the fields the API
/// names, never a message. The API server, admission webhooks and policies (CEL
/// `messageExpression`s) may quote the object they rejected, and a rejected Secret write holds
/// the synced values; a JSON decoding error can quote the text it failed on.
pub(crate) fn kube_summary(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => {
            let reason = if status.reason.is_empty() {
                "Failure"
            } else {
                &status.reason
            };
            let mut text = format!("HTTP {} {reason}", status.code);
            if let Some(details) = &status.details {
                if !details.kind.is_empty() {
                    text.push_str(&format!(" ({} {:?})", details.kind, details.name));
                }
                let causes: Vec<String> = details
                    .causes
                    .iter()
                    .take(MAX_CAUSES)
                    .map(|c| format!("{} {}", c.field, c.reason).trim().to_string())
                    .filter(|c| !c.is_empty())
                    .collect();
                if !causes.is_empty() {
                    text.push_str(&format!(": {}", causes.join(", ")));
                }
                if details.causes.len() > MAX_CAUSES {
                    text.push_str(&format!(" and {} more", details.causes.len() - MAX_CAUSES));
                }
            }
            text
        }
        kube::Error::SerdeError(e) => format!(
            "the API server's answer could not be decoded (line {}, column {})",
            e.line(),
            e.column()
        ),
        // Connection, TLS, auth and request-building failures: they never see an object.
        other => other.to_string(),
    }
}

impl Error {
    /// Stable CamelCase reason for conditions, events and metrics.
    pub fn reason(&self) -> Reason {
        match self {
            Error::Keeper(e) => e.reason(),
            Error::Mapping(e) => e.reason(),
            Error::Template(e) => e.reason(),
            Error::Decoding(e) => e.reason(),
            Error::TemplateSource(e) => e.reason(),
            Error::InvalidSpec(_) => Reason::InvalidSpec,
            Error::Desired(e) => e.reason(),
            Error::Auth(_) => Reason::AuthFailed,
            Error::TokenRedemption(_) => Reason::TokenRedemptionFailed,
            Error::NotAllowed(_) => Reason::NotAllowed,
            Error::Target(e) => e.reason(),
            Error::TargetNotFound { .. } => Reason::TargetNotFound,
            Error::Guard(_) => Reason::WriteRefused,
            Error::CredentialRefused(_) => Reason::CredentialRefused,
            Error::DeletionHeld { .. } => Reason::DeletionHeld,
            Error::Kube(_) => Reason::KubernetesError,
        }
    }

    /// Retry delay for the `attempt`-th consecutive failure (0-based). Outages back off from
    /// 5 s; problems that need a human (spec, credential, missing record) start at 30 s and
    /// stay slower so a broken object does not keep hammering Keeper.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let transient = match self {
            Error::Keeper(e) => e.is_transient(),
            Error::Kube(_) | Error::Guard(_) | Error::DeletionHeld { .. } => true,
            Error::Template(e) => e.is_transient(),
            Error::TokenRedemption(r) => r.is_transient(),
            _ => false,
        };
        let (base, cap) = if transient { (5, 300) } else { (30, 600) };
        let delay =
            backoff::exponential(attempt, Duration::from_secs(base), Duration::from_secs(cap));
        match self {
            Error::Keeper(KsmError::Throttled {
                retry_after: Some(after),
            }) => delay.max(*after),
            _ => delay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::response::{StatusCause, StatusDetails};

    /// What an API server, a webhook or a CEL policy answers to a Secret write it refuses: the
    /// messages quote the value.
    fn refused(value: &str) -> kube::Error {
        let mut status = kube::core::Status::failure(
            &format!(
                "admission webhook \"policy.example\" denied the request: data.password {value:?} is too weak"
            ),
            "Invalid",
        );
        status.code = 422;
        status.details = Some(StatusDetails {
            name: "db".into(),
            kind: "secrets".into(),
            causes: vec![StatusCause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: {value:?}: invalid character 'H'"),
                field: "data[.dockerconfigjson]".into(),
            }],
            group: String::new(),
            uid: String::new(),
            retry_after_seconds: 0,
        });
        kube::Error::Api(status.boxed())
    }

    #[test]
    fn api_errors_show_code_reason_and_fields_never_the_message() {
        let err = Error::from(refused("Hunter2-Xq9vLp"));
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains("Hunter2"), "{text}");
            assert!(!text.contains("denied"), "{text}");
        }
        assert_eq!(
            err.to_string(),
            "Kubernetes API: HTTP 422 Invalid (secrets \"db\"): data[.dockerconfigjson] FieldValueInvalid"
        );
        assert_eq!(err.reason(), "KubernetesError");
    }

    #[test]
    fn decoding_errors_do_not_quote_the_text() {
        let serde = serde_json::from_str::<u8>("\"Hunter2-Xq9vLp\"").unwrap_err();
        assert!(
            serde.to_string().contains("Hunter2"),
            "the raw error quotes it"
        );
        let err = Error::from(kube::Error::SerdeError(serde));
        assert!(!err.to_string().contains("Hunter2"), "{err}");
        assert!(!format!("{err:?}").contains("Hunter2"), "{err:?}");
    }

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        let down = Error::Keeper(KsmError::Unavailable("refused".into()));
        assert_eq!(down.reason(), "KeeperUnavailable");
        assert_eq!(down.backoff(0), Duration::from_secs(5));
        assert_eq!(down.backoff(2), Duration::from_secs(20));
        assert_eq!(down.backoff(30), Duration::from_secs(300));
        let spec = Error::from(SpecError::Auth);
        assert_eq!(spec.backoff(0), Duration::from_secs(30));
        assert_eq!(spec.backoff(9), Duration::from_secs(600));
        let throttled = Error::Keeper(KsmError::Throttled {
            retry_after: Some(Duration::from_secs(42)),
        });
        assert_eq!(throttled.reason(), "Throttled");
        assert_eq!(throttled.backoff(0), Duration::from_secs(42));
    }

    #[test]
    fn a_busy_render_pool_is_retried_soon_a_template_over_budget_is_not() {
        use crate::sync::template::Exceeded;
        let busy = Error::from(TemplateError::Busy { key: "k".into() });
        assert_eq!(busy.reason(), "RenderBusy");
        assert_eq!(busy.backoff(0), Duration::from_secs(5));
        let over = Error::from(TemplateError::Budget {
            key: "k".into(),
            bound: Exceeded::Nodes,
        });
        assert_eq!(over.reason(), "InvalidSpec");
        assert_eq!(over.backoff(0), Duration::from_secs(30));
        let late = Error::from(TemplateError::Budget {
            key: "k".into(),
            bound: Exceeded::Time,
        });
        assert_eq!(late.reason(), "TemplateTimeout");
        assert_eq!(late.backoff(0), Duration::from_secs(30));
    }
}
