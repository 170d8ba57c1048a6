//! `qss listen`: a webhook receiver to develop against qss (SPEC 9). It answers the URL
//! validation handshake, verifies both signatures of every delivery (401 when either is
//! wrong or the timestamp is more than 5 minutes off), and prints each event as a JSON line.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use qss_delivery::signing::{handshake_answer, standard_signature, zoom_signature};
use serde_json::{Value, json};

/// Receivers accept timestamps this far from their own clock (Standard Webhooks' tolerance).
const TOLERANCE_SECS: i64 = 300;

/// What the receiver does with a verified delivery.
pub type OnEvent = Arc<dyn Fn(&Value) + Send + Sync>;

/// The receiver as a router (the demo mounts it in-process).
pub fn receiver(secret: String, on_event: OnEvent) -> Router {
    let secret = Arc::new(secret);
    Router::new().fallback(post(move |headers: HeaderMap, body: Bytes| {
        let (secret, on_event) = (secret.clone(), on_event.clone());
        async move { receive(&secret, &on_event, &headers, &body) }
    }))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Checks both signature schemes of one request; the error says which failed.
pub fn verify(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now_secs: i64,
) -> Result<(), &'static str> {
    let ts: i64 = header(headers, "x-zm-request-timestamp")
        .parse()
        .map_err(|_| "missing x-zm-request-timestamp")?;
    if (now_secs - ts).abs() > TOLERANCE_SECS {
        return Err("timestamp outside the 5 minute tolerance");
    }
    if header(headers, "x-zm-signature") != zoom_signature(secret, ts, body) {
        return Err("x-zm-signature does not match");
    }
    let id = header(headers, "webhook-id");
    let wts: i64 = header(headers, "webhook-timestamp")
        .parse()
        .map_err(|_| "missing webhook-timestamp")?;
    let expected = standard_signature(secret, id, wts, body);
    if !header(headers, "webhook-signature")
        .split(' ')
        .any(|s| s == expected)
    {
        return Err("webhook-signature does not match");
    }
    Ok(())
}

fn receive(
    secret: &str,
    on_event: &OnEvent,
    headers: &HeaderMap,
    body: &[u8],
) -> axum::response::Response {
    let now = qss_api::Clock::now_ms(&qss_api::SystemClock) / 1000;
    if let Err(why) = verify(secret, headers, body, now) {
        eprintln!("qss listen: refused a request: {why}");
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": why}))).into_response();
    }
    let Ok(event) = serde_json::from_slice::<Value>(body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "body is not JSON"})),
        )
            .into_response();
    };
    if event["event"] == "endpoint.url_validation" {
        let plain = event["payload"]["plainToken"].as_str().unwrap_or("");
        return Json(
            json!({"plainToken": plain, "encryptedToken": handshake_answer(secret, plain)}),
        )
        .into_response();
    }
    on_event(&event);
    StatusCode::NO_CONTENT.into_response()
}

pub async fn run(port: u16, secret: String) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!(
        "qss listen: receiving on http://{}/ (every path); events are printed as JSON lines",
        listener.local_addr()?
    );
    let print: OnEvent = Arc::new(|event| println!("{event}"));
    axum::serve(listener, receiver(secret, print))
        .with_graceful_shutdown(qss_server::shutdown_signal())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_verifies_and_a_tampered_one_does_not() {
        let secret = "listen-secret-0123456789";
        let body = br#"{"event":"qss.phone_call_qos"}"#;
        let now = 1_700_000_000;
        let mut headers = HeaderMap::new();
        for (k, v) in qss_delivery::signing::headers("test", "dlv_1", now, body, secret, None) {
            headers.insert(k, v.parse().unwrap());
        }
        assert_eq!(verify(secret, &headers, body, now), Ok(()));
        assert!(verify(secret, &headers, br#"{"event":"x"}"#, now).is_err());
        assert!(verify("another-secret-0123456", &headers, body, now).is_err());
        assert_eq!(
            verify(secret, &headers, body, now + 301),
            Err("timestamp outside the 5 minute tolerance")
        );
    }
}
