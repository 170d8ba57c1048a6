//! Opaque pagination tokens (SPEC 2.1): the query they continue (account, filters, resolved
//! range), the keyset position and an expiry, as base64url JSON with an HMAC-SHA256 tag, so a
//! forged, altered or other-account token is refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Serialize, de::DeserializeOwned};
use sha2::Sha256;

/// How long a token stays valid (the SPEC asks for at least 15 minutes).
pub const TOKEN_TTL_MS: i64 = 60 * 60 * 1000;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Envelope<T> {
    /// Account the token belongs to.
    a: String,
    /// Expiry, epoch ms.
    e: i64,
    /// The query and position.
    q: T,
}

pub fn encode<T: Serialize>(key: &[u8; 32], account_id: &str, now: i64, query: &T) -> String {
    let env = Envelope {
        a: account_id.to_string(),
        e: now + TOKEN_TTL_MS,
        q: query,
    };
    sign_raw(key, &serde_json::to_vec(&env).expect("token serializes"))
}

/// A token carrying `json` as it is, whatever it holds: what only the holder of `key` (the
/// server) can make. For the fuzz target, which must reach the decoding behind the tag.
#[doc(hidden)]
pub fn sign_raw(key: &[u8; 32], json: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(json);
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json),
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// The query of a valid token of this account, or a message saying why it is refused.
pub fn decode<T: DeserializeOwned>(
    key: &[u8; 32],
    account_id: &str,
    now: i64,
    token: &str,
) -> Result<T, &'static str> {
    let invalid = "The next_page_token is invalid.";
    let (body, tag) = token.split_once('.').ok_or(invalid)?;
    let json = URL_SAFE_NO_PAD.decode(body).map_err(|_| invalid)?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(&json);
    mac.verify_slice(&tag).map_err(|_| invalid)?;
    let env: Envelope<T> = serde_json::from_slice(&json).map_err(|_| invalid)?;
    if env.a != account_id {
        return Err(invalid);
    }
    if now > env.e {
        return Err("The next_page_token has expired.");
    }
    Ok(env.q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_refuses_tampering_other_accounts_and_expiry() {
        let key = [7u8; 32];
        let t = encode(&key, "acct", 1000, &(5i64, "x".to_string()));
        assert_eq!(
            decode::<(i64, String)>(&key, "acct", 1000, &t).unwrap(),
            (5, "x".to_string())
        );
        assert!(decode::<(i64, String)>(&key, "other", 1000, &t).is_err());
        assert!(decode::<(i64, String)>(&[8u8; 32], "acct", 1000, &t).is_err());
        assert!(decode::<(i64, String)>(&key, "acct", 1000 + TOKEN_TTL_MS + 1, &t).is_err());
        let mut forged = t.clone();
        forged.insert(3, 'A');
        assert!(decode::<(i64, String)>(&key, "acct", 1000, &forged).is_err());
    }
}
