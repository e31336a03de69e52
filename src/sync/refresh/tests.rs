use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use zeroize::Zeroizing;

use super::*;
use crate::sync::status::{self, Synced};

const HOUR: Duration = Duration::from_secs(3600);

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).unwrap()
}

fn key() -> HashKey {
    HashKey::derive(b"cred", "uid-1")
}

fn base() -> KeeperSecret {
    let mut ks = crate::api::test_keeper_secret();
    ks.metadata.uid = Some("uid-1".into());
    ks.metadata.namespace = Some("ns".into());
    ks.metadata.generation = Some(1);
    ks
}

/// A KeeperSecret synced at t(0) and the Secret that sync wrote.
fn synced_pair() -> (KeeperSecret, Secret) {
    let mut ks = base();
    let data: BTreeMap<String, Zeroizing<Vec<u8>>> =
        [("a".to_string(), Zeroizing::new(b"1".to_vec()))].into();
    let d = desired::secret(&ks, data, &key()).unwrap();
    ks.status = Some(status::synced(
        &ks,
        t(0),
        &Synced {
            records: vec![],
            data_hash: d.hash.clone(),
            keys: 1,
            gone: vec![],
            fetched_at: t(0),
            stale: None,
        },
    ));
    (ks, d.secret)
}

#[test]
fn fresh_object_syncs() {
    assert_eq!(
        decide(&base(), Target::Missing, None, t(0), HOUR),
        Decision::Sync(Why::NotSynced)
    );
}

#[test]
fn current_object_waits_until_due_with_bounded_jitter() {
    let (ks, s) = synced_pair();
    let Decision::Wait(d) = decide(&ks, Target::of(Some(&s), &key()), None, t(600), HOUR) else {
        panic!("should wait")
    };
    assert!(
        d >= Duration::from_secs(3001) && d <= Duration::from_secs(3061),
        "{d:?}"
    );
    assert_eq!(
        jitter(&ks, HOUR),
        jitter(&ks, HOUR),
        "jitter is stable per object"
    );
}

#[test]
fn due_spec_change_failure_and_secret_drift_all_sync() {
    let (ks, s) = synced_pair();
    assert_eq!(
        decide(&ks, Target::of(Some(&s), &key()), None, t(3601), HOUR),
        Decision::Sync(Why::Due)
    );
    let mut changed = ks.clone();
    changed.metadata.generation = Some(2);
    assert_eq!(
        decide(&changed, Target::of(Some(&s), &key()), None, t(1), HOUR),
        Decision::Sync(Why::SpecChanged)
    );
    let mut failed = ks.clone();
    failed.status = Some(status::failed(
        &ks,
        t(1),
        crate::api::Reason::KeeperUnavailable,
        "down",
    ));
    assert_eq!(
        decide(&failed, Target::of(Some(&s), &key()), None, t(2), HOUR),
        Decision::Sync(Why::NotSynced)
    );
    assert_eq!(
        decide(&ks, Target::Missing, None, t(1), HOUR),
        Decision::Sync(Why::SecretMissing)
    );
    let edited = hand_edited(&s);
    assert_eq!(
        decide(&ks, Target::of(Some(&edited), &key()), None, t(1), HOUR),
        Decision::Sync(Why::SecretChanged)
    );
    let mut reannotated = s.clone();
    reannotated
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .remove(crate::api::DATA_HASH_ANNOTATION);
    assert_eq!(
        decide(
            &ks,
            Target::of(Some(&reannotated), &key()),
            None,
            t(1),
            HOUR
        ),
        Decision::Sync(Why::SecretChanged)
    );
    let rotated = HashKey::derive(b"new cred", "uid-1");
    assert_eq!(
        decide(&ks, Target::of(Some(&s), &rotated), None, t(1), HOUR),
        Decision::Sync(Why::SecretChanged)
    );
}

#[test]
fn interval_parsing() {
    let mut ks = base();
    assert_eq!(interval(&ks, HOUR), Ok(HOUR));
    ks.spec.refresh_interval = Some("1h30m".into());
    assert_eq!(interval(&ks, HOUR), Ok(Duration::from_secs(5400)));
    ks.spec.refresh_interval = Some("1ms".into());
    assert_eq!(interval(&ks, HOUR), Ok(MIN_INTERVAL));
    ks.spec.refresh_interval = Some("soon".into());
    assert!(interval(&ks, HOUR).unwrap_err().contains("soon"));
    // 0 turns the timer off; the default still bounds the age of the data a change uses.
    ks.spec.refresh_interval = Some("0".into());
    assert_eq!(interval(&ks, HOUR), Ok(HOUR));
    assert_eq!(policy(&ks), RefreshPolicy::OnChange);
    ks.spec.refresh_policy = Some(RefreshPolicy::CreatedOnce);
    assert_eq!(policy(&ks), RefreshPolicy::CreatedOnce);
    ks.spec.refresh_interval = Some("10s".into());
    ks.spec.refresh_policy = None;
    assert_eq!(policy(&ks), RefreshPolicy::Periodic);
}

/// `s` with key `a` changed by hand.
fn hand_edited(s: &Secret) -> Secret {
    let mut edited = s.clone();
    edited
        .data
        .as_mut()
        .unwrap()
        .insert("a".into(), ByteString(b"hand-edited".to_vec()));
    edited
}

/// `ks` synced at t(0) under `policy`, the Secret it wrote, and that Secret hand-edited.
fn synced_under(policy: RefreshPolicy) -> (KeeperSecret, Secret, Secret) {
    let (mut ks, s) = synced_pair();
    ks.spec.refresh_policy = Some(policy);
    let edited = hand_edited(&s);
    (ks, s, edited)
}

#[test]
fn on_change_never_refreshes_on_a_timer_but_heals_the_secret() {
    let (ks, s, edited) = synced_under(RefreshPolicy::OnChange);
    let wait = decide(&ks, Target::of(Some(&s), &key()), None, t(10 * 3600), HOUR);
    assert_eq!(wait, Decision::Wait(HOUR), "no refresh however late");
    let edit = decide(&ks, Target::of(Some(&edited), &key()), None, t(5), HOUR);
    assert_eq!(edit, Decision::Sync(Why::SecretChanged));
    let gone = decide(&ks, Target::Missing, None, t(5), HOUR);
    assert_eq!(gone, Decision::Sync(Why::SecretMissing));
    let mut changed = ks.clone();
    changed.metadata.generation = Some(2);
    let spec = decide(&changed, Target::of(Some(&s), &key()), None, t(5), HOUR);
    assert_eq!(spec, Decision::Sync(Why::SpecChanged));
    let mut asked = ks.clone();
    asked.metadata.annotations = Some([(FORCE_SYNC_ANNOTATION.to_string(), "1".into())].into());
    let request = decide(&asked, Target::of(Some(&s), &key()), None, t(5), HOUR);
    assert_eq!(request, Decision::Sync(Why::Requested));
    assert_eq!(next(&ks, t(0), t(1), HOUR, None, HOUR), HOUR);
}

#[test]
fn created_once_keeps_edits_and_only_recreates_a_missing_secret() {
    let (ks, s, edited) = synced_under(RefreshPolicy::CreatedOnce);
    for target in [
        Target::of(Some(&s), &key()),
        Target::of(Some(&edited), &key()),
    ] {
        let late = decide(&ks, target, None, t(10 * 3600), HOUR);
        assert_eq!(late, Decision::Wait(HOUR), "kept: {target:?}");
    }
    let gone = decide(&ks, Target::Missing, None, t(5), HOUR);
    assert_eq!(gone, Decision::Sync(Why::SecretMissing));
    let mut changed = ks.clone();
    changed.metadata.generation = Some(2);
    let spec = decide(
        &changed,
        Target::of(Some(&edited), &key()),
        None,
        t(5),
        HOUR,
    );
    assert_eq!(spec, Decision::Sync(Why::SpecChanged));
    // Keeper failing on the first sync: retried like any other policy.
    let mut failed = ks.clone();
    failed.status = Some(status::failed(
        &ks,
        t(1),
        crate::api::Reason::KeeperUnavailable,
        "down",
    ));
    let retry = decide(&failed, Target::Missing, None, t(2), HOUR);
    assert_eq!(retry, Decision::Sync(Why::NotSynced));
}

#[test]
fn the_last_good_copy_keeps_syncing_before_the_interval() {
    let (mut ks, secret) = synced_pair();
    let stale = status::synced(
        &ks,
        t(0),
        &Synced {
            records: vec![],
            data_hash: ks.status.as_ref().unwrap().data_hash.clone().unwrap(),
            keys: 1,
            gone: vec![],
            fetched_at: t(0),
            stale: Some(status::Stale {
                reason: crate::api::Reason::KeeperUnavailable,
                error: "connection refused".into(),
                since: t(0),
                outage: true,
                max_age: HOUR,
            }),
        },
    );
    ks.status = Some(stale);
    assert_eq!(
        decide(&ks, Target::of(Some(&secret), &key()), None, t(1), HOUR),
        Decision::Sync(Why::Stale)
    );
}

#[test]
fn due_refreshes_wait_for_never_reconciled_objects_but_not_forever() {
    let (ks, _) = synced_pair();
    let defer = |why, backlog, at| defer(why, backlog, &ks, None, t(at), HOUR);
    // Due at one interval, it may wait until overdue by a whole interval (woken sooner when
    // the backlog drains).
    assert_eq!(defer(Why::Due, 3, 3600), Some(HOUR));
    assert_eq!(defer(Why::Due, 3, 7000), Some(Duration::from_secs(200)));
    assert_eq!(defer(Why::Due, 0, 3600), None, "no backlog");
    assert_eq!(
        defer(Why::Due, 3, 7200),
        None,
        "overdue by a whole interval"
    );
    for why in [
        Why::NotSynced,
        Why::Stale,
        Why::SpecChanged,
        Why::SecretMissing,
        Why::SecretChanged,
    ] {
        assert_eq!(defer(why, 3, 3600), None, "{why:?} never waits");
    }
}

#[test]
fn a_remembered_sync_newer_than_the_status_postpones_the_refresh() {
    let (ks, s) = synced_pair();
    let target = Target::of(Some(&s), &key());
    assert_eq!(
        decide(&ks, target, Some(t(3000)), t(3600), HOUR),
        Decision::Wait(Duration::from_secs(3000) + jitter(&ks, HOUR))
    );
    assert_eq!(
        decide(&ks, target, Some(t(-10)), t(3601), HOUR),
        Decision::Sync(Why::Due),
        "an older remembered time never wins"
    );
    assert_eq!(
        status_time_resolution(Duration::from_secs(10)),
        STATUS_TIME_RESOLUTION
    );
    assert_eq!(status_time_resolution(HOUR), HOUR);
}

#[test]
fn a_whole_second_status_time_is_not_due_before_the_fetch_it_records() {
    // Fetched at t(0) + 0.7 s, recorded as t(0): at t(3600) + 0.5 s the shared snapshot is still
    // fresh, so the refresh must wait for it.
    let (ks, s) = synced_pair();
    let now = t(3600) + jiff::SignedDuration::from_millis(500);
    assert_eq!(
        decide(&ks, Target::of(Some(&s), &key()), None, now, HOUR),
        Decision::Wait(Duration::from_millis(500) + jitter(&ks, HOUR))
    );
}

#[test]
fn a_due_refresh_defers_to_the_backlog_and_a_correction_does_not() {
    let (ks, s) = synced_pair();
    let current = Target::of(Some(&s), &key());
    assert_eq!(
        due(&ks, current, None, 5, t(3601), HOUR),
        Decision::Defer(HOUR - Duration::from_secs(1))
    );
    assert_eq!(
        due(&ks, current, None, 0, t(3601), HOUR),
        Decision::Sync(Why::Due)
    );
    assert_eq!(
        due(&ks, Target::Missing, None, 5, t(3601), HOUR),
        Decision::Sync(Why::SecretMissing)
    );
    assert_eq!(
        due(&ks, current, None, 5, t(600), HOUR),
        decide(&ks, current, None, t(600), HOUR),
        "not due: the backlog changes nothing"
    );
}

#[test]
fn the_next_refresh_follows_the_fetch_or_the_fetchers_retry() {
    let (ks, _) = synced_pair();
    let day = Duration::from_secs(86_400);
    // Fresh data fetched 600 s ago: the rest of the interval, plus this object's spread.
    assert_eq!(
        next(&ks, t(0), t(600), HOUR, None, day),
        Duration::from_secs(3000) + jitter(&ks, HOUR)
    );
    // Long overdue (a slow reconcile): no sooner than the floor.
    assert_eq!(
        next(&ks, t(0), t(9000), HOUR, None, day),
        MIN_INTERVAL + jitter(&ks, HOUR)
    );
    // The last good copy: when the fetcher retries...
    let retry = Some(Duration::from_secs(40));
    assert_eq!(
        next(&ks, t(0), t(600), HOUR, retry, day),
        Duration::from_secs(40)
    );
    // ...or when the copy expires, if sooner, so Ready turns False on time...
    assert_eq!(
        next(&ks, t(0), t(86_390), HOUR, retry, day),
        MIN_INTERVAL.max(Duration::from_secs(10))
    );
    // ...and once it has expired, at the fetcher's pace, never below the floor.
    assert_eq!(
        next(&ks, t(0), t(90_000), HOUR, retry, day),
        Duration::from_secs(40)
    );
    assert_eq!(
        next(&ks, t(0), t(600), HOUR, Some(Duration::ZERO), day),
        MIN_INTERVAL
    );
}

#[test]
fn only_a_new_generation_reads_keeper_again_for_a_miss() {
    let (synced, _) = synced_pair();
    let mut fresh = base();
    assert_eq!(
        on_miss(&fresh, t(0), None, t(11)),
        OnMiss::Refetch(Duration::ZERO),
        "never synced, data 11 s old: data fetched now"
    );
    assert_eq!(
        on_miss(&synced, t(0), None, t(3000)),
        OnMiss::Fail,
        "this generation was synced or attempted: wait for the refresh"
    );
    fresh.status = synced.status.clone();
    fresh.metadata.generation = Some(2);
    assert_eq!(
        on_miss(&fresh, t(0), None, t(60)),
        OnMiss::Refetch(Duration::ZERO),
        "a changed spec"
    );
}

#[test]
fn a_miss_on_young_data_waits_for_the_floor_then_reads_keeper_once() {
    let ks = base();
    // A sibling fetched 1 s ago: come back when that data is as old as the floor.
    assert_eq!(
        on_miss(&ks, t(100), None, t(101)),
        OnMiss::Wait(REFETCH_FLOOR - Duration::from_secs(1))
    );
    // Then read Keeper for data fetched after the first miss.
    assert_eq!(
        on_miss(&ks, t(100), Some(t(101)), t(110)),
        OnMiss::Refetch(Duration::from_secs(9))
    );
    // Siblings keep the data young, but it was fetched after the first miss: that settles it.
    assert_eq!(on_miss(&ks, t(105), Some(t(101)), t(110)), OnMiss::Fail);
    // Data as old as the miss (fetched in the same instant) does not.
    assert_eq!(
        on_miss(&ks, t(101), Some(t(101)), t(105)),
        OnMiss::Wait(Duration::from_secs(6))
    );
}

#[test]
fn an_unanswered_sync_request_syncs_at_once() {
    let (mut ks, s) = synced_pair();
    let current = Target::of(Some(&s), &key());
    assert!(matches!(
        decide(&ks, current, None, t(60), HOUR),
        Decision::Wait(_)
    ));
    let annotate = |ks: &mut KeeperSecret, key: &str, value: &str| {
        ks.metadata
            .annotations
            .get_or_insert_default()
            .insert(key.into(), value.into());
    };
    annotate(&mut ks, crate::api::FORCE_SYNC_ANNOTATION, "1");
    assert_eq!(sync_request(&ks).as_deref(), Some("1"));
    assert_eq!(
        decide(&ks, current, None, t(60), HOUR),
        Decision::Sync(Why::Requested)
    );
    assert_eq!(
        defer(Why::Requested, 5, &ks, None, t(60), HOUR),
        None,
        "a request never waits for the backlog"
    );
    // A request that is not a time asks for data fetched since the watch showed it.
    assert_eq!(
        max_age(Why::Requested, &ks, None, HOUR, t(60)),
        Duration::ZERO
    );
    assert_eq!(
        max_age(Why::Requested, &ks, Some(t(57)), HOUR, t(60)),
        Duration::from_secs(3)
    );
    assert_eq!(max_age(Why::Due, &ks, None, HOUR, t(60)), HOUR);
    // The first request runs at once; another within the spacing waits for it.
    assert_eq!(
        coalesce_request(&ks, None, t(60), FORCED_SYNC_SPACING),
        None
    );
    assert_eq!(
        coalesce_request(&ks, Some(t(56)), t(60), FORCED_SYNC_SPACING),
        Some(Duration::from_secs(6))
    );
    // A spec change does not wait for the spacing.
    let mut changed = ks.clone();
    changed.metadata.generation = Some(2);
    assert_eq!(
        coalesce_request(&changed, Some(t(56)), t(60), FORCED_SYNC_SPACING),
        None
    );
    // Answered: waits again until the next request.
    ks.status.as_mut().unwrap().last_handled_reconcile_at = Some("1".into());
    assert!(matches!(
        decide(&ks, current, None, t(60), HOUR),
        Decision::Wait(_)
    ));
    // Flux's annotation counts too; with both, the request is both values.
    annotate(
        &mut ks,
        crate::api::FLUX_REQUESTED_AT_ANNOTATION,
        "2026-12-01T10:00:00Z",
    );
    assert_eq!(sync_request(&ks).as_deref(), Some("1,2026-12-01T10:00:00Z"));
    assert_eq!(requested_sync(&ks), sync_request(&ks));
    // Flux's time is the request's: data fetched since then will do, at most one interval old.
    let now: Timestamp = "2026-12-01T10:00:20Z".parse().unwrap();
    ks.metadata
        .annotations
        .as_mut()
        .unwrap()
        .remove(crate::api::FORCE_SYNC_ANNOTATION);
    assert_eq!(
        max_age(Why::Requested, &ks, None, HOUR, now),
        Duration::from_secs(20)
    );
    assert_eq!(
        max_age(Why::Requested, &ks, None, Duration::from_secs(5), now),
        Duration::from_secs(5)
    );
    // Answered: no request is pending, so nothing coalesces.
    ks.status.as_mut().unwrap().last_handled_reconcile_at = sync_request(&ks);
    assert_eq!(
        coalesce_request(&ks, Some(now), now, FORCED_SYNC_SPACING),
        None
    );
}

#[test]
fn forced_syncs_are_spaced_and_coalesce() {
    assert_eq!(
        forced_sync_wait(None, t(100), FORCED_SYNC_SPACING),
        None,
        "the first runs at once"
    );
    assert_eq!(
        forced_sync_wait(Some(t(100)), t(103), FORCED_SYNC_SPACING),
        Some(Duration::from_secs(7))
    );
    assert_eq!(
        forced_sync_wait(Some(t(100)), t(110), FORCED_SYNC_SPACING),
        None
    );
    assert_eq!(
        forced_sync_wait(Some(t(100)), t(500), FORCED_SYNC_SPACING),
        None
    );
    // A last sync in the future (clock skew) waits at most the spacing.
    assert_eq!(
        forced_sync_wait(Some(t(200)), t(100), FORCED_SYNC_SPACING),
        Some(FORCED_SYNC_SPACING)
    );
}

#[test]
fn a_requested_sync_reads_data_fetched_after_the_request() {
    let now: Timestamp = "2026-12-07T10:00:30Z".parse().unwrap();
    assert_eq!(
        requested_max_age("2026-12-07T10:00:00Z", None, now),
        Duration::from_secs(30)
    );
    // Flux's requestedAt has nanoseconds; with both annotations the latest request counts.
    assert_eq!(
        requested_max_age(
            "2026-12-07T09:00:00Z,2026-12-07T10:00:25.123456789Z",
            None,
            now
        ),
        Duration::from_millis(4_876) + Duration::from_nanos(543_211)
    );
    // Not a time: since the watch showed it; without that, or in the future: fetched now.
    let seen: Timestamp = "2026-12-07T10:00:28Z".parse().unwrap();
    assert_eq!(
        requested_max_age("1", Some(seen), now),
        Duration::from_secs(2)
    );
    for request in [
        "1",
        "now",
        "2026-12-07T10:00:00Z,x",
        "2026-12-07T11:00:00Z",
        "",
    ] {
        assert_eq!(
            requested_max_age(request, None, now),
            Duration::ZERO,
            "{request}"
        );
    }
}
