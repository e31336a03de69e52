//! keeper-operator: syncs Keeper Secrets Manager records into native Kubernetes Secrets.
pub mod api;
pub(crate) mod backoff;
pub(crate) mod bounded_cache;
pub mod cli;
pub(crate) mod controller;
pub mod error;
pub mod k8s;
pub(crate) mod keeper;
pub mod ksm;
pub(crate) mod reason;
pub mod runtime;
pub mod sync;

use std::sync::{Mutex, MutexGuard};

/// Locks `m` even if a panic poisoned it: what the operator's mutexes guard is caches and
/// bookkeeping, still usable afterwards, and one panic should not take every later caller down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
