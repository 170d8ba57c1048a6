//! Webhook delivery end to end over HTTP on 127.0.0.1: a real receiver answers the handshake
//! and verifies both signatures of every delivery.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use qss_api::Clock;
use serde_json::{Value, json};

const SECRET: &str = "a-receiver-secret-0123456789";

#[derive(Clone, Default)]
struct Received {
    deliveries: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

/// A receiver that answers the handshake with `SECRET` and records every delivery.
async fn spawn_receiver() -> (String, Received) {
    let received = Received::default();
    let r = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let r = r.clone();
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if v["event"] == "endpoint.url_validation" {
                    let plain = v["payload"]["plainToken"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    let enc = qss_delivery::signing::handshake_answer(SECRET, &plain);
                    return (
                        StatusCode::OK,
                        axum::Json(json!({"plainToken": plain, "encryptedToken": enc})),
                    );
                }
                r.deliveries.lock().unwrap().push((headers, body));
                (StatusCode::OK, axum::Json(json!({})))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), received)
}

#[tokio::test]
async fn events_reach_a_subscribed_receiver_signed_with_both_schemes() {
    let app = common::spawn_app_with(vec![("webhook.allow_private_networks", "true")]).await;
    let account = app.create_account("business", true).await;
    let token = app.token(&account).await;
    let (url, received) = spawn_receiver().await;
    let r = app
        .client
        .post(format!(
            "{}/v2/accounts/{}/qss/webhooks",
            app.base, account.account_id
        ))
        .bearer_auth(&token)
        .json(&json!({"url": url, "events": ["qss.phone_call_qos"], "secret_token": SECRET}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let webhook: Value = r.json().await.unwrap();
    assert_eq!(webhook["status"], "active");

    let r = app
        .patch_settings(
            &account,
            &token,
            json!({"aggregation_interval_seconds": 10, "aggregation_grace_seconds": 0}),
        )
        .await;
    assert_eq!(r.status(), 204);
    let t0 = app.clock.now_ms();
    let r = app
        .post_samples(
            &account,
            json!([{"kind": "call_qos", "call_id": "c1", "direction": "inbound", "timestamp": common::iso(t0 + 1000),
                    "metrics": {"bitrate": 32, "latency": 100, "jitter": 10, "packet_loss": 1}}]),
        )
        .await;
    assert_eq!(r.status(), 202);
    app.advance(10_000).await;

    let mut got = Vec::new();
    for _ in 0..50 {
        got = received.deliveries.lock().unwrap().clone();
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got.len(), 1, "one phone event, one delivery");
    let (headers, body) = &got[0];
    let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_string();
    let ts: i64 = h("x-zm-request-timestamp").parse().unwrap();
    assert_eq!(
        h("x-zm-signature"),
        qss_delivery::signing::zoom_signature(SECRET, ts, body)
    );
    assert_eq!(
        h("webhook-signature"),
        qss_delivery::signing::standard_signature(SECRET, &h("webhook-id"), ts, body)
    );
    assert_eq!(h("x-zm-request-id"), h("webhook-id"));
    assert!(qss_delivery::canonical::is_js_canonical(body));
    let event: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(event["event"], "qss.phone_call_qos");

    // The delivery log shows it succeeded, with the same id the receiver saw.
    app.advance(3000).await;
    let r = app
        .get(
            &token,
            &format!(
                "/v2/accounts/{}/qss/webhooks/{}/deliveries",
                account.account_id,
                webhook["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(r.status(), 200);
    let log: Value = r.json().await.unwrap();
    let d = &log["deliveries"][0];
    assert_eq!(d["status"], "succeeded", "{log}");
    assert_eq!(d["id"].as_str().unwrap(), h("webhook-id"));
    assert_eq!(d["attempt_count"], 1);
    assert_eq!(d["last_attempt"]["http_status"], 200);
}

#[tokio::test]
async fn a_subscription_whose_receiver_answers_the_handshake_wrongly_is_not_saved() {
    let app = common::spawn_app_with(vec![("webhook.allow_private_networks", "true")]).await;
    let account = app.create_account("business", true).await;
    let token = app.token(&account).await;
    let (url, _received) = spawn_receiver().await;
    let r = app
        .client
        .post(format!("{}/v2/accounts/{}/qss/webhooks", app.base, account.account_id))
        .bearer_auth(&token)
        .json(&json!({"url": url, "events": ["qss.phone_call_qos"], "secret_token": "not-the-receivers-secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["field"], "url", "{v}");
    let r = app
        .get(
            &token,
            &format!("/v2/accounts/{}/qss/webhooks", account.account_id),
        )
        .await;
    let list: Value = r.json().await.unwrap();
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 0);
}
