//! The reasons the operator writes in conditions, events and metric labels.
//!
//! It lives at the crate root, not in `api/`, so that `ksm/` (the Keeper client, free of
//! Kubernetes types) can name its failures with it; `api` re-exports it.

/// Declares [`Reason`] with `as_str()` spelled as the variant: the wire format (condition
/// reasons, event reasons, metric labels) is the variant name, so it cannot drift from it.
macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident,)+) => {
        /// Stable CamelCase reason of a condition, an event or a metric label.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $name,)+
        }

        impl Reason {
            /// The reason as written to the API and to metrics.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)+
                }
            }
        }
    };
}

reasons! {
    // Ready=True and the kstatus conditions of a synced KeeperSecret.
    /// Synced from Keeper.
    Synced,
    /// Keeper fails and the Secret holds the last good copy.
    LastGoodCopy,
    /// The last good copy is older than the operator's maximum age.
    LastGoodCopyExpired,
    /// Synced, and a deletion policy removed the keys of records gone from Keeper.
    RecordDeleted,
    /// Stale=False: the data is current.
    Fresh,
    /// Stalled=False after a failure a retry may fix.
    Retrying,

    // ClusterKeeperStore Ready.
    /// The store's credential is a one-time token not redeemed yet.
    TokenNotRedeemed,
    /// Keeper has not been asked with the store's credential.
    NotUsed,
    /// Keeper answered the latest request for the store's credential.
    KeeperAnswered,

    // Keeper.
    /// The KSM configuration is unusable.
    InvalidConfig,
    /// The one-time token is malformed.
    InvalidToken,
    /// Keeper is unreachable or timed out.
    KeeperUnavailable,
    /// TLS with Keeper failed.
    TlsError,
    /// Keeper asks to slow down.
    Throttled,
    /// Keeper refused the credential, or the credential Secret is unusable.
    AuthFailed,
    /// Keeper refused the client version.
    InvalidClientVersion,
    /// Keeper rejected the server key.
    WrongServerKey,
    /// Keeper answered with an error.
    KeeperError,
    /// Keeper's answer is unusable.
    InvalidResponse,
    /// A file attachment did not download.
    DownloadFailed,
    /// An answer, a file or the Secret is over its size limit.
    TooLarge,
    /// A download points at a host not allowed.
    HostNotAllowed,
    /// A download is not over HTTPS.
    InsecureDownload,

    // Mapping and rendering.
    /// The spec cannot work as written.
    InvalidSpec,
    /// No record matches.
    RecordNotFound,
    /// A title matches several records (or files).
    AmbiguousTitle,
    /// The record has no such field, property or file.
    FieldNotFound,
    /// A template ran out of time.
    TemplateTimeout,
    /// The operator's renders are busy.
    RenderBusy,
    /// A `templateFrom` source or key is missing.
    TemplateSourceNotFound,
    /// A `templateFrom` source is unusable.
    TemplateSourceInvalid,
    /// A value did not decode as its `decodingStrategy` says.
    DecodingFailed,

    // Credentials and the target Secret.
    /// A store's rules or the operator's policy refuse this.
    NotAllowed,
    /// A one-time token could not be redeemed (or is being redeemed).
    TokenRedemptionFailed,
    /// The target Secret did not invite this KeeperSecret.
    TargetNotOptedIn,
    /// The target Secret belongs to someone else.
    SecretOwnedElsewhere,
    /// Merge needs an existing Secret.
    TargetNotFound,
    /// The write would lose data while Keeper is unchanged.
    WriteRefused,
    /// Keeper refused the credential; nothing is written until it accepts one.
    CredentialRefused,
    /// A deletion policy would remove data Keeper's answer does not prove gone.
    DeletionHeld,
    /// The Kubernetes API failed.
    KubernetesError,

    // Events of rollout restarts.
    /// A workload was restarted after its Secret changed.
    RolloutRestarted,
    /// A workload could not be restarted.
    RolloutRestartFailed,
}

impl Reason {
    /// Failures no retry fixes: the spec, a store's rules or another owner's Secret must
    /// change (kstatus Stalled).
    pub fn stalls(self) -> bool {
        matches!(
            self,
            Reason::InvalidSpec
                | Reason::AmbiguousTitle
                | Reason::NotAllowed
                | Reason::SecretOwnedElsewhere
        )
    }

    /// A record or field missing from the data read, which may have been created in Keeper
    /// (or lost in decryption) since.
    pub fn is_missing_reference(self) -> bool {
        matches!(self, Reason::RecordNotFound | Reason::FieldNotFound)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lets tests and callers compare with the wire string.
impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
