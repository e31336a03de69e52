// The official Keeper JavaScript SDK (@keeper-security/secrets-manager-core 17.5.0) against
// ksm-test-server.
//
// Usage: node js_sdk_test.js STATE_DIR VAULT_JSON   (NODE_PATH must hold the SDK's node_modules)
//
// TLS verification stays on: NODE_EXTRA_CA_CERTS must point at STATE_DIR/ca.pem (run.sh sets
// it), which covers API calls and file downloads alike. Every check prints one line; a failure
// exits non-zero.
'use strict'

const fs = require('fs')
const path = require('path')
const ksm = require('@keeper-security/secrets-manager-core')

const POSTGRES = 'YP6qLSSxX3qEJLYyQs6iZw'
const STRIPE = 'SsxoiM-FPCF65F54JaY3jQ'
const CERT_FILE = 'SP4eXwtZ4A3YYDQ0Rjrpcw'
const PRODUCTION = 'WrCSNEzZNMFwau1vshzjIA'
const STAGING = 'sXPn9haeUZfuv4Xp_nAUYw'
let passed = 0

function check(name, condition, detail) {
    if (!condition) {
        throw new Error(`${name}: ${JSON.stringify(detail)}`)
    }
    passed++
    console.log(`ok - javascript: ${name}`)
}

async function admin(info, method, route, body) {
    const response = await fetch(info.adminUrl + route, {
        method,
        headers: { 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
    })
    if (!response.ok) {
        throw new Error(`admin ${method} ${route}: ${response.status}`)
    }
    const text = await response.text()
    return text ? JSON.parse(text) : null
}

async function main() {
    const [stateDir, vaultPath] = process.argv.slice(2)
    const info = JSON.parse(fs.readFileSync(path.join(stateDir, 'server.json'), 'utf8'))
    const vault = JSON.parse(fs.readFileSync(vaultPath, 'utf8'))
    if (!process.env.NODE_EXTRA_CA_CERTS) {
        throw new Error('NODE_EXTRA_CA_CERTS must name the test CA')
    }
    const certText = Buffer.from(
        vault.records.flatMap(r => r.files || []).find(f => f.uid === CERT_FILE).text)
    await admin(info, 'POST', '/admin/faults/reset')

    // 1. Bind a one-time token: hostname with port, custom server key, verification on.
    const { token } = await admin(info, 'POST', '/admin/token', { app: 'operator' })
    const storage = ksm.inMemoryStorage({})
    await ksm.initializeStorage(storage, token, info.hostname)
    const options = {
        storage,
        serverPublicKey: info.serverPublicKey,
        serverPublicKeyId: info.serverPublicKeyId,
    }
    const { records } = await ksm.getSecrets(options)
    const titles = records.map(r => r.data.title).sort()
    check('bind + get_secret', JSON.stringify(titles) ===
        JSON.stringify(['Analytics DB', 'Postgres', 'Stripe API', 'Web Certificate']), titles)
    const clientId = await storage.getString('clientId')
    check('clientKey deleted after binding', !(await storage.getString('clientKey')) &&
        !!(await storage.getString('appKey')))
    const counters = await admin(info, 'GET', '/admin/counters')
    check('bind is two get_secret calls (bind + re-fetch)', counters.byClient[clientId] === 2,
        counters.byClient[clientId])

    const postgres = records.find(r => r.recordUid === POSTGRES)
    const password = postgres.data.fields.find(f => f.type === 'password').value[0]
    check('record password', password === 'S3cure!Pa55w0rd#prod')

    // 2. Requested records only.
    const only = await ksm.getSecrets(options, [STRIPE])
    check('get_secret with requestedRecords', only.records.length === 1 &&
        only.records[0].recordUid === STRIPE, only.records.map(r => r.recordUid))

    // 3. Notation.
    const notation = n => ksm.getNotationResults(options, n)
    const same = (a, b) => JSON.stringify(a) === JSON.stringify(b)
    check('notation password by UID',
        same(await notation(`keeper://${POSTGRES}/field/password`), ['S3cure!Pa55w0rd#prod']))
    check('notation password by title',
        same(await notation('keeper://Postgres/field/password'), ['S3cure!Pa55w0rd#prod']))
    check('notation custom field',
        same(await notation('keeper://Postgres/custom_field/Environment'), ['production']))
    check('notation complex field property',
        same(await notation('keeper://Analytics DB/field/host[0][hostName]'),
            ['analytics.db.prod.internal']))
    const fileNotation = await notation('keeper://Web Certificate/file/cert.pem')
    check('notation file', Buffer.from(fileNotation[0], 'base64url').equals(certText))

    // 4. File download, byte for byte.
    const certRecord = records.find(r => r.data.title === 'Web Certificate')
    const file = certRecord.files.find(f => f.data.name === 'cert.pem')
    check('file metadata', file.data.size === certText.length && file.data.type === 'application/x-pem-file')
    const bytes = await ksm.downloadFile(file)
    check('file download', Buffer.from(bytes).equals(certText))

    // 5. Folders.
    const folders = await ksm.getFolders(options)
    const names = folders.map(f => f.name).sort()
    check('get_folders names', same(names, ['Databases', 'Production']), names)
    const sub = folders.find(f => f.name === 'Databases')
    check('get_folders parent', sub.parentUid === 'WrCSNEzZNMFwau1vshzjIA', sub)

    // 6. Throttled once with retry_after=1: the SDK waits and retries.
    await admin(info, 'PATCH', '/admin/faults', { throttle: 1, retryAfter: 1 })
    const started = Date.now()
    const retried = await ksm.getSecrets(options)
    check('throttled then recovered', retried.records.length === 4 && Date.now() - started >= 700)

    // 7. With a custom server key, JS 17.5 refuses to rotate on a key error
    // (docs/dev/protocol.md#key-rotation): proof that it parsed our 401 body as a key error
    // naming id 10.
    await admin(info, 'PATCH', '/admin/faults', { wrongKeyId: 1 })
    let keyError = ''
    try {
        await ksm.getSecrets(options)
    } catch (error) {
        keyError = String(error.message || error)
    }
    check('wrong key id is reported', keyError.includes('suggested key id 10'), keyError)

    // 8. The server's ready-made base64 config works as given.
    const configB64 = fs.readFileSync(path.join(stateDir, 'config.b64'), 'utf8').trim()
    const bound = await ksm.getSecrets({ storage: ksm.loadJsonConfig(configB64) })
    check('pre-bound base64 config', bound.records.length === 4)

    // 9. Writes; the record made here is deleted at the end.
    await writes(info, options)

    await admin(info, 'POST', '/admin/faults/reset')
    console.log(`javascript SDK: ${passed} passed, 0 failed`)
    // The SDK's fileUpload never reads the upload's response, so that keep-alive socket would
    // hold Node's event loop open until the server drops it.
    process.exit(0)
}

const passwordOf = record => record.data.fields.find(f => f.type === 'password').value[0]

// Create in the editable shared folder, read back, update, a stale update, upload and download
// a file, a read-only share refusing, delete. The SDK keeps one process-wide key cache, filled
// by the last getSecrets: each device fetches before it writes, as a JS application must.
async function writes(info, options) {
    const fetchOne = async uid => (await ksm.getSecrets(options, [uid])).records
    await ksm.getSecrets(options)
    const newRecord = {
        title: 'Pushed by JavaScript',
        type: 'login',
        fields: [{ type: 'login', value: ['js-user'] }, { type: 'password', value: ['js-pass-1'] }],
        custom: [],
    }
    const uid = await ksm.createSecret(options, PRODUCTION, newRecord)
    const created = await fetchOne(uid)
    check('createSecret then read back', created.length === 1 &&
        created[0].data.title === 'Pushed by JavaScript' && passwordOf(created[0]) === 'js-pass-1',
        created.map(r => r.data))
    const record = created[0]
    record.data.fields.find(f => f.type === 'password').value = ['js-pass-2']
    await ksm.updateSecret(options, record)
    const [updated] = await fetchOne(uid)
    check('updateSecret', passwordOf(updated) === 'js-pass-2' && updated.revision > record.revision)

    // `record` still carries the revision it was read at: Keeper refuses the second update.
    record.data.fields.find(f => f.type === 'password').value = ['js-pass-stale']
    let stale = ''
    try {
        await ksm.updateSecret(options, record)
    } catch (error) {
        stale = String(error.message || error)
    }
    check('stale revision refused', stale.includes('outdated_revision'), stale)
    check('stale update changed nothing', passwordOf((await fetchOne(uid))[0]) === 'js-pass-2')

    const content = Buffer.from('uploaded by the JavaScript SDK\n'.repeat(20))
    const fileUid = await ksm.uploadFile(options, updated,
        { name: 'js.txt', title: 'JavaScript upload', type: 'text/plain', data: content })
    const [owner] = await fetchOne(uid)
    const uploaded = (owner.files || []).find(f => f.fileUid === fileUid)
    check('uploadFile then download', uploaded && uploaded.data.name === 'js.txt' &&
        Buffer.from(await ksm.downloadFile(uploaded)).equals(content) &&
        passwordOf(owner) === 'js-pass-2', owner.files)

    // App `ci` sees Staging read-only.
    const { token } = await admin(info, 'POST', '/admin/token', { app: 'ci' })
    const ciStorage = ksm.inMemoryStorage({})
    await ksm.initializeStorage(ciStorage, token, info.hostname)
    const ciOptions = { ...options, storage: ciStorage }
    await ksm.getSecrets(ciOptions)
    let readOnly = ''
    try {
        await ksm.createSecret(ciOptions, STAGING, newRecord)
    } catch (error) {
        readOnly = String(error.message || error)
    }
    check('read-only share refuses createSecret', readOnly.includes('access_denied'), readOnly)

    await ksm.getSecrets(options)
    const { records } = await ksm.deleteSecret(options, [uid, POSTGRES])
    const codes = Object.fromEntries(records.map(r => [r.recordUid, r.responseCode]))
    check('deleteSecret: own record deleted, a record it did not create refused',
        codes[uid] === 'ok' && codes[POSTGRES] === 'access_denied' && records.length === 2, records)
    check('deleted record is gone', (await fetchOne(uid)).length === 0 &&
        (await ksm.getSecrets(options)).records.length === 4)
}

main().catch(error => {
    console.error(`FAILED - javascript: ${error.stack || error}`)
    process.exit(1)
})
