//! Templates from `templateFrom`: what the controller read, checked and bounded.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::api::{Reason, TemplateSourceItem};
use crate::sync::mapping::Bytes;

use super::MAX_TEMPLATE_KEYS;

/// `templateFrom` may bring at most this many bytes of templates (keys and texts, together).
pub const MAX_SOURCE_BYTES: usize = 1024 * 1024;
/// ... and at most this many templates.
pub const MAX_SOURCE_KEYS: usize = MAX_TEMPLATE_KEYS;

/// A template read through `templateFrom`.
pub struct TemplateSource {
    pub(super) text: Zeroizing<String>,
    /// Read from a Secret: never quoted, not even in a syntax error.
    pub(super) confidential: bool,
}

impl TemplateSource {
    /// The template's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether it was read from a Secret.
    pub fn is_confidential(&self) -> bool {
        self.confidential
    }
}

/// Which kind of object a `templateFrom` entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// A ConfigMap (`data` and `binaryData`).
    ConfigMap,
    /// A Secret (`data`); its templates are confidential.
    Secret,
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ConfigMap => "ConfigMap",
            Self::Secret => "Secret",
        })
    }
}

/// One `templateFrom` entry as read: `data` is `None` when the object does not exist.
pub struct FetchedSource<'a> {
    /// ConfigMap or Secret.
    pub kind: SourceKind,
    /// Its name (in the KeeperSecret's namespace).
    pub name: &'a str,
    /// The keys to use; empty: all of them.
    pub items: &'a [TemplateSourceItem],
    /// Its keys and values.
    pub data: Option<BTreeMap<String, Bytes>>,
}

/// A `templateFrom` source is missing or unusable. Messages name objects and keys only.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The ConfigMap or Secret does not exist.
    #[error("templateFrom: {kind} {name:?} not found in this namespace")]
    NotFound { kind: SourceKind, name: String },
    /// A listed key is not in it.
    #[error("templateFrom: {kind} {name:?} has no key {key:?}")]
    MissingKey {
        kind: SourceKind,
        name: String,
        key: String,
    },
    /// It holds no keys to use.
    #[error("templateFrom: {kind} {name:?} holds no keys")]
    Empty { kind: SourceKind, name: String },
    /// A template is not UTF-8 text.
    #[error("templateFrom: key {key:?} of {kind} {name:?} is not UTF-8 text")]
    NotText {
        kind: SourceKind,
        name: String,
        key: String,
    },
    /// Together over [`MAX_SOURCE_BYTES`] or [`MAX_SOURCE_KEYS`].
    #[error("templateFrom: the templates are over the limit of {MAX_SOURCE_KEYS} keys or 1 MiB")]
    TooLarge,
}

impl SourceError {
    /// Stable reason for status and metrics. Both are fixed outside the KeeperSecret (by
    /// creating or editing the source), so they are retried, never Stalled.
    pub fn reason(&self) -> Reason {
        match self {
            Self::NotFound { .. } | Self::MissingKey { .. } => Reason::TemplateSourceNotFound,
            _ => Reason::TemplateSourceInvalid,
        }
    }
}

/// The templates `templateFrom` brings, by Secret key: every key of each source, or only its
/// listed ones; a later source wins over an earlier one for the same key.
pub fn collect(
    fetched: Vec<FetchedSource<'_>>,
) -> Result<BTreeMap<String, TemplateSource>, SourceError> {
    let mut out = BTreeMap::new();
    let mut bytes = 0usize;
    for f in fetched {
        let (kind, name) = (f.kind, f.name.to_string());
        let Some(mut data) = f.data else {
            return Err(SourceError::NotFound { kind, name });
        };
        if !f.items.is_empty() {
            let mut listed = BTreeMap::new();
            for item in f.items {
                let Some(value) = data.remove(&item.key) else {
                    let key = item.key.clone();
                    return Err(SourceError::MissingKey { kind, name, key });
                };
                listed.insert(item.key.clone(), value);
            }
            data = listed;
        }
        if data.is_empty() {
            return Err(SourceError::Empty { kind, name });
        }
        for (key, value) in data {
            bytes += key.len() + value.len();
            let Ok(text) = String::from_utf8(value.to_vec()) else {
                return Err(SourceError::NotText { kind, name, key });
            };
            let source = TemplateSource {
                text: Zeroizing::new(text),
                confidential: kind == SourceKind::Secret,
            };
            out.insert(key, source);
        }
        if bytes > MAX_SOURCE_BYTES || out.len() > MAX_SOURCE_KEYS {
            return Err(SourceError::TooLarge);
        }
    }
    Ok(out)
}
