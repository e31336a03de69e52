//! Template renders, off the reconcile workers.
//!
//! A render is CPU work on tenant input (`htpasswd` runs bcrypt by design). Renders run on
//! blocking threads, at most [`RENDER_THREADS`] at once and one at a time per namespace, so a
//! namespace full of hostile templates waits behind itself and cannot take every slot. A
//! reconcile waits at most [`QUEUE_WAIT`] for its turn and then fails with `RenderBusy` (retried
//! soon), and a namespace has at most one reconcile waiting behind its running render (others
//! are `RenderBusy` at once), so a namespace holds at most two reconcile workers, briefly. The last render of each
//! KeeperSecret is remembered ([`RenderCache`]): an unchanged refresh renders nothing.

pub mod cache;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::api::Template;
use crate::lock;
use crate::sync::desired::HashKey;
use crate::sync::mapping::Bytes;
use crate::sync::template::{self, DEADLINE, Exceeded, TemplateError, TemplateSource};
use cache::RenderCache;

/// Renders running at once, process-wide.
pub const RENDER_THREADS: usize = 2;
/// How long a reconcile waits for its namespace's turn and a free thread.
pub const QUEUE_WAIT: Duration = Duration::from_secs(5);
/// Reconciles of one namespace in the render queue: the one rendering and one waiting.
const PER_NAMESPACE: usize = 2;
/// A render checks its own deadline; past this the reconcile stops waiting for it (the thread
/// keeps its slot until it really ends, so the pool stays bounded).
const JOIN_WAIT: Duration = DEADLINE.saturating_add(Duration::from_secs(1));

/// The process's renders: the pool, the namespaces' turns and the render cache.
pub struct Renders {
    threads: Arc<Semaphore>,
    turns: Mutex<HashMap<String, Turn>>,
    cache: RenderCache,
    queue_wait: Duration,
}

/// A namespace's place in the queue: its lock (held while one of its renders runs) and the
/// reconciles rendering or waiting.
#[derive(Default)]
struct Turn {
    lock: Arc<tokio::sync::Mutex<()>>,
    callers: usize,
}

static SHARED: LazyLock<Renders> = LazyLock::new(|| Renders::new(RENDER_THREADS, QUEUE_WAIT));

/// The one pool of this process (like tokio's blocking pool, it is process-wide).
pub fn shared() -> &'static Renders {
    &SHARED
}

impl Renders {
    /// A pool of `threads` renders at once, waiting at most `queue_wait` for a turn.
    pub fn new(threads: usize, queue_wait: Duration) -> Renders {
        Renders {
            threads: Arc::new(Semaphore::new(threads)),
            turns: Mutex::default(),
            cache: RenderCache::default(),
            queue_wait,
        }
    }

    /// Renders `template` for a KeeperSecret of `namespace` (see [`template::apply`]), or
    /// answers from the cache when nothing it reads changed.
    pub async fn render(
        &self,
        namespace: &str,
        template: Template,
        from: BTreeMap<String, TemplateSource>,
        values: BTreeMap<String, Bytes>,
        key: HashKey,
    ) -> Result<BTreeMap<String, Bytes>, TemplateError> {
        let inputs = cache::inputs(&template, &from, &values, &key);
        if let Some(rendered) = self.cache.get(&inputs) {
            return rendered;
        }
        // Errors name a key; before rendering, the first one.
        let first = template.data.keys().chain(from.keys()).next();
        let first = first.cloned().unwrap_or_default();
        let Some(turn) = self.enter(namespace) else {
            return Err(TemplateError::Busy { key: first });
        };
        let waited = tokio::time::timeout(self.queue_wait, async {
            let mine = turn.lock_owned().await;
            let thread = self.threads.clone().acquire_owned().await;
            (mine, thread)
        })
        .await;
        let (mine, thread) = match waited {
            Ok((mine, Ok(thread))) => (mine, thread),
            // Timed out (or the semaphore closed, which it never is).
            _ => {
                self.leave(namespace);
                return Err(TemplateError::Busy { key: first });
            }
        };
        let task = tokio::task::spawn_blocking(move || {
            // Held until the render really ends, even if the reconcile stopped waiting.
            let _held = (mine, thread);
            template::apply(Some(&template), from, values, &key)
        });
        let rendered = match tokio::time::timeout(JOIN_WAIT, task).await {
            Ok(Ok(rendered)) => rendered,
            // A panic in a render is a bug, not the tenant's: reported, never re-raised here.
            Ok(Err(_)) => Err(TemplateError::Invalid {
                key: first,
                problem: "internal error".into(),
                line: None,
            }),
            Err(_) => Err(TemplateError::Budget {
                key: first,
                bound: Exceeded::Time,
            }),
        };
        self.leave(namespace);
        self.cache.put(&inputs, &rendered);
        rendered
    }

    /// Joins the queue of `namespace`: its lock, unless it already has a reconcile rendering
    /// and one waiting.
    fn enter(&self, namespace: &str) -> Option<Arc<tokio::sync::Mutex<()>>> {
        let mut turns = lock(&self.turns);
        let turn = turns.entry(namespace.to_string()).or_default();
        if turn.callers >= PER_NAMESPACE {
            return None;
        }
        turn.callers += 1;
        Some(turn.lock.clone())
    }

    /// Leaves the queue of `namespace`; forgets the namespace once nobody is in it and no
    /// render of it still runs (a render the reconcile stopped waiting for keeps the lock).
    fn leave(&self, namespace: &str) {
        let mut turns = lock(&self.turns);
        let Some(turn) = turns.get_mut(namespace) else {
            return;
        };
        turn.callers = turn.callers.saturating_sub(1);
        if turn.callers == 0 && Arc::strong_count(&turn.lock) == 1 {
            turns.remove(namespace);
        }
    }

    /// Namespaces with a render running or waiting.
    #[cfg(test)]
    fn busy_namespaces(&self) -> usize {
        lock(&self.turns).len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use zeroize::Zeroizing;

    use super::*;
    use crate::api::TemplateMergePolicy;

    fn tpl(text: &str) -> Template {
        Template {
            data: [("out".to_string(), text.to_string())].into(),
            merge_policy: TemplateMergePolicy::Replace,
            template_from: vec![],
        }
    }

    fn vals(password: &str) -> BTreeMap<String, Bytes> {
        [(
            "password".to_string(),
            Zeroizing::new(password.as_bytes().to_vec()),
        )]
        .into()
    }

    fn key(uid: &str) -> HashKey {
        HashKey::derive(b"credential", uid)
    }

    const HTPASSWD: &str = "{{ htpasswd('admin', password) }}";

    #[tokio::test]
    async fn an_unchanged_refresh_does_not_render_again() {
        let renders = Renders::new(1, Duration::from_millis(50));
        let first = renders
            .render("a", tpl(HTPASSWD), BTreeMap::new(), vals("p1"), key("1"))
            .await
            .unwrap();
        // Every thread taken: only an answer from the cache can come back.
        let _all = renders.threads.clone().acquire_many_owned(1).await.unwrap();
        let start = Instant::now();
        let again = renders
            .render("a", tpl(HTPASSWD), BTreeMap::new(), vals("p1"), key("1"))
            .await
            .unwrap();
        assert_eq!(again["out"], first["out"]);
        assert!(
            start.elapsed() < Duration::from_millis(40),
            "{:?}",
            start.elapsed()
        );
        // A changed value, template or KeeperSecret renders again (here: waits, then Busy).
        for (t, v, k) in [
            (tpl(HTPASSWD), vals("p2"), key("1")),
            (tpl("{{ password }}"), vals("p1"), key("1")),
            (tpl(HTPASSWD), vals("p1"), key("2")),
        ] {
            let err = renders
                .render("a", t, BTreeMap::new(), v, k)
                .await
                .unwrap_err();
            assert!(
                matches!(err, TemplateError::Busy { ref key } if key == "out"),
                "{err}"
            );
            assert!(err.is_transient());
            assert_eq!(err.reason(), "RenderBusy");
        }
        assert_eq!(renders.busy_namespaces(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_render_per_namespace_and_others_still_get_a_thread() {
        let renders = Arc::new(Renders::new(2, Duration::from_secs(1)));
        let slow = "{% for i in range(8) %}{{ htpasswd('u' ~ i, password) }}{% endfor %}";
        let spawn = |template: &str, uid: &str| {
            let (renders, template, uid) = (renders.clone(), tpl(template), uid.to_string());
            tokio::spawn(async move {
                let v = vals("p");
                renders
                    .render("hostile", template, BTreeMap::new(), v, key(&uid))
                    .await
            })
        };
        let running = spawn(slow, "1");
        while renders.busy_namespaces() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Past joining the queue, it takes the lock at once; let it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        // One more reconcile of the namespace waits for its turn ...
        let waiting = spawn("{{ password }}", "2");
        tokio::time::sleep(Duration::from_millis(20)).await;
        // ... and any further one is turned away at once, holding no reconcile worker.
        let start = Instant::now();
        let err = renders
            .render(
                "hostile",
                tpl("{{ password }}"),
                BTreeMap::new(),
                vals("p"),
                key("3"),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, TemplateError::Busy { .. }), "{err}");
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
        // Another namespace renders meanwhile on the second thread.
        let out = renders
            .render(
                "other",
                tpl("{{ password }}"),
                BTreeMap::new(),
                vals("p"),
                key("4"),
            )
            .await
            .unwrap();
        assert_eq!(out["out"].as_slice(), b"p");
        // The slow one finishes (or meets its deadline), the waiting one renders or gives up
        // after its wait; nothing is left behind.
        let _ = running.await.unwrap();
        let _ = waiting.await.unwrap();
        assert_eq!(renders.busy_namespaces(), 0);
    }
}
