//! Decrypting and parsing `get_secret` responses of 1, 100 and 1,000 records: the work the
//! operator does per credential per refresh. Responses are built the way Keeper encrypts them
//! (transmission key → app key → shared-folder key → record key → space-padded record JSON).
//!
//! `cargo bench --bench decrypt` prints criterion's throughput and a records/second line.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use keeper_operator::ksm::crypto::{AesKey, aes_gcm_encrypt, b64_std, b64_url, generate_uid};
use keeper_operator::ksm::response::decode_secrets;
use keeper_operator::ksm::transport::open_response;
use serde_json::json;
use std::hint::black_box;
use std::time::{Duration, Instant};

struct Response {
    transmission_key: AesKey,
    app_key: AesKey,
    body: Vec<u8>,
}

/// Record JSON as the vault stores it: a login with a few fields, right-padded with spaces.
fn record_data(i: usize) -> Vec<u8> {
    let data = json!({
        "title": format!("Record {i}"), "type": "login",
        "fields": [
            {"type": "login", "value": [format!("user{i}")]},
            {"type": "password", "value": [format!("p@ss-{i}-{}", generate_uid())]},
            {"type": "url", "value": ["https://db.example.com:5432"]},
            {"type": "fileRef", "value": []},
            {"type": "oneTimeCode", "value": []}],
        "custom": [{"type": "text", "label": "env", "value": ["prod"]}],
        "notes": "rotated weekly"});
    let mut text = data.to_string().into_bytes();
    text.resize(text.len().div_ceil(384) * 384, b' ');
    text
}

fn build(records: usize) -> Response {
    let (transmission_key, app_key, folder_key) =
        (AesKey::random(), AesKey::random(), AesKey::random());
    let entries: Vec<_> = (0..records)
        .map(|i| {
            let record_key = AesKey::random();
            json!({"recordUid": generate_uid(),
                   "recordKey": b64_std(&aes_gcm_encrypt(&folder_key, record_key.as_bytes())),
                   "data": b64_std(&aes_gcm_encrypt(&record_key, &record_data(i))),
                   "revision": 1411018 + i, "isEditable": true, "files": null,
                   "folderUid": null, "innerFolderUid": null})
        })
        .collect();
    let plaintext = json!({
        "appData": b64_url(&aes_gcm_encrypt(&app_key, br#"{"title":"bench","type":"app"}"#)),
        "encryptedAppKey": null, "appOwnerPublicKey": null, "expiresOn": 0,
        "warnings": null, "extra": null, "records": null,
        "folders": [{"folderUid": generate_uid(),
                     "folderKey": b64_std(&aes_gcm_encrypt(&app_key, folder_key.as_bytes())),
                     "data": null, "parent": null, "isEditable": true, "records": entries}]});
    let body = aes_gcm_encrypt(&transmission_key, plaintext.to_string().as_bytes());
    Response {
        transmission_key,
        app_key,
        body,
    }
}

fn decrypt(response: &Response) -> usize {
    let plain = open_response(&response.transmission_key, 200, &response.body, None)
        .expect("response opens");
    decode_secrets(&response.app_key, &plain)
        .expect("response decodes")
        .records
        .len()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("get_secret_decrypt");
    for records in [1usize, 100, 1000] {
        let response = build(records);
        assert_eq!(decrypt(&response), records);
        group.throughput(Throughput::Elements(records as u64));
        group.bench_with_input(BenchmarkId::from_parameter(records), &response, |b, r| {
            b.iter(|| black_box(decrypt(black_box(r))))
        });
        // An explicit figure next to criterion's estimate.
        let (mut done, start) = (0usize, Instant::now());
        while start.elapsed() < Duration::from_secs(1) {
            done += decrypt(&response);
        }
        let rate = done as f64 / start.elapsed().as_secs_f64();
        println!(
            "get_secret with {records:>4} records ({} KiB body): {rate:>10.0} records/s",
            response.body.len() / 1024
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
