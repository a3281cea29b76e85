//! The API's resources: what discovery lists (`/api`, `/apis`, `/api/v1`, `/apis/apps/v1`),
//! how a request path names a resource, and the OpenAPI v3 documents kubectl reads to learn
//! that the server validates fields itself.

use serde_json::{Value, json};

/// The kinds the simulated API server stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Kind {
    Namespace,
    Pod,
    Event,
    StatefulSet,
    ControllerRevision,
}

/// One resource as discovery describes it.
pub(super) struct Resource {
    pub(super) kind: Kind,
    /// API group (`""` is the core group).
    pub(super) group: &'static str,
    pub(super) plural: &'static str,
    pub(super) singular: &'static str,
    pub(super) name: &'static str,
    pub(super) namespaced: bool,
    pub(super) short_names: &'static [&'static str],
    pub(super) verbs: &'static [&'static str],
    /// Subresources: name, the kind they speak (with its group/version), verbs.
    pub(super) subresources: &'static [(
        &'static str,
        &'static str,
        &'static str,
        &'static [&'static str],
    )],
    pub(super) categories: &'static [&'static str],
}

const OBJECT_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Every resource served, core group first (kubectl resolves `events` to the first group that
/// has it).
pub(super) const RESOURCES: &[Resource] = &[
    Resource {
        kind: Kind::Namespace,
        group: "",
        plural: "namespaces",
        singular: "namespace",
        name: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        verbs: &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ],
        subresources: &[],
        categories: &[],
    },
    Resource {
        kind: Kind::Pod,
        group: "",
        plural: "pods",
        singular: "pod",
        name: "Pod",
        namespaced: true,
        short_names: &["po"],
        verbs: OBJECT_VERBS,
        subresources: &[
            ("status", "", "Pod", &["get", "patch", "update"]),
            ("log", "", "Pod", &["get"]),
        ],
        categories: &["all"],
    },
    Resource {
        kind: Kind::Event,
        group: "",
        plural: "events",
        singular: "event",
        name: "Event",
        namespaced: true,
        short_names: &["ev"],
        verbs: OBJECT_VERBS,
        subresources: &[],
        categories: &[],
    },
    Resource {
        kind: Kind::StatefulSet,
        group: "apps",
        plural: "statefulsets",
        singular: "statefulset",
        name: "StatefulSet",
        namespaced: true,
        short_names: &["sts"],
        verbs: OBJECT_VERBS,
        subresources: &[
            (
                "status",
                "apps/v1",
                "StatefulSet",
                &["get", "patch", "update"],
            ),
            (
                "scale",
                "autoscaling/v1",
                "Scale",
                &["get", "patch", "update"],
            ),
        ],
        categories: &["all"],
    },
    Resource {
        kind: Kind::ControllerRevision,
        group: "apps",
        plural: "controllerrevisions",
        singular: "controllerrevision",
        name: "ControllerRevision",
        namespaced: true,
        short_names: &[],
        verbs: OBJECT_VERBS,
        subresources: &[],
        categories: &[],
    },
];

impl Kind {
    /// Its row of [`RESOURCES`].
    pub(super) fn resource(self) -> &'static Resource {
        RESOURCES
            .iter()
            .find(|r| r.kind == self)
            .expect("every kind is in RESOURCES")
    }

    /// `v1` or `apps/v1`.
    pub(super) fn api_version(self) -> &'static str {
        match self.resource().group {
            "" => "v1",
            _ => "apps/v1",
        }
    }

    /// `Pod`, `StatefulSet`, …
    pub(super) fn name(self) -> &'static str {
        self.resource().name
    }

    /// How error messages name the resource: `pods`, `statefulsets.apps`.
    pub(super) fn qualified(self) -> String {
        let r = self.resource();
        match r.group {
            "" => r.plural.to_owned(),
            g => format!("{}.{g}", r.plural),
        }
    }

    pub(super) fn namespaced(self) -> bool {
        self.resource().namespaced
    }
}

/// `GET /api`: the core group's versions.
pub(super) fn api_versions(server: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}]})
}

/// `GET /apis`: the named groups.
pub(super) fn api_groups() -> Value {
    let gv = |group: &str, version: &str| json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": "apps", "versions": [gv("apps", "v1")], "preferredVersion": gv("apps", "v1")}
    ]})
}

/// `GET /api/v1`, `/apis/apps/v1`: the resources of one group version.
pub(super) fn resource_list(group: &str) -> Option<Value> {
    let group_version = match group {
        "" => "v1",
        "apps" => "apps/v1",
        _ => return None,
    };
    let mut resources = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group) {
        let mut entry = json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.name, "verbs": r.verbs, "storageVersionHash": ""});
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        resources.push(entry);
        for (sub, sub_gv, sub_kind, verbs) in r.subresources {
            let mut s = json!({"name": format!("{}/{sub}", r.plural), "singularName": "",
                "namespaced": r.namespaced, "kind": sub_kind, "verbs": verbs});
            if let Some((g, v)) = sub_gv.split_once('/') {
                s["group"] = json!(g);
                s["version"] = json!(v);
            }
            resources.push(s);
        }
    }
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                "resources": resources}),
    )
}

/// What a request path names.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Target {
    pub(super) kind: Kind,
    /// The namespace in the path (`None`: every namespace, or a cluster-scoped kind).
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    pub(super) subresource: Option<String>,
}

/// Parse `/api/v1/…` or `/apis/{group}/v1/…` into the resource it names.
pub(super) fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, "v1", rest @ ..] => (*group, rest),
        _ => return None,
    };
    let find = |plural: &str| {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.plural == plural)
    };
    let target = |r: &Resource, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| Target {
        kind: r.kind,
        namespace: ns.map(str::to_owned),
        name: name.map(str::to_owned),
        subresource: sub.map(str::to_owned),
    };
    match rest {
        ["namespaces", ns, plural, tail @ ..] if !group.is_empty() || *plural != "status" => {
            let r = find(plural).filter(|r| r.namespaced)?;
            match tail {
                [] => Some(target(r, Some(ns), None, None)),
                [name] => Some(target(r, Some(ns), Some(name), None)),
                [name, sub] => Some(target(r, Some(ns), Some(name), Some(sub))),
                _ => None,
            }
        }
        [plural, tail @ ..] => {
            let r = find(plural)?;
            match (r.namespaced, tail) {
                (_, []) => Some(target(r, None, None, None)),
                (false, [name]) => Some(target(r, None, Some(name), None)),
                (false, [name, sub]) => Some(target(r, None, Some(name), Some(sub))),
                _ => None,
            }
        }
        _ => None,
    }
}

/// `GET /openapi/v3`: where each group version's document is.
pub(super) fn openapi_index() -> Value {
    let entry =
        |p: &str| json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=conveyor-sim-1")});
    json!({"paths": {"api/v1": entry("api/v1"), "apis/apps/v1": entry("apis/apps/v1")}})
}

/// The OpenAPI v3 document of one group version (`api/v1`, `apis/apps/v1`): its paths and the
/// parameters each operation takes. kubectl reads the PATCH operations' `fieldValidation`
/// parameter to learn that the server validates fields itself. Schemas are not served: kubectl
/// then computes strategic merge patches from its compiled-in types.
pub(super) fn openapi_document(group_path: &str) -> Option<Value> {
    let group = match group_path.trim_matches('/') {
        "api/v1" => "",
        "apis/apps/v1" => "apps",
        _ => return None,
    };
    let prefix = match group {
        "" => "/api/v1".to_owned(),
        g => format!("/apis/{g}/v1"),
    };
    let query = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}, "uniqueItems": true});
    let write_params = || {
        json!([
            query("dryRun"),
            query("fieldManager"),
            query("fieldValidation")
        ])
    };
    let mut patch_params = write_params();
    patch_params
        .as_array_mut()
        .expect("an array")
        .push(json!({"name": "force", "in": "query", "schema": {"type": "boolean"}}));
    let mut paths = serde_json::Map::new();
    for r in RESOURCES.iter().filter(|r| r.group == group) {
        let gvk = json!({"group": group, "version": "v1", "kind": r.name});
        let op = |id: &str, params: Value| {
            json!({"operationId": id, "parameters": params, "x-kubernetes-action": id,
                   "x-kubernetes-group-version-kind": gvk.clone(),
                   "responses": {"200": {"description": "OK"}}})
        };
        let (collection, item) = if r.namespaced {
            (
                format!("{prefix}/namespaces/{{namespace}}/{}", r.plural),
                format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
            )
        } else {
            (
                format!("{prefix}/{}", r.plural),
                format!("{prefix}/{}/{{name}}", r.plural),
            )
        };
        paths.insert(
            collection,
            json!({"get": op("list", json!([query("labelSelector"), query("fieldSelector")])),
                   "post": op("post", write_params())}),
        );
        paths.insert(
            item.clone(),
            json!({"get": op("get", json!([])), "put": op("put", write_params()),
                   "patch": op("patch", patch_params.clone()), "delete": op("delete", json!([query("dryRun")]))}),
        );
        for (sub, _, _, _) in r.subresources.iter().filter(|(s, ..)| *s != "log") {
            paths.insert(
                format!("{item}/{sub}"),
                json!({"get": op("get", json!([])), "put": op("put", write_params()),
                       "patch": op("patch", patch_params.clone())}),
            );
        }
    }
    Some(json!({"openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": "v1.33.0"},
                "paths": paths, "components": {"schemas": {}}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_resources() {
        let t = parse_path("/apis/apps/v1/namespaces/ns/statefulsets/web/scale").unwrap();
        assert_eq!(
            (
                t.kind,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            (Kind::StatefulSet, Some("ns"), Some("web"), Some("scale"))
        );
        let all = parse_path("/api/v1/pods").unwrap();
        assert_eq!((all.kind, all.namespace, all.name), (Kind::Pod, None, None));
        let ns = parse_path("/api/v1/namespaces/staging").unwrap();
        assert_eq!(
            (ns.kind, ns.name.as_deref()),
            (Kind::Namespace, Some("staging"))
        );
        let events = parse_path("/api/v1/namespaces/staging/events").unwrap();
        assert_eq!(events.kind, Kind::Event);
        assert!(parse_path("/apis/apps/v1/pods").is_none(), "pods are core");
        assert!(
            parse_path("/apis/apps/v1/statefulsets/web").is_none(),
            "namespaced"
        );
    }
}
