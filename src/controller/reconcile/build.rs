//! Build: the desired Secret through the checks every caller runs ([`build::build`]), read
//! again from Keeper when [`decide::after_build`] says so.

use std::collections::BTreeMap;

use jiff::Timestamp;
use kube::ResourceExt;
use zeroize::Zeroizing;

use super::Context;
use super::decide::{self, Next, Tried};
use super::fetch::{self, Fetched};
use super::observe::Observed;
use crate::api::{KeeperSecret, Template};
use crate::controller::memo::{Learned, Recall};
use crate::error::Error;
use crate::k8s;
use crate::k8s::credentials::Credential;
use crate::keeper::KeeperSource;
use crate::ksm::record::{KeeperFile, Vault};
use crate::sync::build::{self, Built};
use crate::sync::desired::HashKey;
use crate::sync::mapping::Bytes;

/// What the build stage hands on.
pub(super) enum Settled {
    /// What to write, from this data.
    Built(Built, Fetched),
    /// A record is missing from data too young to read Keeper again: come back after this long.
    Wait(std::time::Duration),
}

/// Builds from `fetched`, reading Keeper again (each reason at most once) while the build
/// misses records that may be new, or would delete records a second answer must confirm.
pub(super) async fn settle<S: KeeperSource>(
    ctx: &Context<S>,
    ks: &KeeperSecret,
    seen: &Observed,
    mut fetched: Fetched,
    recall: &Recall,
    learned: &mut Learned,
    now: Timestamp,
) -> Result<Settled, Error> {
    let mut tried = Tried::default();
    let mut built = build(ctx, ks, seen, &fetched.snapshot.vault).await;
    loop {
        let verdict = decide::after_build(
            ks,
            &built,
            &fetched,
            tried,
            learned.sighting(recall),
            recall.missed_at,
            now,
        );
        if verdict.first_miss {
            learned.missed_at = Some(now);
        }
        learned.sighted(verdict.sighted);
        match verdict.step {
            Next::Done => return Ok(Settled::Built(built?, fetched)),
            Next::Wait(after) => return Ok(Settled::Wait(after)),
            Next::Hold(e) => return Err(e),
            Next::Refetch(max_age, why) => {
                tried.insert(why);
                if let Some(fresher) = fetch::refetch(ctx, &seen.cred, max_age).await?
                    && fresher.fetched_at != fetched.snapshot.fetched_at
                {
                    fetched.snapshot = fresher;
                    built = build(ctx, ks, seen, &fetched.snapshot.vault).await;
                }
            }
        }
    }
}

/// What a build reads through the operator: files from the credential's shared fetcher
/// (cached per record revision), templates on the render pool with `templateFrom` from the API.
struct Sources<'a, S> {
    ctx: &'a Context<S>,
    ks: &'a KeeperSecret,
    cred: &'a Credential,
}

impl<S: KeeperSource> build::Inputs for Sources<'_, S> {
    type Error = Error;

    async fn file(&self, file: &KeeperFile, revision: i64, room: usize) -> Result<Bytes, Error> {
        let (cred, keeper) = (self.cred, &self.ctx.keeper);
        let bytes = keeper
            .file(&cred.key, &cred.config, revision, file, room as u64)
            .await?;
        Ok(Zeroizing::new(bytes.to_vec()))
    }

    /// Reads the templates `templateFrom` names (API: one read each) and renders on the
    /// render pool, off the async workers: `htpasswd` spends CPU time by design.
    async fn render(
        &self,
        template: &Template,
        values: BTreeMap<String, Bytes>,
        key: &HashKey,
    ) -> Result<BTreeMap<String, Bytes>, Error> {
        let namespace = self.ks.namespace().unwrap_or_default();
        let from =
            k8s::templates::read(&self.ctx.client, &namespace, &template.template_from).await?;
        let renders = crate::controller::renders::shared();
        let rendered = renders.render(&namespace, template.clone(), from, values, key.clone());
        Ok(rendered.await?)
    }
}

/// The desired Secret from `vault`.
async fn build<S: KeeperSource>(
    ctx: &Context<S>,
    ks: &KeeperSecret,
    seen: &Observed,
    vault: &Vault,
) -> Result<Built, Error> {
    let cred = &seen.cred;
    let sources = Sources { ctx, ks, cred };
    build::build(ks, cred.allow.as_ref(), vault, &seen.hash_key, &sources).await
}
