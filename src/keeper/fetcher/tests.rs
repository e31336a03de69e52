use super::sealed::{MemoryStore, Part, SnapshotStore};
use super::*;
use crate::ksm::crypto::AesKey;
use crate::ksm::record::Record;
use futures::future::BoxFuture;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use zeroize::Zeroizing;

type Script = Vec<Result<&'static str, fn() -> KsmError>>;

/// A scripted source: each fetch pops the next result (the last one repeats).
struct FakeSource {
    results: Mutex<Script>,
    fetches: Arc<AtomicUsize>,
    downloads: Arc<AtomicUsize>,
    key: AesKey,
}

fn source(results: Script, key: &AesKey) -> (FakeSource, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let fake = FakeSource {
        results: Mutex::new(results),
        fetches: fetches.clone(),
        downloads: Arc::new(AtomicUsize::new(0)),
        key: key.clone(),
    };
    (fake, fetches)
}

impl Upstream for FakeSource {
    fn fetch(&self) -> BoxFuture<'_, Result<Zeroizing<Vec<u8>>, KsmError>> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let next = {
            let mut results = self.results.lock().unwrap();
            if results.len() > 1 {
                results.remove(0)
            } else {
                results[0]
            }
        };
        Box::pin(async move {
            // A real call takes a while: concurrent callers really overlap.
            tokio::time::sleep(Duration::from_millis(20)).await;
            next.map(|title| Zeroizing::new(title.as_bytes().to_vec()))
                .map_err(|make| make())
        })
    }

    fn decode(&self, body: &[u8]) -> Result<Vault, KsmError> {
        let title = String::from_utf8(body.to_vec()).map_err(|_| KsmError::Tampered)?;
        Ok(Vault {
            records: vec![record(&title, 1)],
            ..Vault::default()
        })
    }

    fn download<'a>(
        &'a self,
        _file: &'a KeeperFile,
        _budget: u64,
    ) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, KsmError>> {
        self.downloads.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(Zeroizing::new(b"file-bytes".to_vec())) })
    }

    fn cache_key(&self) -> AesKey {
        sealed::cache_key(&self.key)
    }
}

fn record(title: &str, revision: i64) -> Record {
    Record {
        uid: "AAAAAAAAAAAAAAAAAAAAAA".into(),
        title: title.into(),
        record_type: "login".into(),
        revision,
        folder_uid: None,
        inner_folder_uid: None,
        fields: vec![],
        custom: vec![],
        notes: None,
        files: vec![],
    }
}

fn down() -> KsmError {
    KsmError::Unavailable("connection refused".into())
}

fn throttled() -> KsmError {
    KsmError::Throttled {
        retry_after: Some(Duration::from_secs(30)),
    }
}

fn fast_settings() -> FetchSettings {
    FetchSettings {
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..FetchSettings::default()
    }
}

fn fetcher(src: FakeSource, store: Option<Arc<dyn SnapshotStore>>) -> Arc<CredentialFetcher> {
    Arc::new(CredentialFetcher::new(
        "client-id",
        Box::new(src),
        store,
        fast_settings(),
        Arc::default(),
        Arc::default(),
    ))
}

fn title(served: &Served) -> Option<String> {
    match served {
        Served::Fresh(s) | Served::Stale(s, _) => Some(s.vault.records[0].title.clone()),
        Served::Unavailable(_) | Served::Pending(_) => None,
    }
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn concurrent_callers_share_one_keeper_call() {
    let key = AesKey::random();
    let (src, fetches) = source(vec![Ok("v1")], &key);
    let fetcher = Arc::new(fetcher(src, None));
    let calls = (0..200).map(|_| {
        let fetcher = fetcher.clone();
        tokio::spawn(async move { fetcher.snapshot(HOUR).await })
    });
    for call in futures::future::join_all(calls).await {
        assert!(matches!(call.unwrap(), Served::Fresh(_)));
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    assert_eq!(fetcher.stats.cache_hits.get(), 199);
}

#[tokio::test]
async fn fresh_data_costs_no_call_and_old_data_is_refetched() {
    let key = AesKey::random();
    let (src, fetches) = source(vec![Ok("v1"), Ok("v2")], &key);
    let fetcher = fetcher(src, None);
    assert_eq!(title(&fetcher.snapshot(HOUR).await).as_deref(), Some("v1"));
    assert_eq!(title(&fetcher.snapshot(HOUR).await).as_deref(), Some("v1"));
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        title(&fetcher.snapshot(Duration::from_millis(10)).await).as_deref(),
        Some("v2")
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_outage_serves_the_last_good_copy_and_backs_off() {
    let key = AesKey::random();
    let (src, fetches) = source(
        vec![Ok("good"), Err(down), Err(down), Ok("recovered")],
        &key,
    );
    let fetcher = fetcher(src, None);
    fetcher.snapshot(HOUR).await;
    let served = fetcher.snapshot(Duration::ZERO).await;
    let Served::Stale(snapshot, staleness) = &served else {
        panic!("expected stale, got {served:?}")
    };
    assert_eq!(snapshot.vault.records[0].title, "good");
    assert_eq!(staleness.error.reason(), "KeeperUnavailable");
    // While backing off, a hundred callers cost no call at all.
    for _ in 0..100 {
        assert!(matches!(
            fetcher.snapshot(Duration::ZERO).await,
            Served::Stale(..)
        ));
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    // Second failure doubles the wait; then Keeper is back.
    tokio::time::sleep(Duration::from_millis(70)).await;
    assert!(matches!(
        fetcher.snapshot(Duration::ZERO).await,
        Served::Stale(..)
    ));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        title(&fetcher.snapshot(Duration::ZERO).await).as_deref(),
        Some("recovered")
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn throttling_blocks_the_credential_for_retry_after() {
    let key = AesKey::random();
    let (src, fetches) = source(vec![Err(throttled), Ok("late")], &key);
    let fetcher = fetcher(src, None);
    let Served::Unavailable(staleness) = fetcher.snapshot(HOUR).await else {
        panic!("no data yet")
    };
    assert_eq!(staleness.error.reason(), "Throttled");
    assert!(staleness.retry_in > Duration::from_secs(25));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        fetcher.snapshot(HOUR).await,
        Served::Unavailable(_)
    ));
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "no request before retry_after"
    );
    assert_eq!(fetcher.budget_utilization().await, 1.0);
}

#[tokio::test]
async fn the_request_budget_holds_back_a_storm() {
    let key = AesKey::random();
    let (src, fetches) = source(vec![Ok("v")], &key);
    let settings = FetchSettings {
        budget_requests: 3,
        budget_window: HOUR,
        ..fast_settings()
    };
    let fetcher = Arc::new(CredentialFetcher::new(
        "id",
        Box::new(src),
        None,
        settings,
        Arc::default(),
        Arc::default(),
    ));
    for _ in 0..10 {
        fetcher.snapshot(Duration::ZERO).await;
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_restarted_fetcher_serves_the_persisted_copy_while_keeper_is_down() {
    let key = AesKey::random();
    let store: Arc<dyn SnapshotStore> = Arc::new(MemoryStore::default());
    let (src, _) = source(vec![Ok("persisted")], &key);
    fetcher(src, Some(store.clone())).snapshot(HOUR).await;

    let (src, fetches) = source(vec![Err(down)], &key);
    let restarted = fetcher(src, Some(store.clone()));
    let served = restarted.snapshot(HOUR).await;
    let Served::Stale(snapshot, _) = &served else {
        panic!("expected stale, got {served:?}")
    };
    assert_eq!(snapshot.origin, Origin::Store);
    assert_eq!(snapshot.vault.records[0].title, "persisted");
    assert_eq!(fetches.load(Ordering::SeqCst), 1);

    // Another credential's key cannot open it.
    let (src, _) = source(vec![Err(down)], &AesKey::random());
    assert!(matches!(
        fetcher(src, Some(store)).snapshot(HOUR).await,
        Served::Unavailable(_)
    ));
}

/// Counts writes to check an unchanged vault is not persisted again.
#[derive(Default)]
struct CountingStore {
    inner: MemoryStore,
    saves: AtomicUsize,
}

impl SnapshotStore for CountingStore {
    fn load<'a>(
        &'a self,
        credential: &'a str,
        part: Part,
    ) -> BoxFuture<'a, anyhow::Result<Option<Vec<u8>>>> {
        self.inner.load(credential, part)
    }

    fn save<'a>(
        &'a self,
        credential: &'a str,
        part: Part,
        sealed: Vec<u8>,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        self.saves.fetch_add(1, Ordering::SeqCst);
        self.inner.save(credential, part, sealed)
    }

    fn destroy<'a>(&'a self, credential: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        self.inner.destroy(credential)
    }
}

#[tokio::test]
async fn unchanged_vaults_are_not_persisted_again() {
    let key = AesKey::random();
    let store = Arc::new(CountingStore::default());
    let (src, _) = source(vec![Ok("a"), Ok("a"), Ok("b")], &key);
    let fetcher = fetcher(src, Some(store.clone()));
    for _ in 0..3 {
        fetcher.snapshot(Duration::ZERO).await;
    }
    assert_eq!(store.saves.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_answer_too_large_to_persist_is_reported_once_and_not_sent_again() {
    let key = AesKey::random();
    let store = Arc::new(CountingStore::default());
    // Keeper's answers differ byte for byte at every fetch, even with the same records.
    let big = |c: &str| -> &'static str {
        Box::leak(c.repeat(sealed::MAX_STORED_BYTES).into_boxed_str())
    };
    let (src, _) = source(
        vec![Ok(big("x")), Ok(big("y")), Ok(big("z")), Ok("small")],
        &key,
    );
    let fetcher = fetcher(src, Some(store.clone()));
    for _ in 0..3 {
        let served = fetcher.snapshot(Duration::ZERO).await;
        assert!(
            matches!(served, Served::Fresh(_)),
            "still served from memory"
        );
    }
    assert_eq!(
        store.saves.load(Ordering::SeqCst),
        0,
        "never sent to the store"
    );
    assert_eq!(
        fetcher.stats.store_too_large.get(),
        1,
        "counted once, when the copy turned too large"
    );
    assert!(fetcher.health().await.persist_refused);
    fetcher.snapshot(Duration::ZERO).await;
    assert_eq!(
        store.saves.load(Ordering::SeqCst),
        1,
        "a smaller answer is persisted"
    );
    assert!(!fetcher.health().await.persist_refused);
}

#[tokio::test]
async fn files_download_once_per_record_revision() {
    let key = AesKey::random();
    let (src, _) = source(vec![Ok("v")], &key);
    let downloads = src.downloads.clone();
    let fetcher = fetcher(src, None);
    let file = KeeperFile {
        uid: "BBBBBBBBBBBBBBBBBBBBBB".into(),
        name: "cert.pem".into(),
        title: "cert.pem".into(),
        mime_type: None,
        size: None,
        url: None,
        key: AesKey::random(),
    };
    for _ in 0..3 {
        assert_eq!(
            &**fetcher.file(1, &file, 1 << 20).await.unwrap(),
            b"file-bytes"
        );
    }
    assert_eq!(downloads.load(Ordering::SeqCst), 1);
    fetcher.file(2, &file, 1 << 20).await.unwrap();
    assert_eq!(downloads.load(Ordering::SeqCst), 2);
}

#[test]
fn credential_ids_are_stable_and_do_not_reveal_the_client_id() {
    let id = credential_id(
        "6FSaAYix6NY+3gFbC4h3yVRgKDl1prYLTowsYcd2vWipj27jpjtaYgTz1N+XKOQgtt42RMa7GBg7sIZfnwlWVQ==",
    );
    assert_eq!(
        id,
        credential_id(
            "6FSaAYix6NY+3gFbC4h3yVRgKDl1prYLTowsYcd2vWipj27jpjtaYgTz1N+XKOQgtt42RMa7GBg7sIZfnwlWVQ=="
        )
    );
    assert_eq!(id.len(), 16);
    assert!(
        id.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    );
}

#[tokio::test]
async fn a_restarted_fetcher_serves_the_persisted_files_while_keeper_is_down() {
    let key = AesKey::random();
    let store = Arc::new(CountingStore::default());
    let file = KeeperFile {
        uid: "CCCCCCCCCCCCCCCCCCCCCC".into(),
        name: "tls.crt".into(),
        title: "tls.crt".into(),
        mime_type: None,
        size: None,
        url: None,
        key: AesKey::random(),
    };
    let (src, _) = source(vec![Ok("with-file")], &key);
    let first = fetcher(src, Some(store.clone()));
    first.snapshot(HOUR).await;
    let saves = store.saves.load(Ordering::SeqCst);
    first.file(1, &file, 1 << 20).await.unwrap();
    assert_eq!(
        store.saves.load(Ordering::SeqCst),
        saves + 1,
        "files sealed"
    );
    first.file(1, &file, 1 << 20).await.unwrap();
    assert_eq!(
        store.saves.load(Ordering::SeqCst),
        saves + 1,
        "unchanged files not resealed"
    );

    let (src, _) = source(vec![Err(down)], &key);
    let downloads = src.downloads.clone();
    let restarted = fetcher(src, Some(store.clone()));
    assert!(matches!(restarted.snapshot(HOUR).await, Served::Stale(..)));
    assert_eq!(
        &**restarted.file(1, &file, 1 << 20).await.unwrap(),
        b"file-bytes"
    );
    assert_eq!(
        downloads.load(Ordering::SeqCst),
        0,
        "served from the sealed copy"
    );
    // Another revision of the record is not the stored file.
    restarted.file(2, &file, 1 << 20).await.unwrap();
    assert_eq!(downloads.load(Ordering::SeqCst), 1);
}

/// A source whose every fetch takes `delay` before answering.
struct SlowSource {
    inner: FakeSource,
    delay: Duration,
}

impl Upstream for SlowSource {
    fn fetch(&self) -> BoxFuture<'_, Result<Zeroizing<Vec<u8>>, KsmError>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.inner.fetch().await
        })
    }

    fn decode(&self, body: &[u8]) -> Result<Vault, KsmError> {
        self.inner.decode(body)
    }

    fn download<'a>(
        &'a self,
        file: &'a KeeperFile,
        budget: u64,
    ) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, KsmError>> {
        self.inner.download(file, budget)
    }

    fn cache_key(&self) -> AesKey {
        self.inner.cache_key()
    }
}

fn slow_fetcher(delay: Duration, deadline: Duration) -> (Arc<CredentialFetcher>, Arc<AtomicUsize>) {
    let (inner, fetches) = source(vec![Ok("slow")], &AesKey::random());
    let settings = FetchSettings {
        fetch_deadline: deadline,
        backoff_base: Duration::from_secs(60),
        backoff_max: Duration::from_secs(120),
        ..FetchSettings::default()
    };
    let fetcher = CredentialFetcher::new(
        "client-id",
        Box::new(SlowSource { inner, delay }),
        None,
        settings,
        Arc::default(),
        Arc::default(),
    );
    (Arc::new(fetcher), fetches)
}

#[tokio::test(start_paused = true)]
async fn a_slow_endpoint_holds_callers_only_briefly_and_is_fetched_once() {
    let (fetcher, fetches) = slow_fetcher(Duration::from_secs(20), Duration::from_secs(30));
    let start = tokio::time::Instant::now();
    let Served::Pending(retry_in) = fetcher.snapshot(HOUR).await else {
        panic!("the first caller must not wait for the whole fetch")
    };
    assert_eq!(
        start.elapsed(),
        PATIENCE,
        "the starter waits its patience only"
    );
    assert_eq!(retry_in, PATIENCE);
    // A caller arriving later does not wait at all and does not start another fetch; the
    // longer the fetch runs, the later it is asked back, never past the deadline.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let later = tokio::time::Instant::now();
    let Served::Pending(retry_in) = fetcher.snapshot(HOUR).await else {
        panic!("still fetching")
    };
    assert_eq!(later.elapsed(), Duration::ZERO);
    assert_eq!(retry_in, Duration::from_secs(10));
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(
        title(&fetcher.snapshot(HOUR).await).as_deref(),
        Some("slow")
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_endpoint_times_out_at_the_fetch_deadline() {
    let (fetcher, _) = slow_fetcher(Duration::from_secs(3600), Duration::from_secs(30));
    assert!(matches!(fetcher.snapshot(HOUR).await, Served::Pending(_)));
    tokio::time::sleep(Duration::from_secs(31)).await;
    match fetcher.snapshot(HOUR).await {
        Served::Unavailable(staleness) => assert_eq!(staleness.error.reason(), "KeeperUnavailable"),
        other => panic!("expected the timeout, got {other:?}"),
    }
}

fn refused() -> KsmError {
    KsmError::AccessDenied {
        message: "Signature is invalid".into(),
    }
}

fn fetcher_with(
    src: FakeSource,
    store: Option<Arc<dyn SnapshotStore>>,
    max_refused_age: Duration,
) -> Arc<CredentialFetcher> {
    Arc::new(CredentialFetcher::new(
        "client-id",
        Box::new(src),
        store,
        FetchSettings {
            max_refused_age,
            ..fast_settings()
        },
        Arc::default(),
        Arc::default(),
    ))
}

#[tokio::test]
async fn a_refused_credentials_copy_older_than_the_maximum_age_is_destroyed() {
    let key = AesKey::random();
    let memory = Arc::new(MemoryStore::default());
    let store: Arc<dyn SnapshotStore> = memory.clone();
    let (src, _) = source(vec![Ok("kept"), Err(refused)], &key);
    let fetcher = fetcher_with(src, Some(store.clone()), Duration::from_secs(1));
    assert!(matches!(fetcher.snapshot(HOUR).await, Served::Fresh(_)));
    assert!(
        sealed_part(&store, &fetcher, Part::Snapshot)
            .await
            .is_some()
    );
    // Refused while the copy is young: it is still served (the reconciler writes nothing).
    let served = fetcher.snapshot(Duration::ZERO).await;
    assert!(matches!(served, Served::Stale(..)), "{served:?}");
    // Older than the maximum age: gone from memory and from the store.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let served = fetcher.snapshot(Duration::ZERO).await;
    assert!(matches!(served, Served::Unavailable(_)), "{served:?}");
    assert!(
        sealed_part(&store, &fetcher, Part::Snapshot)
            .await
            .is_none()
    );
    assert!(sealed_part(&store, &fetcher, Part::Files).await.is_none());

    // A restarted fetcher finds nothing to restore.
    let (src, _) = source(vec![Err(refused)], &key);
    let restarted = fetcher_with(src, Some(store), Duration::from_secs(1));
    assert!(matches!(
        restarted.snapshot(HOUR).await,
        Served::Unavailable(_)
    ));
}

#[tokio::test]
async fn a_restored_copy_of_a_refused_credential_is_destroyed_once_too_old() {
    let key = AesKey::random();
    let store: Arc<dyn SnapshotStore> = Arc::new(MemoryStore::default());
    let (src, _) = source(vec![Ok("sealed")], &key);
    fetcher(src, Some(store.clone())).snapshot(HOUR).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // After a restart the credential is refused, and the sealed copy is older than allowed.
    let (src, _) = source(vec![Err(refused)], &key);
    let restarted = fetcher_with(src, Some(store.clone()), Duration::from_millis(20));
    let served = restarted.snapshot(HOUR).await;
    assert!(matches!(served, Served::Unavailable(_)), "{served:?}");
    assert!(
        sealed_part(&store, &restarted, Part::Snapshot)
            .await
            .is_none()
    );
}

#[tokio::test]
async fn an_outage_never_destroys_the_last_good_copy() {
    let key = AesKey::random();
    let store: Arc<dyn SnapshotStore> = Arc::new(MemoryStore::default());
    let (src, _) = source(vec![Ok("kept"), Err(down)], &key);
    let fetcher = fetcher_with(src, Some(store.clone()), Duration::from_millis(20));
    fetcher.snapshot(HOUR).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let served = fetcher.snapshot(Duration::ZERO).await;
    assert!(matches!(served, Served::Stale(..)), "{served:?}");
    assert!(
        sealed_part(&store, &fetcher, Part::Snapshot)
            .await
            .is_some()
    );
}

/// What the store holds of `fetcher`'s credential for `part`.
async fn sealed_part(
    store: &Arc<dyn SnapshotStore>,
    fetcher: &CredentialFetcher,
    part: Part,
) -> Option<Vec<u8>> {
    store.load(&fetcher.id, part).await.unwrap()
}

#[test]
fn unchanged_content_is_sealed_again_only_once_the_copy_is_old() {
    use super::persistence::{RESEAL_AFTER, Sealed, content_digest, reseal};
    let mut vault = Vault::default();
    vault.records.push(record("db", 1));
    let digest = content_digest(&vault);
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let last = Some(Sealed {
        digest,
        fetched_at: t0,
    });
    assert!(reseal(None, &digest, t0), "nothing sealed yet");
    assert!(
        !reseal(last, &digest, t0 + RESEAL_AFTER / 2),
        "a steady wave writes nothing"
    );
    assert!(
        reseal(last, &digest, t0 + RESEAL_AFTER),
        "the copy's age stays right within the hour"
    );
    vault.records[0].revision = 2;
    assert!(
        reseal(last, &content_digest(&vault), t0 + Duration::from_secs(1)),
        "changed data"
    );
}
