//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder runs the controller.
//!
//! The Lease is taken when it is free or expired and renewed well before it expires; every write
//! carries the `resourceVersion` read just before, so two replicas can never both win. A leader
//! that cannot renew before its lease would expire stops leading (the process exits and is
//! restarted as a candidate); a leader shutting down releases the Lease so a standby takes over
//! at once instead of waiting for expiry.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::cli::selector::LabelSelector;

/// Name of the Lease in the operator namespace that replicas elect on (without a
/// `--watch-label-selector`; see [`lease_name`]).
pub const LEASE_NAME: &str = "keeper-operator-leader";
/// How long a Lease is valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews and candidates retry.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// PURE: the Lease of the replicas watching `selector`: [`LEASE_NAME`] for everything, else
/// [`LEASE_NAME`] and a digest of the selector's canonical form. Each shard elects on its own
/// Lease with no name to configure, and no two shards can share one by mistake.
pub fn lease_name(selector: &LabelSelector) -> String {
    if selector.is_empty() {
        return LEASE_NAME.to_string();
    }
    let digest = Sha256::digest(selector.to_string().as_bytes());
    let hex: String = digest[..5].iter().map(|b| format!("{b:02x}")).collect();
    format!("{LEASE_NAME}-{hex}")
}

/// `leader`: whether this replica runs the controller; clones share the gauge.
#[derive(Clone)]
pub struct LeaderGauge(Gauge);

impl LeaderGauge {
    /// The gauge that `registry` exports, 0 until [`LeaderGauge::set`].
    pub fn register(registry: &mut Registry) -> Self {
        let gauge = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica runs the controller (always 1 without --leader-elect), else 0",
            gauge.clone(),
        );
        LeaderGauge(gauge)
    }

    /// Whether this replica leads (runs the controller).
    pub fn set(&self, leading: bool) {
        self.0.set(i64::from(leading));
    }
}

/// What a replica should do with the Lease it just read.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Write ourselves as holder (free, expired, or already ours).
    Claim,
    /// Someone else holds a valid Lease.
    Wait,
}

/// PURE: decides from the Lease as read.
pub fn step(lease: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Step {
    let Some(spec) = lease else {
        return Step::Claim;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == me {
        return Step::Claim;
    }
    let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
    let renewed = spec
        .renew_time
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let expired = jiff::SignedDuration::try_from(duration).map_or(true, |d| {
        renewed.checked_add(d).map_or(true, |expiry| expiry <= now)
    });
    if expired { Step::Claim } else { Step::Wait }
}

/// A Lease held by one identity.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    me: String,
}

impl Elector {
    /// Elects on Lease `name` in `namespace` as `identity`.
    pub fn new(client: Client, namespace: &str, name: &str, identity: String) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            me: identity,
        }
    }

    /// Tries once to hold the Lease; `Ok(true)` when we hold it now.
    pub async fn try_hold(&self) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        if step(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.me,
            Timestamp::now(),
        ) == Step::Wait
        {
            return Ok(false);
        }
        let now = MicroTime(Timestamp::now());
        let previous = current
            .as_ref()
            .and_then(|l| l.spec.clone())
            .unwrap_or_default();
        let ours = previous.holder_identity.as_deref() == Some(&self.me);
        let spec = LeaseSpec {
            holder_identity: Some(self.me.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: if ours {
                previous.acquire_time.clone()
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(previous.lease_transitions.unwrap_or(0) + i32::from(!ours)),
            ..LeaseSpec::default()
        };
        let result = match current {
            Some(mut lease) => {
                // Carries the resourceVersion we read: a concurrent claim makes this fail (409).
                lease.spec = Some(spec);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        info!(
            lease = self.name,
            identity = self.me,
            "waiting for leadership"
        );
        loop {
            match self.try_hold().await {
                Ok(true) => {
                    info!(lease = self.name, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election: reading or writing the Lease failed"),
            }
            tokio::time::sleep(RETRY_PERIOD).await;
        }
    }

    /// Renews until renewal fails for longer than the Lease would stay valid; returns then
    /// (leadership is lost and the caller must stop reconciling).
    pub async fn keep(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RETRY_PERIOD).await;
            match self.try_hold().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!(lease = self.name, "another replica took the Lease");
                    return;
                }
                Err(e) => warn!(error = %e, "renewing the Lease failed"),
            }
            // Stop before the Lease can expire, so two leaders never overlap.
            if last_ok.elapsed() > LEASE_DURATION - 2 * RETRY_PERIOD {
                warn!(lease = self.name, "could not renew the Lease in time");
                return;
            }
        }
    }

    /// Gives the Lease up (on shutdown) so a standby takes over without waiting for expiry.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(&self.me) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            warn!(error = %e, "releasing the Lease failed; a standby takes over when it expires");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_selector_has_a_lease_of_its_own() {
        let lease = |s: &str| lease_name(&LabelSelector::parse(s).unwrap());
        assert_eq!(
            lease(""),
            LEASE_NAME,
            "an unsharded operator keeps its Lease"
        );
        let default = lease("!sharding.keeper-operator.dev/key");
        let a = lease("sharding.keeper-operator.dev/key=a");
        let b = lease("sharding.keeper-operator.dev/key=b");
        assert!(default != a && a != b && default != b);
        assert_eq!(a, lease("sharding.keeper-operator.dev/key == a"));
        assert!(
            a.starts_with("keeper-operator-leader-") && a.len() <= 63,
            "{a}"
        );
    }

    fn lease(holder: Option<&str>, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(Into::into),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions() {
        let now = Timestamp::from_second(1_000).unwrap();
        assert_eq!(step(None, "a", now), Step::Claim, "no Lease yet");
        assert_eq!(
            step(Some(&lease(None, 999)), "a", now),
            Step::Claim,
            "released"
        );
        assert_eq!(
            step(Some(&lease(Some("a"), 999)), "a", now),
            Step::Claim,
            "renew our own"
        );
        assert_eq!(
            step(Some(&lease(Some("b"), 990)), "a", now),
            Step::Wait,
            "valid for 5 more s"
        );
        assert_eq!(
            step(Some(&lease(Some("b"), 985)), "a", now),
            Step::Claim,
            "expired exactly now"
        );
        assert_eq!(
            step(
                Some(&LeaseSpec {
                    holder_identity: Some("b".into()),
                    ..LeaseSpec::default()
                }),
                "a",
                now
            ),
            Step::Claim
        );
    }
}
