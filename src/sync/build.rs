//! The desired Secret of a KeeperSecret, built from a vault: the one sequence of checks that the
//! reconciler, `kubectl keeper render` and the fuzz targets all run, so a dry run refuses
//! exactly what the operator refuses.
//!
//! allow-list → mapping → incomplete-data check → Delete when every record is gone → files →
//! decoding → template → size budget and the Secret ([`desired::secret`]).
//!
//! Pure but for two inputs each caller gets its own way ([`Inputs`]): file bytes (the operator
//! through its shared fetcher cache, the CLI with its own client) and template renders (the
//! operator on its render pool with `templateFrom` read from the API, others inline).
//! Provenance (created-for marker, owner reference) depends on the existing Secret and is set
//! where the operator writes it ([`desired::mark`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{CreationPolicy, DeletionPolicy, KeeperSecret, RecordRevision, Template};
use crate::ksm::record::{KeeperFile, Vault};
use crate::sync::allowlist::{self, AllowList};
use crate::sync::desired::{self, HashKey};
use crate::sync::mapping::{self, Bytes, Content};
use crate::sync::{decoding, incomplete, template};

/// What a build reads from outside the vault.
pub trait Inputs {
    /// What the I/O fails with, and what a build fails with: every step's own error converts
    /// into it (the reconciler, the CLI and the fuzz targets use the reconcile error).
    type Error: From<BuildError> + Send;

    /// The bytes of `file`, attached to a record at `revision`; more than `room` bytes is an
    /// error, never a truncated value.
    fn file(
        &self,
        file: &KeeperFile,
        revision: i64,
        room: usize,
    ) -> impl Future<Output = Result<Bytes, Self::Error>> + Send;

    /// `values` rendered through `template`. By default inline, with the template's own `data`
    /// only: `templateFrom` sources live in the cluster, and only the operator reads them.
    fn render(
        &self,
        template: &Template,
        values: BTreeMap<String, Bytes>,
        key: &HashKey,
    ) -> impl Future<Output = Result<BTreeMap<String, Bytes>, Self::Error>> + Send {
        let rendered = template::apply(Some(template), BTreeMap::new(), values, key);
        std::future::ready(rendered.map_err(step))
    }
}

/// Why a build refused: the error of the step that did.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Denied(#[from] allowlist::Denied),
    #[error(transparent)]
    Incomplete(#[from] incomplete::Incomplete),
    #[error(transparent)]
    Decoding(#[from] decoding::DecodingError),
    #[error(transparent)]
    Template(#[from] template::TemplateError),
    #[error(transparent)]
    Desired(#[from] desired::DesiredError),
}

/// A step's error as the caller's.
fn step<E: From<BuildError>>(error: impl Into<BuildError>) -> E {
    E::from(error.into())
}

/// The Secret a sync wants, and what it was built from.
#[derive(Debug)]
pub struct Built {
    /// What to do to the target Secret.
    pub write: Write,
    /// The records it maps, with their revisions.
    pub records: BTreeSet<RecordRevision>,
    /// Keys of the desired Secret (0 for a deletion).
    pub keys: usize,
    /// Records gone from Keeper whose keys the deletion policy left out.
    pub gone: BTreeSet<String>,
}

/// What a sync does to the target Secret.
#[derive(Debug)]
pub enum Write {
    /// Make it hold this.
    Apply(Box<desired::Desired>),
    /// Delete it: every record it maps is gone and deletionPolicy is Delete. `hash` is the
    /// keyed hash of no data.
    Delete { hash: String },
}

/// Builds what `ks` should write from `vault`, as read through a credential whose store allows
/// `allow`, hashing with `key`.
pub async fn build<I: Inputs>(
    ks: &KeeperSecret,
    allow: Option<&AllowList>,
    vault: &Vault,
    key: &HashKey,
    inputs: &I,
) -> Result<Built, I::Error> {
    // Narrowed first, so nothing after this can match a record the store forbids.
    let vault = allowlist::restrict(allow, &ks.spec, vault).map_err(step)?;
    let plan =
        incomplete::check(&ks.spec, &vault, mapping::plan(&ks.spec, &vault)).map_err(step)?;
    let all_gone = plan.entries.is_empty() && !plan.gone.is_empty();
    // Merge never deletes: the Secret is someone else's.
    if all_gone
        && ks.deletion_policy() == DeletionPolicy::Delete
        && ks.creation_policy() != CreationPolicy::Merge
    {
        return Ok(Built {
            write: Write::Delete {
                hash: key.hash(std::iter::empty()),
            },
            records: plan.records,
            keys: 0,
            gone: plan.gone,
        });
    }
    let data = files(&vault, plan.entries, inputs).await?;
    let data = decoding::apply(&plan.decoding, data).map_err(step)?;
    let data = match ks.spec.target.as_ref().and_then(|t| t.template.as_ref()) {
        Some(template) => inputs.render(template, data, key).await?,
        None => data,
    };
    let keys = data.len();
    Ok(Built {
        write: Write::Apply(Box::new(desired::secret(ks, data, key).map_err(step)?)),
        records: plan.records,
        keys,
        gone: plan.gone,
    })
}

/// Fetches file attachments; a failed download fails the build, so a file never becomes an
/// empty value. Each download may use only what the Secret can still hold after the keys, the
/// inline values and the files before it, so an oversized file is refused before it is read.
async fn files<I: Inputs>(
    vault: &Vault,
    entries: BTreeMap<String, Content>,
    inputs: &I,
) -> Result<BTreeMap<String, Bytes>, I::Error> {
    let inline: usize = entries
        .iter()
        .map(|(key, source)| match source {
            Content::Value(v) => key.len() + v.len(),
            Content::File(_) => key.len(),
        })
        .sum();
    let mut room = desired::MAX_SECRET_BYTES.saturating_sub(inline);
    let mut out = BTreeMap::new();
    for (key, source) in entries {
        let bytes = match source {
            Content::Value(v) => v,
            Content::File(file) => {
                let revision = vault
                    .records
                    .iter()
                    .find(|r| r.files.iter().any(|f| f.uid == file.uid))
                    .map_or(0, |r| r.revision);
                let bytes = inputs.file(&file, revision, room).await?;
                room = room.saturating_sub(bytes.len());
                bytes
            }
        };
        out.insert(key, bytes);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
