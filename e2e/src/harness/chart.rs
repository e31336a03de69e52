//! The Helm chart: rendering it, installing it as admin, and the names it gives things.

use std::time::Duration;

use anyhow::Result;

use super::process::{run, workspace_root};
use super::{Cluster, DEFAULT_TIMEOUT, KUBE_VERSION};

impl Cluster {
    /// `helm template` of the chart with `--set` values; returns the rendered manifest.
    pub fn render_chart(
        &self,
        release: &str,
        namespace: &str,
        set: &[(&str, &str)],
    ) -> Result<String> {
        let mut cmd = self.helm();
        cmd.args(["template", release])
            .arg(workspace_root().join("helm/keeper-operator"))
            .args(["--namespace", namespace, "--kube-version", KUBE_VERSION]);
        for (k, v) in set {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
        let out = run(&mut cmd, None)?;
        Ok(out.stdout)
    }

    /// Installs the chart (rendered, then applied as admin) into `namespace` and waits for its
    /// CRDs to be established. Use a distinct `release` per install: cluster-scoped RBAC objects
    /// are named after it.
    pub async fn install_chart(
        &self,
        release: &str,
        namespace: &str,
        set: &[(&str, &str)],
    ) -> Result<ChartInstall> {
        let manifest = self.render_chart(release, namespace, set)?;
        self.apply(&manifest, &[])?;
        let crds = crd_names(&manifest);
        for crd in &crds {
            self.wait_crd_established(crd, DEFAULT_TIMEOUT)?;
        }
        Ok(ChartInstall {
            release: release.to_string(),
            namespace: namespace.to_string(),
            service_account: chart_fullname(release),
            crds,
        })
    }

    /// `kubectl wait --for=condition=Established` on a CRD.
    pub fn wait_crd_established(&self, crd: &str, timeout: Duration) -> Result<()> {
        let mut cmd = self.kubectl();
        cmd.args(["wait", "--for=condition=Established"])
            .arg(format!("--timeout={}s", timeout.as_secs()))
            .arg(format!("crd/{crd}"));
        run(&mut cmd, None).map(|_| ())
    }
}

/// The chart's `keeper-operator.fullname` (and default ServiceAccount name) for a release.
pub fn chart_fullname(release: &str) -> String {
    let mut name = if release.contains("keeper-operator") {
        release.to_string()
    } else {
        format!("{release}-keeper-operator")
    };
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

/// What `install_chart` created.
#[derive(Clone, Debug)]
pub struct ChartInstall {
    pub release: String,
    pub namespace: String,
    pub service_account: String,
    pub crds: Vec<String>,
}

/// Names of the CustomResourceDefinitions in a rendered manifest.
pub fn crd_names(manifest: &str) -> Vec<String> {
    manifest
        .split("\n---")
        .filter(|doc| {
            doc.lines()
                .any(|l| l.trim_end() == "kind: CustomResourceDefinition")
        })
        .filter_map(|doc| {
            let mut in_metadata = false;
            doc.lines().find_map(|l| {
                if l == "metadata:" {
                    in_metadata = true;
                } else if in_metadata && !l.starts_with(' ') {
                    in_metadata = false;
                }
                l.strip_prefix("  name: ")
                    .filter(|_| in_metadata)
                    .map(|n| n.trim().to_string())
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_names_reads_only_crd_metadata_names() {
        let manifest = "---\nkind: ServiceAccount\nmetadata:\n  name: sa\n---\n# Source: x\n\
                        apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
                        metadata:\n  annotations:\n    a: b\n  name: things.example.dev\nspec:\n  names:\n    kind: Thing\n";
        assert_eq!(crd_names(manifest), vec!["things.example.dev".to_string()]);
    }

    #[test]
    fn chart_fullname_matches_the_chart_helper() {
        assert_eq!(chart_fullname("ko"), "ko-keeper-operator");
        assert_eq!(chart_fullname("keeper-operator"), "keeper-operator");
        let long = "a".repeat(60);
        assert_eq!(chart_fullname(&long).len(), 63);
        assert!(!chart_fullname(&format!("{}-", "b".repeat(62))).ends_with('-'));
    }
}
