//! The RBAC check behind `rbac-audit`: what the operator did (kube-apiserver audit events of its
//! ServiceAccount) against what the chart grants that ServiceAccount (rendered Roles and
//! ClusterRoles bound to it). Every granted (verb, group, resource) must have been used, and no
//! request of the operator may have been denied.
//!
//! The operator's requests are told apart by their User-Agent (`keeper-operator/<version>`): the
//! tests also use the chart's ServiceAccount token to probe RBAC (and expect some 403s).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use anyhow::{Context, Result, bail, ensure};
use jiff::Timestamp;
use serde::Deserialize;

macro_rules! operator_user_agent {
    () => {
        "keeper-operator/"
    };
}

/// What the operator's requests carry in `User-Agent`.
pub const OPERATOR_USER_AGENT: &str = operator_user_agent!();
/// [`OPERATOR_USER_AGENT`] as the audit log's compact JSON writes it.
const OPERATOR_USER_AGENT_FIELD: &str = concat!("\"userAgent\":\"", operator_user_agent!());

/// One kube-apiserver audit event (JSON lines, `audit.k8s.io/v1`), the fields the check reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub verb: String,
    pub user: AuditUser,
    #[serde(default)]
    pub user_agent: String,
    pub object_ref: Option<ObjectRef>,
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    pub response_status: Option<ResponseStatus>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub request_received_timestamp: Timestamp,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuditUser {
    pub username: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub resource: Option<String>,
    pub namespace: Option<String>,
    #[serde(default)]
    pub api_group: String,
    pub subresource: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResponseStatus {
    pub code: Option<u16>,
}

impl AuditEvent {
    /// A request of the operator binary under a ServiceAccount.
    pub fn is_operator(&self) -> bool {
        self.user.username.starts_with("system:serviceaccount:")
            && self.user_agent.starts_with(OPERATOR_USER_AGENT)
    }

    pub fn code(&self) -> Option<u16> {
        self.response_status.as_ref().and_then(|s| s.code)
    }

    /// Refused by the authorizer (or, later, with 403).
    pub fn denied(&self) -> bool {
        self.annotations
            .get("authorization.k8s.io/decision")
            .is_some_and(|d| d == "forbid")
            || self.code() == Some(403)
    }

    /// The permissions this request used. A server-side apply (`patch`) answered `201 Created`
    /// created the object, which the API server authorizes as a `create` too.
    pub fn accesses(&self) -> Vec<Access> {
        let Some(resource) = self.object_ref.as_ref().and_then(|o| {
            let resource = o.resource.as_ref()?;
            Some(Access {
                verb: self.verb.clone(),
                group: o.api_group.clone(),
                resource: match &o.subresource {
                    Some(sub) => format!("{resource}/{sub}"),
                    None => resource.clone(),
                },
                // The API server files a Namespace under its own name; it is cluster-scoped.
                namespaced: o.namespace.is_some() && resource != "namespaces",
            })
        }) else {
            // A non-resource URL (discovery, /version): the path is the resource.
            return vec![Access {
                verb: self.verb.clone(),
                group: String::new(),
                resource: self
                    .request_uri
                    .split('?')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                namespaced: false,
            }];
        };
        let created = self.verb == "patch" && self.code() == Some(201);
        let mut out = vec![resource.clone()];
        if created {
            out.push(Access {
                verb: "create".into(),
                ..resource
            });
        }
        out
    }
}

/// Whether a raw audit line may hold a request of the operator ([`AuditEvent::is_operator`]):
/// a substring test that spares parsing the JSON of every other request of the run (most of
/// a log of hundreds of MB, and the audit runs on a debug build).
pub fn may_be_operator(line: &str) -> bool {
    line.contains(OPERATOR_USER_AGENT_FIELD)
}

/// Parses one line of the audit log; `None` for a blank line.
pub fn parse_line(line: &str) -> Result<Option<AuditEvent>> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(line)
        .map(Some)
        .context("not an audit.k8s.io/v1 event")
}

/// A permission used: `resource` is `name` or `name/subresource`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub namespaced: bool,
}

/// A permission granted: one verb on one `resource` (or `resource/subresource`) of one group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Grant {
    pub group: String,
    pub resource: String,
    pub verb: String,
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {}/{}", self.verb, group, self.resource)
    }
}

impl Grant {
    pub fn covers(&self, access: &Access) -> bool {
        self.verb == access.verb && self.group == access.group && self.resource == access.resource
    }
}

/// A granted permission the e2e suite cannot exercise, and why. Keep it empty if at all
/// possible; every entry must be reachable only in paths the suite cannot drive.
pub struct Exception {
    pub grant: (&'static str, &'static str, &'static str),
    pub why: &'static str,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    kind: Option<String>,
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    subjects: Vec<Subject>,
    role_ref: Option<RoleRef>,
}

#[derive(Debug, Default, Deserialize)]
struct Meta {
    #[serde(default)]
    name: String,
    namespace: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    api_groups: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Subject {
    kind: String,
    name: String,
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RoleRef {
    kind: String,
    name: String,
}

/// Every permission the Roles and ClusterRoles bound to ServiceAccount `namespace/sa` grant in
/// a rendered manifest (multi-document YAML). Wildcards and non-resource URLs are refused: the
/// operator's RBAC names each verb and resource.
pub fn granted(manifest: &str, namespace: &str, sa: &str) -> Result<BTreeSet<Grant>> {
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(manifest) {
        let value = serde_yaml_ng::Value::deserialize(doc)?;
        if value.is_null() {
            continue;
        }
        docs.push(serde_yaml_ng::from_value::<Manifest>(value)?);
    }
    let role = |kind: &str, name: &str, ns: Option<&str>| {
        docs.iter().find(|d| {
            d.kind.as_deref() == Some(kind)
                && d.metadata.name == name
                && (kind == "ClusterRole" || d.metadata.namespace.as_deref() == ns)
        })
    };
    let mut out = BTreeSet::new();
    for binding in &docs {
        let kind = binding.kind.as_deref().unwrap_or_default();
        if kind != "RoleBinding" && kind != "ClusterRoleBinding" {
            continue;
        }
        let bound = binding.subjects.iter().any(|s| {
            s.kind == "ServiceAccount" && s.name == sa && s.namespace.as_deref() == Some(namespace)
        });
        let Some(role_ref) = binding.role_ref.as_ref().filter(|_| bound) else {
            continue;
        };
        let Some(role) = role(
            &role_ref.kind,
            &role_ref.name,
            binding.metadata.namespace.as_deref(),
        ) else {
            bail!(
                "{kind} {} binds {} {}, which the chart does not render",
                binding.metadata.name,
                role_ref.kind,
                role_ref.name
            );
        };
        for rule in &role.rules {
            out.extend(
                expand(rule)
                    .with_context(|| format!("{} {}", role_ref.kind, role.metadata.name))?,
            );
        }
    }
    Ok(out)
}

fn expand(rule: &Rule) -> Result<Vec<Grant>> {
    ensure!(
        rule.non_resource_urls.is_empty(),
        "grants non-resource URLs {:?}",
        rule.non_resource_urls
    );
    let all = rule
        .api_groups
        .iter()
        .chain(&rule.resources)
        .chain(&rule.verbs);
    for item in all {
        ensure!(!item.contains('*'), "rule has a wildcard: {item:?}");
    }
    let mut out = Vec::new();
    for group in &rule.api_groups {
        for resource in &rule.resources {
            for verb in &rule.verbs {
                out.push(Grant {
                    group: group.clone(),
                    resource: resource.clone(),
                    verb: verb.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// Who asked for what: user, verb, group, resource (with subresource), namespace.
type RequestKey = (String, String, String, String, Option<String>);

/// One start of kube-apiserver, as `e2e/cluster.sh` records it in `apiserver-starts`: when the
/// process was spawned and when `/readyz` first answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiServerStart {
    pub spawned: Timestamp,
    pub ready: Timestamp,
}

impl ApiServerStart {
    /// How long after `/readyz` the authorizer may still lack RBAC (its informers sync on their
    /// own); clients that back off come back well after that.
    const SETTLE: jiff::SignedDuration = jiff::SignedDuration::from_secs(10);

    fn covers(&self, at: Timestamp) -> bool {
        self.spawned <= at && at <= self.ready + Self::SETTLE
    }
}

/// Parses `apiserver-starts`: a line per start, `<spawned> <ready>` in RFC 3339.
pub fn parse_starts(text: &str) -> Result<Vec<ApiServerStart>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut parts = line.split_whitespace();
            let (Some(spawned), Some(ready), None) = (parts.next(), parts.next(), parts.next())
            else {
                bail!("expected `<spawned> <ready>`, got {line:?}");
            };
            Ok(ApiServerStart {
                spawned: spawned.parse().context("spawned")?,
                ready: ready.parse().context("ready")?,
            })
        })
        .collect()
}

/// A refused request of the operator.
#[derive(Debug)]
pub struct Denial {
    key: RequestKey,
    at: Timestamp,
    /// The permission it asked for.
    grant: Grant,
    /// `verb URI (namespace) by user: code`.
    pub text: String,
}

/// How each permission was used, by the operator, from `since` on.
#[derive(Debug, Default)]
pub struct Usage {
    /// Access (without scope) -> (requests, scopes seen).
    pub used: BTreeMap<Grant, (u64, BTreeSet<&'static str>)>,
    /// Requests refused.
    pub denied: Vec<Denial>,
    /// When each kind of request was last allowed.
    allowed: BTreeMap<RequestKey, Timestamp>,
    /// Operator requests counted.
    pub requests: u64,
    /// ServiceAccount users the requests came from.
    pub users: BTreeSet<String>,
    /// Requests seen (a watch has two events: when it starts and when it ends).
    seen: std::collections::HashSet<String>,
}

impl Usage {
    pub fn add(&mut self, event: &AuditEvent, since: Timestamp) {
        if !event.is_operator()
            || event.request_received_timestamp < since
            || !self.seen.insert(event.audit_id.clone())
        {
            return;
        }
        self.requests += 1;
        self.users.insert(event.user.username.clone());
        let namespace = event.object_ref.as_ref().and_then(|o| o.namespace.clone());
        let accesses = event.accesses();
        let key: RequestKey = (
            event.user.username.clone(),
            event.verb.clone(),
            accesses[0].group.clone(),
            accesses[0].resource.clone(),
            namespace.clone(),
        );
        let at = event.request_received_timestamp;
        if event.denied() {
            self.denied.push(Denial {
                key,
                at,
                grant: Grant {
                    group: accesses[0].group.clone(),
                    resource: accesses[0].resource.clone(),
                    verb: accesses[0].verb.clone(),
                },
                text: format!(
                    "{} {} (namespace {}) by {}: {:?}",
                    event.verb,
                    event.request_uri,
                    namespace.as_deref().unwrap_or("-"),
                    event.user.username,
                    event.code()
                ),
            });
        } else {
            let last = self.allowed.entry(key).or_insert(at);
            *last = (*last).max(at);
        }
        for access in accesses {
            let scope = if access.namespaced {
                "namespaced"
            } else {
                "cluster"
            };
            let key = Grant {
                group: access.group,
                resource: access.resource,
                verb: access.verb,
            };
            let entry = self.used.entry(key).or_default();
            entry.0 += 1;
            entry.1.insert(scope);
        }
    }

    /// The grants no request used, minus the exceptions; an exception for a grant that was used
    /// or is not granted at all is reported too, so the list cannot go stale.
    pub fn verdict(
        &self,
        granted: &BTreeSet<Grant>,
        exceptions: &[Exception],
        starts: &[ApiServerStart],
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let is_exception = |g: &Grant| {
            exceptions
                .iter()
                .any(|e| e.grant == (g.verb.as_str(), g.group.as_str(), g.resource.as_str()))
        };
        for grant in granted {
            let used = self.used.keys().any(|u| u == grant);
            match (used, is_exception(grant)) {
                (false, false) => problems.push(format!(
                    "granted but never used: {grant} (remove it from the chart, or cover it with a test)"
                )),
                (true, true) => problems.push(format!(
                    "listed as an exception but used: {grant} (drop the exception)"
                )),
                _ => {}
            }
        }
        for e in exceptions {
            let (verb, group, resource) = e.grant;
            if !granted
                .iter()
                .any(|g| (g.verb.as_str(), g.group.as_str(), g.resource.as_str()) == e.grant)
            {
                problems.push(format!(
                    "exception for {verb} {group}/{resource}, which the chart does not grant"
                ));
            }
        }
        problems.extend(
            self.denied
                .iter()
                .filter(|d| !self.excused(d, granted, starts))
                .map(|d| format!("denied: {}", d.text)),
        );
        problems
    }

    /// Whether a denial is the API server's authorizer not having loaded RBAC yet rather than
    /// missing RBAC: a starting API server refuses everything for a moment (the fault tests
    /// restart it). So it is excused when the same request was allowed when retried, or when
    /// the chart grants it and it was refused while an API server was starting.
    pub fn excused(
        &self,
        denial: &Denial,
        granted: &BTreeSet<Grant>,
        starts: &[ApiServerStart],
    ) -> bool {
        let retried_and_allowed = self
            .allowed
            .get(&denial.key)
            .is_some_and(|last| *last > denial.at);
        retried_and_allowed
            || (granted.contains(&denial.grant) && starts.iter().any(|s| s.covers(denial.at)))
    }

    /// The used-vs-granted table, one line per permission.
    pub fn table(&self, granted: &BTreeSet<Grant>) -> String {
        let mut rows: BTreeSet<&Grant> = granted.iter().collect();
        rows.extend(self.used.keys());
        let mut out = format!(
            "{:<22} {:<36} {:<7} {:>8}  {}\n",
            "group", "resource", "verb", "requests", "granted / scope"
        );
        for g in rows {
            let (count, scopes) = self
                .used
                .get(g)
                .map(|(n, s)| (*n, s.iter().copied().collect::<Vec<_>>().join("+")))
                .unwrap_or((0, String::new()));
            let how = match (granted.contains(g), count) {
                (true, 0) => "granted, UNUSED".to_string(),
                (true, _) => format!("granted, used {scopes}"),
                (false, _) => format!("not by the chart (default roles), used {scopes}"),
            };
            let group = if g.group.is_empty() { "core" } else { &g.group };
            out.push_str(&format!(
                "{group:<22} {:<36} {:<7} {count:>8}  {how}\n",
                g.resource, g.verb
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An audit line with a fresh auditID.
    fn line(user: &str, agent: &str, verb: &str, object: &str, code: u16, extra: &str) -> String {
        static IDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let id = IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/apps/secrets/db?fieldManager=x","verb":"{verb}","user":{{"username":"{user}","groups":["system:serviceaccounts"]}},"userAgent":"{agent}","objectRef":{object},"responseStatus":{{"metadata":{{}},"code":{code}}},"requestReceivedTimestamp":"2026-12-01T17:00:00.123456Z","stageTimestamp":"2026-12-01T17:00:00.130000Z"{extra}}}"#
        )
    }

    const OP: &str = "system:serviceaccount:op:op-keeper-operator";
    const SECRET: &str =
        r#"{"resource":"secrets","namespace":"apps","name":"db","apiVersion":"v1"}"#;

    fn since() -> Timestamp {
        "2026-12-01T16:00:00Z".parse().unwrap()
    }

    #[test]
    fn audit_lines_parse_into_accesses() {
        let text = line(OP, "keeper-operator/0.1.0", "patch", SECRET, 201, "");
        assert!(may_be_operator(&text));
        assert!(!may_be_operator(&line(
            OP,
            "kubectl/v1.35",
            "get",
            SECRET,
            200,
            ""
        )));
        let e = parse_line(&text).unwrap().unwrap();
        assert!(e.is_operator() && !e.denied());
        let accesses = e.accesses();
        assert_eq!(accesses.len(), 2, "an apply that created is a create too");
        assert_eq!(
            (accesses[1].verb.as_str(), accesses[1].resource.as_str()),
            ("create", "secrets")
        );
        let status = r#"{"resource":"keepersecrets","namespace":"apps","name":"db","apiGroup":"keeper-operator.dev","apiVersion":"v1alpha1","subresource":"status"}"#;
        let e = parse_line(&line(OP, "keeper-operator/0.1.0", "patch", status, 200, ""))
            .unwrap()
            .unwrap();
        let accesses = e.accesses();
        assert_eq!(accesses.len(), 1);
        assert_eq!(accesses[0].resource, "keepersecrets/status");
        assert_eq!(accesses[0].group, "keeper-operator.dev");
        assert!(accesses[0].namespaced);
        let namespace =
            r#"{"resource":"namespaces","namespace":"apps","name":"apps","apiVersion":"v1"}"#;
        let e = parse_line(&line(
            OP,
            "keeper-operator/0.1.0",
            "get",
            namespace,
            200,
            "",
        ))
        .unwrap()
        .unwrap();
        assert!(!e.accesses()[0].namespaced, "a Namespace is cluster-scoped");
        let review =
            r#"{"resource":"tokenreviews","apiGroup":"authentication.k8s.io","apiVersion":"v1"}"#;
        let e = parse_line(&line(
            OP,
            "keeper-operator/0.1.0",
            "create",
            review,
            201,
            "",
        ))
        .unwrap()
        .unwrap();
        assert!(!e.accesses()[0].namespaced);
        assert_eq!(e.accesses().len(), 1, "only an apply (patch) creates");

        assert!(parse_line("  ").unwrap().is_none());
        assert!(parse_line("{\"kind\":\"Event\"}").is_err());
    }

    #[test]
    fn only_the_operator_binary_counts_and_denials_are_caught() {
        let forbid = r#","annotations":{"authorization.k8s.io/decision":"forbid","authorization.k8s.io/reason":""}"#;
        let mut usage = Usage::default();
        for l in [
            // The tests probing with the operator's token, expecting 403: not the operator.
            line(OP, "", "list", SECRET, 403, forbid),
            // Another client.
            line(OP, "kubectl/v1.35.4 (linux/amd64)", "get", SECRET, 200, ""),
            // Not a ServiceAccount.
            line("e2e-admin", "keeper-operator/0.1.0", "get", SECRET, 200, ""),
        ] {
            usage.add(&parse_line(&l).unwrap().unwrap(), since());
        }
        assert_eq!(usage.requests, 0);
        usage.add(
            &parse_line(&line(OP, "keeper-operator/0.1.0", "get", SECRET, 200, ""))
                .unwrap()
                .unwrap(),
            "2026-12-01T18:00:00Z".parse().unwrap(),
        );
        assert_eq!(usage.requests, 0, "before --since");
        for l in [
            line(OP, "keeper-operator/0.1.0", "get", SECRET, 200, ""),
            line(OP, "keeper-operator/0.1.0", "delete", SECRET, 403, forbid),
        ] {
            usage.add(&parse_line(&l).unwrap().unwrap(), since());
        }
        assert_eq!(usage.requests, 2);
        assert_eq!(usage.denied.len(), 1);
        // A watch's start and end share an auditID: one request.
        let watch = line(OP, "keeper-operator/0.1.0", "watch", SECRET, 200, "");
        for stage in ["ResponseStarted", "ResponseComplete"] {
            let l = watch.replace("ResponseComplete", stage);
            usage.add(&parse_line(&l).unwrap().unwrap(), since());
        }
        assert_eq!(usage.requests, 3);
        assert!(
            usage.denied[0]
                .text
                .starts_with("delete /api/v1/namespaces/apps/secrets/db")
        );
        let problems = usage.verdict(&BTreeSet::new(), &[], &[]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("denied: delete"));

        // Refused while the API server was starting, allowed when retried: not missing RBAC.
        let watch = |at: &str, code: u16, extra: &str| {
            line(OP, "keeper-operator/0.1.0", "watch", SECRET, code, extra)
                .replace("2026-12-01T17:00:00.123456Z", at)
        };
        let mut usage = Usage::default();
        for l in [
            watch("2026-12-01T17:00:01Z", 403, forbid),
            watch("2026-12-01T17:00:02Z", 200, ""),
        ] {
            usage.add(&parse_line(&l).unwrap().unwrap(), since());
        }
        assert!(usage.excused(&usage.denied[0], &BTreeSet::new(), &[]));
        assert!(usage.verdict(&BTreeSet::new(), &[], &[]).is_empty());
        // Allowed only before the refusal: the refusal stands.
        let mut usage = Usage::default();
        for l in [
            watch("2026-12-01T17:00:01Z", 200, ""),
            watch("2026-12-01T17:00:02Z", 403, forbid),
        ] {
            usage.add(&parse_line(&l).unwrap().unwrap(), since());
        }
        assert_eq!(usage.verdict(&BTreeSet::new(), &[], &[]).len(), 1);

        // Refused while an API server was starting, never retried before the run ended: excused
        // only if the chart grants the request, and only inside that start's window.
        let starts = parse_starts(
            "2026-12-01T17:00:00.5Z 2026-12-01T17:00:01.5Z\n\n\
             2026-12-01T18:00:00Z 2026-12-01T18:00:01Z\n",
        )
        .unwrap();
        assert_eq!(starts.len(), 2);
        let watch_secrets: BTreeSet<Grant> = [grant("watch", "", "secrets")].into();
        for (at, granted, excused) in [
            ("2026-12-01T17:00:01Z", &watch_secrets, true),
            ("2026-12-01T17:00:11Z", &watch_secrets, true),
            ("2026-12-01T17:00:12Z", &watch_secrets, false),
            ("2026-12-01T17:00:00.4Z", &watch_secrets, false),
            ("2026-12-01T17:00:01Z", &BTreeSet::new(), false),
        ] {
            let mut usage = Usage::default();
            usage.add(
                &parse_line(&watch(at, 403, forbid)).unwrap().unwrap(),
                since(),
            );
            let problems = usage.verdict(granted, &[], &starts);
            let problem = problems.iter().any(|p| p.starts_with("denied: watch"));
            assert_eq!(!problem, excused, "{at} {granted:?}: {problems:?}");
        }
        assert!(parse_starts("2026-12-01T17:00:00Z").is_err());
        assert!(parse_starts("yesterday today").is_err());
    }

    const CHART: &str = r#"
---
# Source: x/templates/rbac.yaml
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: ko}
rules:
  - apiGroups: [""]
    resources: ["namespaces"]
    verbs: ["get"]
---
kind: ClusterRoleBinding
metadata: {name: ko}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ko}
subjects: [{kind: ServiceAccount, name: ko, namespace: op}]
---
kind: Role
metadata: {name: ko, namespace: apps}
rules:
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["get", "patch"]
  - apiGroups: ["keeper-operator.dev"]
    resources: ["keepersecrets/status"]
    verbs: ["patch"]
---
kind: RoleBinding
metadata: {name: ko, namespace: apps}
roleRef: {kind: Role, name: ko}
subjects: [{kind: ServiceAccount, name: ko, namespace: op}]
---
kind: ClusterRole
metadata: {name: ko-metrics-reader}
rules:
  - nonResourceURLs: ["/metrics"]
    verbs: ["get"]
---
kind: ClusterRoleBinding
metadata: {name: someone-else}
roleRef: {kind: ClusterRole, name: ko-metrics-reader}
subjects: [{kind: ServiceAccount, name: prometheus, namespace: monitoring}]
"#;

    fn grant(verb: &str, group: &str, resource: &str) -> Grant {
        Grant {
            group: group.into(),
            resource: resource.into(),
            verb: verb.into(),
        }
    }

    #[test]
    fn rules_bound_to_the_service_account_are_expanded() {
        let grants = granted(CHART, "op", "ko").unwrap();
        let expected: BTreeSet<Grant> = [
            grant("get", "", "namespaces"),
            grant("get", "", "secrets"),
            grant("patch", "", "secrets"),
            grant("patch", "keeper-operator.dev", "keepersecrets/status"),
        ]
        .into();
        assert_eq!(
            grants, expected,
            "the metrics reader is bound to someone else"
        );
        assert!(granted("", "op", "ko").unwrap().is_empty());
        assert!(
            granted(CHART, "other", "ko").unwrap().is_empty(),
            "namespace matters"
        );

        let wildcard = CHART.replace(r#"verbs: ["get"]"#, r#"verbs: ["*"]"#);
        assert!(granted(&wildcard, "op", "ko").is_err());
        let dangling = CHART.replace(
            "roleRef: {kind: Role, name: ko}",
            "roleRef: {kind: Role, name: gone}",
        );
        assert!(granted(&dangling, "op", "ko").is_err());
    }

    #[test]
    fn the_verdict_names_unused_grants_denials_and_stale_exceptions() {
        let grants = granted(CHART, "op", "ko").unwrap();
        let mut usage = Usage::default();
        for (verb, object, code) in [
            ("get", SECRET, 200),
            ("patch", SECRET, 201),
            (
                "get",
                r#"{"resource":"namespaces","name":"apps","apiVersion":"v1"}"#,
                200,
            ),
        ] {
            let l = line(OP, "keeper-operator/0.1.0", verb, object, code, "");
            usage.add(&parse_line(&l).unwrap().unwrap(), since());
        }
        let problems = usage.verdict(&grants, &[], &[]);
        assert_eq!(
            problems,
            [
                "granted but never used: patch keeper-operator.dev/keepersecrets/status (remove it from the chart, or cover it with a test)"
            ]
        );
        let excused = [Exception {
            grant: ("patch", "keeper-operator.dev", "keepersecrets/status"),
            why: "test",
        }];
        assert!(usage.verdict(&grants, &excused, &[]).is_empty());
        let stale = [
            Exception {
                grant: ("get", "", "secrets"),
                why: "used after all",
            },
            Exception {
                grant: ("delete", "", "secrets"),
                why: "not granted",
            },
        ];
        let problems = usage.verdict(&grants, &stale, &[]);
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("listed as an exception but used: get core/secrets"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("delete /secrets, which the chart does not grant"))
        );

        let table = usage.table(&grants);
        assert!(table.contains("granted, UNUSED"), "{table}");
        assert!(
            table.contains("not by the chart (default roles), used namespaced"),
            "the create of an apply is not granted here: {table}"
        );
    }
}
