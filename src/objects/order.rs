//! The order `restore keys` writes Kubernetes objects in, so that what an object needs
//! exists before it: namespaces; CRDs and APIServices before the custom resources they
//! serve; identities, secrets, configmaps, storage and policy before the workloads that
//! mount or use them; workloads last, controllers before what they create.

use super::select::Place;

/// The rank of a resource: lower is written first.
pub fn rank(place: Option<&Place>) -> u8 {
    let Some(p) = place else {
        // Not a Kubernetes key: as it comes, after the objects.
        return 9;
    };
    let resource: &str = &p.resource;
    let (first, plural) = resource.split_once('/').unwrap_or((resource, resource));
    match first {
        "namespaces" => 0,
        "apiextensions.k8s.io" | "apiregistration.k8s.io" => 1,
        "serviceaccounts"
        | "secrets"
        | "configmaps"
        | "roles"
        | "rolebindings"
        | "clusterroles"
        | "clusterrolebindings"
        | "resourcequotas"
        | "limitranges"
        | "priorityclasses"
        | "storageclasses"
        | "persistentvolumes"
        | "persistentvolumeclaims"
        | "networkpolicies"
        | "poddisruptionbudgets" => 2,
        "services" | "ingress" | "ingresses" | "ingressclasses" | "endpointslices" => 3,
        "deployments" | "statefulsets" | "daemonsets" | "cronjobs" => 5,
        "replicasets" | "jobs" | "controllerrevisions" => 6,
        "pods" => 7,
        // A custom resource (its group is in the key), after its CRD.
        g if g.contains('.') && !plural.is_empty() => 4,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::select::place_under;

    #[test]
    fn what_objects_need_comes_first() {
        let mut keys = vec![
            "/registry/pods/a/p",
            "/registry/example.com/widgets/a/w",
            "/registry/deployments/a/d",
            "/registry/secrets/a/s",
            "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com",
            "/registry/namespaces/a",
            "/registry/replicasets/a/d-1",
        ];
        keys.sort_by_key(|k| rank(place_under(b"/registry/", k.as_bytes()).as_ref()));
        assert_eq!(
            keys,
            vec![
                "/registry/namespaces/a",
                "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com",
                "/registry/secrets/a/s",
                "/registry/example.com/widgets/a/w",
                "/registry/deployments/a/d",
                "/registry/replicasets/a/d-1",
                "/registry/pods/a/p",
            ]
        );
    }
}
