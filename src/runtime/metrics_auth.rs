//! Authentication and authorization of `/metrics` scrapes, as controller-runtime's secure
//! metrics (and kube-rbac-proxy) do it: the caller's bearer token is checked with a TokenReview,
//! then its user with a SubjectAccessReview for `get` on the non-resource URL `/metrics`. The
//! metrics name every KeeperSecret, so only callers RBAC allows may read them.
//!
//! Decisions are cached briefly, keyed by a SHA-256 of the token (never the token), in a bounded
//! map, so a scraper every few seconds costs two API calls a minute; a flood of bogus tokens
//! holds at most [`MAX_REVIEWS_IN_FLIGHT`] reviews at the API server at a time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tracing::debug;

use crate::lock;

/// The path a scraper must be allowed to `get`.
pub const METRICS_PATH: &str = "/metrics";
/// How long an allowed token is trusted without asking the API server again.
pub const ALLOWED_TTL: Duration = Duration::from_secs(60);
/// How long a refused token stays refused (short, so a new RoleBinding takes effect soon).
pub const DENIED_TTL: Duration = Duration::from_secs(10);
/// Tokens remembered at once; the oldest decision makes room for a new one.
pub const MAX_CACHED: usize = 1024;
/// TokenReviews and SubjectAccessReviews made at the same time.
pub const MAX_REVIEWS_IN_FLIGHT: usize = 4;
/// Longer bearer tokens are refused unread (ServiceAccount tokens are about 1 kB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What the API server said about a caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Authenticated and allowed to `get /metrics`.
    Allowed,
    /// No bearer token, or one the API server does not accept (HTTP 401).
    Unauthenticated,
    /// A valid token whose user may not `get /metrics` (HTTP 403).
    Forbidden,
}

/// The two reviews, behind a trait so the HTTP layer is tested without an API server.
pub trait Reviewer: Send + Sync {
    /// The user `token` authenticates as, or `None` if the API server rejects it.
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<Option<UserInfo>>>;
    /// Whether `user` may `get` the non-resource URL `path`.
    fn authorize<'a>(
        &'a self,
        user: &'a UserInfo,
        path: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<bool>>;
}

/// TokenReview and SubjectAccessReview through the operator's own client (its ServiceAccount
/// needs `create` on both; the chart grants it).
pub struct KubeReviewer {
    client: Client,
}

impl KubeReviewer {
    pub fn new(client: Client) -> Self {
        KubeReviewer { client }
    }
}

impl Reviewer for KubeReviewer {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<Option<UserInfo>>> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: token.to_string(),
                    audiences: None,
                },
                ..TokenReview::default()
            };
            let answer = Api::<TokenReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await?;
            Ok(answer
                .status
                .filter(|s| s.authenticated == Some(true))
                .and_then(|s| s.user))
        })
    }

    fn authorize<'a>(
        &'a self,
        user: &'a UserInfo,
        path: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(async move {
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: user.username.clone(),
                    groups: user.groups.clone(),
                    uid: user.uid.clone(),
                    extra: user.extra.clone(),
                    non_resource_attributes: Some(NonResourceAttributes {
                        path: Some(path.to_string()),
                        verb: Some("get".to_string()),
                    }),
                    resource_attributes: None,
                },
                ..SubjectAccessReview::default()
            };
            let answer = Api::<SubjectAccessReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await?;
            Ok(answer.status.is_some_and(|s| s.allowed))
        })
    }
}

/// Why a `/metrics` caller could not be checked now.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// [`MAX_REVIEWS_IN_FLIGHT`] reviews are already under way.
    #[error("too many /metrics callers under review")]
    Busy,
    /// The API server could not be asked.
    #[error(transparent)]
    Review(#[from] anyhow::Error),
}

/// The `/metrics` gate: reviews plus a bounded, short-lived cache of their decisions.
pub struct MetricsAuth {
    reviewer: Box<dyn Reviewer>,
    cache: Mutex<HashMap<[u8; 32], (Instant, Access)>>,
    in_flight: Semaphore,
}

impl MetricsAuth {
    pub fn new(reviewer: Box<dyn Reviewer>) -> Self {
        MetricsAuth {
            reviewer,
            cache: Mutex::default(),
            in_flight: Semaphore::new(MAX_REVIEWS_IN_FLIGHT),
        }
    }

    /// Decides on a request by its headers. An error means the caller could not be checked now
    /// (the caller answers 503; nothing is cached).
    pub async fn check(&self, headers: &HeaderMap) -> Result<Access, CheckError> {
        let Some(token) = bearer_token(headers) else {
            return Ok(Access::Unauthenticated);
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(decision) = self.cached(&key, Instant::now()) {
            return Ok(decision);
        }
        let decision = {
            // Callers beyond the limit are turned away at once rather than queued: a flood of
            // fresh tokens must not hold connections (and their memory) open while it waits.
            let _permit = self.in_flight.try_acquire().map_err(|_| CheckError::Busy)?;
            self.review(token).await?
        };
        self.remember(key, decision, Instant::now());
        Ok(decision)
    }

    async fn review(&self, token: &str) -> anyhow::Result<Access> {
        let Some(user) = self.reviewer.authenticate(token).await? else {
            return Ok(Access::Unauthenticated);
        };
        let allowed = self.reviewer.authorize(&user, METRICS_PATH).await?;
        if !allowed {
            debug!(
                user = user.username.as_deref().unwrap_or_default(),
                "refused a /metrics scrape: no RBAC for get {METRICS_PATH}"
            );
        }
        Ok(if allowed {
            Access::Allowed
        } else {
            Access::Forbidden
        })
    }

    fn cached(&self, key: &[u8; 32], now: Instant) -> Option<Access> {
        let cache = lock(&self.cache);
        let (at, decision) = cache.get(key)?;
        (now.saturating_duration_since(*at) < ttl(*decision)).then_some(*decision)
    }

    fn remember(&self, key: [u8; 32], decision: Access, now: Instant) {
        let mut cache = lock(&self.cache);
        if cache.len() >= MAX_CACHED && !cache.contains_key(&key) {
            cache.retain(|_, (at, d)| now.saturating_duration_since(*at) < ttl(*d));
            if cache.len() >= MAX_CACHED
                && let Some(oldest) = cache.iter().min_by_key(|(_, (at, _))| *at).map(|e| *e.0)
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(key, (now, decision));
    }

    #[cfg(test)]
    fn cached_len(&self) -> usize {
        lock(&self.cache).len()
    }
}

fn ttl(decision: Access) -> Duration {
    match decision {
        Access::Allowed => ALLOWED_TTL,
        Access::Unauthenticated | Access::Forbidden => DENIED_TTL,
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive), if any.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= MAX_TOKEN_BYTES)
        .then_some(token)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Tokens `reader` (allowed), `nobody` (valid, not allowed); anything else is invalid.
    /// `fail` makes every review an API error. Counts the reviews made.
    #[derive(Default)]
    pub(crate) struct FakeReviewer {
        pub reviews: Arc<AtomicUsize>,
        pub fail: bool,
        /// When set, every review waits until this is notified.
        pub hold: Option<Arc<tokio::sync::Notify>>,
    }

    impl Reviewer for FakeReviewer {
        fn authenticate<'a>(
            &'a self,
            token: &'a str,
        ) -> BoxFuture<'a, anyhow::Result<Option<UserInfo>>> {
            self.reviews.fetch_add(1, Ordering::Relaxed);
            let fail = self.fail;
            let hold = self.hold.clone();
            Box::pin(async move {
                if let Some(hold) = hold {
                    hold.notified().await;
                }
                anyhow::ensure!(!fail, "API server unavailable");
                Ok(["reader", "nobody"].contains(&token).then(|| UserInfo {
                    username: Some(format!("system:serviceaccount:ns:{token}")),
                    ..UserInfo::default()
                }))
            })
        }

        fn authorize<'a>(
            &'a self,
            user: &'a UserInfo,
            path: &'a str,
        ) -> BoxFuture<'a, anyhow::Result<bool>> {
            Box::pin(async move {
                Ok(path == METRICS_PATH
                    && user.username.as_deref() == Some("system:serviceaccount:ns:reader"))
            })
        }
    }

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = authorization {
            h.insert(AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn bearer_tokens_are_parsed_strictly() {
        assert_eq!(bearer_token(&headers(Some("Bearer abc"))), Some("abc"));
        assert_eq!(bearer_token(&headers(Some("bearer  abc "))), Some("abc"));
        assert_eq!(bearer_token(&headers(Some("Basic abc"))), None);
        assert_eq!(bearer_token(&headers(Some("Bearer "))), None);
        assert_eq!(bearer_token(&headers(Some("Bearerabc"))), None);
        assert_eq!(bearer_token(&headers(None)), None);
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(bearer_token(&headers(Some(&huge))), None);
    }

    #[tokio::test]
    async fn decisions_follow_the_reviews_and_are_cached() {
        let fake = FakeReviewer::default();
        let reviews = fake.reviews.clone();
        let auth = MetricsAuth::new(Box::new(fake));
        let check = |h: Option<&'static str>| {
            let auth = &auth;
            async move { auth.check(&headers(h)).await.unwrap() }
        };
        assert_eq!(check(None).await, Access::Unauthenticated);
        assert_eq!(reviews.load(Ordering::Relaxed), 0, "no token, no review");
        assert_eq!(check(Some("Bearer bogus")).await, Access::Unauthenticated);
        assert_eq!(check(Some("Bearer nobody")).await, Access::Forbidden);
        assert_eq!(check(Some("Bearer reader")).await, Access::Allowed);
        assert_eq!(reviews.load(Ordering::Relaxed), 3);
        for token in ["Bearer bogus", "Bearer nobody", "Bearer reader"] {
            check(Some(token)).await;
        }
        assert_eq!(
            reviews.load(Ordering::Relaxed),
            3,
            "answered from the cache"
        );
    }

    #[tokio::test]
    async fn api_errors_are_errors_and_not_cached() {
        let fake = FakeReviewer {
            fail: true,
            ..FakeReviewer::default()
        };
        let auth = MetricsAuth::new(Box::new(fake));
        assert!(auth.check(&headers(Some("Bearer reader"))).await.is_err());
        assert_eq!(auth.cached_len(), 0);
    }

    #[tokio::test]
    async fn callers_beyond_the_review_limit_are_turned_away_at_once() {
        let hold = Arc::new(tokio::sync::Notify::new());
        let auth = Arc::new(MetricsAuth::new(Box::new(FakeReviewer {
            hold: Some(hold.clone()),
            ..FakeReviewer::default()
        })));
        let mut held = Vec::new();
        for i in 0..MAX_REVIEWS_IN_FLIGHT {
            let auth = auth.clone();
            held.push(tokio::spawn(async move {
                auth.check(&headers(Some(&format!("Bearer fresh-{i}"))))
                    .await
            }));
        }
        while auth.in_flight.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let busy = auth.check(&headers(Some("Bearer reader"))).await;
        assert!(matches!(busy, Err(CheckError::Busy)), "{busy:?}");
        hold.notify_waiters();
        for h in held {
            assert_eq!(h.await.unwrap().unwrap(), Access::Unauthenticated);
        }
    }

    #[test]
    fn the_cache_expires_and_stays_bounded() {
        let auth = MetricsAuth::new(Box::new(FakeReviewer::default()));
        let t0 = Instant::now();
        auth.remember([1; 32], Access::Allowed, t0);
        auth.remember([2; 32], Access::Forbidden, t0);
        let later = |d: Duration| t0 + d;
        assert_eq!(
            auth.cached(&[1; 32], later(ALLOWED_TTL - Duration::from_secs(1))),
            Some(Access::Allowed)
        );
        assert_eq!(auth.cached(&[1; 32], later(ALLOWED_TTL)), None);
        assert_eq!(
            auth.cached(&[2; 32], later(DENIED_TTL)),
            None,
            "denials expire sooner"
        );

        for i in 0..(MAX_CACHED + 10) {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            auth.remember(key, Access::Allowed, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(auth.cached_len(), MAX_CACHED);
        let mut newest = [0u8; 32];
        newest[..8].copy_from_slice(&((MAX_CACHED + 9) as u64).to_le_bytes());
        assert!(
            auth.cached(&newest, t0).is_some(),
            "the newest decision is kept"
        );
        assert!(auth.cached(&[1; 32], t0).is_none(), "the oldest made room");
    }
}
