//! `bpfpin-agent`: the per-node agent. `local` reconciles manifests from a folder; `cluster`
//! watches the API server for the node it runs on.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use bpfpin_agent::Reconciler;
use bpfpin_agent::bytecode::Fetcher;
use bpfpin_agent::bytecode::flags::FetchFlags;
use bpfpin_agent::bytecode::image::RegistryAuth;
use bpfpin_agent::cluster::flags::{self, MetricsAddr};
use bpfpin_agent::cluster::{self, ClusterConfig};
use bpfpin_agent::local::{self, LocalConfig};
use bpfpin_agent::pin::mounts;
use bpfpin_agent::signature::flags::VerificationFlags;
use bpfpin_runtime::duration::parse_positive;
use bpfpin_runtime::logs::{self, LogFormat};

#[derive(Parser, Debug)]
#[command(
    name = "bpfpin-agent",
    version,
    about = "Pins eBPF objects under <bpffs>/bpfpin and keeps them as the BpfObjects say"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Reconcile every BpfObject in the YAML files of a folder (no cluster).
    Local {
        /// Folder of BpfObject manifests (multi-document YAML allowed).
        #[arg(long)]
        manifests: PathBuf,
        /// The bpffs mount point; the managed root is <bpffs>/bpfpin. Mounted if needed.
        #[arg(long, default_value = "/sys/fs/bpf")]
        bpffs: PathBuf,
        /// A folder bytecode may be read from besides the manifests folder (repeatable).
        #[arg(long = "bytecode-dir")]
        bytecode_dirs: Vec<PathBuf>,
        /// One pass, then exit: 0 when every object is pinned, 1 otherwise.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        downloads: Downloads,
    },
    /// Watch the API server and pin the BpfObjects selected for this node; report in its
    /// BpfNodeState (KUBECONFIG, ~/.kube/config or the in-cluster service account).
    Cluster {
        /// The Node this agent serves.
        #[arg(long, env = "NODE_NAME")]
        node_name: String,
        /// The bpffs mount point; the managed root is <bpffs>/bpfpin. Mounted if needed.
        #[arg(long, default_value = "/sys/fs/bpf")]
        bpffs: PathBuf,
        /// A folder bytecode.path may resolve into (repeatable; default /var/lib/bpfpin/bytecode).
        #[arg(long = "bytecode-dir")]
        bytecode_dirs: Vec<PathBuf>,
        /// How often the heartbeat Lease `bpfpin-agent-<node>` is renewed (500ms, 30s, 5m). The
        /// BpfNodeState is written only when something changed.
        #[arg(long, default_value = "30s", value_parser = parse_positive)]
        heartbeat_interval: Duration,
        /// Namespace of the heartbeat Lease: the operator's --lease-namespace, where it watches
        /// the agents' Leases.
        #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
        lease_namespace: String,
        /// Where /healthz, /readyz and /metrics listen (port 0: any free port; `none`: off).
        #[arg(long, default_value = "0.0.0.0:8081", value_parser = flags::parse_metrics_addr)]
        metrics_addr: MetricsAddr,
        /// TEST ONLY, never on a real node: report this kernel release (e.g. 5.10.0) in the
        /// node's capabilities instead of the real one, so that e2e can run agents with different
        /// kernels on one host. The program and attach type probes stay real.
        #[arg(long, value_name = "RELEASE")]
        test_only_kernel_release: Option<String>,
        /// Where the container runtime bind-mounts pod network namespaces (for
        /// `networkNamespaces`; containerd's and CRI-O's default).
        #[arg(long, default_value = cluster::pods::DEFAULT_NETNS_DIR)]
        netns_dir: std::path::PathBuf,
        /// The node's cgroup v2 tree, where pod cgroups are found by UID (for `pods` of the
        /// cgroup hooks). Default: `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a cgroup v1
        /// host with the hybrid layout.
        #[arg(long)]
        cgroup_dir: Option<std::path::PathBuf>,
        /// Label this node with its kernel capabilities (`bpfpin.io/kernel`, `bpfpin.io/btf`);
        /// needs `patch` on nodes (the chart's `agent.nodeLabels`). Without it the capabilities
        /// are only in the node's BpfNodeState.
        #[arg(long)]
        label_node: bool,
        #[command(flatten)]
        downloads: Downloads,
    },
}

/// Where bytecode from urls and images comes from and is kept (both modes).
#[derive(Args, Debug)]
struct Downloads {
    /// Where bytecode downloaded from a url or pulled from an image is kept, by digest.
    #[arg(long, default_value = "/var/lib/bpfpin/cache")]
    cache_dir: PathBuf,
    /// A docker config.json with this node's credentials for bytecode.image registries
    /// (default: anonymous pulls).
    #[arg(long)]
    registry_auth: Option<PathBuf>,
    #[command(flatten)]
    fetch: FetchFlags,
    #[command(flatten)]
    verification: VerificationFlags,
}

impl Downloads {
    /// The fetcher of urls and images: its cache, and the registry credentials.
    fn fetcher(self) -> Result<Fetcher, ExitCode> {
        // The image signature policy of every pull of this process (crate::signature).
        if let Err(e) = self.verification.install() {
            eprintln!("bpfpin-agent: {e}");
            return Err(ExitCode::from(2));
        }
        let mut fetcher = Fetcher::with_cache(Some(self.cache_dir));
        self.fetch.apply(&mut fetcher).map_err(|e| {
            eprintln!("bpfpin-agent: {e}");
            ExitCode::from(2)
        })?;
        if let Some(path) = self.registry_auth {
            fetcher.registry_auth = RegistryAuth::from_file(&path).map_err(|e| {
                eprintln!("bpfpin-agent: --registry-auth {e}");
                ExitCode::from(2)
            })?;
        }
        Ok(fetcher)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logs::init(cli.log_format);
    match cli.mode {
        Mode::Local {
            manifests,
            bpffs,
            bytecode_dirs,
            once,
            downloads,
        } => {
            let mut fetcher = match downloads.fetcher() {
                Ok(f) => f,
                Err(code) => return code,
            };
            if once {
                // One pass: it waits for every download (each bounded by --fetch-timeout).
                fetcher.pass_wait = None;
            }
            let config = LocalConfig {
                fetcher,
                manifests,
                bytecode_dirs,
            };
            let reconciler = match start(&bpffs) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("bpfpin-agent: {e}");
                    return ExitCode::from(2);
                }
            };
            if once {
                let mut reconciler = reconciler;
                return if local::run_once(&mut reconciler, &config) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                };
            }
            run_async(1, local::watch(reconciler, config))
        }
        Mode::Cluster {
            node_name,
            bpffs,
            bytecode_dirs,
            heartbeat_interval,
            lease_namespace,
            metrics_addr,
            test_only_kernel_release,
            netns_dir,
            cgroup_dir,
            label_node,
            downloads,
        } => {
            if let Some(release) = test_only_kernel_release {
                cluster::capabilities::set_test_only_kernel_release(release);
            }
            let fetcher = match downloads.fetcher() {
                Ok(f) => f,
                Err(code) => return code,
            };
            run_cluster(
                &bpffs,
                ClusterConfig {
                    fetcher,
                    node_name,
                    bytecode_dirs,
                    heartbeat_interval,
                    lease_namespace,
                    metrics_addr: metrics_addr.0,
                    netns_dir,
                    cgroup_dir,
                    label_node,
                },
            )
        }
    }
}

fn run_cluster(bpffs: &std::path::Path, config: ClusterConfig) -> ExitCode {
    if config.node_name.is_empty() {
        eprintln!("bpfpin-agent: --node-name (or NODE_NAME) must name this node's Node object");
        return ExitCode::from(2);
    }
    let reconciler = match start(bpffs) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bpfpin-agent: {e}");
            return ExitCode::from(2);
        }
    };
    run_async(2, cluster::run(reconciler, config))
}

fn start(bpffs: &std::path::Path) -> Result<Reconciler, bpfpin_agent::error::AgentError> {
    if let Err(e) = mounts::ensure_tracefs() {
        tracing::warn!(error = %e, "tracepoint attachments will fail");
    }
    Reconciler::new(bpffs)
}

/// Runs a mode's main loop on a runtime of `workers` threads; its error ends the process.
fn run_async(
    workers: usize,
    main: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bpfpin-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
