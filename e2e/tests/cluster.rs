//! End to end on a real kube-apiserver + etcd + kube-controller-manager, with the operator and
//! simulated nodes running real agents on private bpffs mounts. Run through `e2e/run` (it starts
//! the control plane, installs crds/ and runs these one at a time).

use std::time::Instant;

use bpfpin_crds::ObjectPhase;
use bpfpin_e2e::*;
use bpfpin_testkit::{cgroup, registry};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};

fn spec_counter(env: &Env, group: &str) -> String {
    format!(
        r#"nodeSelector: {{matchLabels: {{e2e-group: {group}}}}}
bytecode: {{path: {}}}
programs:
- name: count_getpid
  attach: {{tracepoint: {{category: syscalls, name: sys_enter_getpid}}}}
- name: tail_target"#,
        env.object_path("counter")
    )
}

/// The manifest of `examples/<path>` as a user applies it, with a nodeSelector for this test's
/// nodes (`e2e-group: <group>`) and `edit` applied to its spec; returns the object's name too.
fn example(path: &str, group: &str, edit: impl FnOnce(&mut serde_yaml::Value)) -> (String, String) {
    let file = repo().join("examples").join(path);
    let text = std::fs::read_to_string(&file).expect("the example's manifest");
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
    doc["spec"]["nodeSelector"] =
        serde_yaml::from_str(&format!("{{matchLabels: {{e2e-group: {group}}}}}")).expect("yaml");
    edit(&mut doc["spec"]);
    let name = doc["metadata"]["name"].as_str().expect("name").to_owned();
    (name, serde_yaml::to_string(&doc).expect("yaml"))
}

/// Waits until `name` has its Ready condition at `ready` (`True`/`False`) with `nodes` nodes
/// ready (`True`) or failed (`False`).
async fn settled_on(
    env: &Env,
    name: &str,
    ready: &'static str,
    nodes: i32,
) -> anyhow::Result<bpfpin_crds::BpfObject> {
    env.wait_object(name, &format!("Ready={ready} on {nodes} nodes"), move |o| {
        ready_is(o, ready)
            && o.status
                .as_ref()
                .and_then(|s| s.nodes.as_ref())
                .is_some_and(|n| if ready == "True" { n.ready } else { n.failed } == nodes)
    })
    .await
}

/// Waits until `name` is Ready on `nodes` nodes.
async fn ready_on(env: &Env, name: &str, nodes: i32) -> anyhow::Result<bpfpin_crds::BpfObject> {
    settled_on(env, name, "True", nodes).await
}

/// Waits until `name` is Ready=False at its generation with `nodes` failed nodes.
async fn failed_on(env: &Env, name: &str, nodes: i32) -> anyhow::Result<bpfpin_crds::BpfObject> {
    settled_on(env, name, "False", nodes).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_relabelling_and_deletion() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let _op = env.operator("30s")?;
    let a = env
        .node("sel-a", &[("e2e-group", "sel"), ("role", "edge")])
        .await?;
    let b = env
        .node("sel-b", &[("e2e-group", "sel"), ("role", "edge")])
        .await?;
    let c = env
        .node("sel-c", &[("e2e-group", "sel"), ("role", "core")])
        .await?;

    let spec = spec_counter(&env, "sel").replace(
        "nodeSelector: {matchLabels: {e2e-group: sel}}",
        "nodeSelector: {matchLabels: {e2e-group: sel, role: edge}}",
    );
    let started = Instant::now();
    env.apply(&manifest("sel", &spec));
    // What a user types: kubectl wait.
    env.kubectl_ok(
        &[
            "wait",
            "--for=condition=Ready",
            "bpfobject/sel",
            "--timeout=60s",
        ],
        None,
    );
    eprintln!(
        "e2e: kubectl apply -> kubectl wait Ready on 2 of 3 nodes: {} ms",
        started.elapsed().as_millis()
    );

    let o = env
        .wait_object("sel", "Ready on 2 nodes", |o| ready_is(o, "True"))
        .await?;
    let counts = o
        .status
        .as_ref()
        .and_then(|s| s.nodes.clone())
        .expect("node counts");
    assert_eq!((counts.selected, counts.ready, counts.failed), (2, 2, 0));
    assert!(a.has_program("sel", "count_getpid") && b.has_program("sel", "count_getpid"));
    assert!(!c.has_object("sel"), "sel-c is not selected");
    let state = env.node_states().get("sel-a").await?;
    let e = entry(&state, "sel").expect("sel-a reports sel");
    assert_eq!(e.phase, ObjectPhase::Pinned);
    assert_eq!(
        a.program_id("sel", "count_getpid"),
        e.programs
            .iter()
            .find(|p| p.name == "count_getpid")
            .map(|p| p.id),
        "the reported id is the pinned program's"
    );

    // Relabelling moves the pins.
    env.label_node("sel-c", "role", Some("edge")).await?;
    env.wait_object("sel", "selected on 3 nodes", |o| {
        ready_is(o, "True")
            && o.status
                .as_ref()
                .and_then(|s| s.nodes.as_ref())
                .is_some_and(|n| n.selected == 3)
    })
    .await?;
    assert!(
        c.has_program("sel", "count_getpid"),
        "pinned on sel-c after relabelling"
    );
    env.label_node("sel-a", "role", Some("core")).await?;
    env.wait_node_state("sel-a", "sel unpinned", |s| entry(s, "sel").is_none())
        .await?;
    assert!(
        !a.has_object("sel"),
        "unpinned from sel-a after relabelling"
    );
    env.wait_object("sel", "selected on 2 nodes", |o| {
        ready_is(o, "True")
            && o.status
                .as_ref()
                .and_then(|s| s.nodes.as_ref())
                .is_some_and(|n| n.selected == 2)
    })
    .await?;

    // Deletion: the finalizer holds until the nodes have unpinned.
    let o = env.objects().get("sel").await?;
    assert!(
        o.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "bpfpin.io/unpin")
    );
    env.delete("sel").await?;
    env.wait_gone("sel").await?;
    for n in [&a, &b, &c] {
        assert!(
            !n.has_object("sel"),
            "{} still has sel after deletion",
            n.name
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_objects_fail_with_a_reason_and_others_stay_ready() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let _op = env.operator("30s")?;
    let _x = env.node("bad-x", &[("e2e-group", "bad")]).await?;
    let _y = env.node("bad-y", &[("e2e-group", "bad")]).await?;

    // A ConfigMap source that works, and one whose key is missing.
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    let bytes = std::fs::read(env.object_path("counter"))?;
    let mut cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bpfpin-e2e-counter"},
    }))?;
    cm.binary_data = Some([("counter.bpf.o".to_string(), k8s_openapi::ByteString(bytes))].into());
    let _ = cms.delete("bpfpin-e2e-counter", &Default::default()).await;
    cms.create(&PostParams::default(), &cm).await?;

    let good = spec_counter(&env, "bad");
    let from_cm = good.replace(
        &format!("bytecode: {{path: {}}}", env.object_path("counter")),
        "bytecode: {configMap: {namespace: default, name: bpfpin-e2e-counter, key: counter.bpf.o}}",
    );
    let missing_key = from_cm.replace("key: counter.bpf.o", "key: nope.bpf.o");
    let rejected = format!(
        "nodeSelector: {{matchLabels: {{e2e-group: bad}}}}\nbytecode: {{path: {}}}\nprograms: [{{name: unchecked}}]",
        env.object_path("rejected")
    );
    env.apply(&manifest("good", &good));
    env.apply(&manifest("from-cm", &from_cm));
    env.apply(&manifest("missing-key", &missing_key));
    env.apply(&manifest("rejected", &rejected));

    env.wait_object("good", "Ready", |o| ready_is(o, "True"))
        .await?;
    env.wait_object("from-cm", "Ready", |o| ready_is(o, "True"))
        .await?;
    let o = failed_on(&env, "missing-key", 2).await?;
    let (_, _, msg) = condition(&o, "Ready").expect("Ready");
    let failure = &o.status.as_ref().expect("status").failures[0];
    assert_eq!(failure.reason, "BytecodeUnavailable", "{failure:?}");
    assert!(failure.message.contains("nope.bpf.o"), "{failure:?}");
    assert!(
        msg.contains("bad-x") || msg.contains("bad-y"),
        "the message names the nodes: {msg}"
    );

    let o = failed_on(&env, "rejected", 2).await?;
    let (degraded, reason, msg) = condition(&o, "Degraded").expect("Degraded");
    assert_eq!(
        (degraded.as_str(), reason.as_str()),
        ("True", "VerifierRejected"),
        "{msg}"
    );
    assert!(
        msg.contains("unchecked") && msg.contains("invalid mem access"),
        "{msg}"
    );

    // The good ones are still Ready after the bad ones failed.
    assert!(ready_is(&env.objects().get("good").await?, "True"));
    assert!(ready_is(&env.objects().get("from-cm").await?, "True"));

    // Admission refuses what bpffs would refuse, with a message that says why.
    let (ok, out) = env.kubectl(&["apply", "-f", "-"], Some(&manifest("my.counter", &good)));
    assert!(
        !ok && out.contains("bpffs refuses names containing '.'"),
        "{out}"
    );
    let escape = good.replace(
        "programs:",
        "maps: [{name: counts, pinPath: ../../etc}]\nprograms:",
    );
    let (ok, out) = env.kubectl(&["apply", "-f", "-"], Some(&manifest("escape", &escape)));
    assert!(!ok && out.contains("must not contain '..'"), "{out}");

    for name in ["good", "from-cm", "missing-key", "rejected"] {
        env.delete(name).await?;
    }
    for name in ["good", "from-cm", "missing-key", "rejected"] {
        env.wait_gone(name).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_completes_with_a_dead_agent_and_a_deleted_node() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let _op = env.operator("8s")?;
    let [d1, mut d2, mut d3] = env.nodes("del").await?;
    let started = Instant::now();
    env.apply(&manifest("del", &spec_counter(&env, "del")));
    env.wait_object("del", "Ready on 3 nodes", |o| ready_is(o, "True"))
        .await?;
    eprintln!(
        "e2e: kubectl apply -> Ready on 3 nodes: {} ms",
        started.elapsed().as_millis()
    );

    // del-3: agent killed and node deleted. del-2: agent killed, node kept (stale heartbeat).
    d3.agent.as_mut().expect("agent").kill();
    d3.remove();
    d2.agent.as_mut().expect("agent").kill();
    let started = Instant::now();
    env.delete("del").await?;
    env.wait_gone("del").await?;
    eprintln!(
        "e2e: deletion with one dead node and one deleted node: {} ms",
        started.elapsed().as_millis()
    );
    assert!(!d1.has_object("del"), "the live node unpinned");
    assert!(
        d2.has_object("del"),
        "the dead agent could not unpin (its pins stay until it returns)"
    );

    // When del-2's agent comes back, its sweep removes what nobody wants.
    d2.start_agent()?;
    env.wait_node_state("del-2", "del swept", |s| {
        entry(s, "del").is_none() && s.status.is_some()
    })
    .await?;
    let deadline = Instant::now() + WAIT;
    while d2.has_object("del") {
        assert!(Instant::now() < deadline, "del-2 never swept del");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restart_keeps_program_ids() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let _op = env.operator("30s")?;
    let mut r = env.node("restart-1", &[("e2e-group", "restart")]).await?;
    env.apply(&manifest("restart", &spec_counter(&env, "restart")));
    env.wait_object("restart", "Ready", |o| ready_is(o, "True"))
        .await?;
    let before = r.program_id("restart", "count_getpid").expect("pinned");
    let reported = reported_ids(&env.node_states().get("restart-1").await?, "restart");

    r.agent.as_mut().expect("agent").kill();
    let old_beat = env.heartbeat("restart-1").await?;
    assert!(old_beat.is_some(), "the agent renewed its heartbeat Lease");
    r.start_agent()?;
    // The restarted agent renews its Lease once its BpfNodeState is current.
    env.wait_heartbeat_after("restart-1", old_beat).await?;
    let state = env.node_states().get("restart-1").await?;
    assert_eq!(
        r.program_id("restart", "count_getpid"),
        Some(before),
        "same kernel program"
    );
    assert_eq!(reported_ids(&state, "restart"), reported);
    let log = std::fs::read_to_string(&r.agent.as_ref().expect("agent").log)?;
    assert!(
        log.contains("adopted"),
        "the restarted agent adopted the pins:\n{log}"
    );

    env.delete("restart").await?;
    env.wait_gone("restart").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_restart_during_reconciliation_converges() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let _op = env.operator("60s")?;
    let n = env.node("outage-1", &[("e2e-group", "outage")]).await?;
    env.apply(&manifest("before-outage", &spec_counter(&env, "outage")));
    env.wait_object("before-outage", "Ready", |o| ready_is(o, "True"))
        .await?;

    env.apply(&manifest("during-outage", &spec_counter(&env, "outage")));
    // Kill the API server right away, while the agent and operator reconcile.
    let state = std::env::var("BPFPIN_E2E_STATE").unwrap_or_else(|_| "/tmp/bpfpin-e2e".into());
    let pidfile = std::fs::read_to_string(format!("{state}/run/kube-apiserver.pid"))?;
    let pid = pidfile.split_whitespace().next().expect("pid");
    assert!(
        std::process::Command::new("kill")
            .args(["-9", pid])
            .status()?
            .success()
    );
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        n.has_program("before-outage", "count_getpid"),
        "an outage unpins nothing"
    );

    let out = std::process::Command::new(repo().join("e2e/scripts/cluster"))
        .arg("up")
        .output()?;
    assert!(
        out.status.success(),
        "e2e/scripts/cluster up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.wait_object("during-outage", "Ready after the outage", |o| {
        ready_is(o, "True")
    })
    .await?;
    env.wait_object("before-outage", "still Ready", |o| ready_is(o, "True"))
        .await?;
    assert!(n.has_program("during-outage", "count_getpid"));
    assert!(n.has_program("before-outage", "count_getpid"));

    for name in ["before-outage", "during-outage"] {
        env.delete(name).await?;
        env.wait_gone(name).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_and_the_crds_are_admitted() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let mut dirs: Vec<_> = std::fs::read_dir(repo().join("examples"))?
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        let dir = dir.display().to_string();
        env.kubectl_ok(&["apply", "--dry-run=server", "-f", &dir], None);
    }
    // `kubectl explain` explains.
    let (ok, out) = env.kubectl(&["explain", "bpfobject.spec.maps.pinPath"], None);
    assert!(ok && out.contains("shared"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configmap_example_pins_when_its_configmap_appears_and_reloads_when_it_changes()
-> anyhow::Result<()> {
    let env = Env::new().await?;
    let _op = env.operator("30s")?;
    let nodes: [SimNode; 2] = env.nodes("cm").await?;
    // examples/configmap names default/counter-bytecode, key counter.bpf.o.
    let (name, manifest) = example("configmap/configmap.yaml", "cm", |_| {});
    env.kubectl_ok(
        &[
            "-n",
            "default",
            "delete",
            "configmap",
            "counter-bytecode",
            "--ignore-not-found",
        ],
        None,
    );

    // Applied before its ConfigMap exists: BytecodeUnavailable on every node, saying which.
    // (A ConfigMap without the key: bad_objects_fail_with_a_reason_and_others_stay_ready.)
    env.apply(&manifest);
    let o = failed_on(&env, &name, 2).await?;
    let failure = &o.status.as_ref().expect("status").failures[0];
    assert_eq!(failure.reason, "BytecodeUnavailable", "{failure:?}");
    assert!(
        failure
            .message
            .contains("configMap default/counter-bytecode does not exist"),
        "{failure:?}"
    );

    // The ConfigMap made as the example's comment says: the object is pinned everywhere.
    let from_file = format!("--from-file={}", env.object_path("counter"));
    let started = Instant::now();
    env.kubectl_ok(
        &[
            "-n",
            "default",
            "create",
            "configmap",
            "counter-bytecode",
            &from_file,
        ],
        None,
    );
    ready_on(&env, &name, 2).await?;
    eprintln!(
        "e2e: ConfigMap created -> Ready on 2 nodes: {} ms",
        started.elapsed().as_millis()
    );
    let mut before = Vec::new();
    for n in &nodes {
        assert!(n.has_program(&name, "count_getpid"), "{} pinned it", n.name);
        before.push(reported_ids(&env.node_states().get(&n.name).await?, &name));
    }

    // A changed object under the same key (the counter with another INCREMENT), updated as the
    // comment says: every node loads the new one, and the object stays Ready.
    let changed = tempfile::tempdir()?;
    let src = changed.path().join("counter.bpf.c");
    std::fs::write(
        &src,
        std::fs::read_to_string(repo().join("examples/counter/counter.bpf.c"))?
            .replace("INCREMENT = 1;", "INCREMENT = 2;"),
    )?;
    let object = changed.path().join("counter.bpf.o");
    compile_bpf(&src, &object)?;
    let from_file = format!("--from-file={}", object.display());
    let updated = env.kubectl_ok(
        &[
            "-n",
            "default",
            "create",
            "configmap",
            "counter-bytecode",
            &from_file,
            "--dry-run=client",
            "-o",
            "yaml",
        ],
        None,
    );
    let started = Instant::now();
    env.kubectl_ok(&["apply", "-f", "-"], Some(&updated));
    for (n, before) in nodes.iter().zip(&before) {
        let state = env
            .wait_node_state(&n.name, "the new object pinned", |s| {
                entry(s, &name).is_some_and(|e| e.phase == ObjectPhase::Pinned)
                    && !reported_ids(s, &name).is_empty()
                    && reported_ids(s, &name) != *before
            })
            .await?;
        assert_eq!(
            n.program_id(&name, "count_getpid"),
            reported_ids(&state, &name)
                .iter()
                .find(|(p, _)| p == "count_getpid")
                .map(|(_, id)| *id),
            "{} pins the program it reports",
            n.name
        );
    }
    eprintln!(
        "e2e: ConfigMap updated -> new object pinned on 2 nodes: {} ms",
        started.elapsed().as_millis()
    );
    ready_on(&env, &name, 2).await?;

    env.delete(&name).await?;
    env.wait_gone(&name).await?;
    for n in &nodes {
        assert!(!n.has_object(&name), "{} unpinned it", n.name);
    }
    env.kubectl_ok(
        &["-n", "default", "delete", "configmap", "counter-bytecode"],
        None,
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_example_pulls_with_its_pull_secret_and_a_wrong_password_fails_alone()
-> anyhow::Result<()> {
    let env = Env::new().await?;
    let _op = env.operator("30s")?;
    let nodes: [SimNode; 2] = env.nodes("img").await?;
    // A real registry with htpasswd auth; the image built from examples/image/Containerfile.
    let registry = registry::Registry::start(true);
    let (user, password) = registry.credentials.clone().expect("credentials");
    let image = registry.push_containerfile(
        &repo().join("examples/image/Containerfile"),
        env.bytecode_dir.path(),
        "bpfpin/counter",
        "v1",
    );

    // Pull Secrets as the example's comment makes them: the right password and a wrong one.
    let server = format!("--docker-server={}", registry.host());
    let username = format!("--docker-username={user}");
    for (secret, password) in [
        ("registry-creds", password.as_str()),
        ("registry-creds-wrong", "wrong-password"),
    ] {
        env.kubectl_ok(
            &[
                "-n",
                "default",
                "delete",
                "secret",
                secret,
                "--ignore-not-found",
            ],
            None,
        );
        let password = format!("--docker-password={password}");
        env.kubectl_ok(
            &[
                "-n",
                "default",
                "create",
                "secret",
                "docker-registry",
                secret,
                &server,
                &username,
                &password,
            ],
            None,
        );
    }
    let with_secret = |secret: &str| {
        let image = image.clone();
        let secret = secret.to_owned();
        move |spec: &mut serde_yaml::Value| {
            spec["bytecode"]["image"] = image.into();
            spec["bytecode"]["imagePullSecret"] =
                serde_yaml::from_str(&format!("{{namespace: default, name: {secret}}}"))
                    .expect("yaml");
        }
    };

    let (good, manifest) = example("image/image.yaml", "img", with_secret("registry-creds"));
    let started = Instant::now();
    env.apply(&manifest);
    ready_on(&env, &good, 2).await?;
    eprintln!(
        "e2e: image with imagePullSecret: kubectl apply -> Ready on 2 nodes: {} ms",
        started.elapsed().as_millis()
    );
    for n in &nodes {
        assert!(n.has_program(&good, "count_getpid"), "{} pinned it", n.name);
    }
    // Each node pulled it itself, into its own cache.
    let digest =
        bpfpin_agent::pin::desired::sha256_hex(&std::fs::read(env.object_path("counter"))?);
    for n in &nodes {
        let cached = env
            .cache_dir
            .path()
            .join(&n.name)
            .join(format!("{digest}.bpf.o"));
        assert!(cached.is_file(), "{} is missing", cached.display());
    }

    // The same image with the wrong password: failed on every node, naming the registry; the
    // first object stays Ready.
    let wrong = "counter-from-image-wrong-secret";
    let (_, manifest) = example(
        "image/image.yaml",
        "img",
        with_secret("registry-creds-wrong"),
    );
    let manifest = manifest.replace(&format!("name: {good}"), &format!("name: {wrong}"));
    let started = Instant::now();
    env.apply(&manifest);
    let o = failed_on(&env, wrong, 2).await?;
    eprintln!(
        "e2e: image with a wrong pull-secret password: kubectl apply -> failed on 2 nodes: {} ms",
        started.elapsed().as_millis()
    );
    let failure = &o.status.as_ref().expect("status").failures[0];
    assert_eq!(failure.reason, "BytecodeUnavailable", "{failure:?}");
    let refused = format!(
        "image {image}: registry {} refused the credentials of \"docker\" (HTTP 401)",
        registry.host()
    );
    assert!(failure.message.contains(&refused), "{failure:?}");
    let (degraded, reason, msg) = condition(&o, "Degraded").expect("Degraded");
    assert_eq!(
        (degraded.as_str(), reason.as_str()),
        ("True", "BytecodeUnavailable"),
        "{msg}"
    );
    assert!(msg.contains(&registry.host()), "{msg}");
    assert!(ready_is(&env.objects().get(&good).await?, "True"));
    for n in &nodes {
        assert!(n.has_program(&good, "count_getpid"), "{} kept it", n.name);
        assert!(!n.has_object(wrong), "nothing of {wrong} on {}", n.name);
    }

    for name in [good.as_str(), wrong] {
        env.delete(name).await?;
    }
    for name in [good.as_str(), wrong] {
        env.wait_gone(name).await?;
    }
    for secret in ["registry-creds", "registry-creds-wrong"] {
        env.kubectl_ok(&["-n", "default", "delete", "secret", secret], None);
    }
    Ok(())
}

/// An attach point that appears after the object: the agents retry with backoff and the object
/// becomes Ready by itself, with nothing to re-apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_attach_point_is_retried_until_it_appears() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let _op = env.operator("30s")?;
    let _nodes: [SimNode; 2] = env.nodes("late").await?;
    compile_bpf(
        &repo().join("examples/cgroup-skb/cgroup_skb.bpf.c"),
        &env.bytecode_dir.path().join("cgroup_skb.bpf.o"),
    )?;

    // The cgroup of a workload that has not started yet.
    let cgroup = cgroup::cgroup2_mount().join("bpfpin-e2e-late");
    let _ = std::fs::remove_dir(&cgroup);
    let spec = format!(
        "nodeSelector: {{matchLabels: {{e2e-group: late}}}}\nbytecode: {{path: {}}}\nprograms:\n- name: count_egress\n  attach: {{cgroupSkb: {{cgroup: {}, direction: Egress}}}}",
        env.object_path("cgroup_skb"),
        cgroup.display()
    );
    env.apply(&manifest("late", &spec));
    let o = failed_on(&env, "late", 2).await?;
    let failure = &o.status.as_ref().expect("status").failures[0];
    assert_eq!(failure.reason, "AttachFailed", "{failure:?}");
    assert!(
        failure.message.contains("bpfpin-e2e-late"),
        "the message names the cgroup: {failure:?}"
    );

    // The workload starts: its cgroup appears, and the agents' next retry attaches.
    std::fs::create_dir(&cgroup)?;
    let started = Instant::now();
    let result = ready_on(&env, "late", 2).await;
    eprintln!(
        "e2e: cgroup created -> Ready on 2 nodes (retry with backoff, first after 5 s): {} ms",
        started.elapsed().as_millis()
    );
    env.delete("late").await?;
    env.wait_gone("late").await?;
    std::fs::remove_dir(&cgroup)?;
    result.map(|_| ())
}
