//! Workload tokens for the file registry, where there is no Kubernetes to vouch for a
//! workload: a JWT (ES256, RFC 7519) that this CA signs with its own key and reads back, naming a
//! namespace and service account as a Kubernetes service-account token does
//! (`sub: system:serviceaccount:<ns>:<sa>`), for audience `weft-ca`. `weft token create`
//! issues them; a sidecar presents one to be given a certificate for that identity.
//!
//! Written on aws-lc-rs (already the workspace's one crypto provider) rather than a JWT crate, whose
//! ES256 would bring a second one: the format is three base64url parts and one signature.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{self, EcdsaKeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::Identity;

/// The audience a token must name to be accepted by the CA.
pub const AUDIENCE: &str = "weft-ca";

/// The issuer weft writes into the tokens it issues.
const ISSUER: &str = "weft";

const HEADER: &str = r#"{"alg":"ES256","typ":"JWT"}"#;

/// Why a token was not accepted.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("malformed token")]
    Malformed,
    /// Signed by another key, or not ES256.
    #[error("token signature does not verify")]
    Signature,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
    /// For another audience.
    #[error("token is not for audience {AUDIENCE}")]
    Audience,
    /// Names no service account.
    #[error("token names no service account")]
    Subject,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    #[serde(with = "audiences")]
    aud: Vec<String>,
    iat: u64,
    exp: u64,
}

/// `aud` is a string or a list of them (RFC 7519 §4.1.3).
mod audiences {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(aud: &[String], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(aud)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(a) => vec![a],
            OneOrMany::Many(a) => a,
        })
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A token for `identity`, valid for `ttl`, for `audience`, signed with `key_pkcs8` (an ECDSA
/// P-256 key).
pub fn issue(
    key_pkcs8: &[u8],
    identity: &Identity,
    audience: &str,
    ttl: Duration,
) -> Result<String, String> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, key_pkcs8)
        .map_err(|e| format!("the CA key cannot sign tokens: {e}"))?;
    let iat = now();
    let claims = Claims {
        iss: ISSUER.into(),
        sub: identity.username(),
        aud: vec![audience.into()],
        iat,
        exp: iat + ttl.as_secs(),
    };
    let claims = serde_json::to_vec(&claims).map_err(|e| e.to_string())?;
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let sig = key
        .sign(&rng, signed.as_bytes())
        .map_err(|_| "signing failed".to_string())?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
}

/// The identity a token names, if `public_key` (an uncompressed P-256 point) signed it, it is
/// for [`AUDIENCE`] and has not expired.
pub fn verify(public_key: &[u8], token: &str) -> Result<Identity, TokenError> {
    verify_until(public_key, token).map(|(id, _)| id)
}

/// [`verify`], with how long the token stays valid.
pub fn verify_until(public_key: &[u8], token: &str) -> Result<(Identity, Duration), TokenError> {
    let mut parts = token.trim().split('.');
    let (Some(header), Some(claims), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).map_err(|_| TokenError::Malformed);
    let header: serde_json::Value =
        serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::Malformed)?;
    if header["alg"] != "ES256" {
        return Err(TokenError::Signature);
    }
    let signed_len = token.trim().len() - sig.len() - 1;
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public_key)
        .verify(&token.trim().as_bytes()[..signed_len], &decode(sig)?)
        .map_err(|_| TokenError::Signature)?;
    let claims: Claims =
        serde_json::from_slice(&decode(claims)?).map_err(|_| TokenError::Malformed)?;
    if claims.exp <= now() {
        return Err(TokenError::Expired);
    }
    if !claims.aud.iter().any(|a| a == AUDIENCE) {
        return Err(TokenError::Audience);
    }
    let id = Identity::from_username(&claims.sub).ok_or(TokenError::Subject)?;
    Ok((id, Duration::from_secs(claims.exp - now())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (Vec<u8>, Vec<u8>) {
        let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        (k.serialize_der(), k.public_key_raw().to_vec())
    }

    #[test]
    fn a_token_names_its_identity_to_the_key_that_signed_it_only() {
        let (private, public) = key();
        let id = Identity::new("shop", "web").unwrap();
        let hour = Duration::from_secs(3600);
        let token = issue(&private, &id, AUDIENCE, hour).unwrap();
        assert_eq!(verify(&public, &token), Ok(id.clone()));
        assert_eq!(verify(&public, &format!(" {token}\n")), Ok(id.clone()));

        let (_, other_public) = key();
        assert_eq!(verify(&other_public, &token), Err(TokenError::Signature));
        let other_aud = issue(&private, &id, "kubernetes", hour).unwrap();
        assert_eq!(verify(&public, &other_aud), Err(TokenError::Audience));
        let expired = issue(&private, &id, AUDIENCE, Duration::ZERO).unwrap();
        assert_eq!(verify(&public, &expired), Err(TokenError::Expired));

        // The claims swapped for another identity's: the signature no longer covers them.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(
            format!(
                r#"{{"iss":"weft","sub":"system:serviceaccount:kube-system:admin","aud":"weft-ca","iat":0,"exp":{}}}"#,
                now() + 3600
            ),
        );
        parts[1] = &forged;
        assert_eq!(
            verify(&public, &parts.join(".")),
            Err(TokenError::Signature)
        );
        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            forged
        );
        assert_eq!(verify(&public, &none_alg), Err(TokenError::Signature));
        for bad in ["", "a.b", "a.b.c.d", "!!.??.##"] {
            assert_eq!(verify(&public, bad), Err(TokenError::Malformed), "{bad}");
        }
    }
}
