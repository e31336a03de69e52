//! PURE: Keeper records + a KeeperSecret's `data`/`dataFrom` → Secret keys.
//!
//! Files are not downloaded here: they come out as [`Content::File`] and the reconciler
//! fetches their bytes, so this module stays free of I/O.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use zeroize::Zeroizing;

use crate::api::Reason;
use crate::api::{
    DataFromItem, DataItem, DecodingStrategy, DeletionPolicy, DuplicateKeyPolicy, KeeperSecretSpec,
    RecordRevision, RecordSelector,
};
use crate::ksm::record::notation::{self, Notation, NotationError, NotationValue};
use crate::ksm::record::{Field, KeeperFile, Record, Vault, find_field};

/// Secret bytes that are wiped from memory when dropped.
pub type Bytes = Zeroizing<Vec<u8>>;

/// What one Secret key holds: the value itself, or a file attachment still to download.
pub(crate) enum Content {
    /// The value itself.
    Value(Bytes),
    /// A file attachment still to be downloaded.
    File(KeeperFile),
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Content::Value(v) => write!(f, "Value(<{} bytes redacted>)", v.len()),
            Content::File(file) => write!(f, "File({})", file.uid),
        }
    }
}

/// The keys a KeeperSecret maps to, and the records they come from.
#[derive(Debug, Default)]
pub(crate) struct KeyMap {
    /// Secret key → value source.
    pub entries: BTreeMap<String, Content>,
    /// Records read, with their revisions (for status).
    pub records: BTreeSet<RecordRevision>,
    /// Secret key → how its value is stored in Keeper (keys decoded as stored are absent).
    pub decoding: BTreeMap<String, DecodingStrategy>,
    /// Records (or shared folders) not found whose keys a deletion policy left out, described
    /// by their selector.
    pub gone: BTreeSet<String>,
}

/// Why a mapping failed. Messages name records/fields/files, never values.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// No record matched a selector.
    #[error("record {0} not found (is it shared with the KSM application?)")]
    RecordNotFound(String),
    /// A title matched several records.
    #[error("title {title:?} matches {count} records; select the record by uid instead")]
    AmbiguousTitle { title: String, count: usize },
    /// The record has no such field, property or file.
    #[error("{0}")]
    FieldNotFound(String),
    /// A notation failed to parse or resolve.
    #[error("notation for key {key:?}: {source}")]
    Notation { key: String, source: NotationError },
}

impl MappingError {
    /// Stable reason for status and metrics.
    pub fn reason(&self) -> Reason {
        match self {
            Self::RecordNotFound(_) => Reason::RecordNotFound,
            Self::AmbiguousTitle { .. } => Reason::AmbiguousTitle,
            Self::FieldNotFound(_) => Reason::FieldNotFound,
            Self::Notation { source, .. } => source.reason(),
        }
    }
}

/// Maps the spec onto the fetched vault: `dataFrom` items in order, then `data` items. With a
/// deletion policy other than Retain, an item whose record (or folder) is not found maps nothing
/// and is listed in [`KeyMap::gone`].
pub(crate) fn plan(spec: &KeeperSecretSpec, vault: &Vault) -> Result<KeyMap, MappingError> {
    let records = dedup(&vault.records);
    let policy = spec.target.as_ref().and_then(|t| t.deletion_policy);
    let mut plan = KeyMap::default();
    for item in &spec.data_from {
        let Some((entries, used)) = plan.unless_gone(policy, data_from(item, &records, vault))?
        else {
            continue;
        };
        for key in entries.keys() {
            plan.decode(key, item.decoding_strategy);
        }
        plan.entries.extend(entries);
        plan.records.extend(used.iter().map(|r| revision(r)));
    }
    for item in &spec.data {
        let found = data_item(item, &records, &vault.records);
        let Some((source, record)) = plan.unless_gone(policy, found)? else {
            continue;
        };
        plan.decode(&item.key, item.decoding_strategy);
        plan.entries.insert(item.key.clone(), source);
        plan.records.extend(record.map(revision));
    }
    Ok(plan)
}

impl KeyMap {
    /// What an item found, or `None` when its record is gone and `policy` drops its keys.
    fn unless_gone<T>(
        &mut self,
        policy: Option<DeletionPolicy>,
        found: Result<T, MappingError>,
    ) -> Result<Option<T>, MappingError> {
        let drops = !matches!(policy, None | Some(DeletionPolicy::Retain));
        match found {
            Err(MappingError::RecordNotFound(what)) if drops => {
                self.gone.insert(what);
                Ok(None)
            }
            Err(MappingError::Notation {
                source: NotationError::RecordNotFound(what),
                ..
            }) if drops => {
                self.gone.insert(format!("record {what:?}"));
                Ok(None)
            }
            found => found.map(Some),
        }
    }

    /// Records how the value now mapped to `key` is stored (a later item replaces it all).
    fn decode(&mut self, key: &str, strategy: Option<DecodingStrategy>) {
        match strategy {
            None | Some(DecodingStrategy::None) => self.decoding.remove(key),
            Some(s) => self.decoding.insert(key.to_string(), s),
        };
    }
}

/// The same record can appear twice (shared directly and through a folder).
fn dedup(records: &[Record]) -> Vec<&Record> {
    let mut seen = BTreeSet::new();
    records
        .iter()
        .filter(|r| seen.insert(r.uid.as_str()))
        .collect()
}

fn revision(r: &Record) -> RecordRevision {
    RecordRevision {
        uid: r.uid.clone(),
        revision: r.revision,
    }
}

/// The lookup rule shared with notation: by UID, or by exact title (never guessed).
pub(crate) fn find_record<'a>(
    records: &[&'a Record],
    sel: &RecordSelector,
) -> Result<&'a Record, MappingError> {
    if let Some(uid) = &sel.uid {
        return records
            .iter()
            .find(|r| &r.uid == uid)
            .copied()
            .ok_or_else(|| MappingError::RecordNotFound(format!("uid {uid}")));
    }
    let title = sel.title.as_deref().unwrap_or_default();
    let matches: Vec<&Record> = records
        .iter()
        .filter(|r| r.title == title)
        .copied()
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(MappingError::RecordNotFound(format!("titled {title:?}"))),
        many => Err(MappingError::AmbiguousTitle {
            title: title.to_string(),
            count: many.len(),
        }),
    }
}

fn data_item<'a>(
    item: &DataItem,
    records: &[&'a Record],
    all: &[Record],
) -> Result<(Content, Option<&'a Record>), MappingError> {
    if let Some(text) = &item.notation {
        let err = |source| MappingError::Notation {
            key: item.key.clone(),
            source,
        };
        let parsed: Notation = text.parse().map_err(err)?;
        let values = notation::resolve(all, &parsed).map_err(err)?;
        let record = notation::find_record(all, &parsed.record).ok();
        return Ok((
            notation_source(values),
            record.and_then(|r| records.iter().find(|x| x.uid == r.uid).copied()),
        ));
    }
    let sel = item
        .record
        .as_ref()
        .ok_or_else(|| missing(&item.key, "record"))?;
    let record = find_record(records, sel)?;
    if let Some(file) = &item.file {
        return Ok((
            Content::File(find_file(record, file)?.clone()),
            Some(record),
        ));
    }
    let name = item
        .field
        .as_deref()
        .ok_or_else(|| missing(&item.key, "field"))?;
    let field = lookup_field(record, name, item.custom).ok_or_else(|| {
        MappingError::FieldNotFound(format!(
            "record {} has no field labelled or typed {name:?}",
            record.uid
        ))
    })?;
    let bytes = field_bytes(&field.value, item.property.as_deref()).ok_or_else(|| {
        let prop = item.property.as_deref().unwrap_or_default();
        MappingError::FieldNotFound(format!(
            "field {name:?} of record {} has no property {prop:?}",
            record.uid
        ))
    })?;
    Ok((Content::Value(bytes), Some(record)))
}

/// Admission (CEL) rejects these; an object stored before the rules existed still gets a clear error.
fn missing(key: &str, what: &str) -> MappingError {
    MappingError::FieldNotFound(format!("data key {key:?}: {what} is not set"))
}

/// The shared lookup rule (label before type, standard before custom); `custom` restricts
/// the search to one kind.
fn lookup_field<'a>(record: &'a Record, name: &str, custom: Option<bool>) -> Option<&'a Field> {
    match custom {
        None => record.field(name),
        Some(false) => find_field(&record.fields, name),
        Some(true) => find_field(&record.custom, name),
    }
}

fn find_file<'a>(record: &'a Record, name: &str) -> Result<&'a KeeperFile, MappingError> {
    let matches: Vec<&KeeperFile> = record
        .files
        .iter()
        .filter(|f| f.uid == name || f.name == name || f.title == name)
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(MappingError::FieldNotFound(format!(
            "record {} has no file {name:?}",
            record.uid
        ))),
        many => Err(MappingError::FieldNotFound(format!(
            "record {} has {} files named {name:?}; select the file by uid",
            record.uid,
            many.len()
        ))),
    }
}

/// One string stays as-is; anything else (objects, several values) becomes compact JSON.
/// With a property, object values are replaced by that property (values without it are
/// skipped); `None` if no value has it.
pub(crate) fn field_bytes(values: &[Value], property: Option<&str>) -> Option<Bytes> {
    let picked: Vec<&Value> = match property {
        Some(p) => {
            let picked: Vec<&Value> = values.iter().filter_map(|v| v.get(p)).collect();
            if picked.is_empty() {
                return None;
            }
            picked
        }
        None => values.iter().collect(),
    };
    Some(Zeroizing::new(match picked.as_slice() {
        [] => Vec::new(),
        [Value::String(s)] => s.as_bytes().to_vec(),
        [one] => one.to_string().into_bytes(),
        many => Value::Array(many.iter().map(|v| (*v).clone()).collect())
            .to_string()
            .into_bytes(),
    }))
}

fn notation_source(values: Vec<NotationValue>) -> Content {
    let mut texts = Vec::with_capacity(values.len());
    for v in values {
        match v {
            NotationValue::File(f) => return Content::File(f),
            NotationValue::Text(s) => texts.push(Value::String(s)),
            NotationValue::Json(j) => texts.push(j),
        }
    }
    // `field_bytes` with no property cannot fail.
    Content::Value(field_bytes(&texts, None).unwrap_or_default())
}

type Entries = BTreeMap<String, Content>;

fn data_from<'a>(
    item: &DataFromItem,
    records: &[&'a Record],
    vault: &Vault,
) -> Result<(Entries, Vec<&'a Record>), MappingError> {
    let prefix = item.prefix.clone().unwrap_or_default();
    let mut out = Keys::new(item.duplicate_keys);
    if let Some(sel) = &item.record {
        let record = find_record(records, sel)?;
        for (key, source) in record_entries(record) {
            out.insert(format!("{prefix}{key}"), source);
        }
        return Ok((out.entries, vec![record]));
    }
    let folder = item
        .folder
        .as_ref()
        .map(|f| f.uid.as_str())
        .unwrap_or_default();
    let mut members: Vec<&Record> = records
        .iter()
        .filter(|r| {
            r.folder_uid.as_deref() == Some(folder) || r.inner_folder_uid.as_deref() == Some(folder)
        })
        .copied()
        .collect();
    if members.is_empty() && !vault.folders.iter().any(|f| f.uid == folder) {
        return Err(MappingError::RecordNotFound(format!(
            "shared folder {folder}"
        )));
    }
    members.sort_by(|a, b| (&a.title, &a.uid).cmp(&(&b.title, &b.uid)));
    for record in &members {
        let title = sanitize_key(&record.title);
        for (key, source) in record_entries(record) {
            out.insert(format!("{prefix}{title}_{key}"), source);
        }
    }
    Ok((out.entries, members))
}

/// Every non-empty field (standard, then custom), every file, and the notes of a record,
/// keyed by sanitized label (or type, when unlabelled) / file name / `notes`.
fn record_entries(record: &Record) -> Vec<(String, Content)> {
    let fields = record.fields.iter().chain(&record.custom);
    let mut out: Vec<(String, Content)> = fields
        // fileRef only lists attachment UIDs; the files themselves are mapped below.
        .filter(|f| !f.value.is_empty() && f.field_type != "fileRef")
        .filter_map(|f| {
            let name = f
                .label
                .as_deref()
                .filter(|l| !l.is_empty())
                .unwrap_or(&f.field_type);
            Some((
                sanitize_key(name),
                Content::Value(field_bytes(&f.value, None)?),
            ))
        })
        .collect();
    out.extend(
        record
            .files
            .iter()
            .map(|f| (sanitize_key(&f.name), Content::File(f.clone()))),
    );
    if let Some(notes) = record.notes.as_deref().filter(|n| !n.is_empty()) {
        out.push((
            "notes".to_string(),
            Content::Value(Zeroizing::new(notes.as_bytes().to_vec())),
        ));
    }
    out
}

/// Applies the duplicate-key policy within one `dataFrom` item.
struct Keys {
    policy: DuplicateKeyPolicy,
    entries: Entries,
}

impl Keys {
    fn new(policy: DuplicateKeyPolicy) -> Self {
        Keys {
            policy,
            entries: BTreeMap::new(),
        }
    }

    fn insert(&mut self, key: String, source: Content) {
        let base = match self.entries.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(source);
                return;
            }
            Entry::Occupied(_) if self.policy == DuplicateKeyPolicy::First => return,
            Entry::Occupied(taken) => taken.key().clone(),
        };
        let free = (2..)
            .map(|n| format!("{base}_{n}"))
            .find(|k| !self.entries.contains_key(k));
        if let Some(k) = free {
            self.entries.insert(k, source);
        }
    }
}

/// Makes any label a valid Secret key: characters outside `[-._a-zA-Z0-9]` become `_`.
pub(crate) fn sanitize_key(name: &str) -> String {
    let mut key: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    if key.is_empty() || key == "." || key == ".." {
        key = key.replace('.', "_");
        key.push('_');
    }
    key
}

#[cfg(test)]
mod tests;
