//! What a snapshot holds, summarised: live keys grouped by `/`-separated prefixes, and
//! Kubernetes objects under `/registry/` counted by resource and namespace.

use std::collections::BTreeMap;

use serde::Serialize;

use super::status::KeyIndex;

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
    let mut prefixes: BTreeMap<String, PrefixCount> = BTreeMap::new();
    let mut k8s: BTreeMap<(String, Option<String>), (u64, u64)> = BTreeMap::new();
    let (mut total_keys, mut total_bytes) = (0u64, 0u64);
    for (key, &size) in &index.keys {
        let Some(rest) = key.strip_prefix(prefix.as_bytes()) else {
            continue;
        };
        total_keys += 1;
        total_bytes += size;
        let mut end = 0;
        for _ in 0..depth {
            let Some(slash) = rest[end..].iter().position(|&b| b == b'/') else {
                break;
            };
            end += slash + 1;
            let mut p = prefix.to_owned();
            p.push_str(&String::from_utf8_lossy(&rest[..end]));
            let entry = prefixes.entry(p).or_default();
            entry.keys += 1;
            entry.value_bytes += size;
        }
        if let Some((resource, namespace)) = kubernetes_resource(key) {
            let e = k8s.entry((resource, namespace)).or_default();
            e.0 += 1;
            e.1 += size;
        }
    }
    let mut list = vec![PrefixCount {
        prefix: prefix.to_owned(),
        keys: total_keys,
        value_bytes: total_bytes,
    }];
    list.extend(prefixes.into_iter().map(|(prefix, mut c)| {
        c.prefix = prefix;
        c
    }));
    Inventory {
        prefix: prefix.to_owned(),
        depth,
        total_keys,
        total_value_bytes: total_bytes,
        prefixes: list,
        kubernetes: k8s
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

/// Classifies a Kubernetes key: `/registry/<resource>/<namespace>/<name>` or
/// `/registry/<resource>/<name>` for cluster-scoped objects. A resource of an API group
/// keeps its group (`apps.example.com/widgets`), and sub-resources stored one level
/// deeper (`services/specs/<ns>/<name>`) keep their sub-path.
pub fn kubernetes_resource(key: &[u8]) -> Option<(String, Option<String>)> {
    let rest = key.strip_prefix(REGISTRY.as_bytes())?;
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
