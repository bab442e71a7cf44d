//! ConfigMaps that hold bytecode (`spec.bytecode.configMap`). The agent watches only the ones
//! that objects selected for its node reference: one watch per ConfigMap, selected by
//! `metadata.name` (so RBAC may restrict the agent to those names), started and stopped as the
//! referenced set changes. The watch's own list and events carry the data: no extra GET.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bpfpin_crds::ConfigMapBytecode;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::index::{Index, IndexEvent};
use super::trigger::Trigger;

/// A ConfigMap by namespace and name (shown as `namespace/name`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigMapRef {
    /// The ConfigMap's namespace (`bytecode.configMap.namespace`).
    pub namespace: String,
    /// The ConfigMap's name (`bytecode.configMap.name`).
    pub name: String,
}

impl ConfigMapRef {
    /// The ConfigMap a bytecode source names.
    pub fn of(source: &ConfigMapBytecode) -> Self {
        Self {
            namespace: source.namespace.clone(),
            name: source.name.clone(),
        }
    }
}

impl fmt::Display for ConfigMapRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the agent knows of one referenced ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigMapState {
    /// Its watch has not listed it yet.
    Syncing,
    /// It exists: every key of `binaryData` and `data`, as bytes.
    Present(BTreeMap<String, Vec<u8>>),
    /// It does not exist.
    Absent,
    /// It could not be listed (e.g. forbidden); the watch keeps retrying.
    Unavailable(String),
}

/// Every key of a ConfigMap as bytes (`data` values as their UTF-8 bytes).
pub fn keys_of(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut keys: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    keys.extend(
        cm.binary_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone())),
    );
    keys
}

/// The state of every watched ConfigMap. Each entry carries the token of the watch that owns it,
/// so a stopped watch that races its abort cannot overwrite a newer one.
#[derive(Debug, Default)]
pub struct ConfigMapCache {
    entries: BTreeMap<ConfigMapRef, (u64, ConfigMapState)>,
}

impl ConfigMapCache {
    /// The state of a ConfigMap, if it is watched.
    pub fn state(&self, cm: &ConfigMapRef) -> Option<&ConfigMapState> {
        self.entries.get(cm).map(|(_, s)| s)
    }

    /// Sets the state reported by the watch `token`; returns whether it changed.
    fn set(&mut self, cm: &ConfigMapRef, token: u64, state: ConfigMapState) -> bool {
        match self.entries.get_mut(cm) {
            Some((t, current)) if *t == token && *current != state => {
                *current = state;
                true
            }
            _ => false,
        }
    }

    #[cfg(test)]
    pub(crate) fn insert(&mut self, cm: ConfigMapRef, state: ConfigMapState) {
        self.entries.insert(cm, (0, state));
    }
}

/// The [`ConfigMapCache`] shared between the ConfigMap watches and the pass loop. Held only
/// briefly, never across an await.
#[derive(Debug, Clone, Default)]
pub struct SharedConfigMaps(Arc<Mutex<ConfigMapCache>>);

impl SharedConfigMaps {
    /// Locks the cache (a panicked holder leaves consistent data: every update is one call).
    pub fn lock(&self) -> MutexGuard<'_, ConfigMapCache> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running ConfigMap watches.
#[derive(Debug, Default)]
pub struct ConfigMapWatches {
    running: BTreeMap<ConfigMapRef, AbortHandle>,
    next_token: u64,
}

impl ConfigMapWatches {
    /// Starts a watch for every ConfigMap in `wanted` that has none and stops the others.
    pub fn sync(
        &mut self,
        wanted: &BTreeSet<ConfigMapRef>,
        client: &Client,
        cache: &SharedConfigMaps,
        trigger: &Trigger,
    ) {
        let stale: Vec<ConfigMapRef> = self
            .running
            .keys()
            .filter(|cm| !wanted.contains(*cm))
            .cloned()
            .collect();
        for cm in stale {
            if let Some(task) = self.running.remove(&cm) {
                task.abort();
            }
            cache.lock().entries.remove(&cm);
            tracing::debug!(configmap = %cm, "stopped watching a ConfigMap no selected object uses");
        }
        for cm in wanted {
            if self.running.contains_key(cm) {
                continue;
            }
            self.next_token += 1;
            let token = self.next_token;
            cache
                .lock()
                .entries
                .insert(cm.clone(), (token, ConfigMapState::Syncing));
            let task = tokio::spawn(
                watch_one(
                    client.clone(),
                    cm.clone(),
                    token,
                    cache.clone(),
                    trigger.clone(),
                )
                .instrument(tracing::Span::current()),
            );
            tracing::debug!(configmap = %cm, "watching a ConfigMap for bytecode");
            self.running.insert(cm.clone(), task.abort_handle());
        }
    }

    /// Stops every watch.
    pub fn stop_all(&mut self) {
        for task in std::mem::take(&mut self.running).into_values() {
            task.abort();
        }
    }
}

async fn watch_one(
    client: Client,
    cm: ConfigMapRef,
    token: u64,
    cache: SharedConfigMaps,
    trigger: Trigger,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &cm.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", cm.name));
    let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
    let mut index: Index<BTreeMap<String, Vec<u8>>> = Index::default();
    while let Some(event) = stream.next().await {
        let state = match event {
            Ok(event) => {
                index.apply(IndexEvent::from_watch(event, |c: &ConfigMap| {
                    (c.name_any(), keys_of(c))
                }));
                if !index.is_synced() {
                    continue;
                }
                match index.get(&cm.name) {
                    Some(keys) => ConfigMapState::Present(keys.clone()),
                    None => ConfigMapState::Absent,
                }
            }
            Err(error) => {
                tracing::warn!(configmap = %cm, %error, "ConfigMap watch failed; retrying");
                if index.is_synced() {
                    // Keep the last known contents through an outage.
                    continue;
                }
                ConfigMapState::Unavailable(error.to_string())
            }
        };
        if cache.lock().set(&cm, token, state) {
            trigger.poke();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_data_and_data_are_both_keys() {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cm", "namespace": "ns"},
            "data": {"text.o": "abc"},
            "binaryData": {"counter.bpf.o": "f0VMRg=="},
        }))
        .expect("configmap");
        let keys = keys_of(&cm);
        assert_eq!(keys["text.o"], b"abc");
        assert_eq!(keys["counter.bpf.o"], b"\x7fELF");
    }

    #[test]
    fn only_the_owning_watch_sets_state() {
        let mut cache = ConfigMapCache::default();
        let cm = ConfigMapRef {
            namespace: "ns".into(),
            name: "cm".into(),
        };
        assert!(!cache.set(&cm, 1, ConfigMapState::Absent));
        cache
            .entries
            .insert(cm.clone(), (2, ConfigMapState::Syncing));
        assert!(!cache.set(&cm, 1, ConfigMapState::Absent));
        assert!(cache.set(&cm, 2, ConfigMapState::Absent));
        assert!(!cache.set(&cm, 2, ConfigMapState::Absent));
        assert_eq!(cache.state(&cm), Some(&ConfigMapState::Absent));
    }
}
