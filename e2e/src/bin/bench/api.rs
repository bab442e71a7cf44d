//! The API server as the bench uses it: the connection, leftovers of an earlier run, and
//! watches whose events arrive stamped with the instant they came (a figure is the time the API
//! server told us, not the time a loop got round to it).

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bpfpin_crds::BpfObject;
use futures::StreamExt as _;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::host::run;

/// How long a watch's initial list may take.
const INIT_TIMEOUT: Duration = Duration::from_secs(300);

/// Events of a watch, stamped with the instant they arrived.
pub type Stamped<K> = (Instant, watcher::Event<K>);

/// Watches `api` with `config`; events go to a channel, stamped on arrival.
pub fn spawn_watch<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    mpsc::UnboundedReceiver<Stamped<K>>,
    tokio::task::JoinHandle<()>,
)
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(api, config));
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => {
                    if tx.send((Instant::now(), ev)).is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("bench: watch error (retrying): {e}"),
            }
        }
    });
    (rx, task)
}

/// Waits for the end of the watch's initial list.
pub async fn wait_init<K>(rx: &mut mpsc::UnboundedReceiver<Stamped<K>>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + INIT_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((_, watcher::Event::InitDone))) => return Ok(()),
            Ok(Some(_)) => {}
            Ok(None) => bail!("watch ended"),
            Err(_) => bail!("timed out waiting for the watch's initial list"),
        }
    }
}

/// `KUBECONFIG` (which `e2e/scripts/bench` sets) and a client of that API server.
pub async fn connect() -> Result<(PathBuf, Client)> {
    let kubeconfig = PathBuf::from(
        std::env::var_os("KUBECONFIG")
            .context("KUBECONFIG is not set: run through e2e/scripts/bench")?,
    );
    let client = Client::try_default()
        .await
        .context("connecting to the API server")?;
    Ok((kubeconfig, client))
}

/// Deletes the BpfObjects `lp` selects and drops their finalizers: no operator runs yet to
/// release them.
pub async fn drop_objects(client: &Client, lp: &ListParams) -> Result<()> {
    let objects: Api<BpfObject> = Api::all(client.clone());
    for o in objects.list_metadata(lp).await?.items {
        let name = o.name_any();
        let _ = objects.delete(&name, &DeleteParams::default()).await;
        let _ = objects
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
            )
            .await;
    }
    Ok(())
}

/// The verbs of `apiserver_request_total` that write.
pub const WRITE_VERBS: [&str; 6] = [
    "POST",
    "PUT",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];

/// One sample of the API server's `/metrics`: `metric{labels} value`.
#[derive(Debug)]
pub struct Sample<'a> {
    pub metric: &'a str,
    labels: &'a str,
    pub value: f64,
}

impl Sample<'_> {
    /// The value of label `k` ("" when absent).
    pub fn label(&self, k: &str) -> String {
        self.labels
            .split(',')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
            .map(|v| v.trim_end_matches('"').to_owned())
            .unwrap_or_default()
    }
}

/// The API server's `/metrics` text (through kubectl).
pub fn apiserver_metrics(kubeconfig: &Path) -> Result<String> {
    run(Command::new("kubectl")
        .args(["get", "--raw", "/metrics"])
        .env("KUBECONFIG", kubeconfig))
}

/// The labelled samples of a `/metrics` text.
pub fn samples(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines().filter_map(|line| {
        let (metric, rest) = line.split_once('{')?;
        let (labels, value) = rest.split_once("} ")?;
        Some(Sample {
            metric,
            labels,
            value: value.trim().parse().unwrap_or(0.0),
        })
    })
}

/// Runs `f` for every name, at most `concurrency` at once (creates or deletes); returns when each
/// request completed, or the first failure with `context(name)`.
pub async fn each<F, Fut>(
    names: &[String],
    concurrency: usize,
    context: impl Fn(&str) -> String,
    f: F,
) -> Result<HashMap<String, Instant>>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let results: Vec<(String, Result<()>, Instant)> =
        futures::stream::iter(names.iter().cloned().map(|n| {
            let fut = f(n.clone());
            async move {
                let r = fut.await;
                (n, r, Instant::now())
            }
        }))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut out = HashMap::new();
    for (n, r, at) in results {
        r.with_context(|| context(&n))?;
        out.insert(n, at);
    }
    Ok(out)
}
