//! Image signature verification end to end: agents in cluster mode with
//! `--image-verification-policy enforce` and a key folder, a real registry
//! (bpfpin-testkit's `registry`) and signatures made by the real `cosign` CLI
//! (bpfpin-testkit's `cosign`). A signed image becomes Ready on every node; an unsigned one
//! fails on every node with `SignatureInvalid` in the BpfObject's status and its Degraded
//! condition, and the signed one is untouched; one that opts out of verification where the
//! agents do not allow it fails the same way, saying so. Run through `e2e/run`.

use bpfpin_testkit::{cosign, registry};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bpfpin_e2e::*;

/// Restarts `node`'s agent with the verification flags (and the flags `Env::node` gives it).
fn restart_with_verification(env: &Env, node: &mut SimNode, keys: &Path) -> anyhow::Result<()> {
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
    let log = logs.join(format!("agent-{}-verifying.log", node.name));
    let child = Command::new(target.join("debug/bpfpin-agent"))
        .args(["cluster", "--node-name", &node.name, "--bpffs"])
        .arg(&node.bpffs)
        .arg("--bytecode-dir")
        .arg(env.bytecode_dir.path())
        .arg("--cache-dir")
        .arg(env.cache_dir.path().join(&node.name))
        .args(["--heartbeat-interval", "2s", "--metrics-addr", "none"])
        .args(["--lease-namespace", LEASE_NAMESPACE])
        .args(["--image-verification-policy", "enforce"])
        .arg("--image-verification-keys")
        .arg(keys)
        .env("KUBECONFIG", &env.kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    node.agent = Some(Proc::new(format!("agent of {}", node.name), child, log));
    Ok(())
}

fn image_spec(image: &str) -> String {
    format!(
        "nodeSelector: {{matchLabels: {{e2e-group: sig}}}}\nbytecode: {{image: '{image}'}}\nprograms:\n- name: count_getpid\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_pins_signed_images_and_fails_unsigned_ones_with_signature_invalid()
-> anyhow::Result<()> {
    let env = Env::new().await?;
    let _op = env.operator("30s")?;
    let registry = registry::Registry::start(false);
    let work = tempfile::tempdir()?;
    let key = cosign::KeyPair::generate(work.path(), "release");
    let keys = cosign::key_dir(&[&key]);
    let object = std::fs::read(env.object_path("counter"))?;
    let layer = registry::gzip(&registry::tar(&[("bpf.o", &object)]));
    let (signed_digest, _) =
        registry.push_image("sig/signed", "v1", &layer, registry::counter_labels());
    key.sign(&format!("{}/sig/signed@{signed_digest}", registry.host()));
    // Other bytes beside the same .o: another manifest digest, which nobody signed (a signature
    // belongs to a digest, so the same image under another name would be signed).
    let other_layer = registry::gzip(&registry::tar(&[("bpf.o", &object), ("NOTE", b"unsigned")]));
    registry.push_image(
        "sig/unsigned",
        "v1",
        &other_layer,
        registry::counter_labels(),
    );

    let mut nodes = [
        env.node("sig-1", &[("e2e-group", "sig")]).await?,
        env.node("sig-2", &[("e2e-group", "sig")]).await?,
    ];
    for node in &mut nodes {
        restart_with_verification(&env, node, keys.path())?;
    }

    let signed_image = format!("{}/sig/signed:v1", registry.host());
    let unsigned_image = format!("{}/sig/unsigned:v1", registry.host());
    env.apply(&manifest("sig-signed", &image_spec(&signed_image)));
    env.apply(&manifest("sig-unsigned", &image_spec(&unsigned_image)));
    // An object that opts out, on nodes that do not allow it (no
    // --image-verification-allow-opt-out): the API server admits the field, the agents refuse.
    env.apply(&manifest(
        "sig-optout",
        &image_spec(&unsigned_image).replace(
            "bytecode: {image:",
            "bytecode: {skipSignatureVerification: true, image:",
        ),
    ));

    env.wait_object("sig-signed", "Ready on 2 nodes", |o| {
        ready_is(o, "True")
            && o.status
                .as_ref()
                .and_then(|s| s.nodes.as_ref())
                .is_some_and(|n| n.ready == 2)
    })
    .await?;
    let o = env
        .wait_object("sig-unsigned", "failed on 2 nodes", |o| {
            ready_is(o, "False")
                && o.status
                    .as_ref()
                    .and_then(|s| s.nodes.as_ref())
                    .is_some_and(|n| n.failed == 2)
        })
        .await?;
    let failures = &o.status.as_ref().expect("status").failures;
    assert_eq!(failures.len(), 2, "{failures:?}");
    for failure in failures {
        assert_eq!(failure.reason, "SignatureInvalid", "{failure:?}");
        assert!(
            failure.message.contains(&format!(
                "image {unsigned_image}: not signed: the registry has no cosign signature for sha256:"
            )),
            "{failure:?}"
        );
    }
    let o_out = env
        .wait_object("sig-optout", "failed on 2 nodes", |o| {
            o.status
                .as_ref()
                .and_then(|s| s.nodes.as_ref())
                .is_some_and(|n| n.failed == 2)
        })
        .await?;
    for failure in &o_out.status.as_ref().expect("status").failures {
        assert_eq!(failure.reason, "SignatureInvalid", "{failure:?}");
        assert!(
            failure.message.contains(&format!(
                "image {unsigned_image}: spec.bytecode.skipSignatureVerification is set, but this node verifies signatures (--image-verification-policy enforce) and does not let objects opt out (--image-verification-allow-opt-out)"
            )),
            "{failure:?}"
        );
    }
    let (degraded, reason, msg) = condition(&o, "Degraded").expect("Degraded");
    assert_eq!(
        (degraded.as_str(), reason.as_str()),
        ("True", "SignatureInvalid"),
        "{msg}"
    );
    for node in &nodes {
        assert!(
            node.has_program("sig-signed", "count_getpid"),
            "{} pinned it",
            node.name
        );
        assert!(
            !node.has_object("sig-unsigned"),
            "nothing of sig-unsigned on {}",
            node.name
        );
    }

    for node in &nodes {
        assert!(
            !node.has_object("sig-optout"),
            "nothing of sig-optout on {}",
            node.name
        );
    }

    for name in ["sig-signed", "sig-unsigned", "sig-optout"] {
        env.delete(name).await?;
    }
    for name in ["sig-signed", "sig-unsigned", "sig-optout"] {
        env.wait_gone(name).await?;
    }
    Ok(())
}
