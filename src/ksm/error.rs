//! Errors of the KSM client. Each failure mode the operator reacts to differently is its own
//! variant with a stable `reason()`. Messages carry server error text and UIDs, never secrets.

use crate::ksm::config::ConfigError;
use crate::reason::Reason;
use std::time::Duration;

/// Why a one-time token does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is empty")]
    Empty,
    #[error("token client key must be 32 bytes of base64url")]
    ClientKey,
    #[error(
        "token has {0} ':'-separated parts; expected [REGION:]KEY or IL5:KEY:KEY_ID:SERVER_KEY"
    )]
    Parts(usize),
    #[error("token server key id must be a number")]
    KeyId,
    #[error("token server public key is not a P-256 point")]
    ServerKey,
    #[error("token has no region prefix; pass the hostname")]
    NoHostname,
    #[error("invalid hostname: {0}")]
    Hostname(String),
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum KsmError {
    // The cause is part of the message (not a `source`), so `{}` alone is complete and
    // `{:#}` does not repeat it.
    #[error("invalid KSM configuration: {0}")]
    Config(ConfigError),
    #[error("invalid one-time token: {0}")]
    Token(TokenError),
    #[error("invalid extra CA certificate: {0}")]
    InvalidCa(String),
    #[error("Keeper endpoint unavailable: {0}")]
    Unavailable(String),
    #[error("request to the Keeper endpoint timed out")]
    Timeout,
    #[error("TLS connection to the Keeper endpoint failed: {0}")]
    Tls(String),
    #[error("throttled by Keeper{}", retry_after_text(.retry_after))]
    Throttled { retry_after: Option<Duration> },
    #[error("access denied by Keeper: {message}")]
    AccessDenied { message: String },
    #[error("Keeper rejected the client version: {info}")]
    InvalidClientVersion { info: String },
    #[error("{}", wrong_key_text(*.key_id, *.custom_key))]
    WrongServerKey {
        key_id: Option<u32>,
        custom_key: bool,
    },
    #[error("Keeper error {code:?} (HTTP {status}): {message}")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    #[error("response failed authentication (tampered, truncated or wrong transmission key)")]
    Tampered,
    #[error("response does not decrypt with the application key: {0}")]
    Undecryptable(String),
    #[error("invalid response from Keeper: {0}")]
    InvalidResponse(String),
    #[error("binding the one-time token failed: {0}")]
    Binding(String),
    #[error("file download failed: {0}")]
    Download(String),
    /// A reply or file over a size limit; `what` names it (a file by UID and name, never content).
    #[error("{what} is too large{}; the limit is {limit} bytes", size_text(.size))]
    TooLarge {
        what: String,
        size: Option<u64>,
        limit: u64,
    },
    /// The credential names an API host outside the operator's allow-list; nothing was sent.
    #[error("Keeper host {host} is not in the allowed hosts (--keeper-allowed-hosts)")]
    HostNotAllowed { host: String },
    /// Redirects are never followed: the target would be chosen by whoever answers.
    #[error("the Keeper endpoint answered with a redirect (HTTP {status}), which is not followed")]
    Redirect { status: u16 },
    #[error("file {file}: download URL scheme {scheme:?} refused (https only)")]
    InsecureDownload { file: String, scheme: String },
}

impl From<ConfigError> for KsmError {
    fn from(err: ConfigError) -> Self {
        KsmError::Config(err)
    }
}

impl From<TokenError> for KsmError {
    fn from(err: TokenError) -> Self {
        KsmError::Token(err)
    }
}

fn retry_after_text(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(" (retry after {}s)", d.as_secs()),
        None => String::new(),
    }
}

fn size_text(size: &Option<u64>) -> String {
    size.map_or_else(String::new, |n| format!(" ({n} bytes)"))
}

fn wrong_key_text(key_id: Option<u32>, custom_key: bool) -> String {
    let asked = key_id.map_or_else(
        || "no usable key id".to_string(),
        |id| format!("key id {id}"),
    );
    if custom_key {
        format!("Keeper rejected the configured serverPublicKey (server asks for {asked})")
    } else {
        format!("Keeper rejected the transmission key id (server asks for {asked})")
    }
}

impl KsmError {
    /// Stable CamelCase reason for status conditions, events and metric labels.
    pub fn reason(&self) -> Reason {
        match self {
            KsmError::Config(_) | KsmError::InvalidCa(_) => Reason::InvalidConfig,
            KsmError::Token(_) => Reason::InvalidToken,
            KsmError::Unavailable(_) | KsmError::Timeout => Reason::KeeperUnavailable,
            KsmError::Tls(_) => Reason::TlsError,
            KsmError::Throttled { .. } => Reason::Throttled,
            KsmError::AccessDenied { .. } | KsmError::Binding(_) => Reason::AuthFailed,
            KsmError::InvalidClientVersion { .. } => Reason::InvalidClientVersion,
            KsmError::WrongServerKey { .. } => Reason::WrongServerKey,
            KsmError::Server { .. } => Reason::KeeperError,
            KsmError::Tampered
            | KsmError::Undecryptable(_)
            | KsmError::InvalidResponse(_)
            | KsmError::Redirect { .. } => Reason::InvalidResponse,
            KsmError::Download(_) => Reason::DownloadFailed,
            KsmError::TooLarge { .. } => Reason::TooLarge,
            KsmError::HostNotAllowed { .. } => Reason::HostNotAllowed,
            KsmError::InsecureDownload { .. } => Reason::InsecureDownload,
        }
    }

    /// Whether retrying later can help without anyone changing configuration.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            KsmError::Unavailable(_)
                | KsmError::Timeout
                | KsmError::Throttled { .. }
                | KsmError::Tampered
                | KsmError::Download(_)
        )
    }
}

impl KsmError {
    /// Whether Keeper refused the credential itself (a revoked or unknown device, a bad
    /// signature): the one failure after which nothing may be written from the last good copy.
    /// Anything else (an outage, a wrong server key, a TLS or configuration problem) says
    /// nothing about whether the application may still read its records.
    pub fn is_refusal(&self) -> bool {
        matches!(self, KsmError::AccessDenied { .. })
    }

    /// Whether this failure means Keeper is unreachable or answered unusably, as opposed to
    /// having refused the credential or the request. While an outage lasts, the last good copy
    /// keeps a KeeperSecret Ready (Stale); a refusal turns it Ready=False with the data kept.
    pub fn is_outage(&self) -> bool {
        match self {
            KsmError::Unavailable(_)
            | KsmError::Timeout
            | KsmError::Throttled { .. }
            | KsmError::Tampered
            | KsmError::Undecryptable(_)
            | KsmError::InvalidResponse(_) => true,
            KsmError::Server { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// Server-supplied text goes into errors: keep it short and on one line.
pub(crate) fn sanitize(text: &str) -> String {
    const MAX: usize = 200;
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX)
        .collect();
    if text.chars().count() > MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_the_ones_a_retry_can_fix() {
        assert!(KsmError::Timeout.is_transient());
        assert!(KsmError::Throttled { retry_after: None }.is_transient());
        assert!(KsmError::Tampered.is_transient());
        assert!(
            !KsmError::AccessDenied {
                message: String::new()
            }
            .is_transient()
        );
        assert!(!KsmError::Config(ConfigError::Missing("appKey")).is_transient());
        assert!(!KsmError::Tls("UnknownIssuer".into()).is_transient());
        let too_large = KsmError::TooLarge {
            what: "file \"a.pem\" (uid f1)".into(),
            size: Some(2_000_000),
            limit: 1_048_576,
        };
        assert!(!too_large.is_transient());
        assert_eq!(too_large.reason(), "TooLarge");
        assert_eq!(
            too_large.to_string(),
            "file \"a.pem\" (uid f1) is too large (2000000 bytes); the limit is 1048576 bytes"
        );
        let host = KsmError::HostNotAllowed {
            host: "evil.example".into(),
        };
        assert!(!host.is_transient());
        assert_eq!(host.reason(), "HostNotAllowed");
        assert!(host.to_string().contains("evil.example"));
        assert!(!KsmError::Redirect { status: 302 }.is_transient());
    }

    #[test]
    fn outages_are_told_apart_from_refusals() {
        assert!(KsmError::Unavailable("refused".into()).is_outage());
        assert!(KsmError::Tampered.is_outage());
        assert!(KsmError::Undecryptable("x".into()).is_outage());
        let server = |status| KsmError::Server {
            status,
            code: "x".into(),
            message: String::new(),
        };
        assert!(server(503).is_outage());
        assert!(!server(400).is_outage());
        assert!(
            !KsmError::AccessDenied {
                message: String::new()
            }
            .is_outage()
        );
        assert!(
            !KsmError::InvalidClientVersion {
                info: String::new()
            }
            .is_outage()
        );
    }

    #[test]
    fn messages_are_single_line_and_bounded() {
        let long = "x\n".repeat(300);
        let text = sanitize(&long);
        assert!(!text.contains('\n'));
        assert_eq!(text.chars().count(), 201);
        assert_eq!(
            KsmError::Throttled {
                retry_after: Some(Duration::from_secs(12))
            }
            .to_string(),
            "throttled by Keeper (retry after 12s)"
        );
        assert_eq!(
            KsmError::WrongServerKey {
                key_id: Some(9),
                custom_key: true
            }
            .to_string(),
            "Keeper rejected the configured serverPublicKey (server asks for key id 9)"
        );
    }
}
