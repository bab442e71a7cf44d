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
mod health;
mod leader;
mod messages;
mod metrics;
mod node_report;
mod selector;
mod shutdown;
mod throttle;
mod triggers;
mod watches;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bpfpin_crds::{BpfNodeState, BpfObject};
use clap::Parser;
use futures::FutureExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::ListParams;
use kube::{Api, Client, Resource};
use tokio::sync::watch;

use crate::config::{Args, LogFormat};
use crate::health::Health;
use crate::leader::{Elector, Role, Settings};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// Bound on releasing the lease at shutdown; a standby takes over after the lease duration anyway.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let shutdown = Shutdown::install().context("installing the SIGTERM/SIGINT handlers")?;
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::new(metrics.clone()));
    let server = health::bind(args.metrics_addr, health.clone())
        .await
        .with_context(|| format!("listening on --metrics-addr {}", args.metrics_addr))?;
    tokio::spawn(server);

    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API (from KUBECONFIG, ~/.kube/config or the in-cluster service account)")?;
    check_crds(&client).await?;

    let identity = leader::identity();
    let config = controller::Config {
        stale_after: args.stale_after,
        debounce: args.debounce,
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
        controller::run(client, config, metrics, health, identity, shutdown.wait()).await;
        return Ok(());
    }

    let leases: Api<Lease> = Api::namespaced(client.clone(), &args.lease_namespace);
    let settings = Settings::new(args.lease_namespace.clone(), identity.clone());
    let (elector, mut role) = Elector::new(leases.clone(), settings.clone());
    let elector = tokio::spawn(elector.run());
    // A standby is ready as soon as it runs; it becomes unready while a new leader syncs.
    health.set_ready(true);
    tracing::info!(lease = %format!("{}/{}", settings.namespace, settings.name), "waiting to become leader");
    tokio::select! {
        () = shutdown.clone().wait() => {
            elector.abort();
            return Ok(());
        }
        changed = role.wait_for(|r| *r != Role::Standby) => {
            if changed.is_err() {
                bail!("leader election stopped unexpectedly");
            }
        }
    }
    health.set_ready(false);
    metrics.set_leader(true);

    let stop = stop_on(shutdown.clone(), role.clone());
    controller::run(client, config, metrics.clone(), health, identity, stop).await;
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
            () = shutdown.wait() => {}
            _ = role.wait_for(|r| *r == Role::Lost) => {}
        }
        let _ = tx.send(());
    });
    rx.map(|_| ())
}

/// Fails with one sentence when a bpfpin CRD is not installed.
async fn check_crds(client: &Client) -> anyhow::Result<()> {
    let one = ListParams::default().limit(1);
    let objects = Api::<BpfObject>::all(client.clone())
        .list_metadata(&one)
        .await
        .map(drop);
    let states = Api::<BpfNodeState>::all(client.clone())
        .list_metadata(&one)
        .await
        .map(drop);
    for (crd, result) in [
        (crd_name::<BpfObject>(), objects),
        (crd_name::<BpfNodeState>(), states),
    ] {
        match result {
            Ok(()) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => bail!(
                "the CustomResourceDefinition {crd} is not installed in this cluster; install the bpfpin CRDs with `kubectl apply -f crds/` and start bpfpin-operator again"
            ),
            Err(error) => {
                return Err(error).with_context(|| {
                    format!("listing {crd} to check that its CustomResourceDefinition is installed")
                });
            }
        }
    }
    Ok(())
}

fn crd_name<K: Resource<DynamicType = ()>>() -> String {
    format!("{}.{}", K::plural(&()), K::group(&()))
}
