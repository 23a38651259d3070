//! The mesh's trust bundle in every namespace, as Istio keeps `istio-ca-root-cert` there: a
//! ConfigMap `weft-ca-root-cert` whose `root-cert.pem` a pod mounts to check the control plane's
//! TLS port (`weft-proxy --xds-root-cert`) before it sends its token. Kept as weft wrote it: a
//! namespace that appears gets one, and one deleted or edited is written again.

use std::collections::BTreeSet;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

/// The ConfigMap's name, in every namespace.
pub const CONFIG_MAP: &str = "weft-ca-root-cert";

/// The key its PEM is under.
pub const KEY: &str = "root-cert.pem";

/// The field manager weft's writes are made as (server-side apply).
const MANAGER: &str = "weft";

/// The ConfigMap weft keeps in `namespace`.
pub fn config_map(namespace: &str, bundle: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIG_MAP.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    MANAGER.to_string(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        data: Some([(KEY.to_string(), bundle.to_string())].into()),
        ..ConfigMap::default()
    }
}

/// Whether `cm`'s data was last written by a weft (the field manager that owns `data`): one
/// that holds another bundle was written by another replica (a rollout that changes the roots),
/// which this one does not fight; the newest replica's write stands once the old ones are gone.
fn written_by_weft(cm: &ConfigMap) -> bool {
    let owns_data = |f: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry| {
        f.fields_v1
            .as_ref()
            .is_some_and(|v| v.0.get("f:data").is_some())
    };
    let owners: Vec<_> = cm
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|f| owns_data(f))
        .collect();
    !owners.is_empty() && owners.iter().all(|f| f.manager.as_deref() == Some(MANAGER))
}

/// Whether `cm` holds `bundle` as weft wrote it.
fn holds(cm: &ConfigMap, bundle: &str) -> bool {
    cm.data
        .as_ref()
        .and_then(|d| d.get(KEY))
        .is_some_and(|v| v == bundle)
}

/// The namespace of `cm`, if it is one of weft's maps (the watch asks for those only; an API
/// server that ignored the field selector would send others).
fn ours(cm: &ConfigMap) -> Option<String> {
    (cm.metadata.name.as_deref() == Some(CONFIG_MAP))
        .then(|| cm.metadata.namespace.clone())
        .flatten()
}

/// Writes the ConfigMap into `namespace` (server-side apply: created, or put back as weft
/// wrote it). A failure is said and left for the next event about that namespace or its map.
async fn write(client: &kube::Client, namespace: &str, bundle: &str) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(MANAGER).force();
    let patch = Patch::Apply(config_map(namespace, bundle));
    match api.patch(CONFIG_MAP, &params, &patch).await {
        Ok(_) => tracing::debug!(namespace, "wrote the mesh's root certificates"),
        Err(e) => {
            tracing::warn!(namespace, "cannot write ConfigMap {CONFIG_MAP}: {e}");
        }
    }
}

/// Keeps `bundle` in every namespace's `weft-ca-root-cert` until the task is dropped: watches
/// the namespaces and those ConfigMaps (a lost watch lists again, with kube-runtime's backoff).
pub async fn publish(client: kube::Client, bundle: String) {
    let namespaces = watcher::watcher(Api::<Namespace>::all(client.clone()), Default::default())
        .default_backoff();
    let only_ours = watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}"));
    let maps = watcher::watcher(Api::<ConfigMap>::all(client.clone()), only_ours).default_backoff();
    let (mut namespaces, mut maps) = (std::pin::pin!(namespaces), std::pin::pin!(maps));
    // Namespaces that exist and are not terminating, and those whose map holds the bundle.
    let (mut live, mut held) = (BTreeSet::<String>::new(), BTreeSet::<String>::new());
    loop {
        tokio::select! {
            Some(event) = namespaces.next() => match event {
                Ok(Event::Apply(ns) | Event::InitApply(ns)) => {
                    let Some(name) = ns.metadata.name else { continue };
                    let terminating = ns.status.and_then(|s| s.phase).as_deref() == Some("Terminating");
                    if terminating {
                        live.remove(&name);
                    } else if live.insert(name.clone()) && !held.contains(&name) {
                        write(&client, &name, &bundle).await;
                    }
                }
                Ok(Event::Delete(ns)) => {
                    if let Some(name) = ns.metadata.name {
                        live.remove(&name);
                    }
                }
                // Listed again: each namespace comes again as InitApply.
                Ok(Event::Init) => live.clear(),
                Ok(Event::InitDone) => {}
                Err(e) => tracing::warn!("watching namespaces: {e}"),
            },
            Some(event) = maps.next() => match event {
                Ok(Event::Apply(cm) | Event::InitApply(cm)) => {
                    let Some(ns) = ours(&cm) else { continue };
                    if holds(&cm, &bundle) {
                        held.insert(ns);
                    } else if written_by_weft(&cm) {
                        // Another replica's roots: left to it (see `written_by_weft`).
                        held.insert(ns.clone());
                        tracing::warn!(namespace = ns, "ConfigMap {CONFIG_MAP} holds roots another weft wrote; not overwriting it");
                    } else {
                        held.remove(&ns);
                        if live.contains(&ns) {
                            tracing::info!(namespace = ns, "ConfigMap {CONFIG_MAP} changed: writing it back");
                            write(&client, &ns, &bundle).await;
                        }
                    }
                }
                Ok(Event::Delete(cm)) => {
                    let Some(ns) = ours(&cm) else { continue };
                    held.remove(&ns);
                    if live.contains(&ns) {
                        tracing::info!(namespace = ns, "ConfigMap {CONFIG_MAP} deleted: writing it again");
                        write(&client, &ns, &bundle).await;
                    }
                }
                Ok(Event::Init) => held.clear(),
                // Listed again after a lost watch: a map deleted meanwhile sent no event.
                Ok(Event::InitDone) => {
                    for ns in live.difference(&held) {
                        write(&client, ns, &bundle).await;
                    }
                }
                Err(e) => tracing::warn!("watching ConfigMaps {CONFIG_MAP}: {e}"),
            },
            else => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managed(entries: &[(&str, &str)]) -> ConfigMap {
        let mut cm = config_map("shop", "OTHER\n");
        cm.metadata.managed_fields = Some(
            entries
                .iter()
                .map(|(manager, field)| {
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
                        manager: Some(manager.to_string()),
                        operation: Some("Apply".into()),
                        fields_v1: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1(
                            serde_json::json!({ *field: {} }),
                        )),
                        ..Default::default()
                    }
                })
                .collect(),
        );
        cm
    }

    #[test]
    fn another_wefts_roots_are_left_alone_and_anyone_elses_edit_is_not() {
        // (managers and the fields they own, written by weft alone)
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[("weft", "f:data")], true),
            (&[("weft", "f:data"), ("kubectl-edit", "f:metadata")], true),
            (&[("weft", "f:metadata"), ("kubectl-edit", "f:data")], false),
            (&[("weft", "f:data"), ("kubectl-edit", "f:data")], false),
            (&[], false),
        ];
        for (entries, want) in cases {
            assert_eq!(written_by_weft(&managed(entries)), *want, "{entries:?}");
        }
    }

    #[test]
    fn the_map_holds_the_bundle_under_its_key_and_an_edit_is_seen() {
        let cm = config_map("shop", "PEM\n");
        assert_eq!(cm.metadata.name.as_deref(), Some(CONFIG_MAP));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("shop"));
        assert!(holds(&cm, "PEM\n"));
        assert!(!holds(&cm, "OTHER\n"));
        assert!(!holds(&ConfigMap::default(), "PEM\n"));
    }
}
