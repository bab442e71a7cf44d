//! The bench's command line (see `e2e/scripts/bench --help`): the cluster and local figures by
//! default, the fleet bench with `--fleet N`, and the hidden `__fleet-agents` the fleet bench
//! starts its simulated agents with.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::RangedU64ValueParser;

use crate::sim::SimArgs;

/// bpfpin's benchmark. Defaults: 10 nodes, 100 objects, 3 runs; --smoke: 2 nodes, 5 objects,
/// 3 runs; --fleet: 100 objects.
#[derive(Debug, clap::Parser)]
#[command(
    name = "e2e/scripts/bench",
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
pub struct Cli {
    /// Simulated nodes with real agents.
    #[arg(long, value_parser = positive())]
    nodes: Option<usize>,
    /// BpfObjects.
    #[arg(long, value_parser = positive())]
    objects: Option<usize>,
    /// Runs of the cluster scenario and of the GC figure.
    #[arg(long, value_parser = positive())]
    runs: Option<usize>,
    /// Runs of the local micro benchmarks (load ratio, cold --once): at least 10.
    #[arg(long, value_parser = positive())]
    micro_runs: Option<usize>,
    /// A small run whose figures mean nothing: every key is measured.
    #[arg(long)]
    smoke: bool,
    /// Only the local-mode figures (no control plane needed).
    #[arg(long)]
    local_only: bool,
    /// The fleet bench with N simulated nodes instead (fleet.rs).
    #[arg(long, value_name = "N", value_parser = positive())]
    fleet: Option<usize>,
    /// Simulated-agent processes of the fleet bench (default 1, 2 from 1000 nodes).
    #[arg(long, value_parser = positive())]
    procs: Option<usize>,
    /// The stand-in's time per load (default: the measured median of a real one).
    #[arg(long, value_parser = non_negative)]
    load_ms: Option<f64>,
    /// How long the fleet bench observes the steady state (default 65 s, 5 s with --smoke).
    #[arg(long, value_parser = non_negative)]
    steady_s: Option<f64>,
    /// The simulated agents' heartbeat interval (default 30 s, the agent's; 2 s with --smoke).
    #[arg(long, value_parser = non_negative)]
    heartbeat_s: Option<f64>,
    /// Fleet bench only: first run the whole scenario with these extra operator flags (e.g.
    /// "--progress-budget 0", the coalescing before issue 17's fix), then as built, and add the
    /// ratios (change ÷ baseline) to the last line.
    #[arg(long, value_name = "FLAGS", allow_hyphen_values = true)]
    baseline: Option<String>,
    #[command(subcommand)]
    pub sim: Option<Internal>,
}

/// What the bench starts itself with.
#[derive(Debug, clap::Subcommand)]
pub enum Internal {
    /// A simulated-agent process of the fleet bench (sim.rs).
    #[command(name = "__fleet-agents", hide = true)]
    FleetAgents(SimArgs),
}

fn positive() -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(1..)
}

fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number >= 0")),
    }
}

/// The arguments with the defaults of `--smoke` and `--fleet` applied.
#[derive(Debug, Clone)]
pub struct Args {
    pub nodes: usize,
    pub objects: usize,
    pub runs: usize,
    pub smoke: bool,
    pub local_only: bool,
    pub micro_runs: usize,
    /// Objects of the GC figure (100 by definition).
    pub gc_objects: usize,
    /// Where operator and agent logs go (`BPFPIN_BENCH_LOGS`).
    pub logs: PathBuf,
    /// `--fleet N`: the fleet bench's own arguments.
    pub fleet: Option<FleetArgs>,
}

impl Cli {
    /// Applies the defaults.
    pub fn resolve(&self) -> Args {
        let smoke = self.smoke;
        let (nodes, objects, runs) = if smoke { (2, 5, 3) } else { (10, 100, 3) };
        let objects = self.objects.unwrap_or(objects);
        let secs = |v: Option<f64>, smoke_default: f64, default: f64| {
            Duration::from_secs_f64(v.unwrap_or(if smoke { smoke_default } else { default }))
        };
        Args {
            nodes: self.nodes.unwrap_or(nodes),
            objects,
            runs: self.runs.unwrap_or(runs),
            smoke,
            local_only: self.local_only,
            micro_runs: self
                .micro_runs
                .unwrap_or(if smoke { 10 } else { 15 })
                .max(10),
            gc_objects: 100,
            logs: std::env::var_os("BPFPIN_BENCH_LOGS")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp/bpfpin-bench-logs")),
            fleet: self.fleet.map(|nodes| FleetArgs {
                nodes,
                objects,
                procs: self
                    .procs
                    .unwrap_or(if nodes >= 1000 { 2 } else { 1 })
                    .min(nodes),
                load: self.load_ms.map(|v| Duration::from_secs_f64(v / 1000.0)),
                heartbeat: secs(self.heartbeat_s, 2.0, 30.0),
                steady: secs(self.steady_s, 5.0, 65.0),
                baseline: self
                    .baseline
                    .as_ref()
                    .map(|f| f.split_whitespace().map(str::to_owned).collect()),
            }),
        }
    }
}

/// The fleet bench's settings (from [`Args`]).
#[derive(Debug, Clone)]
pub struct FleetArgs {
    pub nodes: usize,
    pub objects: usize,
    /// Simulated-agent processes.
    pub procs: usize,
    /// The stand-in's time per load; `None`: the measured median of a real load.
    pub load: Option<Duration>,
    /// The agents' `--heartbeat-interval`.
    pub heartbeat: Duration,
    /// How long the steady state is observed.
    pub steady: Duration,
    /// `--baseline FLAGS`: run the scenario first with these extra operator flags, then as it
    /// is, and print the ratios.
    pub baseline: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::Cli;

    #[test]
    fn baseline_flags_are_split_and_only_set_when_given() {
        let cli = Cli::try_parse_from([
            "bench",
            "--fleet",
            "200",
            "--objects",
            "30",
            "--baseline",
            "--progress-budget 0",
        ])
        .expect("parses");
        let fleet = cli.resolve().fleet.expect("fleet");
        assert_eq!((fleet.nodes, fleet.objects), (200, 30));
        assert_eq!(
            fleet.baseline.as_deref(),
            Some(&["--progress-budget".to_owned(), "0".to_owned()][..])
        );
        let cli = Cli::try_parse_from(["bench", "--fleet", "20"]).expect("parses");
        assert_eq!(cli.resolve().fleet.expect("fleet").baseline, None);
    }
}
