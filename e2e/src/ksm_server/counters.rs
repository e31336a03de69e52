//! Request counters: how many Keeper calls each client, app and endpoint made, how they ended,
//! and the highest number handled at once (to prove request coalescing).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A point-in-time copy of every counter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CounterSnapshot {
    /// API requests (POST `/api/rest/sm/v1/*`), whatever their outcome.
    pub total: u64,
    pub by_endpoint: BTreeMap<String, u64>,
    /// By the `clientId` in the payload (requests that could not be decrypted are not here).
    pub by_client: BTreeMap<String, u64>,
    /// By the app the client id belongs to.
    pub by_app: BTreeMap<String, u64>,
    /// "ok", "throttled", "key", "access_denied", "client_version", "bad_request",
    /// "unavailable", "not_found", "internal".
    pub by_outcome: BTreeMap<String, u64>,
    pub file_downloads: u64,
    /// Most API requests in progress at the same time since the last reset.
    pub max_concurrent: u64,
    /// API requests in progress now.
    pub in_flight: u64,
}

/// Shared, resettable counters of one server. Cheap to clone.
#[derive(Clone, Default)]
pub struct Counters {
    inner: Arc<Mutex<CounterSnapshot>>,
}

/// Marks one API request in progress; dropping it ends the request.
pub(crate) struct InFlight {
    counters: Counters,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut c = self.counters.lock();
        c.in_flight = c.in_flight.saturating_sub(1);
    }
}

impl Counters {
    fn lock(&self) -> MutexGuard<'_, CounterSnapshot> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        self.lock().clone()
    }

    /// Zeroes everything except requests still in progress.
    pub fn reset(&self) {
        let mut c = self.lock();
        let in_flight = c.in_flight;
        *c = CounterSnapshot {
            in_flight,
            max_concurrent: in_flight,
            ..CounterSnapshot::default()
        };
    }

    pub fn total(&self) -> u64 {
        self.lock().total
    }

    pub fn endpoint(&self, endpoint: &str) -> u64 {
        self.lock().by_endpoint.get(endpoint).copied().unwrap_or(0)
    }

    pub fn client(&self, client_id: &str) -> u64 {
        self.lock().by_client.get(client_id).copied().unwrap_or(0)
    }

    pub fn app(&self, app: &str) -> u64 {
        self.lock().by_app.get(app).copied().unwrap_or(0)
    }

    pub fn outcome(&self, outcome: &str) -> u64 {
        self.lock().by_outcome.get(outcome).copied().unwrap_or(0)
    }

    pub fn file_downloads(&self) -> u64 {
        self.lock().file_downloads
    }

    pub(crate) fn enter(&self) -> InFlight {
        let mut c = self.lock();
        c.in_flight += 1;
        c.max_concurrent = c.max_concurrent.max(c.in_flight);
        InFlight {
            counters: self.clone(),
        }
    }

    pub(crate) fn record_request(&self, endpoint: &str, client: Option<&str>, app: Option<&str>) {
        let mut c = self.lock();
        c.total += 1;
        *c.by_endpoint.entry(endpoint.to_string()).or_default() += 1;
        if let Some(client) = client {
            *c.by_client.entry(client.to_string()).or_default() += 1;
        }
        if let Some(app) = app {
            *c.by_app.entry(app.to_string()).or_default() += 1;
        }
    }

    pub(crate) fn record_outcome(&self, outcome: &str) {
        *self
            .lock()
            .by_outcome
            .entry(outcome.to_string())
            .or_default() += 1;
    }

    pub(crate) fn record_file_download(&self) {
        self.lock().file_downloads += 1;
    }
}
