//! Fault injection: the knobs the operator's tests and benchmarks turn to make the server
//! misbehave the way the real service (or the network in front of it) does.
//!
//! "Next N" faults count down one per API request (file downloads have their own counter).
//! The whole state is a serde struct, so the admin API can read and patch it as JSON.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Whether the API port answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DownMode {
    #[default]
    Up,
    /// The listener is closed and open connections are cut: clients see "connection refused".
    Refuse,
    /// Every request (API and files) gets `503` with a non-JSON body, like a load balancer.
    Unavailable,
}

/// How a file download fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FileFailure {
    /// `500` with a non-JSON body.
    #[default]
    Status500,
    /// `200` with only the first half of the encrypted content.
    Truncate,
}

/// The body of throttle answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ThrottleBody {
    /// Keeper's JSON `{"error": "throttled", ...}`.
    #[default]
    Json,
    /// Plain text, as an edge rate limiter or a load balancer in maintenance sends it.
    Text,
}

/// The form of the `Retry-After` header on throttle answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RetryAfterHeader {
    /// Delay in seconds, e.g. `Retry-After: 7`.
    Seconds,
    /// An HTTP-date, e.g. `Retry-After: Sun, 06 Nov 1994 08:49:37 GMT`.
    HttpDate,
}

/// One throttle answer to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttle {
    pub status: u16,
    /// Seconds: in the JSON body's `retry_after` and in the header (1 when unset).
    pub retry_after: Option<u64>,
    pub body: ThrottleBody,
    pub header: Option<RetryAfterHeader>,
}

/// The real throttle: more than `max_requests` per client id and endpoint within a window that
/// restarts on every request (docs/dev/protocol.md#throttling; the SDKs' comments say 100 per
/// 10 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    pub max_requests: u32,
    pub window_ms: u64,
}

/// Every fault knob. Missing fields in JSON keep their defaults (no faults).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct FaultState {
    /// Answer the next N API requests with `throttled`.
    pub throttle: u32,
    /// `retry_after` (seconds) in injected throttle bodies; the production body has none.
    pub retry_after: Option<u64>,
    /// Status of throttle answers: 403 (default, what SDK 17.3 expects), 429 (Keeper's status
    /// since 2026) or any other, e.g. 503 with a text body and `Retry-After`.
    pub throttle_status: Option<u16>,
    /// Body of throttle answers (JSON by default).
    pub throttle_body: ThrottleBody,
    /// Send `Retry-After` on throttle answers, in this form.
    pub retry_after_header: Option<RetryAfterHeader>,
    pub down: DownMode,
    /// Cut the connection half-way through the next N API response bodies.
    pub drop: u32,
    /// Flip one byte of the next N encrypted API response bodies.
    pub tamper: u32,
    /// Send the headers of the next N API responses at once, then their body one byte every
    /// `trickle_interval_ms`: a server that holds a client without ever going quiet long enough
    /// for an inactivity timeout.
    pub trickle: u32,
    /// Pause between trickled bytes (250 ms when 0).
    pub trickle_interval_ms: u64,
    /// Send only the first half of the next N encrypted API response bodies.
    pub truncate: u32,
    /// Answer the next N API requests with the 401 wrong-key-id error.
    pub wrong_key_id: u32,
    /// Delay before every answer (API and files).
    pub latency_ms: u64,
    /// Fail the next N file downloads.
    pub file_failures: u32,
    pub file_failure: FileFailure,
    pub rate_limit: Option<RateLimit>,
    /// `clientVersion` values (exact, or a prefix ending in `*`) answered with
    /// `invalid_client_version`, on top of those the server never knows.
    pub rejected_client_versions: Vec<String>,
}

/// A fault applied to a successful API response body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResponseFault {
    Drop,
    Truncate,
    Tamper,
    /// The body one byte at a time, this far apart.
    Trickle(Duration),
}

/// Pause between trickled bytes when none is set.
const TRICKLE_INTERVAL: Duration = Duration::from_millis(250);

struct Window {
    count: u32,
    last: Instant,
}

struct Inner {
    state: Mutex<FaultState>,
    down: watch::Sender<DownMode>,
    windows: Mutex<HashMap<String, Window>>,
}

/// Shared handle on the fault state of one server. Cheap to clone.
#[derive(Clone)]
pub struct FaultHandle {
    inner: Arc<Inner>,
}

fn take(counter: &mut u32) -> bool {
    if *counter > 0 {
        *counter -= 1;
        true
    } else {
        false
    }
}

impl Default for FaultHandle {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(FaultState::default()),
                down: watch::Sender::new(DownMode::Up),
                windows: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl FaultHandle {
    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current knobs.
    pub fn state(&self) -> FaultState {
        self.lock().clone()
    }

    /// Replaces every knob at once (the admin API's PUT).
    pub fn set_state(&self, state: FaultState) {
        let down = state.down;
        *self.lock() = state;
        self.inner.down.send_replace(down);
    }

    /// Back to a healthy server.
    pub fn clear(&self) {
        self.set_state(FaultState::default());
        self.inner
            .windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub fn throttle_next(&self, n: u32, retry_after: Option<Duration>) {
        let mut state = self.lock();
        state.throttle = n;
        state.retry_after = retry_after.map(|d| d.as_secs());
    }

    /// 403 (the default), 429 or another status for throttle answers.
    pub fn set_throttle_status(&self, status: u16) {
        self.lock().throttle_status = Some(status);
    }

    /// The body and `Retry-After` header form of throttle answers.
    pub fn set_throttle_form(&self, body: ThrottleBody, header: Option<RetryAfterHeader>) {
        let mut state = self.lock();
        state.throttle_body = body;
        state.retry_after_header = header;
    }

    pub fn set_down(&self, mode: DownMode) {
        self.lock().down = mode;
        self.inner.down.send_replace(mode);
    }

    pub fn drop_next(&self, n: u32) {
        self.lock().drop = n;
    }

    pub fn tamper_next(&self, n: u32) {
        self.lock().tamper = n;
    }

    /// Dribbles the next `n` API response bodies, a byte every `interval`.
    pub fn trickle_next(&self, n: u32, interval: Duration) {
        let mut state = self.lock();
        state.trickle = n;
        state.trickle_interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    }

    pub fn truncate_next(&self, n: u32) {
        self.lock().truncate = n;
    }

    pub fn wrong_key_id_next(&self, n: u32) {
        self.lock().wrong_key_id = n;
    }

    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    }

    pub fn fail_files_next(&self, n: u32, how: FileFailure) {
        let mut state = self.lock();
        state.file_failures = n;
        state.file_failure = how;
    }

    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.lock().rate_limit = limit;
    }

    pub fn reject_client_versions(&self, versions: Vec<String>) {
        self.lock().rejected_client_versions = versions;
    }

    pub(crate) fn subscribe_down(&self) -> watch::Receiver<DownMode> {
        self.inner.down.subscribe()
    }

    pub(crate) fn down_mode(&self) -> DownMode {
        self.lock().down
    }

    pub(crate) fn latency(&self) -> Duration {
        Duration::from_millis(self.lock().latency_ms)
    }

    fn throttle(state: &FaultState, retry_after: Option<u64>) -> Throttle {
        Throttle {
            status: state.throttle_status.unwrap_or(403),
            retry_after,
            body: state.throttle_body,
            header: state.retry_after_header,
        }
    }

    /// Consumes one injected throttle.
    pub(crate) fn take_throttle(&self) -> Option<Throttle> {
        let mut state = self.lock();
        take(&mut state.throttle).then(|| Self::throttle(&state, state.retry_after))
    }

    /// Counts a request against the rate limit; the answer to send when it is over the limit.
    pub(crate) fn rate_limited(&self, key: &str) -> Option<Throttle> {
        let (limit, throttle) = {
            let state = self.lock();
            (state.rate_limit?, Self::throttle(&state, None))
        };
        let now = Instant::now();
        let window = Duration::from_millis(limit.window_ms);
        let mut windows = self.inner.windows.lock().unwrap_or_else(|p| p.into_inner());
        let entry = windows.entry(key.to_string()).or_insert(Window {
            count: 0,
            last: now,
        });
        if now.duration_since(entry.last) > window {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        (entry.count > limit.max_requests).then_some(throttle)
    }

    pub(crate) fn take_wrong_key(&self) -> bool {
        take(&mut self.lock().wrong_key_id)
    }

    /// Consumes at most one response fault, most disruptive first.
    pub(crate) fn take_response_fault(&self) -> Option<ResponseFault> {
        let mut state = self.lock();
        if take(&mut state.drop) {
            Some(ResponseFault::Drop)
        } else if take(&mut state.truncate) {
            Some(ResponseFault::Truncate)
        } else if take(&mut state.tamper) {
            Some(ResponseFault::Tamper)
        } else if take(&mut state.trickle) {
            Some(ResponseFault::Trickle(match state.trickle_interval_ms {
                0 => TRICKLE_INTERVAL,
                ms => Duration::from_millis(ms),
            }))
        } else {
            None
        }
    }

    pub(crate) fn take_file_failure(&self) -> Option<FileFailure> {
        let mut state = self.lock();
        take(&mut state.file_failures).then_some(state.file_failure)
    }

    pub(crate) fn is_version_rejected(&self, version: &str) -> bool {
        self.lock()
            .rejected_client_versions
            .iter()
            .any(|rule| match rule.strip_suffix('*') {
                Some(prefix) => version.starts_with(prefix),
                None => version == rule,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_n_faults_count_down() {
        let faults = FaultHandle::default();
        faults.throttle_next(2, Some(Duration::from_secs(3)));
        let json_403 = Throttle {
            status: 403,
            retry_after: Some(3),
            body: ThrottleBody::Json,
            header: None,
        };
        assert_eq!(faults.take_throttle(), Some(json_403));
        faults.set_throttle_status(503);
        faults.set_throttle_form(ThrottleBody::Text, Some(RetryAfterHeader::HttpDate));
        assert_eq!(
            faults.take_throttle(),
            Some(Throttle {
                status: 503,
                body: ThrottleBody::Text,
                header: Some(RetryAfterHeader::HttpDate),
                ..json_403
            })
        );
        assert_eq!(faults.take_throttle(), None);
        faults.tamper_next(1);
        faults.drop_next(1);
        assert_eq!(faults.take_response_fault(), Some(ResponseFault::Drop));
        assert_eq!(faults.take_response_fault(), Some(ResponseFault::Tamper));
        assert_eq!(faults.take_response_fault(), None);
        faults.trickle_next(1, Duration::ZERO);
        assert_eq!(
            faults.take_response_fault(),
            Some(ResponseFault::Trickle(TRICKLE_INTERVAL))
        );
        assert_eq!(faults.take_response_fault(), None);
    }

    #[test]
    fn rate_limit_window_restarts_on_each_request() {
        let faults = FaultHandle::default();
        faults.set_rate_limit(Some(RateLimit {
            max_requests: 2,
            window_ms: 60_000,
        }));
        assert_eq!(faults.rate_limited("a get_secret"), None);
        assert_eq!(faults.rate_limited("a get_secret"), None);
        assert_eq!(
            faults.rate_limited("a get_secret").map(|t| t.status),
            Some(403)
        );
        assert_eq!(faults.rate_limited("b get_secret"), None);
        faults.set_rate_limit(Some(RateLimit {
            max_requests: 1,
            window_ms: 0,
        }));
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(faults.rate_limited("c get_secret"), None);
    }

    #[test]
    fn version_rules_match_exactly_or_by_prefix() {
        let faults = FaultHandle::default();
        faults.reject_client_versions(vec!["mr17.3.0".into(), "mp16.*".into()]);
        assert!(faults.is_version_rejected("mr17.3.0"));
        assert!(faults.is_version_rejected("mp16.2.0"));
        assert!(!faults.is_version_rejected("mp17.3.0"));
    }
}
