//! keeper-operator: syncs Keeper Secrets Manager records into native Kubernetes Secrets.
pub mod allowlist;
pub mod backoff;
pub mod cache;
pub mod cli;
pub mod config;
pub mod controller;
pub mod crd;
pub mod crd_yaml;
pub mod credentials;
pub mod desired;
pub mod error;
pub mod fetcher;
pub mod guard;
pub mod http;
pub mod incomplete;
pub mod k8s;
pub mod keeper_source;
pub mod ksm;
pub mod leader;
pub mod mapping;
pub mod metrics;
pub mod metrics_auth;
pub mod reconcile;
pub mod redeem;
pub mod refresh;
pub mod rollout;
pub mod status;
pub mod telemetry;
pub mod template;

use std::sync::{Mutex, MutexGuard};

/// Locks `m` even if a panic poisoned it: what the operator's mutexes guard is caches and
/// bookkeeping, still usable afterwards, and one panic should not take every later caller down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
