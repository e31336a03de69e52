//! In-cluster one-time-token redemption: a credential Secret may hold a one-time token instead
//! of a config. The operator binds it once and stores the bound config (base64) under the same
//! key, so the device's private key never leaves the cluster.
//!
//! Double redemption is prevented with the Secret's `resourceVersion`: a redeemer first claims
//! the Secret (an annotation written with an update conditioned on the version it read), and
//! only the claim winner spends the token. A second replica's claim conflicts and retries,
//! then finds either the claim (and waits) or the config.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::error::{CredentialError, Error, Redemption};
use crate::keeper::KeeperSource;
use crate::ksm::token::OneTimeToken;

use crate::api::{CLAIM_ANNOTATION, HOSTNAME_KEY, REDEEMED_ANNOTATION, SERVER_KEY_KEY};
/// A claim older than this is considered abandoned (its redeemer died); redeeming again is
/// then safe: an unspent token binds, a spent one is refused by Keeper.
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(120);

/// What is needed to redeem a token. `Debug` is redacted.
pub struct TokenRequest {
    pub token: Zeroizing<String>,
    pub hostname: Option<String>,
    pub server_key: Option<(String, String)>,
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRequest")
            .field("hostname", &self.hostname)
            .field("server_key_id", &self.server_key.as_ref().map(|(id, _)| id))
            .finish_non_exhaustive()
    }
}

/// Builds the request from the token text and the Secret's optional `hostname` and
/// `serverPublicKey` keys; checks everything that can be checked without Keeper.
pub fn token_request(
    secret: &Secret,
    token: &str,
    where_: &str,
    key: &str,
) -> Result<TokenRequest, Error> {
    let parsed = OneTimeToken::parse(token).map_err(|e| CredentialError::MalformedToken {
        secret: where_.to_string(),
        key: key.to_string(),
        error: e.to_string(),
    })?;
    let text = |k: &str| -> Result<Option<String>, Error> {
        match secret.data.as_ref().and_then(|d| d.get(k)) {
            None => Ok(None),
            Some(b) => std::str::from_utf8(&b.0)
                .map(|s| Some(s.trim().to_string()).filter(|s| !s.is_empty()))
                .map_err(|_| {
                    Error::from(CredentialError::NotText {
                        secret: where_.to_string(),
                        key: k.to_string(),
                    })
                }),
        }
    };
    let hostname = text(HOSTNAME_KEY)?;
    if hostname.is_none() && parsed.hostname.is_none() {
        return Err(CredentialError::NoRegion {
            secret: where_.to_string(),
            key: key.to_string(),
        }
        .into());
    }
    let server_key = match text(SERVER_KEY_KEY)? {
        None => None,
        Some(v) => {
            let (id, point) = v
                .split_once(':')
                .filter(|(id, p)| id.trim().parse::<u32>().is_ok() && !p.trim().is_empty())
                .ok_or_else(|| CredentialError::BadServerKey {
                    secret: where_.to_string(),
                })?;
            Some((id.trim().to_string(), point.trim().to_string()))
        }
    };
    Ok(TokenRequest {
        token: Zeroizing::new(token.to_string()),
        hostname,
        server_key,
    })
}

/// Age of a live claim on the Secret, if any (a claim from the future counts as fresh).
pub fn claim_age(secret: &Secret, now: Timestamp) -> Option<Duration> {
    let at: Timestamp = secret.annotations().get(CLAIM_ANNOTATION)?.parse().ok()?;
    Some(Duration::try_from(now.duration_since(at)).unwrap_or(Duration::ZERO))
}

/// The Secret with a claim annotation; keeps `resourceVersion`, so writing it conflicts if
/// anyone changed the Secret since it was read.
pub fn claimed(secret: &Secret, now: Timestamp) -> Secret {
    let mut s = secret.clone();
    s.annotations_mut()
        .insert(CLAIM_ANNOTATION.into(), now.to_string());
    s
}

/// The Secret with the token under `key` replaced by `config` (base64), the claim removed and
/// the redemption time recorded; keeps `resourceVersion`.
pub fn redeemed(secret: &Secret, key: &str, config: &str, now: Timestamp) -> Secret {
    let mut s = secret.clone();
    s.annotations_mut().remove(CLAIM_ANNOTATION);
    s.annotations_mut()
        .insert(REDEEMED_ANNOTATION.into(), now.to_string());
    s.data
        .get_or_insert_default()
        .insert(key.to_string(), ByteString(config.as_bytes().to_vec()));
    s
}

/// Redeems the token in `secret` (already read, holding the token under `key`) and stores the
/// bound config in its place. Returns the updated Secret.
pub async fn redeem_in_place<S: KeeperSource>(
    api: &Api<Secret>,
    secret: &Secret,
    key: &str,
    request: &TokenRequest,
    where_: &str,
    keeper: &S,
) -> Result<Secret, Error> {
    if let Some(age) = claim_age(secret, Timestamp::now())
        && age < CLAIM_TIMEOUT
    {
        return Err(Redemption::InProgress {
            secret: where_.to_string(),
            age_secs: age.as_secs(),
        }
        .into());
    }
    let name = secret.name_any();
    // The claim: only one writer wins this conditioned update.
    let claim = api
        .replace(
            &name,
            &PostParams::default(),
            &claimed(secret, Timestamp::now()),
        )
        .await
        .map_err(|e| conflict_or(e, where_))?;
    let config = keeper
        .redeem(
            &request.token,
            request.hostname.as_deref(),
            request.server_key.clone(),
        )
        .await
        .map_err(|error| Redemption::Failed {
            secret: where_.to_string(),
            key: key.to_string(),
            error,
        });
    let config = match config {
        Ok(c) => Zeroizing::new(c.to_base64()),
        Err(e) => {
            // Release the claim so the error is not masked as "in progress"; the token stays
            // for the user to replace.
            let mut release = claim.clone();
            release.annotations_mut().remove(CLAIM_ANNOTATION);
            if let Err(err) = api.replace(&name, &PostParams::default(), &release).await {
                // The body holds the token: the API's message could quote it.
                let error = crate::error::kube_summary(&err);
                warn!(error, secret = name, "could not release the token claim");
            }
            return Err(e.into());
        }
    };
    let stored = api
        .replace(
            &name,
            &PostParams::default(),
            &redeemed(&claim, key, &config, Timestamp::now()),
        )
        .await
        .map_err(|e| Redemption::NotStored {
            secret: where_.to_string(),
            error: kube_reason(&e),
        })?;
    info!(
        secret = name,
        "redeemed one-time token; stored the bound config"
    );
    Ok(stored)
}

fn conflict_or(e: kube::Error, where_: &str) -> Error {
    match &e {
        kube::Error::Api(s) if s.code == 409 => Redemption::Conflict {
            secret: where_.to_string(),
        }
        .into(),
        _ => Error::Kube(e),
    }
}

fn kube_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("HTTP {} {}", s.code, s.reason),
        _ => "Kubernetes API error".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "YyIhK5wXFHj36wGBAOmBsxI3v5rIruINrC8KXjyM58c";

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn request_takes_hostname_and_server_key_from_the_secret() {
        let s = secret(&[
            ("hostname", "127.0.0.1:8443\n"),
            ("serverPublicKey", "7:AbC_d"),
        ]);
        let r = token_request(&s, KEY, "Secret a/b", "config").unwrap();
        assert_eq!(r.hostname.as_deref(), Some("127.0.0.1:8443"));
        assert_eq!(r.server_key, Some(("7".into(), "AbC_d".into())));
        assert!(!format!("{r:?}").contains(KEY));
        let r = token_request(&secret(&[]), &format!("EU:{KEY}"), "S", "config").unwrap();
        assert_eq!((r.hostname, r.server_key), (None, None));
    }

    #[test]
    fn bad_requests_are_actionable_and_value_free() {
        let e = token_request(&secret(&[]), KEY, "Secret a/b", "config").unwrap_err();
        assert_eq!(e.reason(), "AuthFailed");
        assert!(e.to_string().contains("without a region prefix"), "{e}");
        assert!(!e.to_string().contains(KEY));
        let s = secret(&[("serverPublicKey", "x:SECRETPOINT")]);
        let e = token_request(&s, &format!("US:{KEY}"), "S", "config").unwrap_err();
        assert!(e.to_string().contains("must be ID:KEY"), "{e}");
        assert!(!e.to_string().contains("SECRETPOINT"));
        let e = token_request(&secret(&[]), "US:c2hvcnQ", "S", "config").unwrap_err();
        assert!(e.to_string().contains("malformed one-time token"), "{e}");
        assert!(!e.to_string().contains("c2hvcnQ"));
    }

    #[test]
    fn claim_then_redeem_rewrites_the_key_and_keeps_the_version() {
        let mut s = secret(&[("config", KEY), ("hostname", "h")]);
        s.metadata.resource_version = Some("41".into());
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(claim_age(&s, t0), None);
        let c = claimed(&s, t0);
        assert_eq!(c.metadata.resource_version.as_deref(), Some("41"));
        let later: Timestamp = "2026-01-01T00:00:30Z".parse().unwrap();
        assert_eq!(claim_age(&c, later), Some(Duration::from_secs(30)));
        assert_eq!(
            claim_age(&c, "2025-12-31T23:00:00Z".parse().unwrap()),
            Some(Duration::ZERO)
        );
        let r = redeemed(&c, "config", "Q09ORklH", later);
        assert_eq!(claim_age(&r, later), None);
        assert!(r.annotations().contains_key(REDEEMED_ANNOTATION));
        let data = r.data.unwrap();
        assert_eq!(data["config"].0, b"Q09ORklH");
        assert_eq!(data["hostname"].0, b"h");
        assert_eq!(r.metadata.resource_version.as_deref(), Some("41"));
    }
}
