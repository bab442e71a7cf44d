//! Watches whose events arrive stamped with the instant they came, so that a figure is the time
//! the API server told us, not the time a loop got round to it.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::StreamExt as _;
use kube::Api;
use kube::runtime::watcher;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

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
