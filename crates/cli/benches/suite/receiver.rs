//! A webhook receiver on 127.0.0.1 for the suite: answers the handshake, records what arrives
//! (when, and the parsed body), answers 200 at once over keep-alive.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};

use crate::common::{RECEIVER_SECRET, now_ms};

/// One delivery as it arrived: epoch ms at arrival, and the body.
pub struct Arrived {
    pub at_ms: i64,
    pub body: Value,
}

#[derive(Clone, Default)]
pub struct Receiver {
    pub arrived: Arc<Mutex<Vec<Arrived>>>,
}

impl Receiver {
    /// Starts listening; returns the receiver and its URL.
    pub async fn start() -> anyhow::Result<(Receiver, String)> {
        let receiver = Receiver::default();
        let arrived = receiver.arrived.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(move |body: Bytes| {
                let arrived = arrived.clone();
                async move {
                    let at_ms = now_ms();
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    if v["event"] == "endpoint.url_validation" {
                        let plain = v["payload"]["plainToken"]
                            .as_str()
                            .unwrap_or("")
                            .to_string();
                        let enc = qss_delivery::signing::handshake_answer(RECEIVER_SECRET, &plain);
                        return (
                            StatusCode::OK,
                            axum::Json(json!({"plainToken": plain, "encryptedToken": enc})),
                        );
                    }
                    arrived
                        .lock()
                        .expect("receiver lock")
                        .push(Arrived { at_ms, body: v });
                    (StatusCode::OK, axum::Json(json!({})))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((receiver, url))
    }

    pub fn count(&self) -> usize {
        self.arrived.lock().expect("receiver lock").len()
    }

    pub fn take(&self) -> Vec<Arrived> {
        std::mem::take(&mut *self.arrived.lock().expect("receiver lock"))
    }
}
