//! An attach point that appears after the object: the agent retries with backoff and the object
//! becomes Ready by itself, with nothing to re-apply. Run through `e2e/run`.

use std::path::PathBuf;
use std::time::Instant;

use bpfpin_e2e::*;

/// Where cgroup v2 is mounted on this machine.
fn cgroup2_mount() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("mounts");
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("a cgroup2 mount (this check attaches a cgroup_skb program)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_attach_point_is_retried_until_it_appears() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let _op = env.operator("30s")?;
    let _n1 = env.node("late-1", &[("e2e-group", "late")]).await?;
    let _n2 = env.node("late-2", &[("e2e-group", "late")]).await?;
    compile_bpf(
        &repo().join("examples/cgroup-skb/cgroup_skb.bpf.c"),
        &env.bytecode_dir.path().join("cgroup_skb.bpf.o"),
    )?;

    // The cgroup of a workload that has not started yet.
    let cgroup = cgroup2_mount().join("bpfpin-e2e-late");
    let _ = std::fs::remove_dir(&cgroup);
    let spec = format!(
        "nodeSelector: {{matchLabels: {{e2e-group: late}}}}\nbytecode: {{path: {}}}\nprograms:\n- name: count_egress\n  attach: {{cgroupSkb: {{cgroup: {}, direction: Egress}}}}",
        env.object_path("cgroup_skb"),
        cgroup.display()
    );
    env.apply(&manifest("late", &spec));
    let o = env
        .wait_object("late", "Ready=False on 2 nodes", |o| {
            ready_is(o, "False")
                && o.status
                    .as_ref()
                    .and_then(|s| s.nodes.as_ref())
                    .is_some_and(|n| n.failed == 2)
        })
        .await?;
    let failure = &o.status.as_ref().expect("status").failures[0];
    assert_eq!(failure.reason, "AttachFailed", "{failure:?}");
    assert!(
        failure.message.contains("bpfpin-e2e-late"),
        "the message names the cgroup: {failure:?}"
    );

    // The workload starts: its cgroup appears, and the agents' next retry attaches.
    std::fs::create_dir(&cgroup)?;
    let started = Instant::now();
    let result = env
        .wait_object("late", "Ready once the cgroup exists", |o| {
            ready_is(o, "True")
        })
        .await;
    eprintln!(
        "e2e: cgroup created -> Ready on 2 nodes (retry with backoff, first after 5 s): {} ms",
        started.elapsed().as_millis()
    );
    env.delete("late").await?;
    env.wait_gone("late").await?;
    std::fs::remove_dir(&cgroup)?;
    result.map(|_| ())
}
