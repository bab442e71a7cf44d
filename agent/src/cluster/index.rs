//! A plain in-memory index fed by watch events: `apply`, `delete`, and a re-list that replaces
//! the contents atomically once it is complete. While a re-list is in progress (or the watch is
//! failing) the last complete contents stay visible, so an API server outage never looks like
//! "nothing is wanted any more".
//!
//! Kept instead of `kube::runtime::reflector` (which the operator uses, and which also swaps a
//! re-list in atomically): a pass is woken, and `bpfpin_agent_watch_changes_total` counted, only
//! when an event changes what the agent keeps of an object, and a reflector's `Store` cannot say
//! that (it replaces the whole `Arc<K>` and reports nothing). The index also keeps only the
//! projection ([`super::watch::ObjectEntry`], a ConfigMap's keys), not the whole object.

use std::collections::BTreeMap;

use kube::runtime::watcher;

/// One watch event, reduced to a key and the part of the object the agent cares about.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexEvent<V> {
    /// A re-list starts.
    Init,
    /// An object of the re-list.
    InitApply(String, V),
    /// The re-list is complete: it replaces the contents.
    InitDone,
    /// An object was added or changed.
    Apply(String, V),
    /// An object was deleted.
    Delete(String),
}

impl<V> IndexEvent<V> {
    /// Reduces a watcher event with `project`, which returns the key and the value.
    pub fn from_watch<K>(event: watcher::Event<K>, project: impl Fn(&K) -> (String, V)) -> Self {
        match event {
            watcher::Event::Init => IndexEvent::Init,
            watcher::Event::InitApply(obj) => {
                let (key, value) = project(&obj);
                IndexEvent::InitApply(key, value)
            }
            watcher::Event::InitDone => IndexEvent::InitDone,
            watcher::Event::Apply(obj) => {
                let (key, value) = project(&obj);
                IndexEvent::Apply(key, value)
            }
            watcher::Event::Delete(obj) => IndexEvent::Delete(project(&obj).0),
        }
    }
}

/// Objects by key, with whether a complete list has been seen.
#[derive(Debug, Clone)]
pub struct Index<V> {
    items: BTreeMap<String, V>,
    relist: Option<BTreeMap<String, V>>,
    synced: bool,
}

impl<V> Default for Index<V> {
    fn default() -> Self {
        Self {
            items: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

impl<V: PartialEq> Index<V> {
    /// Applies one event; returns whether what the index shows changed (contents, or becoming
    /// synced). Updates that leave the projected value equal (e.g. a status write) return false.
    pub fn apply(&mut self, event: IndexEvent<V>) -> bool {
        match event {
            IndexEvent::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            IndexEvent::InitApply(key, value) => {
                self.relist.get_or_insert_default().insert(key, value);
                false
            }
            IndexEvent::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                let changed = !self.synced || listed != self.items;
                self.items = listed;
                self.synced = true;
                changed
            }
            IndexEvent::Apply(key, value) => {
                if self.items.get(&key) == Some(&value) {
                    return false;
                }
                self.items.insert(key, value);
                self.synced
            }
            IndexEvent::Delete(key) => self.items.remove(&key).is_some() && self.synced,
        }
    }

    /// Whether a complete list has been seen.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// The contents as of the last complete list and the events since.
    pub fn items(&self) -> &BTreeMap<String, V> {
        &self.items
    }

    /// The object under `key`, as of the same contents as [`Index::items`].
    pub fn get(&self, key: &str) -> Option<&V> {
        self.items.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synced(pairs: &[(&str, i32)]) -> Index<i32> {
        let mut index = Index::default();
        index.apply(IndexEvent::Init);
        for (k, v) in pairs {
            index.apply(IndexEvent::InitApply((*k).into(), *v));
        }
        assert!(index.apply(IndexEvent::InitDone));
        index
    }

    #[test]
    fn first_list_is_a_change_even_when_empty() {
        let mut index: Index<i32> = Index::default();
        assert!(!index.is_synced());
        assert!(!index.apply(IndexEvent::Init));
        assert!(index.apply(IndexEvent::InitDone));
        assert!(index.is_synced());
        assert!(index.items().is_empty());
    }

    #[test]
    fn equal_updates_are_not_changes() {
        let mut index = synced(&[("a", 1)]);
        assert!(!index.apply(IndexEvent::Apply("a".into(), 1)));
        assert!(index.apply(IndexEvent::Apply("a".into(), 2)));
        assert!(index.apply(IndexEvent::Apply("b".into(), 1)));
        assert!(index.apply(IndexEvent::Delete("b".into())));
        assert!(!index.apply(IndexEvent::Delete("b".into())));
        assert_eq!(index.get("a"), Some(&2));
    }

    #[test]
    fn a_relist_keeps_the_old_contents_until_it_is_complete() {
        let mut index = synced(&[("a", 1), ("b", 1)]);
        // The watch failed and restarts: nothing changes until the new list is complete.
        assert!(!index.apply(IndexEvent::Init));
        assert!(!index.apply(IndexEvent::InitApply("a".into(), 1)));
        assert_eq!(index.items().len(), 2);
        // b was deleted during the outage.
        assert!(index.apply(IndexEvent::InitDone));
        assert_eq!(index.items().keys().collect::<Vec<_>>(), ["a"]);
        // A relist with the same contents is not a change.
        index.apply(IndexEvent::Init);
        index.apply(IndexEvent::InitApply("a".into(), 1));
        assert!(!index.apply(IndexEvent::InitDone));
    }

    #[test]
    fn events_before_the_first_list_are_not_changes() {
        let mut index: Index<i32> = Index::default();
        index.apply(IndexEvent::Init);
        index.apply(IndexEvent::InitApply("a".into(), 1));
        assert!(!index.is_synced());
        assert!(index.items().is_empty());
    }
}
