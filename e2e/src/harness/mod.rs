//! End-to-end harness over the real local control plane (`e2e/cluster.sh`).
//!
//! The admin kubeconfig comes from `E2E_KUBECONFIG`, or from `e2e/cluster.sh up` run once per
//! test process on the dedicated test cluster (state in `E2E_TEST_STATE_DIR`, default
//! `~/.cache/keeper-operator-e2e/test-cluster`, as `e2e/test.sh` uses), never the demo's. The
//! chart is rendered with helm and applied as admin; the operator then runs as a child process with a kubeconfig holding a TokenRequest token of the chart's ServiceAccount, so
//! every request it makes goes through the real RBAC authorizer.
//!
//! A control plane that cannot start is an error, never a skip.

mod access;
mod chart;
mod cluster;
mod env;
mod node;
mod operator;
mod process;
mod secrets;
mod wait;

use std::time::Duration;

pub use access::{SaToken, can_i, may_get_url};
pub use chart::{ChartInstall, chart_fullname, crd_names};
pub use cluster::Cluster;
pub use env::TestEnv;
pub use node::{
    Image, NodeCluster, Relay, build_image, container_id, process_uid, root_mount_options,
};
pub use operator::{Operator, OperatorBuilder, operator_binary};
pub use process::{
    CommandOutput, artefact_dir, cpu_seconds, free_port, peak_rss_mib, run, unique_name,
    workspace_root,
};
pub use secrets::{create_secret, secret_bytes, secret_strings, secret_text};
pub use wait::{
    condition, wait_for_condition, wait_for_condition_status, wait_for_deletion, wait_for_secret,
    wait_until,
};

/// Label put on every namespace the harness creates, so leftovers are easy to find.
pub const E2E_LABEL: &str = "keeper-operator.dev/e2e";
/// Kubernetes version the control plane is built at (helm renders capabilities for it).
pub const KUBE_VERSION: &str = "1.35.4";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
