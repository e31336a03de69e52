"""The official Keeper Python SDK (keeper-secrets-manager-core 17.3.0) against ksm-test-server.

Usage: python_sdk_test.py STATE_DIR VAULT_JSON

STATE_DIR is what ksm-test-server wrote (server.json, ca.pem, config.b64). TLS verification
stays on: REQUESTS_CA_BUNDLE must point at STATE_DIR/ca.pem (run.sh sets it).
Every check prints one line; any failure raises, so the exit status is non-zero.
"""

import base64
import json
import os
import re
import sys
import tempfile
import time
import urllib.request

from keeper_secrets_manager_core import SecretsManager
from keeper_secrets_manager_core.dto.dtos import KeeperFileUpload, RecordCreate, RecordField
from keeper_secrets_manager_core.exceptions import KeeperError
from keeper_secrets_manager_core.storage import FileKeyValueStorage, InMemoryKeyValueStorage

POSTGRES = "YP6qLSSxX3qEJLYyQs6iZw"
WEB_CERT = "eOg9gnMeK3HgPNAqf7KB7g"
STRIPE = "SsxoiM-FPCF65F54JaY3jQ"
CERT_FILE = "SP4eXwtZ4A3YYDQ0Rjrpcw"
PRODUCTION = "WrCSNEzZNMFwau1vshzjIA"
STAGING = "sXPn9haeUZfuv4Xp_nAUYw"
PASSED = []


def check(name, condition, detail=""):
    if not condition:
        raise AssertionError(f"{name}: {detail}")
    PASSED.append(name)
    print(f"ok - python: {name}", flush=True)


class Admin:
    def __init__(self, url):
        self.url = url

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
            return json.loads(text) if text else None

    def counters(self):
        return self.call("GET", "/admin/counters")

    def faults(self, **patch):
        return self.call("PATCH", "/admin/faults", patch)


def main():
    state_dir, vault_path = sys.argv[1], sys.argv[2]
    with open(os.path.join(state_dir, "server.json")) as f:
        info = json.load(f)
    with open(vault_path) as f:
        vault = json.load(f)
    assert os.environ.get("REQUESTS_CA_BUNDLE"), "REQUESTS_CA_BUNDLE must name the test CA"
    admin = Admin(info["adminUrl"])
    admin.call("POST", "/admin/faults/reset")
    cert_text = next(
        f["text"] for r in vault["records"] for f in r.get("files", []) if f["uid"] == CERT_FILE
    ).encode()

    # 1. Bind a one-time token (no region prefix; hostname with port; custom server key).
    token = admin.call("POST", "/admin/token", {"app": "operator"})["token"]
    workdir = tempfile.mkdtemp(prefix="ksm-py-")
    config_path = os.path.join(workdir, "client-config.json")
    sm = SecretsManager(
        token=token,
        hostname=info["hostname"],
        verify_ssl_certs=True,
        config=FileKeyValueStorage(config_path),
        server_public_key=info["serverPublicKey"],
        server_public_key_id=info["serverPublicKeyId"],
    )
    records = sm.get_secrets()
    titles = sorted(r.title for r in records)
    check("bind + get_secret", titles == ["Analytics DB", "Postgres", "Stripe API", "Web Certificate"], titles)
    with open(config_path) as f:
        saved = json.load(f)
    check("config saved with appKey, clientKey deleted", "appKey" in saved and "clientKey" not in saved, sorted(saved))
    check("config keeps the custom server key", saved.get("serverPublicKey") == info["serverPublicKey"])
    per_client = admin.counters()["byClient"].get(saved["clientId"])
    check("bind is two get_secret calls (bind + re-fetch)", per_client == 2, per_client)

    postgres = next(r for r in records if r.uid == POSTGRES)
    check("record password", postgres.password == "S3cure!Pa55w0rd#prod")
    check(
        "record folder and inner folder",
        postgres.folder_uid == "WrCSNEzZNMFwau1vshzjIA" and postgres.inner_folder_uid == "eyVTib_CDFxqbRt9kaF8Yw",
        (postgres.folder_uid, postgres.inner_folder_uid),
    )

    # 2. Requested records only.
    only = sm.get_secrets([STRIPE])
    check("get_secret with requestedRecords", [r.uid for r in only] == [STRIPE], [r.uid for r in only])

    # 3. Notation: by UID, by title, custom field, complex field property, file.
    def notation(text):
        return sm.get_notation_results(text)

    check("notation password by UID", notation(f"keeper://{POSTGRES}/field/password") == ["S3cure!Pa55w0rd#prod"])
    check("notation password by title", notation("keeper://Postgres/field/password") == ["S3cure!Pa55w0rd#prod"])
    check("notation custom field", notation("keeper://Postgres/custom_field/Environment") == ["production"])
    check(
        "notation complex field property",
        notation("keeper://Analytics DB/field/host[0][hostName]") == ["analytics.db.prod.internal"],
    )
    check("notation complex field port", notation("keeper://Analytics DB/field/host[0][port]") == ["5433"])
    try:
        notation("keeper://Postgres/custom_field/Replica")
        ambiguous = False
    except Exception:
        ambiguous = True
    check("notation on a repeated label is an error in the SDK", ambiguous)
    file_b64 = notation("keeper://Web Certificate/file/cert.pem")[0]
    check("notation file", base64.urlsafe_b64decode(file_b64 + "=" * (-len(file_b64) % 4)) == cert_text)

    # 4. File download, compared byte for byte.
    cert_record = sm.get_secrets([WEB_CERT])[0]
    cert = cert_record.find_file_by_title("Web certificate (PEM)")
    check("file metadata", cert is not None and cert.name == "cert.pem" and cert.size == len(cert_text))
    check("file download", cert.get_file_data() == cert_text)

    # 5. Folders: shared folder (GCM) and sub-folder (CBC under the shared folder key).
    folders = {f.folder_uid: f for f in sm.get_folders()}
    names = sorted(f.name for f in folders.values())
    check("get_folders names", names == ["Databases", "Production"], names)
    check("get_folders parent", folders["eyVTib_CDFxqbRt9kaF8Yw"].parent_uid == "WrCSNEzZNMFwau1vshzjIA")

    # 6. Throttled once with retry_after=1: the SDK waits and retries.
    before = admin.counters()["byOutcome"].get("throttled", 0)
    admin.faults(throttle=1, retryAfter=1)
    started = time.monotonic()
    records = sm.get_secrets()
    waited = time.monotonic() - started
    after = admin.counters()["byOutcome"].get("throttled", 0)
    check("throttled then recovered", len(records) == 4 and after == before + 1 and waited >= 0.7, (after, waited))

    # 7. Wrong key id once: the SDK takes the id from the 401 body and retries.
    admin.faults(wrongKeyId=1)
    keys_before = admin.counters()["byOutcome"].get("key", 0)
    records = sm.get_secrets()
    keys_after = admin.counters()["byOutcome"].get("key", 0)
    check("wrong key id then recovered", len(records) == 4 and keys_after == keys_before + 1)

    # 8. An unregistered client version is refused with the real body.
    admin.faults(rejectedClientVersions=["mp*"])
    try:
        sm.get_secrets()
        message = ""
    except KeeperError as error:
        message = str(error)
    admin.faults(rejectedClientVersions=[])
    check("invalid client version", "invalid client version id: 16, mp17.3.0" in message, message)

    # 9. The token cannot be redeemed a second time by another device.
    try:
        SecretsManager(
            token=token,
            hostname=info["hostname"],
            config=InMemoryKeyValueStorage(),
            server_public_key=info["serverPublicKey"],
            server_public_key_id=info["serverPublicKeyId"],
        ).get_secrets()
        reuse = ""
    except Exception as error:
        reuse = str(error)
    check("token reuse refused", "access_denied" in reuse or "Signature is invalid" in reuse, reuse)

    # 10. The server's ready-made base64 config (already bound) works as given.
    with open(os.path.join(state_dir, "config.b64")) as f:
        config_b64 = f.read().strip()
    bound = SecretsManager(config=InMemoryKeyValueStorage(config_b64), verify_ssl_certs=True)
    check("pre-bound base64 config", len(bound.get_secrets()) == 4)

    # 11. The notation table: the SDK's answers, for compare_notations.py to hold ours against.
    table = os.environ.get("NOTATION_TABLE")
    if table:
        answers = {text: sdk_notation(bound, text) for text in read_table(table)}
        with open(os.path.join(state_dir, "notations-python.json"), "w") as f:
            json.dump(answers, f)
        check("notation table answered", len(answers) > 0, table)

    # 12. Writes, last so the checks above see the vault as the sample defines it; the record
    # made here is deleted at the end, so the JavaScript run finds the vault as it was.
    writes(bound, admin, info)

    admin.call("POST", "/admin/faults/reset")
    print(f"python SDK: {len(PASSED)} passed, 0 failed", flush=True)


def writes(sm, admin, info):
    """Create in the editable shared folder, read back, update, a stale update, upload and
    download a file, a read-only share refusing, delete."""
    new = RecordCreate("login", "Pushed by Python")
    new.fields = [
        RecordField(field_type="login", value=["py-user"]),
        RecordField(field_type="password", value=["py-pass-1"]),
    ]
    uid = sm.create_secret(PRODUCTION, new)
    created = sm.get_secrets([uid])
    check(
        "create_secret then read back",
        [(r.title, r.password, r.folder_uid) for r in created] == [("Pushed by Python", "py-pass-1", PRODUCTION)],
        [(r.title, r.password, r.folder_uid) for r in created],
    )
    record = created[0]
    record.field("password", value="py-pass-2")
    sm.save(record)
    updated = sm.get_secrets([uid])[0]
    check("save (update_secret)", updated.password == "py-pass-2" and updated.revision > record.revision)

    # `record` still carries the revision it was read at: Keeper refuses the second save.
    record.field("password", value="py-pass-stale")
    try:
        sm.save(record)
        stale = ""
    except KeeperError as error:
        stale = str(error)
    check("stale revision refused", "outdated_revision" in stale, stale)
    check("stale save changed nothing", sm.get_secrets([uid])[0].password == "py-pass-2")

    content = b"uploaded by the Python SDK\n" * 20
    upload = KeeperFileUpload(name="py.txt", title="Python upload", mime_type="text/plain", data=content)
    file_uid = sm.upload_file(updated, upload)
    owner = sm.get_secrets([uid])[0]
    uploaded = owner.find_file_by_title("Python upload")
    check(
        "upload_file then download",
        uploaded is not None and uploaded.f["fileUid"] == file_uid and uploaded.name == "py.txt"
        and uploaded.get_file_data() == content and owner.password == "py-pass-2",
    )

    # App `ci` sees Staging read-only.
    ci_token = admin.call("POST", "/admin/token", {"app": "ci"})["token"]
    ci = SecretsManager(
        token=ci_token,
        hostname=info["hostname"],
        config=InMemoryKeyValueStorage(),
        server_public_key=info["serverPublicKey"],
        server_public_key_id=info["serverPublicKeyId"],
    )
    try:
        ci.create_secret(STAGING, new)
        read_only = ""
    except KeeperError as error:
        read_only = str(error)
    check("read-only share refuses create_secret", "access_denied" in read_only, read_only)

    results = {r["recordUid"]: r["responseCode"] for r in sm.delete_secret([uid, POSTGRES])}
    check(
        "delete_secret: own record deleted, a record it did not create refused",
        results == {uid: "ok", POSTGRES: "access_denied"},
        results,
    )
    check("deleted record is gone", sm.get_secrets([uid]) == [] and len(sm.get_secrets()) == 4)


def read_table(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


# A property as the only bracket (`field/host[port]`): only the SDK's getter takes that form.
PROPERTY_ONLY = re.compile(r"/(field|custom_field)/(\\.|[^\[])*\[[A-Za-z][^\]]*\]$", re.IGNORECASE)


def sdk_notation(sm, text):
    """{"values": [...]} as the SDK answers `text`, or {"error": "..."}."""
    try:
        if PROPERTY_ONLY.search(text):
            value = sm.get_notation(text)
            return {"values": [value if isinstance(value, str) else json.dumps(value)]}
        return {"values": sm.get_notation_results(text)}
    except Exception as error:
        return {"error": type(error).__name__}


if __name__ == "__main__":
    main()
