//! Command-line flags.

use std::net::SocketAddr;
use std::time::Duration;

use bpfpin_runtime::duration::parse as parse_duration;
use bpfpin_runtime::logs::LogFormat;
use clap::Parser;

/// bpfpin operator: selects nodes for each BpfObject, aggregates what their agents report into
/// the object's status and conditions, and holds the `bpfpin.io/unpin` finalizer until every live
/// node has unpinned a deleted object.
///
/// Connects with KUBECONFIG, ~/.kube/config, or the in-cluster service account.
#[derive(Debug, Clone, Parser)]
#[command(name = "bpfpin-operator", version)]
pub struct Args {
    /// A node whose agent's heartbeat is older than this is not live: it counts as pending and no
    /// longer blocks deletions (its agent sweeps unwanted pins when it comes back). Keep it well
    /// above the agents' heartbeat interval (30s by default). E.g. 90s, 2m, 1m30s.
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    pub stale_after: Duration,

    /// Namespace of the `bpfpin-operator` leader-election Lease, and of the agents' heartbeat
    /// Leases (`bpfpin-agent-<node>`; agents take it from their own --lease-namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    pub lease_namespace: String,

    /// Address of the HTTP server for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Run the controller at once, without taking the Lease. Only for a single replica.
    #[arg(long)]
    pub no_leader_election: bool,

    /// Log format; the level comes from RUST_LOG (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Reconcile an object at most once per this interval for node reports: the first report
    /// after a quiet interval reconciles at once, later ones fold into one at the interval's end,
    /// so a burst of node reports becomes few status writes. 0s reconciles on every report.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub debounce: Duration,

    /// Watch events per second that progress-only status writes ("412/1000 nodes") may cause.
    /// Every agent watches every BpfObject, so one status write is one event per node; while
    /// objects roll out, each one's progress is written at most every (nodes × objects rolling
    /// out ÷ this) seconds, between 1s and 30s. The first status, Ready, failures and new
    /// generations are written at once. 0: progress at most once per object per second.
    #[arg(long, default_value_t = 2000)]
    pub progress_budget: u32,

    /// Reconciles that may run at once (0: no limit). Each running reconcile may hold an HTTP
    /// connection to the API server, and the client keeps a connection open once it was needed:
    /// without a limit, 300 objects created at once left 68 connections (≈ 25 KB each) open for
    /// good (docs/performance.md, finding 8).
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        let a = Args::try_parse_from(["bpfpin-operator"]).expect("defaults");
        assert_eq!(a.stale_after, Duration::from_secs(90));
        assert_eq!(a.metrics_addr.port(), 8080);
        assert!(!a.no_leader_election);
        assert_eq!(a.log_format, LogFormat::Text);
        assert_eq!(a.progress_budget, 2000);
        assert_eq!(a.concurrency, 16);
        let a = Args::try_parse_from([
            "bpfpin-operator",
            "--stale-after",
            "2m",
            "--lease-namespace",
            "bpfpin-system",
            "--metrics-addr",
            "127.0.0.1:9090",
            "--no-leader-election",
            "--log-format",
            "json",
            "--progress-budget",
            "0",
            "--concurrency",
            "4",
        ])
        .expect("flags");
        assert_eq!(a.stale_after, Duration::from_secs(120));
        assert_eq!(a.lease_namespace, "bpfpin-system");
        assert_eq!(a.metrics_addr.port(), 9090);
        assert!(a.no_leader_election);
        assert_eq!(a.log_format, LogFormat::Json);
        assert_eq!(a.progress_budget, 0);
        assert_eq!(a.concurrency, 4);
    }
}
