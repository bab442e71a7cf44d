//! `bytecode.url` and `bytecode.image` against hostile servers on loopback (common/hostile.rs):
//! servers that never answer, stall, trickle, lie about lengths, send too much, redirect in loops
//! or to forbidden places, registries with bombs in their layers, huge or self-referencing
//! manifests, huge or malformed challenges and tokens, wrong digests. Each case runs beside good
//! objects and asserts its exact outcome (the reason and a message naming the object's source),
//! that nothing of it is pinned, that the good objects are, and the agent's peak memory (VmHWM)
//! and time. Also `--source-allow` (checked on the resolved address, redirects included) and
//! `--require-digest`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bpfpin_agent::pin::desired::sha256_hex;
use common::hostile::*;
use common::registry::{OCI_INDEX, OCI_MANIFEST, gzip, tar};
use common::*;

const AGENT: &str = env!("CARGO_BIN_EXE_bpfpin-agent");

/// The agent's peak memory in every run here (about 15 MiB idle; one body of at most 32 MiB).
const MAX_RSS_KIB: i64 = 128 << 10;

/// The counter's object with `n` zero bytes after it: loads the same, has a digest of its own,
/// so that the cache (by digest) cannot serve one case with another's download.
fn padded(n: usize) -> Vec<u8> {
    let mut b = bytes("counter");
    b.resize(b.len() + n, 0);
    b
}

fn url_object(name: &str, url: &str, sha256: &str) -> String {
    format!(
        "apiVersion: bpfpin.io/v1alpha1\nkind: BpfObject\nmetadata: {{name: {name}}}\nspec:\n  bytecode: {{url: '{url}'}}\n  sha256: '{sha256}'\n  programs: [{{name: count_getpid}}]\n"
    )
}

fn image_object(name: &str, image: &str) -> String {
    format!(
        "apiVersion: bpfpin.io/v1alpha1\nkind: BpfObject\nmetadata: {{name: {name}}}\nspec:\n  bytecode: {{image: '{image}'}}\n  programs: [{{name: count_getpid}}]\n"
    )
}

fn path_object(name: &str, path: &str, sha256: Option<&str>) -> String {
    let sha256 = sha256.map_or_else(String::new, |d| format!("  sha256: '{d}'\n"));
    format!(
        "apiVersion: bpfpin.io/v1alpha1\nkind: BpfObject\nmetadata: {{name: {name}}}\nspec:\n  bytecode: {{path: '{path}'}}\n{sha256}  programs: [{{name: count_getpid}}]\n"
    )
}

fn once(manifests: &Path, fs: &Bpffs, extra: &[&str]) -> Run {
    let cache = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(AGENT);
    cmd.args(["local", "--once", "--manifests"])
        .arg(manifests)
        .arg("--bpffs")
        .arg(fs.path())
        .arg("--cache-dir")
        .arg(cache.path())
        .args(extra)
        .env("RUST_LOG", "error");
    run_measured(&cmd)
}

/// The line of `object` in the agent's report.
fn line<'a>(run: &'a Run, object: &str) -> &'a str {
    let prefix = format!("{object}: ");
    run.stderr
        .lines()
        .chain(run.stdout.lines())
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line for {object}:\n{}\n{}", run.stdout, run.stderr))
}

/// `object` failed with `reason` and a message containing every one of `says`, and nothing of
/// it is pinned.
fn failed(run: &Run, fs: &Bpffs, object: &str, reason: &str, says: &[&str]) {
    let l = line(run, object);
    assert!(
        l.starts_with(&format!("{object}: FAILED {reason}: ")),
        "{object}: expected {reason}: {l}"
    );
    for s in says {
        assert!(l.contains(s), "{object}: expected {s:?} in: {l}");
    }
    assert!(
        !fs.root().join(object).exists(),
        "{object} left pins: {:?}",
        tree(&fs.root().join(object))
    );
}

fn pinned(fs: &Bpffs, object: &str) -> bool {
    fs.root().join(object).join("progs/count_getpid").exists()
}

fn bounded(run: &Run, seconds: u64) {
    assert!(
        run.max_rss_kib < MAX_RSS_KIB,
        "peak memory {} KiB over {} KiB",
        run.max_rss_kib,
        MAX_RSS_KIB
    );
    assert!(
        run.elapsed < Duration::from_secs(seconds),
        "took {:?} (bound {seconds} s)\n{}",
        run.elapsed,
        run.stderr
    );
}

/// The first line of the file `log` that contains `needle`, polled until `within`.
fn wait_for(log: &Path, needle: &str, within: Duration) -> String {
    let until = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(needle)) {
            return l.to_owned();
        }
        assert!(
            Instant::now() < until,
            "no {needle:?} within {within:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what} not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

/// The agent in watch mode, killed on drop.
struct Watching(std::process::Child);

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_server_that_never_answers_delays_no_other_object_nor_unpins_its_own() {
    let object = bytes("counter");
    let digest = sha256_hex(&object);
    let server = Hostile::start(vec![
        route("/a.o", ok(object.clone())),
        route("/b.o", ok(object.clone())),
        route("/c.o", ok(padded(1))),
        route("/never.o", never_answers()),
    ]);
    let manifests = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let logs = tempfile::tempdir().expect("tempdir");
    write(
        manifests.path(),
        "good.yaml",
        &url_object("good", &server.url("/a.o"), &digest),
    );
    write(
        manifests.path(),
        "slow.yaml",
        &url_object("slow", &server.url("/b.o"), &digest),
    );
    let fs = Bpffs::new();
    let log = logs.path().join("stderr");
    let _agent = Watching(
        Command::new(AGENT)
            .args(["local", "--manifests"])
            .arg(manifests.path())
            .arg("--bpffs")
            .arg(fs.path())
            .arg("--cache-dir")
            .arg(cache.path())
            .args(["--fetch-timeout", "15s"])
            .env("RUST_LOG", "error")
            .stdout(std::fs::File::create(logs.path().join("stdout")).expect("log"))
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("agent"),
    );
    wait_until("both pinned", Duration::from_secs(20), || {
        pinned(&fs, "good") && pinned(&fs, "slow")
    });
    let slow_prog = prog_id(&fs.root().join("slow/progs/count_getpid"));

    // `slow` moves to a server that never answers (a new digest: the cache cannot serve it),
    // and a new object arrives from a good server at the same time.
    let never = server.url("/never.o");
    write(
        manifests.path(),
        "slow.yaml",
        &url_object("slow", &never, &"1".repeat(64)),
    );
    write(
        manifests.path(),
        "new.yaml",
        &url_object("new", &server.url("/c.o"), &sha256_hex(&padded(1))),
    );
    let waited = wait_until("the new object pinned", Duration::from_secs(8), || {
        pinned(&fs, "new")
    });
    assert!(
        server.hits("/never.o") >= 1,
        "the slow download is under way"
    );
    // While its download runs, `slow` keeps its previous version.
    let still = wait_for(
        &log,
        "slow: FAILED BytecodeUnavailable: still downloading",
        Duration::from_secs(10),
    );
    assert!(
        still.contains(&never) && still.contains("(the previous version stays pinned)"),
        "{still}"
    );
    assert_eq!(
        prog_id(&fs.root().join("slow/progs/count_getpid")),
        slow_prog
    );
    assert!(pinned(&fs, "good"));

    // Its download ends at the time bound with a reason naming the URL and the bound; the
    // previous version is still pinned.
    let timed_out = wait_for(&log, "timed out", Duration::from_secs(60));
    assert!(
        timed_out.starts_with("slow: FAILED BytecodeUnavailable: downloading ")
            && timed_out.contains(&never)
            && timed_out.contains("no complete answer within 15 s (--fetch-timeout"),
        "{timed_out}"
    );
    assert_eq!(
        prog_id(&fs.root().join("slow/progs/count_getpid")),
        slow_prog
    );
    eprintln!(
        "the new object was pinned {waited:?} after the edit, the slow one still downloading"
    );
}

#[test]
fn a_one_shot_run_waits_for_the_bound_not_for_every_attempt() {
    let object = bytes("counter");
    let digest = sha256_hex(&object);
    let server = Hostile::start(vec![
        route("/a.o", ok(object)),
        route("/never.o", never_answers()),
    ]);
    let manifests = tempfile::tempdir().expect("tempdir");
    write(
        manifests.path(),
        "good.yaml",
        &url_object("good", &server.url("/a.o"), &digest),
    );
    write(
        manifests.path(),
        "slow.yaml",
        &url_object("slow", &server.url("/never.o"), &"1".repeat(64)),
    );
    let fs = Bpffs::new();
    let run = once(manifests.path(), &fs, &["--fetch-timeout", "3s"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(pinned(&fs, "good"));
    let expected = format!(
        "downloading {} timed out: no complete answer within 3 s (--fetch-timeout",
        server.url("/never.o")
    );
    failed(&run, &fs, "slow", "BytecodeUnavailable", &[&expected]);
    // One bound for all attempts (3 s), not 3 attempts of 30 s.
    bounded(&run, 15);
}

#[test]
fn hostile_url_servers_fail_their_object_alone() {
    let object = bytes("counter");
    let digest = sha256_hex(&object);
    // Every hostile case serves (or would serve) bytes of its own ([`padded`]).
    let huge_header = "x".repeat(100 << 10);
    let cases: Vec<(&str, Handler, Vec<u8>)> = vec![
        ("never", never_answers(), padded(1)),
        (
            "stall",
            stall_after_headers(object.len() as u64 + 2),
            padded(2),
        ),
        (
            "trickle",
            trickle(padded(3), Duration::from_millis(20)),
            padded(3),
        ),
        (
            "short",
            lying_length(padded(4)[..100].to_vec(), object.len() + 4),
            padded(4),
        ),
        ("long", lying_length(padded(105), object.len()), padded(105)),
        ("declared", stall_after_headers(1 << 30), padded(6)),
        ("chunked", chunked_zeros(1 << 30), padded(7)),
        ("loop", redirect("/loop.o"), padded(8)),
        ("tofile", redirect("file:///etc/passwd"), padded(9)),
        (
            "tometadata",
            redirect("http://169.254.169.254/latest/meta-data/"),
            padded(10),
        ),
        (
            "headers",
            status(200, vec![("X-Huge", huge_header)], padded(11)),
            padded(11),
        ),
        ("wrong", ok(b"not the object".to_vec()), padded(12)),
        ("gone", status(404, vec![], b"no".to_vec()), padded(13)),
    ];
    let mut routes = vec![route("/good.o", ok(object.clone()))];
    let mut wanted = Vec::new();
    for (name, handler, body) in cases {
        routes.push(route(format!("/{name}.o"), handler));
        wanted.push((name, sha256_hex(&body)));
    }
    let server = Hostile::start(routes);
    let manifests = tempfile::tempdir().expect("tempdir");
    write(
        manifests.path(),
        "good.yaml",
        &url_object("good", &server.url("/good.o"), &digest),
    );
    for (name, sha256) in &wanted {
        let text = url_object(name, &server.url(&format!("/{name}.o")), sha256);
        write(manifests.path(), &format!("{name}.yaml"), &text);
    }
    write(
        manifests.path(),
        "metadata.yaml",
        &url_object(
            "metadata",
            "http://169.254.169.254/latest/meta-data/x.o",
            // Not the good object's digest, which the cache could serve without the network.
            &"3".repeat(64),
        ),
    );
    std::fs::copy(bpf_object("counter"), manifests.path().join("local.o")).expect("copy");
    write(
        manifests.path(),
        "local.yaml",
        &path_object("local", "local.o", None),
    );

    let fs = Bpffs::new();
    let run = once(manifests.path(), &fs, &["--fetch-timeout", "3s"]);
    eprintln!(
        "{}\npeak {} KiB, {:?}",
        run.stderr, run.max_rss_kib, run.elapsed
    );
    assert_eq!(run.code, Some(1));
    assert!(
        pinned(&fs, "good") && pinned(&fs, "local"),
        "{}",
        run.stderr
    );
    let url = |p: &str| server.url(p);
    let timed_out = "timed out: no complete answer within 3 s (--fetch-timeout";
    let unavailable = "BytecodeUnavailable";
    failed(
        &run,
        &fs,
        "never",
        unavailable,
        &[&url("/never.o"), timed_out],
    );
    failed(
        &run,
        &fs,
        "stall",
        unavailable,
        &[&url("/stall.o"), timed_out],
    );
    failed(
        &run,
        &fs,
        "trickle",
        unavailable,
        &[&url("/trickle.o"), timed_out],
    );
    failed(
        &run,
        &fs,
        "short",
        unavailable,
        &[&url("/short.o"), "failed 3 times", "reading the body"],
    );
    failed(
        &run,
        &fs,
        "long",
        "DigestMismatch",
        &[&url("/long.o"), "spec.sha256 says"],
    );
    let limit = "larger than the 32 MiB limit";
    failed(
        &run,
        &fs,
        "declared",
        unavailable,
        &[&url("/declared.o"), limit],
    );
    failed(
        &run,
        &fs,
        "chunked",
        unavailable,
        &[&url("/chunked.o"), limit],
    );
    failed(
        &run,
        &fs,
        "loop",
        unavailable,
        &[&url("/loop.o"), "more than 5 redirects"],
    );
    // A `file:` location is not followed to the disk: what comes back is an HTTP answer.
    failed(
        &run,
        &fs,
        "tofile",
        unavailable,
        &[&url("/tofile.o"), "HTTP 404"],
    );
    let refused = "not allowed by --source-allow";
    failed(
        &run,
        &fs,
        "tometadata",
        "SourceNotAllowed",
        &[&url("/tometadata.o"), "169.254.169.254", refused],
    );
    failed(
        &run,
        &fs,
        "metadata",
        "SourceNotAllowed",
        &["169.254.169.254", refused],
    );
    failed(
        &run,
        &fs,
        "headers",
        unavailable,
        &[&url("/headers.o"), "failed 3 times"],
    );
    failed(&run, &fs, "wrong", "DigestMismatch", &[&url("/wrong.o")]);
    failed(
        &run,
        &fs,
        "gone",
        unavailable,
        &[&url("/gone.o"), "HTTP 404"],
    );
    assert_eq!(
        server.hits("/loop.o"),
        6,
        "one request and 5 redirects, not retried"
    );
    bounded(&run, 40);
}

fn traversal_tar(object: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    // set_path refuses `..`: write the name's bytes directly, as a hostile builder would.
    let name = b"../../etc/cron.d/x.o";
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_size(object.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(object);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

fn links_tar() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut entry = |name: &str, kind: tar::EntryType, link: Option<&str>| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(0);
        header.set_mode(0o644);
        if let Some(link) = link {
            header.set_link_name(link).expect("link");
        }
        header.set_path(name).expect("path");
        header.set_cksum();
        builder.append(&header, std::io::empty()).expect("append");
    };
    entry("bpf.o", tar::EntryType::Symlink, Some("/etc/shadow"));
    entry("hard.o", tar::EntryType::Link, Some("/etc/passwd"));
    entry("dev.o", tar::EntryType::Char, None);
    entry("fifo.o", tar::EntryType::Fifo, None);
    builder.into_inner().expect("tar")
}

/// An index with one entry, for this node's platform, of digest `d`.
fn index_of(d: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_INDEX, "digest": d, "size": 1,
            "platform": {"architecture": bpfpin_agent::bytecode::image::node_architecture(), "os": "linux"}}],
    }))
    .expect("index")
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(b))
}

#[test]
fn hostile_registries_fail_their_image_alone() {
    let object = bytes("counter");
    let config = bytecode_config();
    let good_layer = gzip(&tar(&[("bpf.o", &object)]));
    let mut routes = Vec::new();
    let mut add = |repo: &str, layer: &[u8]| {
        let (r, d) = image_routes(repo, "v1", &config, layer);
        routes.extend(r);
        d
    };
    add("good", &good_layer);
    // Images of their own (another manifest digest), so that the cache cannot serve them.
    let own_layer = |repo: &str| gzip(&tar(&[("bpf.o", &object), ("NOTE", repo.as_bytes())]));
    add("bombobject", &gzip_bomb("bpf.o", 2));
    add("bombfiller", &gzip_bomb("README", 2));
    let names: Vec<String> = (0..12_000).map(|i| format!("f{i}")).collect();
    let many: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
    add("manyentries", &gzip(&tar(&many)));
    add("traversal", &gzip(&traversal_tar(&object)));
    add("links", &gzip(&links_tar()));
    let good_manifest = add("pinnedwrong", &good_layer);
    // Asked for a digest it does not have, the registry answers with another manifest.
    let wrong = format!("sha256:{}", "b".repeat(64));
    let (r, _) = image_routes("pinnedwrong", &wrong, &config, &good_layer);
    routes.extend(r.into_iter().take(1));
    // A layer whose bytes are not those of its digest.
    let blob_layer = own_layer("blobdigest");
    let (mut r, _) = image_routes("blobdigest", "v1", &config, &blob_layer);
    let layer_path = format!("/v2/blobdigest/blobs/{}", sha(&blob_layer));
    r.retain(|(p, _)| p != &layer_path);
    r.push(route(layer_path, ok(gzip(&tar(&[("bpf.o", b"evil")])))));
    routes.extend(r);
    // Manifests over the limit: with a length, and chunked without one.
    routes.push(route(
        "/v2/hugemanifest/manifests/v1",
        typed(Some(OCI_MANIFEST), vec![b' '; 5 << 20]),
    ));
    routes.push(route(
        "/v2/hugechunked/manifests/v1",
        chunked_zeros(1 << 30),
    ));
    // An index whose entry, when asked for, gets the index itself.
    let looped = format!("sha256:{}", "a".repeat(64));
    routes.push(route(
        "/v2/selfindex/manifests/v1",
        typed(Some(OCI_INDEX), index_of(&looped)),
    ));
    routes.push(route(
        format!("/v2/selfindex/manifests/{looped}"),
        typed(Some(OCI_INDEX), index_of(&looped)),
    ));
    // Indexes nested three deep, each digest true, down to a good manifest.
    let i1 = index_of(&good_manifest);
    let i2 = index_of(&sha(&i1));
    let i3 = index_of(&sha(&i2));
    for i in [&i1, &i2] {
        routes.push(route(
            format!("/v2/deepindex/manifests/{}", sha(i)),
            typed(Some(OCI_INDEX), i.clone()),
        ));
    }
    routes.push(route(
        "/v2/deepindex/manifests/v1",
        typed(Some(OCI_INDEX), i3),
    ));
    // Challenges: huge, without a realm, a realm on a link-local address.
    let challenge = |c: String| status(401, vec![("WWW-Authenticate", c)], b"{}".to_vec());
    let huge = format!("Bearer realm=\"{}\"", "x".repeat(100 << 10));
    routes.push(route("/v2/hugechallenge/manifests/v1", challenge(huge)));
    routes.push(route(
        "/v2/norealm/manifests/v1",
        challenge("Bearer ,,=,\"\\".into()),
    ));
    let metadata = "Bearer realm=\"https://169.254.169.254/token\"".to_owned();
    routes.push(route("/v2/metadatarealm/manifests/v1", challenge(metadata)));
    let server = Hostile::start(routes);
    // Token services that answer 2 MiB, or never; a registry sending clients to them.
    let tokens = Hostile::start(vec![
        route(
            "/hugetoken",
            ok(format!("{{\"token\": \"{}\"}}", "t".repeat(2 << 20)).into_bytes()),
        ),
        route("/stalltoken", never_answers()),
    ]);
    let realm = |p: &str| format!("Bearer realm=\"{}\"", tokens.url(p));
    let tokened = Hostile::start(vec![
        route("/v2/hugetoken/manifests/v1", challenge(realm("/hugetoken"))),
        route(
            "/v2/stalltoken/manifests/v1",
            challenge(realm("/stalltoken")),
        ),
    ]);

    let manifests = tempfile::tempdir().expect("tempdir");
    let host = server.host();
    let image = |repo: &str| format!("{host}/{repo}:v1");
    for repo in [
        "good",
        "bombobject",
        "bombfiller",
        "manyentries",
        "traversal",
        "links",
        "blobdigest",
        "hugemanifest",
        "hugechunked",
        "selfindex",
        "deepindex",
        "hugechallenge",
        "norealm",
        "metadatarealm",
    ] {
        write(
            manifests.path(),
            &format!("{repo}.yaml"),
            &image_object(repo, &image(repo)),
        );
    }
    let wrong_pin = format!("{host}/pinnedwrong@sha256:{}", "b".repeat(64));
    write(
        manifests.path(),
        "pinnedwrong.yaml",
        &image_object("pinnedwrong", &wrong_pin),
    );
    for repo in ["hugetoken", "stalltoken"] {
        let text = image_object(repo, &format!("{}/{repo}:v1", tokened.host()));
        write(manifests.path(), &format!("{repo}.yaml"), &text);
    }

    let fs = Bpffs::new();
    let run = once(manifests.path(), &fs, &["--fetch-timeout", "3s"]);
    eprintln!(
        "{}\npeak {} KiB, {:?}",
        run.stderr, run.max_rss_kib, run.elapsed
    );
    assert_eq!(run.code, Some(1));
    assert!(pinned(&fs, "good"), "{}", run.stderr);
    let img = |repo: &str| format!("image {}", image(repo));
    let unavailable = "BytecodeUnavailable";
    failed(
        &run,
        &fs,
        "bombobject",
        unavailable,
        &[&img("bombobject"), "bpf.o is larger than the 32 MiB limit"],
    );
    failed(
        &run,
        &fs,
        "bombfiller",
        unavailable,
        &[&img("bombfiller"), "its layer is not a valid tar archive"],
    );
    failed(
        &run,
        &fs,
        "manyentries",
        unavailable,
        &[&img("manyentries"), "more than 10000 entries"],
    );
    failed(
        &run,
        &fs,
        "traversal",
        unavailable,
        &[&img("traversal"), "unsafe path \"../../etc/cron.d/x.o\""],
    );
    failed(
        &run,
        &fs,
        "links",
        unavailable,
        &[
            &img("links"),
            "no regular *.o file",
            "bpf.o is a Symlink",
            "hard.o is a Link",
            "dev.o is a Char",
            "fifo.o is a Fifo",
        ],
    );
    failed(
        &run,
        &fs,
        "blobdigest",
        "DigestMismatch",
        &[
            &img("blobdigest"),
            "its layer blob sha256:",
            "arrived with digest",
        ],
    );
    failed(
        &run,
        &fs,
        "pinnedwrong",
        "DigestMismatch",
        &[&format!("image {wrong_pin}"), "the reference pins"],
    );
    failed(
        &run,
        &fs,
        "hugemanifest",
        unavailable,
        &[&img("hugemanifest"), "manifest is over the 4 MiB limit"],
    );
    failed(
        &run,
        &fs,
        "hugechunked",
        unavailable,
        &[&img("hugechunked"), "manifest is over the 4 MiB limit"],
    );
    failed(
        &run,
        &fs,
        "selfindex",
        "DigestMismatch",
        &[&img("selfindex"), &format!("the reference pins {looped}")],
    );
    failed(
        &run,
        &fs,
        "deepindex",
        unavailable,
        &[&img("deepindex"), "its indexes nest too deep"],
    );
    failed(
        &run,
        &fs,
        "hugechallenge",
        unavailable,
        &[
            &img("hugechallenge"),
            &format!("registry {host} unreachable"),
            "failed 3 times",
        ],
    );
    failed(
        &run,
        &fs,
        "norealm",
        unavailable,
        &[&img("norealm"), "bearer challenge without a realm"],
    );
    failed(
        &run,
        &fs,
        "metadatarealm",
        "SourceNotAllowed",
        &[
            &img("metadatarealm"),
            "token service https://169.254.169.254/token",
            "not allowed by --source-allow",
        ],
    );
    failed(
        &run,
        &fs,
        "hugetoken",
        unavailable,
        &[&tokens.url("/hugetoken"), "answered more than 1 MiB"],
    );
    failed(
        &run,
        &fs,
        "stalltoken",
        unavailable,
        &[&tokens.url("/stalltoken"), "timed out"],
    );
    bounded(&run, 40);
}

#[test]
fn source_allow_is_checked_on_the_resolved_address_and_on_redirects() {
    let object = bytes("counter");
    let digest = sha256_hex(&object);
    let server = Hostile::start(vec![
        route("/a.o", ok(object.clone())),
        route("/b.o", ok(padded(1))),
        route("/c.o", ok(padded(2))),
    ]);
    let redirecting = Hostile::start(vec![route("/r.o", redirect(&server.url("/c.o")))]);
    let port = |h: &Hostile| h.host().rsplit(':').next().expect("port").to_owned();
    let by_name = format!("http://localhost:{}/b.o", port(&server));
    let redirected = format!("http://localhost:{}/r.o", port(&redirecting));
    let manifests = tempfile::tempdir().expect("tempdir");
    write(
        manifests.path(),
        "byip.yaml",
        &url_object("byip", &server.url("/a.o"), &digest),
    );
    write(
        manifests.path(),
        "byname.yaml",
        &url_object("byname", &by_name, &sha256_hex(&padded(1))),
    );
    write(
        manifests.path(),
        "redirected.yaml",
        &url_object("redirected", &redirected, &sha256_hex(&padded(2))),
    );

    // Only 10.0.0.0/8: the name resolves to 127.0.0.1, which is refused (DNS does not get
    // around it), and nothing is retried.
    let fs = Bpffs::new();
    let run = once(manifests.path(), &fs, &["--source-allow", "10.0.0.0/8"]);
    assert_eq!(run.code, Some(1));
    failed(
        &run,
        &fs,
        "byip",
        "SourceNotAllowed",
        &["127.0.0.1 (127.0.0.1) is not allowed by --source-allow (allowed: 10.0.0.0/8)"],
    );
    failed(
        &run,
        &fs,
        "byname",
        "SourceNotAllowed",
        &["localhost (", "127.0.0.1", "not allowed by --source-allow"],
    );
    assert_eq!(server.hits("/a.o"), 0, "nothing connected");

    // The name `localhost` is allowed, 127.0.0.1 is not: the redirect from localhost to
    // 127.0.0.1 is refused at its connection.
    let fs = Bpffs::new();
    let run = once(manifests.path(), &fs, &["--source-allow", "localhost"]);
    assert!(pinned(&fs, "byname"), "{}", run.stderr);
    failed(&run, &fs, "byip", "SourceNotAllowed", &["127.0.0.1"]);
    failed(
        &run,
        &fs,
        "redirected",
        "SourceNotAllowed",
        &[
            "127.0.0.1 (127.0.0.1) is not allowed",
            "(allowed: localhost)",
        ],
    );
    assert_eq!(redirecting.hits("/r.o"), 1);

    // The loopback networks: all three.
    let fs = Bpffs::new();
    let run = once(
        manifests.path(),
        &fs,
        &["--source-allow", "127.0.0.0/8", "--source-allow", "::1"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(pinned(&fs, "byip") && pinned(&fs, "byname") && pinned(&fs, "redirected"));

    // A bad rule is a usage error.
    let fs = Bpffs::new();
    let run = once(manifests.path(), &fs, &["--source-allow", "10.0.0.0/33"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("--source-allow \"10.0.0.0/33\""),
        "{}",
        run.stderr
    );
}

#[test]
fn require_digest_refuses_sources_that_pin_nothing() {
    let object = bytes("counter");
    let digest = sha256_hex(&object);
    let layer = gzip(&tar(&[("bpf.o", &object)]));
    let (routes, manifest_digest) = image_routes("counter", "v1", &bytecode_config(), &layer);
    let registry = Hostile::start(routes);
    let server = Hostile::start(vec![route("/a.o", ok(object.clone()))]);
    let manifests = tempfile::tempdir().expect("tempdir");
    std::fs::copy(bpf_object("counter"), manifests.path().join("c.o")).expect("copy");
    write(
        manifests.path(),
        "a.yaml",
        &path_object("pathpinned", "c.o", Some(&digest)),
    );
    write(
        manifests.path(),
        "b.yaml",
        &path_object("pathloose", "c.o", None),
    );
    write(
        manifests.path(),
        "c.yaml",
        &url_object("urlpinned", &server.url("/a.o"), &digest),
    );
    let by_tag = format!("{}/counter:v1", registry.host());
    let by_digest = format!("{}/counter@{manifest_digest}", registry.host());
    write(
        manifests.path(),
        "d.yaml",
        &image_object("imagetag", &by_tag),
    );
    write(
        manifests.path(),
        "e.yaml",
        &image_object("imagedigest", &by_digest),
    );

    let fs = Bpffs::new();
    let run = once(manifests.path(), &fs, &["--require-digest"]);
    assert_eq!(run.code, Some(1));
    for ok in ["pathpinned", "urlpinned", "imagedigest"] {
        assert!(pinned(&fs, ok), "{ok}: {}", run.stderr);
    }
    failed(
        &run,
        &fs,
        "pathloose",
        "DigestRequired",
        &[
            "spec.sha256 is missing and --require-digest is set: every bytecode.path source needs it",
        ],
    );
    failed(
        &run,
        &fs,
        "imagetag",
        "DigestRequired",
        &[
            &format!("bytecode.image {by_tag} names no digest"),
            "@sha256:",
        ],
    );
    assert_eq!(
        registry.hits("/v2/counter/manifests/v1"),
        0,
        "a refused source is not fetched"
    );

    // Without the flag, all five are pinned.
    let fs = Bpffs::new();
    let run = once(manifests.path(), &fs, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}
