//! `bpfpin-operator`: the cluster-wide controller of bpfpin. It selects the nodes of each
//! `BpfObject`, aggregates what their agents report in `BpfNodeState`s into the object's status,
//! conditions and events, and holds the `bpfpin.io/unpin` finalizer until every live node has
//! unpinned a deleted object.
#![forbid(unsafe_code)]

mod aggregate;
mod cleanup;
mod conditions;
mod config;
mod controller;
mod error;
mod events;
mod leader;
mod messages;
mod metrics;
mod node_report;
mod throttle;
mod triggers;
mod watches;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bpfpin_runtime::crd_check::check_crds;
use bpfpin_runtime::logs;
use bpfpin_runtime::shutdown::Shutdown;
use clap::Parser;
use futures::FutureExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio::sync::watch;

use crate::config::Args;
use crate::leader::{Elector, Role, Settings};
use crate::metrics::Metrics;

/// Bound on releasing the lease at shutdown; a standby takes over after the lease duration anyway.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    logs::init(args.log_format);
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let shutdown = Shutdown::install().context("installing the SIGTERM/SIGINT handlers")?;
    let metrics = Arc::new(Metrics::default());
    let admin = metrics.admin().clone();
    admin
        .serve(args.metrics_addr)
        .with_context(|| format!("listening on --metrics-addr {}", args.metrics_addr))?;

    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API (from KUBECONFIG, ~/.kube/config or the in-cluster service account)")?;
    check_crds(&client, "bpfpin-operator").await?;

    let identity = leader::identity();
    let config = controller::Config {
        stale_after: args.stale_after,
        debounce: args.debounce,
        progress_budget: args.progress_budget,
        concurrency: args.concurrency,
        lease_namespace: args.lease_namespace.clone(),
    };
    tracing::info!(
        %identity,
        stale_after = %messages::duration(args.stale_after),
        leader_election = !args.no_leader_election,
        "bpfpin-operator starting"
    );

    if args.no_leader_election {
        metrics.set_leader(true);
        controller::run(client, config, metrics, identity, shutdown.requested()).await;
        return Ok(());
    }

    let leases: Api<Lease> = Api::namespaced(client.clone(), &args.lease_namespace);
    let settings = Settings::new(args.lease_namespace.clone(), identity.clone());
    let (elector, mut role) = Elector::new(leases.clone(), settings.clone());
    let elector = tokio::spawn(elector.run());
    // A standby is ready as soon as it runs; it becomes unready while a new leader syncs.
    admin.set_ready(true);
    tracing::info!(lease = %format!("{}/{}", settings.namespace, settings.name), "waiting to become leader");
    tokio::select! {
        () = shutdown.clone().requested() => {
            elector.abort();
            return Ok(());
        }
        changed = role.wait_for(|r| *r != Role::Standby) => {
            if changed.is_err() {
                bail!("leader election stopped unexpectedly");
            }
        }
    }
    admin.set_ready(false);
    metrics.set_leader(true);

    let stop = stop_on(shutdown.clone(), role.clone());
    controller::run(client, config, metrics.clone(), identity, stop).await;
    metrics.set_leader(false);
    elector.abort();

    if *role.borrow() == Role::Lost {
        bail!(
            "lost the leader lease {}/{}; exiting so that this replica restarts as a standby",
            settings.namespace,
            settings.name
        );
    }
    match tokio::time::timeout(RELEASE_TIMEOUT, leader::release(&leases, &settings)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "releasing the leader lease"),
        Err(_) => tracing::warn!("releasing the leader lease timed out"),
    }
    Ok(())
}

/// Resolves on a shutdown signal or when the lease is lost. The controller wants a `Sync` future,
/// so the wait runs in a task and is signalled through a oneshot channel.
fn stop_on(
    shutdown: Shutdown,
    mut role: watch::Receiver<Role>,
) -> impl Future<Output = ()> + Send + Sync + 'static {
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown.requested() => {}
            _ = role.wait_for(|r| *r == Role::Lost) => {}
        }
        let _ = tx.send(());
    });
    rx.map(|_| ())
}
