//! What a snapshot holds, summarised: live keys grouped by `/`-separated prefixes, and
//! Kubernetes objects under `/registry/` counted by resource and namespace.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;

use super::error::SnapshotError;
use super::live::LiveSet;
use super::status::{self, KeyIndex, ScanOptions};

/// Keys and value bytes under one prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrefixCount {
    pub prefix: String,
    pub keys: u64,
    pub value_bytes: u64,
}

/// Kubernetes objects of one resource in one namespace (`None`: cluster-scoped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceCount {
    pub resource: String,
    pub namespace: Option<String>,
    pub keys: u64,
    pub value_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// The prefix asked for; every count below is of keys starting with it.
    pub prefix: String,
    pub depth: usize,
    pub total_keys: u64,
    pub total_value_bytes: u64,
    /// The prefix itself first, then each deeper prefix, in key order.
    pub prefixes: Vec<PrefixCount>,
    /// Resources under `/registry/` (only those matching `prefix`), by resource then
    /// namespace.
    pub kubernetes: Vec<ResourceCount>,
}

pub const REGISTRY: &str = "/registry/";

/// Groups the live keys starting with `prefix` by up to `depth` further `/`-terminated
/// segments.
pub fn inventory(index: &KeyIndex, prefix: &str, depth: usize) -> Inventory {
    let mut groups = Groups::new(prefix, depth);
    let live: Vec<(u32, u32)> = index
        .keys
        .iter()
        .filter(|(key, _)| key.starts_with(prefix.as_bytes()))
        .map(|(key, &size)| (u32::try_from(size).unwrap_or(u32::MAX), groups.of(key)))
        .collect();
    groups.inventory(&live)
}

/// The inventory of the live keys under `prefix` of the snapshot file at `path`, in one
/// pass (with every check of a status scan) and without holding the keys: each live key
/// under `prefix` costs its fingerprint, value size and group (about 38 bytes at the
/// peak, see [`super::live`]); groups are the distinct (deepest prefix, Kubernetes
/// resource and namespace) pairs.
pub fn scan_inventory(
    path: &Path,
    options: ScanOptions,
    prefix: &str,
    depth: usize,
) -> Result<Inventory, SnapshotError> {
    let mut groups = Groups::new(prefix, depth);
    let mut live = LiveSet::<(u32, u32)>::new();
    status::scan_with(path, options, &mut |key, size| {
        if !key.starts_with(prefix.as_bytes()) {
            return;
        }
        match size {
            None => live.delete(key),
            Some(size) => {
                let group = groups.of(key);
                live.put(key, (u32::try_from(size).unwrap_or(u32::MAX), group));
            }
        }
    })?;
    Ok(groups.inventory(&live.finish()))
}

type Resource = Option<(String, Option<String>)>;

/// The groups live keys fall in: (the prefix's own tail up to `depth` segments,
/// Kubernetes resource), numbered in order of appearance.
struct Groups {
    prefix: String,
    depth: usize,
    ids: HashMap<(Vec<u8>, Resource), u32>,
    list: Vec<(Vec<u8>, Resource)>,
}

impl Groups {
    fn new(prefix: &str, depth: usize) -> Self {
        Groups {
            prefix: prefix.to_owned(),
            depth,
            ids: HashMap::new(),
            list: Vec::new(),
        }
    }

    /// The group of a key that starts with the prefix.
    fn of(&mut self, key: &[u8]) -> u32 {
        let rest = &key[self.prefix.len()..];
        let mut end = 0;
        for _ in 0..self.depth {
            let Some(slash) = rest[end..].iter().position(|&b| b == b'/') else {
                break;
            };
            end += slash + 1;
        }
        let group = (rest[..end].to_vec(), kubernetes_resource(key));
        if let Some(&id) = self.ids.get(&group) {
            return id;
        }
        let id = u32::try_from(self.list.len()).unwrap_or(u32::MAX);
        self.ids.insert(group.clone(), id);
        self.list.push(group);
        id
    }

    /// The inventory of live keys given as (value size, group).
    fn inventory(self, live: &[(u32, u32)]) -> Inventory {
        let mut sums = vec![(0u64, 0u64); self.list.len()];
        for &(size, group) in live {
            if let Some(s) = sums.get_mut(group as usize) {
                s.0 += 1;
                s.1 += u64::from(size);
            }
        }
        let mut acc = Aggregate::default();
        for ((tail, resource), (keys, bytes)) in self.list.iter().zip(sums) {
            if keys > 0 {
                acc.add(&self.prefix, tail, resource.clone(), keys, bytes);
            }
        }
        acc.finish(&self.prefix, self.depth)
    }
}

/// Counts by prefix and by Kubernetes resource.
#[derive(Default)]
struct Aggregate {
    prefixes: BTreeMap<String, PrefixCount>,
    k8s: BTreeMap<(String, Option<String>), (u64, u64)>,
    total_keys: u64,
    total_bytes: u64,
}

impl Aggregate {
    /// `keys` keys with `bytes` of values under `prefix` + `tail`, where `tail` is
    /// the part after the prefix up to its deepest counted `/`.
    fn add(&mut self, prefix: &str, tail: &[u8], resource: Resource, keys: u64, bytes: u64) {
        self.total_keys += keys;
        self.total_bytes += bytes;
        for (i, _) in tail.iter().enumerate().filter(|(_, b)| **b == b'/') {
            let mut p = prefix.to_owned();
            p.push_str(&String::from_utf8_lossy(&tail[..=i]));
            let entry = self.prefixes.entry(p).or_default();
            entry.keys += keys;
            entry.value_bytes += bytes;
        }
        if let Some(r) = resource {
            let e = self.k8s.entry(r).or_default();
            e.0 += keys;
            e.1 += bytes;
        }
    }

    fn finish(self, prefix: &str, depth: usize) -> Inventory {
        let mut list = vec![PrefixCount {
            prefix: prefix.to_owned(),
            keys: self.total_keys,
            value_bytes: self.total_bytes,
        }];
        list.extend(self.prefixes.into_iter().map(|(prefix, mut c)| {
            c.prefix = prefix;
            c
        }));
        Inventory {
            prefix: prefix.to_owned(),
            depth,
            total_keys: self.total_keys,
            total_value_bytes: self.total_bytes,
            prefixes: list,
            kubernetes: self
                .k8s
                .into_iter()
                .map(
                    |((resource, namespace), (keys, value_bytes))| ResourceCount {
                        resource,
                        namespace,
                        keys,
                        value_bytes,
                    },
                )
                .collect(),
        }
    }
}

/// Classifies a Kubernetes key: `/registry/<resource>/<namespace>/<name>` or
/// `/registry/<resource>/<name>` for cluster-scoped objects. A resource of an API group
/// keeps its group (`apps.example.com/widgets`), and sub-resources stored one level
/// deeper (`services/specs/<ns>/<name>`) keep their sub-path.
pub fn kubernetes_resource(key: &[u8]) -> Option<(String, Option<String>)> {
    kubernetes_resource_under(REGISTRY.as_bytes(), key)
}

/// [`kubernetes_resource`] for an apiserver whose `--etcd-prefix` is `root` (with its
/// trailing `/`) instead of `/registry/`.
pub fn kubernetes_resource_under(root: &[u8], key: &[u8]) -> Option<(String, Option<String>)> {
    let rest = key.strip_prefix(root)?;
    let rest = String::from_utf8_lossy(rest);
    let segments: Vec<&str> = rest.split('/').collect();
    let (&first, mut remaining) = segments.split_first()?;
    if first.is_empty() {
        return None;
    }
    let mut resource = first.to_owned();
    if first.contains('.') && remaining.len() >= 2 {
        resource.push('/');
        resource.push_str(remaining[0]);
        remaining = &remaining[1..];
    }
    while remaining.len() > 2 {
        resource.push('/');
        resource.push_str(remaining[0]);
        remaining = &remaining[1..];
    }
    match remaining {
        [] => Some((resource, None)),
        [_name] => Some((resource, None)),
        [namespace, _name] => Some((resource, Some((*namespace).to_owned()))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_keys_are_classified() {
        let c = |k: &str| kubernetes_resource(k.as_bytes());
        let ns = |r: &str, n: &str| Some((r.to_owned(), Some(n.to_owned())));
        let cl = |r: &str| Some((r.to_owned(), None));
        assert_eq!(c("/registry/pods/default/web-1"), ns("pods", "default"));
        assert_eq!(c("/registry/minions/node-1"), cl("minions"));
        assert_eq!(
            c("/registry/services/specs/kube-system/dns"),
            ns("services/specs", "kube-system")
        );
        assert_eq!(c("/registry/ranges/serviceips"), cl("ranges"));
        assert_eq!(
            c("/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com"),
            cl("apiextensions.k8s.io/customresourcedefinitions")
        );
        assert_eq!(
            c("/registry/example.com/widgets/team-a/w1"),
            ns("example.com/widgets", "team-a")
        );
        assert_eq!(c("/calico/ipam/v2/x"), None);
    }

    #[test]
    fn prefixes_count_keys_and_bytes_at_each_depth() {
        let mut index = KeyIndex::default();
        for (k, v) in [
            ("/registry/pods/a/p1", 10),
            ("/registry/pods/b/p2", 20),
            ("/registry/minions/n1", 5),
            ("/other", 1),
            ("plain", 2),
        ] {
            index.keys.insert(k.as_bytes().to_vec(), v);
        }
        let inv = inventory(&index, "/registry/", 2);
        assert_eq!(inv.total_keys, 3);
        let got: Vec<_> = inv
            .prefixes
            .iter()
            .map(|p| (p.prefix.as_str(), p.keys, p.value_bytes))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/registry/", 3, 35),
                ("/registry/minions/", 1, 5),
                ("/registry/pods/", 2, 30),
                ("/registry/pods/a/", 1, 10),
                ("/registry/pods/b/", 1, 20),
            ]
        );
        assert_eq!(inventory(&index, "", 1).total_keys, 5);
        assert_eq!(inv.kubernetes.len(), 3);
    }
}
