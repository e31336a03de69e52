//! Test-only: the reconciler against a fake API server (a kube `Client` over an in-memory tower
//! service) and a fake Keeper, so its orchestration is tested in milliseconds. The API server
//! fake keeps objects by path, answers GET, PUT, POST and PATCH (server-side apply and merge
//! patches as a deep merge, enough for one field manager) and records every request, so a test
//! can say exactly which requests a reconcile made. The real API server is exercised by e2e/.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::http::{Method, Request, Response, StatusCode};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::client::Body;
use kube::core::PartialObjectMetaExt;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use super::memo::{Caches, Writers};
use super::reconcile::{Context, Settings, reconcile};
use crate::api::KeeperSecret;
use crate::controller::metrics::ReconcileMetrics;
use crate::error::Error;
use crate::k8s::Events;
use crate::k8s::rollout::RolloutMetrics;
use crate::keeper::KeeperSource;
use crate::keeper::fetcher::{FileBytes, KeeperHealth, Origin, Served, Snapshot, Staleness};
use crate::ksm::config::KsmConfig;
use crate::ksm::crypto::AesKey;
use crate::ksm::error::KsmError;
use crate::ksm::record::{KeeperFile, Vault};
use crate::lock;

/// What the fake API server holds and saw.
#[derive(Default)]
struct ApiState {
    /// Objects by path (`/api/v1/namespaces/shop/secrets/db`).
    objects: BTreeMap<String, Value>,
    /// `METHOD path` of every request but event posts, in order.
    requests: Vec<String>,
    /// Events posted (their `reason`s).
    events: Vec<String>,
    resource_version: u64,
}

/// An in-memory API server behind a real kube [`Client`].
#[derive(Clone, Default)]
pub struct FakeApi(Arc<Mutex<ApiState>>);

impl FakeApi {
    /// The fake and a client that talks to it.
    pub fn start() -> (FakeApi, Client) {
        let api = FakeApi::default();
        let served = api.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let api = served.clone();
            async move { Ok::<_, std::convert::Infallible>(api.handle(req).await) }
        });
        (api, Client::new(service, "default"))
    }

    /// Stores `object` at `path` as if created: a UID and a resourceVersion are filled in.
    pub fn put(&self, path: &str, mut object: Value) {
        let mut state = lock(&self.0);
        stamp(&mut state, path, &mut object, None);
        state.objects.insert(path.to_string(), object);
    }

    /// The object at `path`.
    pub fn get(&self, path: &str) -> Option<Value> {
        lock(&self.0).objects.get(path).cloned()
    }

    /// Changes the object at `path` in place (as another client would), moving its version.
    pub fn edit(&self, path: &str, f: impl FnOnce(&mut Value)) {
        let mut state = lock(&self.0);
        state.resource_version += 1;
        let rv = state.resource_version.to_string();
        let object = state.objects.get_mut(path).expect("no object to edit");
        f(object);
        object["metadata"]["resourceVersion"] = json!(rv);
    }

    /// Requests seen since the last call, as `METHOD path`.
    pub fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut lock(&self.0).requests)
    }

    /// Reasons of the events posted so far.
    pub fn events(&self) -> Vec<String> {
        lock(&self.0).events.clone()
    }

    async fn handle(&self, req: Request<Body>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let metadata_only = req
            .headers()
            .get("accept")
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
        let body = req.into_body().collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let mut state = lock(&self.0);
        if method == Method::POST && path.ends_with("/events") {
            state
                .events
                .push(body["reason"].as_str().unwrap_or_default().into());
            return respond(StatusCode::CREATED, &body);
        }
        let shape = if metadata_only { " (metadata)" } else { "" };
        state.requests.push(format!("{method} {path}{shape}"));
        // A subresource write lands on its object.
        let (key, subresource) = match path.strip_suffix("/status") {
            Some(object) => (object.to_string(), Some("status")),
            None => (path.clone(), None),
        };
        match method {
            Method::GET => match state.objects.get(&key) {
                Some(object) => respond(StatusCode::OK, object),
                None => status(StatusCode::NOT_FOUND, "NotFound"),
            },
            Method::PATCH => {
                let mut object = match (state.objects.get(&key), subresource) {
                    (Some(existing), _) => existing.clone(),
                    (None, Some(_)) => return status(StatusCode::NOT_FOUND, "NotFound"),
                    (None, None) => json!({}),
                };
                let created = object == json!({});
                match subresource {
                    Some(sub) => merge(&mut object[sub], &body[sub]),
                    None => merge(&mut object, &body),
                }
                stamp(&mut state, &key, &mut object, None);
                state.objects.insert(key, object.clone());
                let code = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                respond(code, &object)
            }
            Method::PUT => {
                let current = state.objects.get(&key).cloned();
                let Some(current) = current else {
                    return status(StatusCode::NOT_FOUND, "NotFound");
                };
                if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                    return status(StatusCode::CONFLICT, "Conflict");
                }
                let mut object = body;
                stamp(&mut state, &key, &mut object, Some(&current));
                state.objects.insert(key, object.clone());
                respond(StatusCode::OK, &object)
            }
            Method::POST => {
                let key = format!("{path}/{}", body["metadata"]["name"].as_str().unwrap_or(""));
                if state.objects.contains_key(&key) {
                    return status(StatusCode::CONFLICT, "AlreadyExists");
                }
                let mut object = body;
                stamp(&mut state, &key, &mut object, None);
                state.objects.insert(key, object.clone());
                respond(StatusCode::CREATED, &object)
            }
            Method::DELETE => match state.objects.remove(&key) {
                Some(object) => respond(StatusCode::OK, &object),
                None => status(StatusCode::NOT_FOUND, "NotFound"),
            },
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
        }
    }
}

/// Gives `object` a new resourceVersion, and a UID (kept from `previous` or the stored object).
fn stamp(state: &mut ApiState, key: &str, object: &mut Value, previous: Option<&Value>) {
    state.resource_version += 1;
    let uid = previous
        .or(state.objects.get(key))
        .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("uid-{}", state.resource_version));
    let meta = &mut object["metadata"];
    meta["uid"] = json!(uid);
    meta["resourceVersion"] = json!(state.resource_version.to_string());
}

/// JSON merge patch (RFC 7386): objects merge key by key, `null` deletes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let target = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

fn respond(code: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::from(serde_json::to_vec(body).unwrap_or_default()));
    *response.status_mut() = code;
    response
}

fn status(code: StatusCode, reason: &str) -> Response<Body> {
    respond(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": reason, "reason": reason, "code": code.as_u16()}),
    )
}

/// A Keeper behind a shared fetcher: `vault` is what Keeper holds now; a caller gets the data
/// last fetched while it is younger than the caller's `max_age`, else a fetch (counted in
/// `calls`) takes `vault` at that moment. `failure` makes fetches fail.
#[derive(Default)]
pub struct FakeKeeper {
    pub vault: Mutex<Vault>,
    /// The data last fetched and when.
    pub fetched: Mutex<Option<(Vault, SystemTime)>>,
    /// Content of file attachments by file UID.
    pub files: Mutex<HashMap<String, Vec<u8>>>,
    /// When set, `vault` answers that Keeper is unavailable.
    pub failure: Mutex<Option<KsmError>>,
    /// When set, `vault` serves `vault` as the last good copy (restored from the sealed store)
    /// with this failure.
    pub stale: Mutex<Option<KsmError>>,
    /// `vault` calls so far.
    pub calls: AtomicUsize,
    /// Tokens redeemed so far.
    pub redeemed: Mutex<Vec<String>>,
}

impl KeeperSource for FakeKeeper {
    async fn vault(
        &self,
        _cred: &crate::keeper::CredentialKey,
        _config: &KsmConfig,
        max_age: Duration,
    ) -> Result<Served, KsmError> {
        if let Some(error) = lock(&self.stale).clone() {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let snapshot = Snapshot {
                vault: lock(&self.vault).clone(),
                fetched_at: SystemTime::now() - Duration::from_secs(600),
                origin: Origin::Store,
            };
            return Ok(Served::Stale(
                Arc::new(snapshot),
                Staleness {
                    error: Arc::new(error),
                    since: SystemTime::now(),
                    retry_in: Duration::from_secs(30),
                },
            ));
        }
        let mut fetched = lock(&self.fetched);
        let young = |at: &SystemTime| at.elapsed().unwrap_or_default() < max_age;
        if !fetched.as_ref().is_some_and(|(_, at)| young(at)) {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if let Some(error) = lock(&self.failure).clone() {
                return Ok(Served::Unavailable(Staleness {
                    error: Arc::new(error),
                    since: SystemTime::now(),
                    retry_in: Duration::from_secs(30),
                }));
            }
            *fetched = Some((lock(&self.vault).clone(), SystemTime::now()));
        }
        let (vault, fetched_at) = fetched.clone().expect("fetched above");
        Ok(Served::Fresh(Arc::new(Snapshot {
            vault,
            fetched_at,
            origin: Origin::Keeper,
        })))
    }

    async fn file(
        &self,
        _cred: &crate::keeper::CredentialKey,
        _config: &KsmConfig,
        _revision: i64,
        file: &KeeperFile,
        _budget: u64,
    ) -> Result<FileBytes, KsmError> {
        let content = lock(&self.files)
            .get(&file.uid)
            .cloned()
            .unwrap_or_default();
        Ok(Arc::new(zeroize::Zeroizing::new(content)))
    }

    async fn health(&self, _cred: &crate::keeper::CredentialKey) -> Option<KeeperHealth> {
        let fetched_at = lock(&self.fetched).as_ref().map(|(_, at)| *at);
        let failure = lock(&self.failure)
            .clone()
            .or_else(|| lock(&self.stale).clone())
            .map(|e| (Arc::new(e), SystemTime::now()));
        (fetched_at.is_some() || failure.is_some()).then_some(KeeperHealth {
            fetched_at,
            failure,
            persist_refused: false,
        })
    }

    async fn redeem(
        &self,
        token: &str,
        _hostname: Option<&str>,
        _server_key: Option<(String, String)>,
    ) -> Result<KsmConfig, KsmError> {
        lock(&self.redeemed).push(token.to_string());
        Ok(bound_config())
    }
}

/// A bound KSM config, as a redeemed token or a stored credential holds it.
pub fn bound_config() -> KsmConfig {
    KsmConfig::unbound("keepersecurity.com".into(), AesKey::random(), 10, None)
        .into_bound(AesKey::random(), None)
}

/// The API path of a Secret.
pub fn secret_path(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/secrets/{name}")
}

/// The API path of a KeeperSecret.
pub fn keeper_secret_path(namespace: &str, name: &str) -> String {
    format!("/apis/keeper-operator.dev/v1alpha1/namespaces/{namespace}/keepersecrets/{name}")
}

/// A reconciler wired to a [`FakeApi`] and a [`FakeKeeper`].
pub struct Fixture {
    pub api: FakeApi,
    pub ctx: Arc<Context<FakeKeeper>>,
    writers: Writers,
}

impl Fixture {
    /// Needs a Tokio runtime (the event publisher runs as a task).
    #[allow(clippy::new_without_default)] // a Default that spawns a task would surprise
    pub fn new() -> Fixture {
        Fixture::with_settings(|_| {})
    }

    /// Like [`Fixture::new`], with the test settings changed by `edit`.
    pub fn with_settings(edit: impl FnOnce(&mut Settings)) -> Fixture {
        let (api, client) = FakeApi::start();
        let (caches, writers) = Caches::new();
        let events = Events::start(
            client.clone(),
            Reporter {
                controller: "keeper-operator".into(),
                instance: None,
            },
        );
        let mut settings = Settings {
            default_refresh_interval: Duration::from_secs(3600),
            operator_namespace: Some("keeper-system".into()),
            rollout_debounce: Duration::from_secs(1),
            max_stale_age: Duration::from_secs(86_400),
            // Tests force syncs back to back; the spacing has its own test.
            forced_sync_spacing: Duration::ZERO,
        };
        edit(&mut settings);
        let mut registry = Registry::default();
        let ctx = Context::new(
            client,
            FakeKeeper::default(),
            events,
            ReconcileMetrics::register(&mut registry),
            RolloutMetrics::register(&mut registry),
            settings,
            Arc::new(caches),
        );
        Fixture {
            api,
            ctx: Arc::new(ctx),
            writers,
        }
    }

    /// Stores a Secret `name` in `namespace` whose key `config` holds `text`.
    pub fn credential(&self, namespace: &str, name: &str, text: &str) {
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            data: Some([("config".to_string(), ByteString(text.as_bytes().to_vec()))].into()),
            ..Default::default()
        };
        self.api.put(
            &secret_path(namespace, name),
            serde_json::to_value(secret).expect("a Secret serializes"),
        );
    }

    /// Creates `ks` in the fake API server and returns it as the watch would deliver it.
    pub fn create(&self, ks: &KeeperSecret) -> KeeperSecret {
        let (namespace, name) = (ks.namespace().unwrap_or_default(), ks.name_any());
        let path = keeper_secret_path(&namespace, &name);
        let mut value = serde_json::to_value(ks).expect("a KeeperSecret serializes");
        value["metadata"]["generation"] = json!(1);
        self.api.put(&path, value);
        self.keeper_secret(&namespace, &name)
    }

    /// The KeeperSecret as stored now (its status included).
    pub fn keeper_secret(&self, namespace: &str, name: &str) -> KeeperSecret {
        let value = self
            .api
            .get(&keeper_secret_path(namespace, name))
            .expect("no such KeeperSecret");
        serde_json::from_value(value).expect("a stored KeeperSecret deserializes")
    }

    /// Deletes Secret `namespace/name` (as a user would), and the watch delivers the deletion.
    pub fn delete_secret(&mut self, namespace: &str, name: &str) {
        let Some(secret) = self.secret(namespace, name) else {
            return;
        };
        lock(&self.api.0)
            .objects
            .remove(&secret_path(namespace, name));
        let partial = secret.metadata.into_response_partial::<Secret>();
        self.writers
            .targets
            .apply_watcher_event(&watcher::Event::Delete(partial));
    }

    /// The Secret as stored now.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        let value = self.api.get(&secret_path(namespace, name))?;
        Some(serde_json::from_value(value).expect("a stored Secret deserializes"))
    }

    /// Delivers the current version of Secret `namespace/name` to the managed-Secret versions,
    /// as the controller's metadata watch would.
    pub fn watch_secret(&mut self, namespace: &str, name: &str) {
        let secret = self.secret(namespace, name).expect("no such Secret");
        let partial = secret.metadata.into_response_partial::<Secret>();
        self.writers
            .targets
            .apply_watcher_event(&watcher::Event::Apply(partial));
    }

    /// One reconcile of the KeeperSecret as stored now.
    pub async fn reconcile(&self, namespace: &str, name: &str) -> Result<Action, Error> {
        let ks = self.keeper_secret(namespace, name);
        reconcile(Arc::new(ks), self.ctx.clone()).await
    }

    /// Keeper calls so far.
    pub fn keeper_calls(&self) -> usize {
        self.ctx.keeper.calls.load(Ordering::Relaxed)
    }
}
