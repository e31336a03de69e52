//! The reconcile error: one variant per failure kind, each with a stable `reason()` used as the
//! status condition reason, the event reason and the metric label. Messages are written for the
//! person reading `kubectl describe` and never contain secret values.

use std::time::Duration;

use crate::desired::DesiredError;
use crate::ksm::error::KsmError;
use crate::mapping::MappingError;
use crate::template::TemplateError;

/// Why a reconcile did not reach Ready=True.
#[derive(Debug, thiserror::Error)]
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
    /// The rendered Secret is not acceptable.
    #[error(transparent)]
    Desired(#[from] DesiredError),
    /// The credential could not be read or parsed.
    #[error("{0}")]
    Auth(String),
    /// A one-time token in the credential Secret could not be redeemed (or is being redeemed).
    #[error("{message}")]
    TokenRedemption { message: String, transient: bool },
    /// A ClusterKeeperStore does not allow this namespace.
    #[error("{0}")]
    NotAllowed(String),
    /// The target Secret belongs to someone else.
    #[error("{0}")]
    OwnedElsewhere(String),
    /// Merge needs an existing Secret.
    #[error("{0}")]
    TargetNotFound(String),
    /// The spec cannot work as written.
    #[error("{0}")]
    InvalidSpec(String),
    /// The write would lose data while Keeper is unchanged.
    #[error(transparent)]
    Guard(#[from] crate::guard::GuardError),
    /// The Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    /// Stable CamelCase reason for conditions, events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Keeper(e) => e.reason(),
            Error::Mapping(e) => e.reason(),
            Error::Template(_) | Error::InvalidSpec(_) => "InvalidSpec",
            Error::Desired(e) => e.reason(),
            Error::Auth(_) => "AuthFailed",
            Error::TokenRedemption { .. } => "TokenRedemptionFailed",
            Error::NotAllowed(_) => "NotAllowed",
            Error::OwnedElsewhere(_) => "SecretOwnedElsewhere",
            Error::TargetNotFound(_) => "TargetNotFound",
            Error::Guard(_) => "WriteRefused",
            Error::Kube(_) => "KubernetesError",
        }
    }

    /// Retry delay for the `attempt`-th consecutive failure (0-based). Outages back off from
    /// 5 s; problems that need a human (spec, credential, missing record) start at 30 s and
    /// stay slower so a broken object does not keep hammering Keeper.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let transient = match self {
            Error::Keeper(e) => e.is_transient(),
            Error::Kube(_) | Error::Guard(_) => true,
            Error::TokenRedemption { transient, .. } => *transient,
            _ => false,
        };
        let (base, cap): (u64, u64) = if transient { (5, 300) } else { (30, 600) };
        let delay = Duration::from_secs(base.saturating_mul(1u64 << attempt.min(10)).min(cap));
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

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        let down = Error::Keeper(KsmError::Unavailable("refused".into()));
        assert_eq!(down.reason(), "KeeperUnavailable");
        assert_eq!(down.backoff(0), Duration::from_secs(5));
        assert_eq!(down.backoff(2), Duration::from_secs(20));
        assert_eq!(down.backoff(30), Duration::from_secs(300));
        let spec = Error::InvalidSpec("x".into());
        assert_eq!(spec.backoff(0), Duration::from_secs(30));
        assert_eq!(spec.backoff(9), Duration::from_secs(600));
        let throttled = Error::Keeper(KsmError::Throttled {
            retry_after: Some(Duration::from_secs(42)),
        });
        assert_eq!(throttled.reason(), "Throttled");
        assert_eq!(throttled.backoff(0), Duration::from_secs(42));
    }
}
