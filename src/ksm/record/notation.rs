//! Keeper notation (docs/dev/protocol.md#keeper-notation): `[keeper://]RECORD/SELECTOR`, e.g.
//! `keeper://6ya_fdc6XTsZ7i7x9Jcodg/field/password`, `My DB/custom_field/phone[0][number]`,
//! `Web Certificate/file/cert.pem`.
//!
//! Parsing is strict (the official SDKs' `parse_notation`); resolution follows
//! `get_notation_results` against an already fetched record list.

mod parse;
mod resolve;

pub use resolve::{find_record, is_uid_shaped, resolve};

use crate::ksm::record::KeeperFile;
use crate::reason::Reason;

/// A parsed notation. `Display` writes it back with the escaping the parser expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notation {
    /// Record UID or exact title (unescaped).
    pub record: String,
    pub selector: Selector,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Type,
    Title,
    Notes,
    Field {
        kind: FieldKind,
        /// Field label or type (unescaped).
        name: String,
        /// `None` for no index or `[]` (all values); `Some(n)` for `[n]`.
        index: Option<usize>,
        /// The `[property]` of object values, e.g. `number` of a phone.
        property: Option<String>,
    },
    /// A file by name, title or file UID.
    File(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// `field/`: the record's standard `fields[]`.
    Standard,
    /// `custom_field/`: the record's `custom[]`.
    Custom,
}

/// One resolved value. Strings come back as `Text`; numbers and objects (names, phones,
/// hosts…) as `Json`; a file selector gives the file to download. `Debug` is redacted.
#[derive(Clone, PartialEq)]
pub enum NotationValue {
    Text(String),
    Json(serde_json::Value),
    File(KeeperFile),
}

impl NotationValue {
    /// The value as a line of text: strings verbatim, other JSON compact (like the JS SDK).
    /// `None` for a file, whose content must be downloaded.
    pub fn to_text(&self) -> Option<String> {
        match self {
            NotationValue::Text(text) => Some(text.clone()),
            NotationValue::Json(value) => Some(value.to_string()),
            NotationValue::File(_) => None,
        }
    }
}

impl std::fmt::Debug for NotationValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotationValue::Text(_) => f.write_str("Text(<redacted>)"),
            NotationValue::Json(_) => f.write_str("Json(<redacted>)"),
            NotationValue::File(file) => f.debug_tuple("File").field(file).finish(),
        }
    }
}

/// Why a notation could not be parsed or resolved. Messages name records, fields and files
/// (titles, labels, UIDs), never values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotationError {
    #[error("invalid notation: {0}")]
    Syntax(String),
    #[error("record {0:?} not found")]
    RecordNotFound(String),
    #[error("{count} records are titled {title:?}; use the record UID")]
    AmbiguousTitle { title: String, count: usize },
    #[error("field {0:?} not found")]
    FieldNotFound(String),
    #[error("field {field:?} has {len} value(s); index {index} is out of range")]
    IndexOutOfRange {
        field: String,
        index: usize,
        len: usize,
    },
    #[error("no value of field {field:?} has property {property:?}")]
    PropertyNotFound { field: String, property: String },
    #[error("file {0:?} not found")]
    FileNotFound(String),
    #[error("{count} files match {name:?}; use the file UID")]
    AmbiguousFile { name: String, count: usize },
}

impl NotationError {
    /// Stable reason for status conditions and metrics.
    pub fn reason(&self) -> Reason {
        match self {
            NotationError::Syntax(_) => Reason::InvalidSpec,
            NotationError::RecordNotFound(_) => Reason::RecordNotFound,
            NotationError::AmbiguousTitle { .. } | NotationError::AmbiguousFile { .. } => {
                Reason::AmbiguousTitle
            }
            NotationError::FieldNotFound(_)
            | NotationError::IndexOutOfRange { .. }
            | NotationError::PropertyNotFound { .. }
            | NotationError::FileNotFound(_) => Reason::FieldNotFound,
        }
    }
}
