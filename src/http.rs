//! `/healthz` (process alive), `/readyz` (KeeperSecret cache synced, not shutting down) and
//! `/metrics` (OpenMetrics text).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// State shared with the handlers.
#[derive(Clone)]
pub struct Health {
    /// True once the controller's store has its initial list, false again at shutdown.
    pub ready: Arc<AtomicBool>,
    /// Metrics to expose.
    pub metrics: Arc<Metrics>,
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

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    match h.metrics.encode() {
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

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        use tower::ServiceExt;
        let req = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
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
            metrics: Arc::default(),
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
}
