//! The admin API: the in-process controls as JSON over plain HTTP on loopback, for shell
//! scripts and for tests that run the server as a separate process.
//!
//! | method + path | body | answer |
//! |---|---|---|
//! | `GET /admin/info` | | `{hostname, serverPublicKeyId, serverPublicKey, caPem, apps}` |
//! | `POST /admin/token` | `{app, ttlSeconds?}` | `{token}` |
//! | `POST /admin/config` | `{app}` | `{config, clientId}` (base64 config of a bound device) |
//! | `POST /admin/devices/revoke` | `{clientId}` | 204, or 404 |
//! | `GET /admin/counters` | | counter snapshot |
//! | `POST /admin/counters/reset` | | 204 |
//! | `GET /admin/faults` | | fault state |
//! | `PATCH` or `POST /admin/faults` | partial fault state | new fault state |
//! | `PUT /admin/faults` | full fault state | new fault state |
//! | `POST /admin/faults/reset` | | 204 |
//! | `GET /admin/records/{uid}` | | `{record, revision}` |
//! | `PUT /admin/records/{uid}` | record | `{revision}` |
//! | `DELETE /admin/records/{uid}` | | 204 |
//! | `POST /admin/records/{uid}/files` | file | `{revision}` |
//! | `PUT /admin/files/{uid}` | raw bytes | `{revision}` |

use super::{FaultState, FileSpec, RecordSpec, ServerHandle};
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

type Admin = State<ServerHandle>;

pub(crate) fn router(server: ServerHandle) -> Router {
    Router::new()
        .route("/admin/info", get(info))
        .route("/admin/token", post(token))
        .route("/admin/config", post(config))
        .route("/admin/devices/revoke", post(revoke))
        .route("/admin/counters", get(counters))
        .route("/admin/counters/reset", post(reset_counters))
        .route(
            "/admin/faults",
            get(faults)
                .patch(patch_faults)
                .post(patch_faults)
                .put(put_faults),
        )
        .route("/admin/faults/reset", post(reset_faults))
        .route(
            "/admin/records/{uid}",
            get(record).put(set_record).delete(delete_record),
        )
        .route("/admin/records/{uid}/files", post(set_file))
        .route("/admin/files/{uid}", put(set_file_content))
        .with_state(server)
}

fn fail(status: StatusCode, error: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": error.to_string() }))).into_response()
}

fn answer(result: anyhow::Result<Value>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(error) => fail(StatusCode::BAD_REQUEST, format!("{error:#}")),
    }
}

async fn info(State(server): Admin) -> Response {
    let (key_id, key) = server.server_public_key();
    Json(json!({
        "hostname": server.hostname(),
        "serverPublicKeyId": key_id,
        "serverPublicKey": key,
        "caPem": server.ca_pem(),
        "apps": server.app_names(),
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AppRequest {
    app: String,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

async fn token(State(server): Admin, Json(req): Json<AppRequest>) -> Response {
    let token = match req.ttl_seconds {
        Some(ttl) => server.issue_token_with_ttl(&req.app, Duration::from_secs(ttl)),
        None => server.issue_token(&req.app),
    };
    answer(token.map(|token| json!({ "token": token })))
}

async fn config(State(server): Admin, Json(req): Json<AppRequest>) -> Response {
    answer(server.bound_config_json(&req.app).and_then(|config| {
        let parsed: Value = serde_json::from_str(&config)?;
        Ok(json!({
            "config": keeper_operator::ksm::crypto::b64_std(config.as_bytes()),
            "clientId": parsed["clientId"],
        }))
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RevokeRequest {
    client_id: String,
}

async fn revoke(State(server): Admin, Json(req): Json<RevokeRequest>) -> Response {
    if server.revoke_device(&req.client_id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        fail(StatusCode::NOT_FOUND, "unknown client id")
    }
}

async fn counters(State(server): Admin) -> Response {
    Json(server.counters().snapshot()).into_response()
}

async fn reset_counters(State(server): Admin) -> StatusCode {
    server.counters().reset();
    StatusCode::NO_CONTENT
}

async fn faults(State(server): Admin) -> Response {
    Json(server.faults().state()).into_response()
}

/// Merges the given keys into the current state, so `{"throttle": 3}` leaves the rest alone.
async fn patch_faults(State(server): Admin, Json(patch): Json<Value>) -> Response {
    let Value::Object(patch) = patch else {
        return fail(StatusCode::BAD_REQUEST, "expected a JSON object");
    };
    let faults = server.faults();
    let merged = serde_json::to_value(faults.state()).and_then(|mut current| {
        if let Value::Object(map) = &mut current {
            map.extend(patch);
        }
        serde_json::from_value::<FaultState>(current)
    });
    match merged {
        Ok(state) => {
            faults.set_state(state.clone());
            Json(state).into_response()
        }
        Err(error) => fail(StatusCode::BAD_REQUEST, error),
    }
}

async fn put_faults(State(server): Admin, Json(state): Json<FaultState>) -> Response {
    server.faults().set_state(state.clone());
    Json(state).into_response()
}

async fn reset_faults(State(server): Admin) -> StatusCode {
    server.faults().clear();
    StatusCode::NO_CONTENT
}

async fn record(State(server): Admin, Path(uid): Path<String>) -> Response {
    match server.record(&uid) {
        Ok(record) => Json(json!({
            "record": record,
            "revision": server.record_revision(&uid),
        }))
        .into_response(),
        Err(error) => fail(StatusCode::NOT_FOUND, error),
    }
}

async fn set_record(
    State(server): Admin,
    Path(uid): Path<String>,
    Json(record): Json<RecordSpec>,
) -> Response {
    if record.uid != uid {
        return fail(
            StatusCode::BAD_REQUEST,
            "record uid does not match the path",
        );
    }
    answer(
        server
            .set_record(record)
            .map(|revision| json!({ "revision": revision })),
    )
}

async fn delete_record(State(server): Admin, Path(uid): Path<String>) -> Response {
    match server.delete_record(&uid) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => fail(StatusCode::NOT_FOUND, error),
    }
}

async fn set_file(
    State(server): Admin,
    Path(uid): Path<String>,
    Json(file): Json<FileSpec>,
) -> Response {
    answer(
        server
            .set_file(&uid, file)
            .map(|revision| json!({ "revision": revision })),
    )
}

async fn set_file_content(State(server): Admin, Path(uid): Path<String>, body: Bytes) -> Response {
    answer(
        server
            .set_file_content(&uid, &body)
            .map(|revision| json!({ "revision": revision })),
    )
}
