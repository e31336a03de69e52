//! `/healthz` (process alive), `/readyz` (KeeperSecret cache synced, not shutting down) and
//! `/metrics` (OpenMetrics text). Probes stay open; `/metrics` names every KeeperSecret, so it
//! answers only callers RBAC allows ([`crate::runtime::metrics_auth`]) unless that check is turned off.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use prometheus_client::registry::Registry;
use tracing::warn;

use crate::runtime::metrics::encode;
use crate::runtime::metrics_auth::{Access, CheckError, MetricsAuth};

/// State shared with the handlers.
#[derive(Clone)]
pub struct Health {
    /// True once the controller's store has its initial list, false again at shutdown.
    pub ready: Arc<AtomicBool>,
    /// Metrics to expose.
    pub metrics: Arc<Registry>,
    /// The `/metrics` gate; `None` serves metrics to anyone who reaches the port.
    pub metrics_auth: Option<Arc<MetricsAuth>>,
}

/// The router.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    if h.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(h): State<Health>, headers: HeaderMap) -> impl IntoResponse {
    if let Some(auth) = &h.metrics_auth {
        match auth.check(&headers).await {
            Ok(Access::Allowed) => {}
            Ok(Access::Unauthenticated) => {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "a valid bearer token is required\n",
                )
                    .into_response();
            }
            Ok(Access::Forbidden) => {
                return (
                    StatusCode::FORBIDDEN,
                    "not allowed to get /metrics (bind the metrics-reader ClusterRole)\n",
                )
                    .into_response();
            }
            Err(CheckError::Busy) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "1")],
                    "too many callers under review, try again\n",
                )
                    .into_response();
            }
            Err(CheckError::Review(e)) => {
                warn!(error = %e, "could not review a /metrics caller with the API server");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot check the token now\n",
                )
                    .into_response();
            }
        }
    }
    match encode(&h.metrics) {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::metrics::Metrics;

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        get_with(router, path, None).await
    }

    async fn get_with(router: Router, path: &str, token: Option<&str>) -> (StatusCode, String) {
        use tower::ServiceExt;
        let mut req = axum::http::Request::get(path);
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req.body(axum::body::Body::empty()).unwrap();
        let resp = router.oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn endpoints() {
        let h = Health {
            ready: Arc::default(),
            metrics: Arc::new(Metrics::default().registry),
            metrics_auth: None,
        };
        assert_eq!(get(router(h.clone()), "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(router(h.clone()), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        h.ready.store(true, Ordering::Relaxed);
        assert_eq!(get(router(h.clone()), "/readyz").await.0, StatusCode::OK);
        let (code, body) = get(router(h), "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert!(
            body.contains("keeper_operator_reconcile_duration_seconds"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn metrics_need_an_authorized_token_and_probes_do_not() {
        use crate::runtime::metrics_auth::tests::FakeReviewer;
        let h = Health {
            ready: Arc::new(AtomicBool::new(true)),
            metrics: Arc::new(Metrics::default().registry),
            metrics_auth: Some(Arc::new(MetricsAuth::new(
                Box::new(FakeReviewer::default()),
            ))),
        };
        let r = || router(h.clone());
        assert_eq!(get(r(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(get(r(), "/readyz").await.0, StatusCode::OK);
        let (code, body) = get(r(), "/metrics").await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        assert!(!body.contains("keeper_operator"), "{body}");
        assert_eq!(
            get_with(r(), "/metrics", Some("bogus")).await.0,
            StatusCode::UNAUTHORIZED
        );
        let (code, body) = get_with(r(), "/metrics", Some("nobody")).await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        assert!(!body.contains("keeper_operator"), "{body}");
        let (code, body) = get_with(r(), "/metrics", Some("reader")).await;
        assert_eq!(code, StatusCode::OK);
        assert!(body.contains("keeper_operator_reconcile_duration_seconds"));

        let down = Health {
            metrics_auth: Some(Arc::new(MetricsAuth::new(Box::new(FakeReviewer {
                fail: true,
                ..FakeReviewer::default()
            })))),
            ..h.clone()
        };
        assert_eq!(
            get_with(router(down), "/metrics", Some("reader")).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
