//! Node capability gating and provenance end to end: two cluster-mode agents whose kernels
//! differ (one reports its real kernel, the other is started with the test-only
//! `--test-only-kernel-release 5.10.0-e2e`), the operator, and the real API server.
//! - each agent publishes its probe in its `BpfNodeState` and labels its `Node`;
//! - `spec.requires` keeps an object off the node that fails it: that node is `Unsupported`
//!   (listed with the requirement), not selected and not `Degraded`, and nothing is pinned there;
//! - each node reports the sha256 of what it runs, the operator shows it in `status.digest` and
//!   in `kubectl get bpfo -o wide`, and a change of the running bytecode is an Event;
//! - an image source reports its manifest digest and the key that verified its signature.
//!
//! Run through `e2e/run`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bpfpin_crds::{AttachType, ObjectPhase, ProgramType};
use bpfpin_e2e::*;
use bpfpin_testkit::{cosign, registry};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};

/// What a test-only agent reports as its kernel.
const FAKE_RELEASE: &str = "5.10.0-e2e";

/// Restarts `node`'s agent with the flags `Env::node` gives it plus `extra`.
fn restart_with(env: &Env, node: &mut SimNode, extra: &[&str], tag: &str) -> anyhow::Result<()> {
    if let Some(mut agent) = node.agent.take() {
        agent.stop();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let logs = std::env::var_os("BPFPIN_E2E_LOGS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("bpfpin-e2e-logs"));
    std::fs::create_dir_all(&logs)?;
    let log = logs.join(format!("agent-{}-{tag}.log", node.name));
    let child = Command::new(target.join("debug/bpfpin-agent"))
        .args(["cluster", "--node-name", &node.name, "--bpffs"])
        .arg(&node.bpffs)
        .arg("--bytecode-dir")
        .arg(env.bytecode_dir.path())
        .arg("--cache-dir")
        .arg(env.cache_dir.path().join(&node.name))
        .args([
            "--heartbeat-interval",
            "2s",
            "--metrics-addr",
            "none",
            "--label-node",
        ])
        .args(["--lease-namespace", LEASE_NAMESPACE])
        .args(extra)
        .env("KUBECONFIG", &env.kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    node.agent = Some(Proc::new(format!("agent of {}", node.name), child, log));
    Ok(())
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned()
}

async fn node_labels(
    env: &Env,
    node: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let n = Api::<Node>::all(env.client.clone()).get(node).await?;
    Ok(n.metadata.labels.unwrap_or_default())
}

/// The Events whose subject is the BpfObject `name` with reason `reason`, by note.
async fn events(env: &Env, name: &str, reason: &str) -> anyhow::Result<Vec<String>> {
    let list = Api::<Event>::all(env.client.clone())
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("BpfObject") && r.name.as_deref() == Some(name)
                })
        })
        .filter_map(|e| e.note)
        .collect())
}

fn spec(path: &str, requires: &str) -> String {
    format!(
        "nodeSelector: {{matchLabels: {{e2e-group: cap}}}}\nbytecode: {{path: '{path}'}}\nrequires: {requires}\nprograms:\n- name: count_getpid\n  attach: {{tracepoint: {{category: syscalls, name: sys_enter_getpid}}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requires_keeps_objects_off_nodes_that_cannot_run_them_and_nodes_report_what_they_run()
-> anyhow::Result<()> {
    let env = Env::new().await?;
    let _op = env.operator("30s")?;
    let mut real = env.node("cap-1", &[("e2e-group", "cap")]).await?;
    let mut old = env.node("cap-2", &[("e2e-group", "cap")]).await?;
    restart_with(&env, &mut real, &[], "real")?;
    restart_with(
        &env,
        &mut old,
        &["--test-only-kernel-release", FAKE_RELEASE],
        "old-kernel",
    )?;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?
        .trim()
        .to_owned();

    // 1. The probe, in each BpfNodeState, and the node labels.
    let s1 = env
        .wait_node_state("cap-1", "capabilities published", |s| {
            s.status
                .as_ref()
                .and_then(|s| s.capabilities.as_ref())
                .is_some()
        })
        .await?;
    let caps = s1
        .status
        .and_then(|s| s.capabilities)
        .expect("capabilities");
    assert_eq!(caps.kernel, release);
    assert!(caps.btf, "this kernel has BTF");
    assert!(caps.program_types.contains(&ProgramType::Tracepoint));
    assert!(caps.program_types.contains(&ProgramType::Xdp));
    if !Path::new("/sys/bus/event_source/devices/kprobe").exists()
        && !Path::new("/sys/kernel/tracing/kprobe_events").exists()
        && !Path::new("/sys/kernel/debug/tracing/kprobe_events").exists()
    {
        assert!(!caps.attach_types.contains(&AttachType::Kprobe), "{caps:?}");
    }
    let s2 = env
        .wait_node_state("cap-2", "the test-only kernel published", |s| {
            s.status
                .as_ref()
                .and_then(|s| s.capabilities.as_ref())
                .is_some_and(|c| c.kernel == FAKE_RELEASE)
        })
        .await?;
    assert_eq!(
        s2.status
            .and_then(|s| s.capabilities)
            .map(|c| c.program_types),
        Some(caps.program_types.clone()),
        "only the kernel release is overridden"
    );
    let major_minor: String = release.split('.').take(2).collect::<Vec<_>>().join(".");
    let l1 = node_labels(&env, "cap-1").await?;
    assert_eq!(l1.get("bpfpin.io/kernel"), Some(&major_minor), "{l1:?}");
    assert_eq!(l1.get("bpfpin.io/btf").map(String::as_str), Some("true"));
    assert_eq!(
        l1.get("e2e-group").map(String::as_str),
        Some("cap"),
        "other labels stay"
    );
    let l2 = node_labels(&env, "cap-2").await?;
    assert_eq!(
        l2.get("bpfpin.io/kernel").map(String::as_str),
        Some("5.10"),
        "{l2:?}"
    );

    // 2. spec.requires: a 6.1+ object runs on the real node only; cap-2 is Unsupported.
    let counter = env.object_path("counter");
    env.apply(&manifest(
        "cap-new",
        &spec(
            &counter,
            "{kernel: {min: '6.1'}, btf: true, attachTypes: [tracepoint]}",
        ),
    ));
    let o = env
        .wait_object("cap-new", "Ready on cap-1, unsupported on cap-2", |o| {
            ready_is(o, "True")
                && o.status
                    .as_ref()
                    .and_then(|s| s.nodes.as_ref())
                    .is_some_and(|n| n.ready == 1 && n.unsupported == 1)
        })
        .await?;
    let status = o.status.as_ref().expect("status");
    let nodes = status.nodes.as_ref().expect("nodes");
    assert_eq!((nodes.selected, nodes.failed), (1, 0), "{nodes:?}");
    assert_eq!(status.nodes_ready.as_deref(), Some("1/1"));
    let why = format!("kernel {FAKE_RELEASE} is older than spec.requires.kernel.min 6.1");
    assert_eq!(status.unsupported.len(), 1);
    assert_eq!(status.unsupported[0].node, "cap-2");
    assert_eq!(status.unsupported[0].requirement, why);
    let (degraded, _, _) = condition(&o, "Degraded").expect("Degraded");
    assert_eq!(degraded, "False", "an unsupported node is not a failure");
    let (_, reason, msg) = condition(&o, "Ready").expect("Ready");
    assert_eq!(reason, "Pinned");
    assert!(
        msg.contains(&format!("not run on cap-2 (spec.requires: cap-2: {why})")),
        "{msg}"
    );
    assert!(real.has_program("cap-new", "count_getpid"));
    assert!(
        !old.has_object("cap-new"),
        "nothing is pinned where the kernel falls short"
    );
    // The agent refuses too, with the same reason.
    let s2 = env
        .wait_node_state("cap-2", "cap-new listed as Unsupported", |s| {
            entry(s, "cap-new").is_some_and(|e| e.phase == ObjectPhase::Unsupported)
        })
        .await?;
    let e = entry(&s2, "cap-new").expect("entry");
    assert_eq!(e.reason.as_deref(), Some("Unsupported"));
    assert_eq!(e.message.as_deref(), Some(why.as_str()));
    assert!(e.programs.is_empty() && e.bytecode_sha256.is_none());

    // An object only a trampoline kernel runs: unsupported everywhere here, Ready with a reason.
    let tracing = caps.program_types.contains(&ProgramType::Tracing);
    if !tracing {
        env.apply(&manifest(
            "cap-fentry",
            &spec(&counter, "{attachTypes: [fentry]}"),
        ));
        let o = env
            .wait_object("cap-fentry", "unsupported on both nodes", |o| {
                o.status
                    .as_ref()
                    .and_then(|s| s.nodes.as_ref())
                    .is_some_and(|n| n.unsupported == 2)
            })
            .await?;
        let (ready, reason, msg) = condition(&o, "Ready").expect("Ready");
        assert_eq!(
            (ready.as_str(), reason.as_str()),
            ("True", "NoSupportedNodes"),
            "{msg}"
        );
        assert!(
            msg.contains("the kernel cannot attach fentry programs (spec.requires.attachTypes)"),
            "{msg}"
        );
        assert_eq!(condition(&o, "Degraded").expect("Degraded").0, "False");
        assert!(!real.has_object("cap-fentry") && !old.has_object("cap-fentry"));
        env.delete("cap-fentry").await?;
    }

    // Loosening spec.requires takes cap-2 in.
    env.apply(&manifest(
        "cap-new",
        &spec(&counter, "{kernel: {min: '5.4', max: '6.99'}}"),
    ));
    env.wait_object("cap-new", "Ready on both nodes", |o| {
        ready_is(o, "True")
            && o.status
                .as_ref()
                .and_then(|s| s.nodes.as_ref())
                .is_some_and(|n| n.ready == 2 && n.unsupported == 0)
    })
    .await?;
    assert!(old.has_program("cap-new", "count_getpid"));

    // 3. Provenance: the sha256 each node runs, the digest in status and `-o wide`.
    let sha = sha256_of(Path::new(&counter));
    for node in ["cap-1", "cap-2"] {
        let s = env.node_states().get(node).await?;
        assert_eq!(
            entry(&s, "cap-new").and_then(|e| e.bytecode_sha256.clone()),
            Some(sha.clone()),
            "{node}"
        );
    }
    let o = env
        .wait_object("cap-new", "one digest", |o| {
            o.status.as_ref().and_then(|s| s.digest.as_deref()) == Some(&format!("sha256:{sha}"))
        })
        .await?;
    assert_eq!(o.status.as_ref().and_then(|s| s.image_digest.clone()), None);
    let wide = env.kubectl_ok(&["get", "bpfo", "cap-new", "-o", "wide"], None);
    assert!(
        wide.contains("DIGEST") && wide.contains(&format!("sha256:{sha}")),
        "{wide}"
    );
    assert!(wide.contains("UNSUPPORTED"), "{wide}");
    let plain = env.kubectl_ok(&["get", "bpfo", "cap-new"], None);
    assert!(
        !plain.contains("DIGEST"),
        "the digest is a wide column: {plain}"
    );

    // New bytecode (an extra, unlisted program): each node's digest changes, with an Event.
    let src = std::fs::read_to_string(repo().join("examples/counter/counter.bpf.c"))?;
    let variant_src = env.bytecode_dir.path().join("counter-v2.bpf.c");
    std::fs::write(
        &variant_src,
        format!(
            "{src}\nSEC(\"tracepoint/syscalls/sys_enter_getppid\")\nint gating_variant(void *ctx) {{ return 0; }}\n"
        ),
    )?;
    let variant = env.bytecode_dir.path().join("counter-v2.bpf.o");
    compile_bpf(&variant_src, &variant)?;
    let sha2 = sha256_of(&variant);
    assert_ne!(sha, sha2);
    env.apply(&manifest(
        "cap-new",
        &spec(
            &variant.display().to_string(),
            "{kernel: {min: '5.4', max: '6.99'}}",
        ),
    ));
    env.wait_object("cap-new", "the new digest on both nodes", |o| {
        o.status.as_ref().and_then(|s| s.digest.as_deref()) == Some(&format!("sha256:{sha2}"))
            && ready_is(o, "True")
    })
    .await?;
    let deadline = std::time::Instant::now() + WAIT;
    let notes = loop {
        let notes = events(&env, "cap-new", "BytecodeChanged").await?;
        if notes.len() >= 2 || std::time::Instant::now() > deadline {
            break notes;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    for node in ["cap-1", "cap-2"] {
        let want = format!("node {node} now runs bytecode sha256:{sha2}, was sha256:{sha}");
        assert!(notes.iter().any(|n| n == &want), "{want} in {notes:#?}");
    }

    // Tightening spec.requires again unpins it from the node that now falls short.
    env.apply(&manifest(
        "cap-new",
        &spec(&variant.display().to_string(), "{kernel: {min: '6.1'}}"),
    ));
    env.wait_object("cap-new", "unsupported on cap-2 again", |o| {
        o.status
            .as_ref()
            .and_then(|s| s.nodes.as_ref())
            .is_some_and(|n| n.ready == 1 && n.unsupported == 1)
    })
    .await?;
    env.wait_node_state("cap-2", "cap-new Unsupported again", |s| {
        entry(s, "cap-new").is_some_and(|e| e.phase == ObjectPhase::Unsupported)
    })
    .await?;
    assert!(
        !old.has_object("cap-new"),
        "unpinned where the kernel falls short"
    );
    assert!(real.has_program("cap-new", "count_getpid"));
    env.delete("cap-new").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_source_reports_its_manifest_digest_and_the_key_that_verified_it()
-> anyhow::Result<()> {
    let env = Env::new().await?;
    let _op = env.operator("30s")?;
    let registry = registry::Registry::start(false);
    let work = tempfile::tempdir()?;
    let key = cosign::KeyPair::generate(work.path(), "release");
    let keys = cosign::key_dir(&[&key]);
    let object = std::fs::read(env.object_path("counter"))?;
    let layer = registry::gzip(&registry::tar(&[("bpf.o", &object)]));
    let (digest, _) = registry.push_image("cap/signed", "v1", &layer, registry::counter_labels());
    key.sign(&format!("{}/cap/signed@{digest}", registry.host()));
    // The fingerprint the agent reports: sha256 of the public key's DER form.
    let der = Command::new("openssl")
        .args(["pkey", "-pubin", "-outform", "DER", "-in"])
        .arg(key.public())
        .output()?;
    assert!(
        der.status.success(),
        "{}",
        String::from_utf8_lossy(&der.stderr)
    );
    let der_file = work.path().join("release.der");
    std::fs::write(&der_file, &der.stdout)?;
    let fingerprint = format!("sha256:{}", sha256_of(&der_file));

    let mut node = env.node("capimg-1", &[("e2e-group", "capimg")]).await?;
    let keys_arg = keys.path().display().to_string();
    restart_with(
        &env,
        &mut node,
        &[
            "--image-verification-policy",
            "enforce",
            "--image-verification-keys",
            &keys_arg,
        ],
        "verifying",
    )?;
    let image = format!("{}/cap/signed:v1", registry.host());
    env.apply(&manifest(
        "capimg",
        &format!(
            "nodeSelector: {{matchLabels: {{e2e-group: capimg}}}}\nbytecode: {{image: '{image}'}}\nprograms:\n- name: count_getpid\n"
        ),
    ));
    let o = env
        .wait_object("capimg", "Ready with its image digest", |o| {
            ready_is(o, "True")
                && o.status.as_ref().and_then(|s| s.image_digest.as_deref())
                    == Some(digest.as_str())
        })
        .await?;
    let sha = sha256_of(Path::new(&env.object_path("counter")));
    assert_eq!(
        o.status.as_ref().and_then(|s| s.digest.clone()),
        Some(format!("sha256:{sha}"))
    );
    let s = env.node_states().get("capimg-1").await?;
    let e = entry(&s, "capimg").expect("entry");
    assert_eq!(e.bytecode_sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(e.image_digest.as_deref(), Some(digest.as_str()));
    assert_eq!(e.verified_by.as_deref(), Some(fingerprint.as_str()));
    env.delete("capimg").await?;
    Ok(())
}
