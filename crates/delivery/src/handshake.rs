//! The URL validation handshake (SPEC 7.2), shared by the API (creation, URL change,
//! re-activation, `validate`) and the periodic re-validation of the dispatcher.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::client::{DeliveryClient, attempt};
use crate::signing::{headers, verify_handshake};

/// Sends `endpoint.url_validation` to `url`, signed with `signing_secret`, and checks the
/// answer: 200 within `timeout`, the same `plainToken`, and an `encryptedToken` made with one
/// of `accepted`. The error is the reason shown to the user.
pub async fn handshake(
    client: &DeliveryClient,
    url: &str,
    signing_secret: &str,
    accepted: &[&str],
    timeout: Duration,
    now_ms: i64,
    version: &str,
) -> Result<(), String> {
    let plain = hex::encode(rand::random::<[u8; 16]>());
    let body = json!({"event": "endpoint.url_validation", "event_ts": now_ms,
        "payload": {"plainToken": plain}});
    let body = serde_json::to_vec(&body).expect("json serializes");
    let id = format!("hs_{}", hex::encode(rand::random::<[u8; 16]>()));
    let headers = headers(version, &id, now_ms / 1000, &body, signing_secret, None);
    let result = attempt(client, url, &headers, Bytes::from(body), timeout).await;
    match (result.http_status, result.error) {
        (Some(200), _) => {}
        (Some(s), _) => {
            return Err(format!(
                "the endpoint answered HTTP {s}; the handshake needs 200"
            ));
        }
        (None, Some(e)) => return Err(format!("the endpoint could not be reached ({e})")),
        (None, None) => return Err("the endpoint did not answer".to_string()),
    }
    let answer: Value = serde_json::from_str(&result.response_body).map_err(|_| {
        "the endpoint's answer is not a JSON object with plainToken and encryptedToken".to_string()
    })?;
    if answer.get("plainToken").and_then(Value::as_str) != Some(plain.as_str()) {
        return Err("the endpoint's answer does not echo plainToken".to_string());
    }
    let encrypted = answer
        .get("encryptedToken")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !verify_handshake(accepted, &plain, encrypted) {
        return Err(
            "encryptedToken is not the HMAC-SHA256 of plainToken with the secret token".to_string(),
        );
    }
    Ok(())
}
