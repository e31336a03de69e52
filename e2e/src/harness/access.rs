//! Credentials and permissions: ServiceAccount tokens minted as a pod gets them, kubeconfigs and
//! clients that use them, and access reviews asking what a client may do.

use std::fmt;
use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::api::{ObjectMeta, PostParams};
use kube::config::Kubeconfig;
use kube::{Api, Client};

use super::cluster::client_from_kubeconfig;
use super::process::{artefact_dir, unique_name, write_private};
use super::{Cluster, DEFAULT_TIMEOUT, E2E_LABEL, chart_fullname, wait_until};

impl Cluster {
    /// A token of ServiceAccount `metrics-reader` in `namespace`, bound to the ClusterRole
    /// `<fullname>-metrics-reader` of chart release `release`, as a Prometheus would be. Returns
    /// once the API server's authorizer allows it (a fresh binding takes a moment).
    pub async fn metrics_reader(&self, namespace: &str, release: &str) -> Result<SaToken> {
        let sa = "metrics-reader";
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(sa.into()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        Api::<ServiceAccount>::namespaced(self.client(), namespace)
            .create(&PostParams::default(), &account)
            .await
            .with_context(|| format!("creating ServiceAccount {namespace}/{sa}"))?;
        let binding = ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some(format!("{namespace}-metrics-reader")),
                labels: Some([(E2E_LABEL.to_string(), "true".to_string())].into()),
                ..ObjectMeta::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: format!("{}-metrics-reader", chart_fullname(release)),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: sa.into(),
                namespace: Some(namespace.to_string()),
                ..Subject::default()
            }]),
        };
        Api::<ClusterRoleBinding>::all(self.client())
            .create(&PostParams::default(), &binding)
            .await
            .context("binding the metrics-reader ClusterRole")?;
        let token = self
            .service_account_token(namespace, sa, Duration::from_secs(7200))
            .await?;
        let client = self.token_client(&token, namespace).await?;
        wait_until("the metrics reader's binding", DEFAULT_TIMEOUT, || async {
            Ok(may_get_url(&client, "/metrics").await?.then_some(()))
        })
        .await?;
        Ok(token)
    }

    /// Mints a token for a ServiceAccount through the TokenRequest API, exactly as a pod gets one.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        sa: &str,
        ttl: Duration,
    ) -> Result<SaToken> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let req = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(ttl.as_secs() as i64),
                ..Default::default()
            }),
            ..Default::default()
        };
        let resp = api
            .create_token_request(sa, &PostParams::default(), &req)
            .await
            .with_context(|| format!("TokenRequest for {namespace}/{sa}"))?;
        let token = resp.status.and_then(|s| s.token).filter(|t| !t.is_empty());
        token
            .map(|value| SaToken { value })
            .ok_or_else(|| anyhow!("TokenRequest for {namespace}/{sa} returned no token"))
    }

    /// Writes a kubeconfig for the same cluster that authenticates with `token`.
    pub fn write_token_kubeconfig(
        &self,
        path: &Path,
        token: &SaToken,
        namespace: &str,
    ) -> Result<()> {
        let admin = Kubeconfig::read_from(self.admin_kubeconfig())?;
        let cluster = admin
            .clusters
            .first()
            .and_then(|c| c.cluster.clone())
            .ok_or_else(|| anyhow!("admin kubeconfig has no cluster"))?;
        // JSON is valid YAML, and every kubeconfig reader accepts it.
        let doc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": {
                "server": cluster.server,
                "certificate-authority-data": cluster.certificate_authority_data,
            }}],
            "users": [{"name": "operator", "user": {"token": token.value}}],
            "contexts": [{"name": "operator", "context": {"cluster": "e2e", "user": "operator", "namespace": namespace}}],
            "current-context": "operator",
        });
        write_private(path, &serde_json::to_vec_pretty(&doc)?)
    }

    /// A client authenticating with a ServiceAccount token (subject to RBAC).
    pub async fn token_client(&self, token: &SaToken, namespace: &str) -> Result<Client> {
        let dir = artefact_dir().join("kubeconfigs");
        let path = dir.join(format!("{}.json", unique_name("token")));
        self.write_token_kubeconfig(&path, token, namespace)?;
        let client = client_from_kubeconfig(&path).await;
        let _ = fs::remove_file(&path);
        client
    }
}

/// A ServiceAccount bearer token. `Debug` is redacted.
pub struct SaToken {
    value: String,
}

impl SaToken {
    /// The bearer token itself (for an `Authorization` header; never print it).
    pub fn secret(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for SaToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SaToken(<redacted>)")
    }
}

/// Asks the API server whether the client's user may do `verb` on `resource` (SelfSubjectAccessReview).
pub async fn can_i(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> Result<bool> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: namespace.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    self_review(client, &review).await
}

/// Sends a SelfSubjectAccessReview; true when the API server allows it.
async fn self_review(client: &Client, review: &SelfSubjectAccessReview) -> Result<bool> {
    let resp = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), review)
        .await?;
    Ok(resp.status.map(|s| s.allowed).unwrap_or(false))
}

/// Asks the API server whether the client's user may `get` the non-resource URL `path`.
pub async fn may_get_url(client: &Client, path: &str) -> Result<bool> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            non_resource_attributes: Some(NonResourceAttributes {
                path: Some(path.into()),
                verb: Some("get".into()),
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    self_review(client, &review).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sa_token_debug_is_redacted() {
        let t = SaToken {
            value: "eyJhbGciOi.secret".into(),
        };
        assert!(!format!("{t:?}").contains("secret"));
    }
}
