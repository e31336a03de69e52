//! A cluster with nodes (`e2e/cluster.sh up --node`): its own control plane, kube-scheduler and
//! two kubelets, each on a private containerd, so the chart's Deployment really runs as Pods.
//! Node `localhost` shares this host's network; node `node-b` has a network namespace of its own,
//! joined to this host's loopback port by port (`e2e/tools/ns-relay.py`). Images are built offline
//! by `e2e/image.sh` and imported into both containerds.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, ensure};

use super::Cluster;
use super::cluster::{start_cluster, state_dir};
use super::process::{last_line, run, workspace_root};

/// The node cluster: its admin view and what `e2e/cluster.sh` recorded about the node.
pub struct NodeCluster {
    pub cluster: Cluster,
    /// `KEY=value` lines of the cluster's `run/ports` file.
    facts: BTreeMap<String, String>,
}

/// An image built by `e2e/image.sh`.
#[derive(Clone, Debug)]
pub struct Image {
    /// Its reference, e.g. `docker.io/library/keeper-operator:e2e-0123456789ab`.
    pub reference: String,
    /// The OCI archive holding it.
    pub archive: PathBuf,
}

impl Image {
    /// The repository part of the reference.
    pub fn repository(&self) -> &str {
        self.reference.rsplit_once(':').map_or("", |(r, _)| r)
    }

    /// The tag part of the reference.
    pub fn tag(&self) -> &str {
        self.reference.rsplit_once(':').map_or("", |(_, t)| t)
    }
}

/// Builds (or finds, when nothing changed) image `which` (`operator` or `pause`) with
/// `e2e/image.sh`.
pub fn build_image(which: &str) -> Result<Image> {
    let mut cmd = Command::new("bash");
    cmd.arg(workspace_root().join("e2e/image.sh")).arg(which);
    // Without what `cargo test` adds to this process's environment: the release build then sees
    // what `e2e/test.sh`'s image phase saw, and finds its output fresh instead of rebuilding.
    // CARGO_TARGET_DIR is the caller's own, and where that build put its output.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let injected = key == "CARGO"
            || (key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_TARGET_DIR")
            || key.starts_with("RUSTUP_TOOLCHAIN")
            || key == "RUST_RECURSION_COUNT"
            || key == "LD_LIBRARY_PATH";
        if injected {
            cmd.env_remove(key.as_ref());
        }
    }
    let out = last_line(&mut cmd)?;
    let (reference, archive) = out
        .split_once(' ')
        .with_context(|| format!("e2e/image.sh {which} printed {out:?}"))?;
    Ok(Image {
        reference: reference.to_string(),
        archive: PathBuf::from(archive),
    })
}

impl NodeCluster {
    /// Starts (or reuses) the node cluster in `E2E_NODE_STATE_DIR` (default
    /// `~/.cache/keeper-operator-e2e/node-cluster`), apart from the shared test cluster, so the
    /// Pods it runs never meet the other tests' operators.
    pub async fn start() -> Result<NodeCluster> {
        let state = state_dir("E2E_NODE_STATE_DIR", "node-cluster");
        let admin =
            tokio::task::spawn_blocking(move || start_cluster(&state, &["--node"])).await??;
        let ports = admin.with_file_name("run").join("ports");
        let facts = std::fs::read_to_string(&ports)
            .with_context(|| ports.display().to_string())?
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(NodeCluster {
            cluster: Cluster::connect_to(admin).await?,
            facts,
        })
    }

    fn fact(&self, key: &str) -> Result<&str> {
        self.facts
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("the node cluster recorded no {key}"))
    }

    /// The nodes' names; the first shares this host's network.
    pub fn nodes(&self) -> Result<Vec<&str>> {
        Ok(self.fact("NODES")?.split_whitespace().collect())
    }

    fn node_dir(&self, node: &str) -> Result<PathBuf> {
        Ok(PathBuf::from(self.fact(&format!("NODE_DIR_{node}"))?))
    }

    /// The API server's port on 127.0.0.1.
    pub fn api_port(&self) -> Result<u16> {
        Ok(self.fact("API_PORT")?.parse()?)
    }

    /// `ctr <args>` against every node's containerd, in the namespace the kubelet uses.
    fn ctr_everywhere(&self, args: &[&str]) -> Result<()> {
        for node in self.nodes()? {
            let mut cmd = Command::new("ctr");
            cmd.arg("--address")
                .arg(self.node_dir(node)?.join("containerd.sock"))
                .args(["-n", "k8s.io"])
                .args(args);
            run(&mut cmd, None)?;
        }
        Ok(())
    }

    /// Imports `image` into every node's containerd.
    pub fn import(&self, image: &Image) -> Result<()> {
        let archive = image.archive.to_str().context("archive path")?;
        self.ctr_everywhere(&["images", "import", archive])
    }

    /// Gives `image` a second tag `tag` on every node; returns the new image.
    pub fn tag(&self, image: &Image, tag: &str) -> Result<Image> {
        let target = Image {
            reference: format!("{}:{tag}", image.repository()),
            archive: image.archive.clone(),
        };
        self.ctr_everywhere(&[
            "images",
            "tag",
            "--force",
            &image.reference,
            &target.reference,
        ])?;
        Ok(target)
    }

    /// `runc` against `node`'s containers.
    fn runc(&self, node: &str, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("runc");
        cmd.arg("--root")
            .arg(self.node_dir(node)?.join("runc/k8s.io"))
            .args(args);
        Ok(run(&mut cmd, None)?.stdout)
    }

    /// The host PID of container `id`'s first process on `node` (`containerd://<id>` in a Pod's
    /// status).
    pub fn container_pid(&self, node: &str, id: &str) -> Result<u32> {
        let state: serde_json::Value = serde_json::from_str(&self.runc(node, &["state", id])?)?;
        let pid = state["pid"].as_u64().context("runc state without a pid")?;
        ensure!(pid > 0, "container {id} is not running");
        Ok(pid as u32)
    }

    /// Kills container `id` on `node` with SIGKILL, as an OOM kill or a crash would end it.
    pub fn kill_container(&self, node: &str, id: &str) -> Result<()> {
        self.runc(node, &["kill", id, "KILL"]).map(|_| ())
    }

    /// Makes 127.0.0.1:`port` of this host reachable on 127.0.0.1:`port` of every node with a
    /// network namespace of its own, until the returned relay is dropped.
    pub fn relay(&self, port: u16) -> Result<Relay> {
        let mut children = Vec::new();
        for node in self.nodes()? {
            let Some(netns) = self.facts.get(&format!("NODE_NETNS_{node}")) else {
                continue;
            };
            let mut child = Command::new("python3")
                .arg(workspace_root().join("e2e/tools/ns-relay.py"))
                .arg(netns)
                .arg(port.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .context("starting e2e/tools/ns-relay.py")?;
            // It prints once it listens.
            let mut line = String::new();
            let stdout = child.stdout.take().context("relay stdout")?;
            BufReader::new(stdout).read_line(&mut line)?;
            children.push(child);
            ensure!(
                line.starts_with("relaying"),
                "the relay into {node} did not start"
            );
        }
        Ok(Relay { children })
    }
}

/// Relays started by [`NodeCluster::relay`]; stopped on drop.
pub struct Relay {
    children: Vec<Child>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `<id>` of a container ID `containerd://<id>`.
pub fn container_id(status_id: &str) -> Result<&str> {
    status_id
        .strip_prefix("containerd://")
        .with_context(|| format!("not a containerd container: {status_id}"))
}

/// The uid a process runs as (real uid, from `/proc/<pid>/status`).
pub fn process_uid(pid: u32) -> Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .context("no Uid line")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("empty Uid line")?
        .parse()?)
}

/// The mount options of the root filesystem a process sees (`/proc/<pid>/mountinfo`).
pub fn root_mount_options(pid: u32) -> Result<Vec<String>> {
    let mountinfo =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("mountinfo"))?;
    let root = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .context("no root mount")?;
    Ok(root
        .split_whitespace()
        .nth(5)
        .unwrap_or_default()
        .split(',')
        .map(str::to_string)
        .collect())
}
