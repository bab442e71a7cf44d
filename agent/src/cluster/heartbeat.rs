//! The agent's heartbeat: a `coordination.k8s.io` Lease per node, renewed every
//! `--heartbeat-interval`, as kubelets do (KEP-589). A renewal writes ≈ 400 bytes, where rewriting
//! the `BpfNodeState` would write every object's entry (≈ 225 KB at 500 objects): at 5,000 nodes
//! that is the difference between ≈ 70 KB/s and ≈ 37 MB/s into etcd.
//!
//! The Lease's name, label and holder are the contract of [`bpfpin_crds::heartbeat`]; it lives in
//! `--lease-namespace` and is owned by the Node, so it goes with the Node. It is first renewed once the first pass has been reported in the `BpfNodeState`:
//! a renewed Lease means "the agent lives and its `BpfNodeState` is current".

use std::sync::Arc;
use std::time::{Duration, Instant};

use bpfpin_crds::heartbeat::{LEASE_LABEL, lease_name};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};

use super::metrics::{Metrics, Write};
use super::node_state::{FIELD_MANAGER, node_owner};

/// After a failed renewal, the next attempt waits at most this long.
const RENEW_RETRY: Duration = Duration::from_secs(5);

/// Renews this node's heartbeat Lease.
#[derive(Debug)]
pub struct Heartbeat {
    api: Api<Lease>,
    name: String,
    node: String,
    interval: Duration,
    metrics: Arc<Metrics>,
    renewed_at: Option<Instant>,
    retry_at: Option<Instant>,
}

impl Heartbeat {
    /// A heartbeat for `node` in `namespace`, every `interval`.
    pub fn new(
        client: Client,
        namespace: &str,
        node: &str,
        interval: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: lease_name(node),
            node: node.to_owned(),
            interval,
            metrics,
            renewed_at: None,
            retry_at: None,
        }
    }

    /// When the next renewal is due; `None` before the first (which the agent asks for).
    pub fn next_due(&self) -> Option<Instant> {
        self.retry_at
            .or_else(|| self.renewed_at.map(|t| t + self.interval))
    }

    /// Whether the Lease was ever renewed by this process.
    pub fn started(&self) -> bool {
        self.renewed_at.is_some() || self.retry_at.is_some()
    }

    /// Renews the Lease now (creating it with its owner reference when needed).
    pub async fn renew(&mut self, node_uid: &str) {
        let now = Instant::now();
        match self.apply(node_uid).await {
            Ok(()) => {
                if self.renewed_at.is_none() {
                    tracing::info!(lease = %self.name, namespace = ?self.api.namespace(), "heartbeat Lease renewed (first time)");
                }
                self.renewed_at = Some(now);
                self.retry_at = None;
            }
            Err(error) => {
                tracing::warn!(%error, lease = %self.name, "renewing the heartbeat Lease failed; will retry");
                self.retry_at = Some(now + RENEW_RETRY.min(self.interval));
            }
        }
    }

    async fn apply(&self, node_uid: &str) -> kube::Result<()> {
        // MicroTime is serialized with microsecond precision.
        let renew = k8s_openapi::jiff::Timestamp::now();
        let lease_seconds =
            i32::try_from(self.interval.as_secs().saturating_mul(3)).unwrap_or(i32::MAX);
        let patch = serde_json::json!({
            "apiVersion": Lease::api_version(&()),
            "kind": Lease::kind(&()),
            "metadata": {
                "name": self.name,
                "labels": {LEASE_LABEL: "true"},
                "ownerReferences": [node_owner(&self.node, node_uid)],
            },
            "spec": {
                "holderIdentity": self.node,
                "leaseDurationSeconds": lease_seconds.max(1),
                "renewTime": MicroTime(renew),
            },
        });
        self.api
            .patch(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        self.metrics.count_write(Write::Heartbeat);
        Ok(())
    }
}
