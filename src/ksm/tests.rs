//! Known-answer tests on real recorded Keeper traffic (`e2e/testdata/keeper-fake-data.json`,
//! MIT-licensed by Keeper Security, see the `.LICENSE` file beside it), fed through the same
//! decoder the client uses.

use crate::ksm::crypto::{AesKey, aes_gcm_decrypt, b64_decode, b64_std, client_id};
use crate::ksm::error::KsmError;
use crate::ksm::response::{decode_binding, decode_secrets};
use crate::ksm::transport::open_response;
use serde_json::Value;

const FAKE_DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/e2e/testdata/keeper-fake-data.json"
);
const TOKEN: &str = "YyIhK5wXFHj36wGBAOmBsxI3v5rIruINrC8KXjyM58c";
const APP_KEY: &str = "6hxMRiJZlIRwZFeuO1XJTv22Ai8D/+tJEEdQXmmm7iA=";
const FOLDER: &str = "y6FBhg7C-wy2zaM0-ouI-Q";

/// The recorded (transmission key, body, status) triples.
fn recorded() -> Vec<(AesKey, Vec<u8>, u16)> {
    let text = std::fs::read_to_string(FAKE_DATA).expect("e2e/testdata/keeper-fake-data.json");
    let items: Vec<Value> = serde_json::from_str(&text).unwrap();
    items
        .iter()
        .map(|item| {
            (
                AesKey::from_b64(item["transmissionKey"].as_str().unwrap()).unwrap(),
                b64_decode(item["data"].as_str().unwrap()).unwrap(),
                item["statusCode"].as_u64().unwrap() as u16,
            )
        })
        .collect()
}

fn client_key() -> AesKey {
    AesKey::from_b64(TOKEN).unwrap()
}

#[test]
fn client_id_from_the_token() {
    assert_eq!(
        client_id(client_key().as_bytes()),
        "6FSaAYix6NY+3gFbC4h3yVRgKDl1prYLTowsYcd2vWipj27jpjtaYgTz1N+XKOQgtt42RMa7GBg7sIZfnwlWVQ=="
    );
}

#[test]
fn binding_response_gives_the_app_key_and_app_data() {
    let (tk, body, status) = &recorded()[0];
    assert_eq!(*status, 200);
    let plain = open_response(tk, *status, body, None).unwrap();
    let (app_key, owner) = decode_binding(&client_key(), &plain).unwrap();
    assert_eq!(b64_std(app_key.as_bytes()), APP_KEY);
    assert_eq!(b64_decode(&owner.unwrap()).unwrap().len(), 65);

    let json: Value = serde_json::from_slice(&plain).unwrap();
    let app_data = b64_decode(json["appData"].as_str().unwrap()).unwrap();
    let app_data = aes_gcm_decrypt(&app_key, &app_data).unwrap();
    assert_eq!(app_data.len(), 384);
    let text = std::str::from_utf8(&app_data).unwrap();
    assert_eq!(
        text.trim_end_matches(' '),
        r#"{"title":"Unit Test Genrator App","type":"app"}"#
    );
}

fn assert_fake_vault(plain: &[u8]) {
    let app_key = AesKey::from_b64(APP_KEY).unwrap();
    let vault = decode_secrets(&app_key, plain).unwrap();
    assert!(vault.warnings.is_empty(), "{:?}", vault.warnings);
    assert_eq!(vault.folders.len(), 1);
    assert_eq!(vault.folders[0].uid, FOLDER);
    let by_title = |title: &str| {
        vault
            .records
            .iter()
            .find(|r| r.title == title)
            .unwrap_or_else(|| panic!("{title} missing"))
    };
    let one = by_title("RECoRD 1");
    assert_eq!(one.record_type, "login");
    assert_eq!(one.password(), Some("EwFpmg);7KsO9+ln8g7"));
    assert_eq!(one.notes.as_deref(), Some("asdf"));
    assert_eq!(one.folder_uid.as_deref(), Some(FOLDER));
    let login = one.field("login").unwrap();
    assert_eq!(login.value, [Value::from("login value")]);
    assert_eq!(
        by_title("RECoRD 2").password(),
        Some("Lex1S++Wx6g^,LC.(Vp<")
    );
    assert_eq!(vault.records.len(), 2);
    assert_eq!(one.uid, "Ue8h6JyWUs7Iu6eY_mha-w");
    assert_eq!(one.revision, 1411018);
    assert_eq!(
        one.inner_folder_uid.as_deref(),
        Some("ZUx3UkTzy2pgLFHNTiMMUw")
    );
}

#[test]
fn binding_response_decrypts_to_the_recorded_records() {
    let (tk, body, status) = &recorded()[0];
    assert_fake_vault(&open_response(tk, *status, body, None).unwrap());
}

#[test]
fn second_response_has_the_same_data_and_no_app_key() {
    let (tk, body, status) = &recorded()[1];
    let plain = open_response(tk, *status, body, None).unwrap();
    let json: Value = serde_json::from_slice(&plain).unwrap();
    assert!(json["encryptedAppKey"].is_null());
    assert!(json["appOwnerPublicKey"].is_null());
    assert!(matches!(
        decode_binding(&client_key(), &plain),
        Err(KsmError::Binding(_))
    ));
    assert_fake_vault(&plain);
}

#[test]
fn forbidden_response_is_access_denied_signature_invalid() {
    let (tk, body, status) = &recorded()[2];
    assert_eq!(*status, 403);
    match open_response(tk, *status, body, None) {
        Err(KsmError::AccessDenied { message }) => assert_eq!(message, "Signature is invalid"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_wrong_app_key_is_an_error_not_an_empty_vault() {
    let (tk, body, status) = &recorded()[1];
    let plain = open_response(tk, *status, body, None).unwrap();
    let err = decode_secrets(&AesKey::random(), &plain).unwrap_err();
    assert!(matches!(err, KsmError::Undecryptable(_)), "{err:?}");
}

#[test]
fn a_flipped_bit_in_the_recorded_body_is_tampering() {
    let (tk, mut body, status) = recorded().swap_remove(1);
    body[100] ^= 1;
    assert!(matches!(
        open_response(&tk, status, &body, None),
        Err(KsmError::Tampered)
    ));
}
#[test]
fn folder_key_unwraps_under_the_app_key_and_wraps_the_record_keys() {
    let (tk, body, status) = &recorded()[1];
    let plain = open_response(tk, *status, body, None).unwrap();
    let json: Value = serde_json::from_slice(&plain).unwrap();
    let folder = &json["folders"][0];
    assert_eq!(folder["folderUid"], FOLDER);
    let app_key = AesKey::from_b64(APP_KEY).unwrap();
    let folder_key = app_key
        .unwrap_key(&b64_decode(folder["folderKey"].as_str().unwrap()).unwrap())
        .unwrap();
    for record in folder["records"].as_array().unwrap() {
        let wrapped = b64_decode(record["recordKey"].as_str().unwrap()).unwrap();
        assert!(folder_key.unwrap_key(&wrapped).is_ok());
        assert!(app_key.unwrap_key(&wrapped).is_err());
    }
}
