//! The managed root's hostile cases (agent/tests/hostile_root.rs) as they reach an agent through
//! the API server: the reconcile core is the same in both modes, this checks the cluster path
//! reports them (status reason and message) and leaves the other object's pins alone.

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use bpfpin_e2e::*;
use bpfpin_testkit::memory_cgroup::MemoryCgroup;

fn spec(env: &Env, pin_path: &str) -> String {
    format!(
        r#"nodeSelector: {{matchLabels: {{e2e-group: hostile-root}}}}
bytecode: {{path: {}}}
maps:
- name: counts
- name: packets
  pinPath: {pin_path}
programs:
- name: count_getpid
  attach: {{tracepoint: {{category: syscalls, name: sys_enter_getpid}}}}"#,
        env.object_path("counter")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_path_above_another_objects_shared_map_fails_alone() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let _op = env.operator("30s")?;
    let node = env
        .node("hostile-root", &[("e2e-group", "hostile-root")])
        .await?;

    env.apply(&manifest("hostile-owner", &spec(&env, "hostile/packets")));
    env.wait_object("hostile-owner", "Ready", |o| ready_is(o, "True"))
        .await?;
    let pin = node.root().join("shared/hostile/packets");
    let private = node.root().join("hostile-owner/maps/counts");
    // The same inode is the same pin, hence the same map with its contents.
    let inodes = |paths: &[&std::path::Path]| -> Vec<u64> {
        paths
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.ino()))
            .collect()
    };
    let before = inodes(&[&pin, &private]);
    let prog = node.root().join("hostile-owner/progs/count_getpid");
    let prog_inode = std::fs::metadata(&prog)?.ino();

    env.apply(&manifest("hostile-newcomer", &spec(&env, "hostile")));
    let o = env
        .wait_object("hostile-newcomer", "Ready=False on its node", |o| {
            ready_is(o, "False")
                && o.status.as_ref().is_some_and(|s| {
                    !s.failures.is_empty() && s.nodes.as_ref().is_some_and(|n| n.failed == 1)
                })
        })
        .await?;
    let failure = &o.status.as_ref().expect("status").failures[0];
    assert_eq!(failure.reason, "MapConflict", "{failure:?}");
    for needle in [
        "map packets of object hostile-newcomer",
        "/bpfpin/shared/hostile, which is a directory holding the shared map(s)",
        "/bpfpin/shared/hostile/packets of object hostile-owner",
    ] {
        assert!(failure.message.contains(needle), "{needle}: {failure:?}");
    }
    assert!(ready_is(&env.objects().get("hostile-owner").await?, "True"));
    assert_eq!(
        inodes(&[&pin, &private]),
        before,
        "the owner's maps are the same pins"
    );
    assert_eq!(std::fs::metadata(&prog)?.ino(), prog_inode);
    assert!(!node.root().join("hostile-newcomer").exists());

    // A reserved name is refused at admission; the agent would refuse it too (InvalidSpec).
    let (ok, out) = env.kubectl(
        &["apply", "-f", "-"],
        Some(&manifest("shared", &spec(&env, "x"))),
    );
    assert!(!ok && out.contains("reserved"), "{out}");

    for name in ["hostile-owner", "hostile-newcomer"] {
        env.delete(name).await?;
    }
    for name in ["hostile-owner", "hostile-newcomer"] {
        env.wait_gone(name).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_too_big_for_the_agents_memory_cgroup_fail_with_insufficient_memory()
-> anyhow::Result<()> {
    let env = Env::new().await?;
    let _op = env.operator("30s")?;
    let mut node = env
        .node("hostile-mem", &[("e2e-group", "hostile-mem")])
        .await?;
    // The node's agent again, inside a memory cgroup of 192 MiB.
    if let Some(mut agent) = node.agent.take() {
        agent.stop();
    }
    let cg = MemoryCgroup::new("bpfpin-e2e-hostile-mem", 192 << 20);
    let log = std::env::var_os("BPFPIN_E2E_LOGS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("agent-hostile-mem.log");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let child = Command::new("sh")
        .arg("-c")
        .arg(r#"echo $$ > "$1/cgroup.procs" && shift && exec "$@""#)
        .arg("sh")
        .arg(&cg.dir)
        .arg(target.join("debug/bpfpin-agent"))
        .args(["cluster", "--node-name", "hostile-mem", "--bpffs"])
        .arg(&node.bpffs)
        .arg("--bytecode-dir")
        .arg(env.bytecode_dir.path())
        .arg("--cache-dir")
        .arg(env.cache_dir.path().join("hostile-mem"))
        .args(["--heartbeat-interval", "2s", "--metrics-addr", "none"])
        .args(["--lease-namespace", LEASE_NAMESPACE])
        .env("KUBECONFIG", &env.kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let agent = Proc::new("agent of hostile-mem (in a memory cgroup)", child, log);

    let sized = |entries: u64| {
        format!(
            r#"nodeSelector: {{matchLabels: {{e2e-group: hostile-mem}}}}
bytecode: {{path: {}}}
maps:
- name: counts
  maxEntries: {entries}
programs:
- name: count_getpid
  attach: {{tracepoint: {{category: syscalls, name: sys_enter_getpid}}}}"#,
            env.object_path("counter")
        )
    };
    env.apply(&manifest("hostile-mem-small", &sized(4)));
    env.wait_object("hostile-mem-small", "Ready", |o| ready_is(o, "True"))
        .await?;
    // 50M u64 slots: about 381 MiB, twice the limit.
    env.apply(&manifest("hostile-mem-huge", &sized(50_000_000)));
    let o = env
        .wait_object("hostile-mem-huge", "Ready=False on its node", |o| {
            ready_is(o, "False")
                && o.status.as_ref().is_some_and(|s| {
                    !s.failures.is_empty() && s.nodes.as_ref().is_some_and(|n| n.failed == 1)
                })
        })
        .await?;
    let failure = &o.status.as_ref().expect("status").failures[0];
    assert_eq!(failure.reason, "InsufficientMemory", "{failure:?}");
    for needle in [
        "object hostile-mem-huge: its new maps need about 381.5 MiB (counts 381.5 MiB",
        &format!("the agent's memory cgroup {}", cg.dir.display()),
        "limit 192.0 MiB",
    ] {
        assert!(failure.message.contains(needle), "{needle}: {failure:?}");
    }
    assert_eq!(cg.oom_kills(), 0, "the OOM killer never acted");
    assert!(ready_is(
        &env.objects().get("hostile-mem-small").await?,
        "True"
    ));
    assert!(!node.root().join("hostile-mem-huge").exists());

    for name in ["hostile-mem-small", "hostile-mem-huge"] {
        env.delete(name).await?;
    }
    for name in ["hostile-mem-small", "hostile-mem-huge"] {
        env.wait_gone(name).await?;
    }
    drop(agent);
    node.remove();
    drop(cg);
    Ok(())
}
