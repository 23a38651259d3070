//! The CA's root in a Kubernetes Secret: read if it is there, created if not, and read again
//! when another replica created it first, so every replica and restart signs with one root.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

use super::authority::{ROOT_FILE, new_root};

/// The root's PEM (certificate and key) from the Secret `namespace/name`, made there first if
/// there is none.
pub async fn load_or_create(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    trust_domain: &str,
) -> Result<String, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    // Twice at most: absent, then made by another replica between our read and our create.
    for _ in 0..2 {
        match api.get_opt(name).await {
            Ok(Some(secret)) => return root_of(&secret),
            Ok(None) => {}
            Err(e) => return Err(format!("reading it: {e}")),
        }
        let text = new_root(trust_domain)?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                ROOT_FILE.to_string(),
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

fn root_of(secret: &Secret) -> Result<String, String> {
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(ROOT_FILE))
        .ok_or_else(|| format!("no {ROOT_FILE} in its data"))?;
    String::from_utf8(data.0.clone()).map_err(|_| format!("{ROOT_FILE} is not text"))
}
