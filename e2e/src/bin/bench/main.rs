//! `e2e/scripts/bench`: bpfpin's benchmark. Convergence, deletion, footprint, restart and API load on the
//! local control plane with simulated nodes (real agents on private bpffs mounts), and the
//! local-mode figures (GC rate, load overhead against bpftool, cold `--once`), each with min,
//! median and max over several runs and its baseline side by side. The last line of stdout is
//! `bench: key=value ...`. Run it through `e2e/scripts/bench` (it builds the release binaries and
//! brings the control plane up); see docs/performance.md for the definitions.
//!
//! [`cluster`] and [`local`] measure, [`fleet`] (with [`sim`], its simulated agents) is the
//! fleet bench of `--fleet N`; [`stats`] prints the table and the `bench:` line.

mod api;
mod args;
mod cluster;
mod fleet;
mod host;
mod local;
mod sim;
mod stats;

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use bpfpin_crds::BpfObject;
use bpfpin_e2e::repo;
use clap::Parser as _;

use crate::api::connect;
use crate::args::Args;
use crate::cluster::Cluster;
use crate::host::{binary, compile};
use crate::local::Local;
use crate::stats::Results;

/// The programs of the scale test's objects (examples/counter/counter.bpf.c), no attachments.
const COUNTER_PROGRAMS: [&str; 3] = ["count_getpid", "count_packets", "tail_target"];

/// A BpfObject of the counter's programs (no attachments), labelled `<label>=yes`, selecting the
/// nodes labelled `selector`.
fn counter_object(
    name: &str,
    bytecode: &Path,
    label: &str,
    selector: (&str, &str),
) -> Result<BpfObject> {
    let programs: Vec<serde_json::Value> = COUNTER_PROGRAMS
        .iter()
        .map(|p| serde_json::json!({"name": p}))
        .collect();
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "bpfpin.io/v1alpha1",
        "kind": "BpfObject",
        "metadata": {"name": name, "labels": {label: "yes"}},
        "spec": {
            "nodeSelector": {"matchLabels": {selector.0: selector.1}},
            "bytecode": {"path": bytecode.join("counter.bpf.o").display().to_string()},
            "programs": programs,
        }
    }))?)
}

fn main() -> std::process::ExitCode {
    let cli = args::Cli::parse();
    if let Some(args::Internal::FleetAgents(sim)) = cli.sim {
        // A simulated-agent process of the fleet bench (sim.rs), started by the bench itself.
        return match sim::main(sim) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench __fleet-agents: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let args = cli.resolve();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(bench(&args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn bench(args: &Args) -> Result<()> {
    let started = Instant::now();
    let work = tempfile::Builder::new().prefix("bpfpin-bench-").tempdir()?;
    let bytecode = work.path().join("bytecode");
    std::fs::create_dir_all(&bytecode)?;
    compile(
        &repo().join("examples/counter/counter.bpf.c"),
        &bytecode.join("counter.bpf.o"),
    )?;
    compile(
        &repo().join("agent/tests/bpf/many.bpf.c"),
        &bytecode.join("many.bpf.o"),
    )?;
    let _ = std::fs::remove_dir_all(&args.logs);
    std::fs::create_dir_all(&args.logs)?;
    if let Some(fa) = &args.fleet {
        return fleet::bench(args, fa.clone(), work.path(), &bytecode).await;
    }
    let mut res = Results::default();

    // Local figures first, while the machine is quiet.
    let local = Local {
        args,
        work: work.path().to_path_buf(),
        bytecode: bytecode.clone(),
        agent: binary("bpfpin-agent")?,
    };
    eprintln!(
        "bench: local mode: load overhead and cold --once ({} runs)",
        args.micro_runs
    );
    let mut local_res = Results::default();
    local.load(&mut local_res)?;
    eprintln!(
        "bench: local mode: GC ({} runs of {} objects)",
        args.runs, args.gc_objects
    );
    local.gc(&mut local_res)?;

    if args.local_only {
        local_res.print(args, started.elapsed());
        return Ok(());
    }
    eprintln!(
        "bench: cluster: {} nodes, {} objects, {} runs",
        args.nodes, args.objects, args.runs
    );
    let (kubeconfig, client) = connect().await?;
    let mut cluster = Cluster {
        args,
        client,
        kubeconfig,
        bytecode: bytecode.clone(),
        agent_bin: binary("bpfpin-agent")?,
        operator: None,
        nodes: Vec::new(),
    };
    let outcome = cluster.scenario(&mut res).await;
    cluster.teardown().await;
    outcome?;
    res.rows.extend(local_res.rows);
    res.notes.extend(local_res.notes);
    res.notes.push(format!(
        "logs of the operator and agents: {}",
        args.logs.display()
    ));
    res.print(args, started.elapsed());
    Ok(())
}
