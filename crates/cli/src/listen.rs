//! `qss listen`: a webhook receiver to develop against qss (SPEC 9). It answers the URL
//! validation handshake, verifies both signatures of every delivery (401 when either is
//! wrong or the timestamp is more than 5 minutes off), and prints each event as a JSON line.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use qss_delivery::signing::{handshake_answer, verify_request};
use serde_json::{Value, json};

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

fn receive(
    secret: &str,
    on_event: &OnEvent,
    headers: &HeaderMap,
    body: &[u8],
) -> axum::response::Response {
    let now = qss_api::Clock::now_ms(&qss_api::SystemClock) / 1000;
    if let Err(why) = verify_request(secret, |name| header(headers, name), body, now) {
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
