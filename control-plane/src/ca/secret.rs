//! The CA's root in a Kubernetes Secret: read if it is there, created if not, and read again
//! when another replica created it first, so every replica and restart signs with one root.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

/// The root's PEM (certificate and key) under `key` in the Secret `namespace/name`, made by
/// `new_root` and stored there first if there is none.
pub async fn load_or_create(
    client: &kube::Client,
    (namespace, name): (&str, &str),
    key: &str,
    new_root: impl Fn() -> Result<String, String>,
) -> Result<String, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    // Twice at most: absent, then made by another replica between our read and our create.
    for _ in 0..2 {
        match api.get_opt(name).await {
            Ok(Some(secret)) => return root_of(&secret, key),
            Ok(None) => {}
            Err(e) => return Err(format!("reading it: {e}")),
        }
        let text = new_root()?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                key.to_string(),
                ByteString(text.clone().into_bytes()),
            )])),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(namespace, name, "created a new mesh root CA in a Secret");
                return Ok(text);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(format!("creating it: {e}")),
        }
    }
    Err("created and deleted again while being read".into())
}

fn root_of(secret: &Secret, key: &str) -> Result<String, String> {
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| format!("no {key} in its data"))?;
    String::from_utf8(data.0.clone()).map_err(|_| format!("{key} is not text"))
}
