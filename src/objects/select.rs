//! Which Kubernetes objects a command is about: `--namespace`, `--resource`, `--name`
//! under the apiserver's prefix (`/registry/`), judged from the key alone so that every
//! revision of a key gets the same answer.
//!
//! Keys are `<prefix><resource>/<namespace>/<name>` or `<prefix><resource>/<name>`,
//! with the API group before the resource for custom resources and a few others
//! (`example.com/widgets/…`, `apiextensions.k8s.io/customresourcedefinitions/…`) and
//! sub-paths for some built-ins (`services/specs/…`); see
//! [`crate::snapshot::inventory::kubernetes_resource`].

use std::collections::HashSet;
use std::sync::Arc;

use crate::snapshot::inventory::kubernetes_resource_under;

use super::view::KeyRange;

/// What the apiserver stores under by default (`--etcd-prefix=/registry`).
pub const DEFAULT_PREFIX: &str = "/registry/";

#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The apiserver's prefix, with a trailing `/`.
    pub prefix: String,
    pub namespace: Option<String>,
    pub resource: Option<String>,
    pub name: Option<String>,
}

/// Where a key puts an object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Place {
    /// As the key has it: `pods`, `services/specs`, `example.com/widgets`.
    pub resource: Arc<str>,
    /// `None` for a cluster-scoped object.
    pub namespace: Option<Arc<str>>,
    pub name: String,
}

/// One shared copy of each string that many objects repeat (resources, namespaces,
/// kinds, API versions), so a listing's memory follows its objects' own data.
#[derive(Debug, Default)]
pub struct Interner(HashSet<Arc<str>>);

impl Interner {
    pub fn get(&mut self, s: &Arc<str>) -> Arc<str> {
        match self.0.get(s) {
            Some(shared) => Arc::clone(shared),
            None => {
                self.0.insert(Arc::clone(s));
                Arc::clone(s)
            }
        }
    }

    /// The place with its resource and namespace shared.
    pub fn place(&mut self, p: Place) -> Place {
        Place {
            resource: self.get(&p.resource),
            namespace: p.namespace.as_ref().map(|n| self.get(n)),
            name: p.name,
        }
    }
}

impl Selection {
    /// The selection under `prefix` (made to end in `/`).
    pub fn new(
        prefix: Option<&str>,
        namespace: Option<String>,
        resource: Option<String>,
        name: Option<String>,
    ) -> Self {
        let mut prefix = prefix.unwrap_or(DEFAULT_PREFIX).to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Selection {
            prefix,
            namespace,
            resource,
            name,
        }
    }

    /// The keys to read.
    pub fn range(&self) -> KeyRange {
        KeyRange::prefix(self.prefix.as_bytes())
    }

    /// Where `key` puts its object, when the selection includes it.
    pub fn place(&self, key: &[u8]) -> Option<Place> {
        let place = place_under(self.prefix.as_bytes(), key)?;
        if let Some(ns) = &self.namespace {
            // A namespace's own object counts as part of it.
            let own = &*place.resource == "namespaces" && place.name == *ns;
            if place.namespace.as_deref() != Some(ns.as_str()) && !own {
                return None;
            }
        }
        if let Some(r) = &self.resource
            && !resource_matches(r, &place.resource)
        {
            return None;
        }
        if let Some(n) = &self.name
            && place.name != *n
        {
            return None;
        }
        Some(place)
    }
}

/// Where `key` under `prefix` puts its object.
pub fn place_under(prefix: &[u8], key: &[u8]) -> Option<Place> {
    let (resource, namespace) = kubernetes_resource_under(prefix, key)?;
    let name = String::from_utf8_lossy(key.rsplit(|&b| b == b'/').next()?).into_owned();
    if name.is_empty() {
        return None;
    }
    Some(Place {
        resource: resource.into(),
        namespace: namespace.map(Into::into),
        name,
    })
}

/// Whether `--resource wanted` names the key's `resource`: exactly, by the resource
/// without its group (`widgets` for `example.com/widgets`), as kubectl writes a grouped
/// resource (`widgets.example.com`, `deployments.apps`), or by its first segment
/// (`services` for `services/specs`).
pub fn resource_matches(wanted: &str, resource: &str) -> bool {
    if wanted == resource {
        return true;
    }
    let (first, rest) = resource.split_once('/').unwrap_or((resource, ""));
    if first.contains('.') {
        // example.com/widgets
        let (group, plural) = (first, rest);
        return wanted == plural || wanted == format!("{plural}.{group}");
    }
    if wanted == first {
        return true;
    }
    // deployments.apps: built-in groups are not in the key.
    matches!(wanted.split_once('.'), Some((plural, _)) if plural == first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_selected_by_key() {
        let all = Selection::new(None, None, None, None);
        assert_eq!(
            all.place(b"/registry/pods/a/web"),
            Some(Place {
                resource: "pods".into(),
                namespace: Some("a".into()),
                name: "web".into()
            })
        );
        let mut shared = Interner::default();
        let a = shared.place(all.place(b"/registry/pods/a/web").unwrap());
        let b = shared.place(all.place(b"/registry/pods/a/db").unwrap());
        assert!(Arc::ptr_eq(&a.resource, &b.resource));
        let ns = Selection::new(None, Some("a".into()), None, None);
        assert!(ns.place(b"/registry/pods/a/web").is_some());
        assert!(ns.place(b"/registry/namespaces/a").is_some());
        assert!(ns.place(b"/registry/namespaces/b").is_none());
        assert!(ns.place(b"/registry/pods/b/web").is_none());
        let r = |w: &str, k: &str| {
            Selection::new(None, None, Some(w.into()), None)
                .place(k.as_bytes())
                .is_some()
        };
        assert!(r("widgets", "/registry/example.com/widgets/a/w"));
        assert!(r(
            "widgets.example.com",
            "/registry/example.com/widgets/a/w"
        ));
        assert!(!r("widgets.other.io", "/registry/example.com/widgets/a/w"));
        assert!(r("services", "/registry/services/specs/a/s"));
        assert!(r("deployments.apps", "/registry/deployments/a/d"));
        assert!(!r("pods", "/registry/deployments/a/d"));
        assert!(r(
            "customresourcedefinitions",
            "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com"
        ));
        let named = Selection::new(Some("/custom"), None, None, Some("web".into()));
        assert!(named.place(b"/custom/pods/a/web").is_some());
        assert!(named.place(b"/registry/pods/a/web").is_none());
    }
}
