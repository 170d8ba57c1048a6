//! Shared by the webhook test binaries (`webhooks_*.rs`): a scriptable webhook receiver on
//! 127.0.0.1, and a fixture that drives an in-process server (manual clock) through the
//! subscription and delivery-log API.
//!
//! The receiver answers the URL-validation handshake the way it is told to (correctly, with a
//! wrong token, too slowly, with an error status) and answers deliveries from a script of
//! [`Answer`]s, then a default. It records every delivery at arrival, before it answers, so
//! tests can measure latency and count attempts, and it tracks which delivery ids are in flight
//! at once, so a test can show that no delivery is ever attempted twice concurrently.
//!
//! Every address used here is on loopback: the receivers bind 127.0.0.1:0 and the servers
//! they talk to do the same.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use qss_api::Clock;
use serde_json::{Value, json};

use crate::common::{self, TestAccount, TestApp};

/// The secret receivers answer the handshake with unless told otherwise.
pub const RECEIVER_SECRET: &str = "a-receiver-secret-0123456789";

/// How a receiver answers the URL-validation handshake.
#[derive(Debug, Clone)]
pub enum Handshake {
    /// The SPEC 7.2 answer, made with the receiver's secret.
    Correct,
    /// The right plainToken, but an encryptedToken made with another secret.
    WrongSecret,
    /// The SPEC 7.2 answer for another plainToken.
    WrongPlainToken,
    /// The correct answer, after this long.
    Slow(Duration),
    /// This status and an empty JSON object.
    Status(u16),
}

/// How a receiver answers one delivery.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Waits this long before answering (a hanging endpoint waits longer than the timeout).
    pub delay: Duration,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }
}

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Real time of arrival, before the receiver answered.
    pub arrived: Instant,
    /// `webhook-id`: the delivery id.
    pub delivery_id: String,
    /// The parsed body (`Value::Null` if it is not JSON).
    pub event: Value,
}

impl Hit {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("delivery without {name}"))
            .to_str()
            .unwrap()
            .to_string()
    }

    pub fn event_id(&self) -> String {
        self.event["id"].as_str().unwrap_or_default().to_string()
    }
}

#[derive(Default)]
struct Script {
    queue: VecDeque<Answer>,
    default: Option<Answer>,
}

/// What a receiver shares between its handler and the test. Locks are never held across an
/// await.
struct State {
    secret: Mutex<String>,
    handshake: Mutex<Handshake>,
    script: Mutex<Script>,
    hits: Mutex<Vec<Hit>>,
    /// Handshake requests received: `(headers, body)`.
    handshakes: Mutex<Vec<(HeaderMap, Bytes)>>,
    /// Delivery ids being answered now, with how many requests carry each.
    in_flight: Mutex<HashMap<String, usize>>,
    /// The most requests answered at once (all delivery ids together).
    max_concurrent: Mutex<usize>,
    /// Delivery ids that arrived while a request with the same id was still being answered.
    overlaps: Mutex<Vec<String>>,
}

/// A webhook receiver listening on 127.0.0.1. Lives until the test's runtime ends.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<State>,
}

/// Decrements the in-flight count of a delivery id when its request is answered or dropped
/// (hyper drops the handler when the client goes away).
struct InFlight {
    state: Arc<State>,
    id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut map = self.state.in_flight.lock().unwrap();
        if let Some(n) = map.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.id);
            }
        }
    }
}

impl Receiver {
    /// A receiver that answers the handshake correctly with [`RECEIVER_SECRET`] and every
    /// delivery with 200.
    pub async fn start() -> Receiver {
        let state = Arc::new(State {
            secret: Mutex::new(RECEIVER_SECRET.to_string()),
            handshake: Mutex::new(Handshake::Correct),
            script: Mutex::new(Script::default()),
            hits: Mutex::new(Vec::new()),
            handshakes: Mutex::new(Vec::new()),
            in_flight: Mutex::new(HashMap::new()),
            max_concurrent: Mutex::new(0),
            overlaps: Mutex::new(Vec::new()),
        });
        let s = state.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let s = s.clone();
            async move { handle(s, headers, body).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn set_secret(&self, secret: &str) {
        *self.state.secret.lock().unwrap() = secret.to_string();
    }

    pub fn set_handshake(&self, h: Handshake) {
        *self.state.handshake.lock().unwrap() = h;
    }

    /// Answers the next deliveries with `answers`, in order, then with the default.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.script.lock().unwrap().queue.extend(answers);
    }

    /// The answer once the script is used up (initially 200).
    pub fn set_default(&self, answer: Answer) {
        self.state.script.lock().unwrap().default = Some(answer);
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap().clone()
    }

    pub fn hit_count(&self) -> usize {
        self.state.hits.lock().unwrap().len()
    }

    pub fn handshakes(&self) -> Vec<(HeaderMap, Bytes)> {
        self.state.handshakes.lock().unwrap().clone()
    }

    /// The most deliveries that were being answered at the same moment.
    pub fn max_concurrent(&self) -> usize {
        *self.state.max_concurrent.lock().unwrap()
    }

    pub fn overlaps(&self) -> Vec<String> {
        self.state.overlaps.lock().unwrap().clone()
    }

    /// Distinct event ids received.
    pub fn event_ids(&self) -> HashSet<String> {
        self.hits().iter().map(Hit::event_id).collect()
    }

    /// Waits until at least `n` deliveries arrived (at most `limit` of real time).
    pub async fn wait_for_hits(&self, n: usize, limit: Duration) -> Vec<Hit> {
        let deadline = Instant::now() + limit;
        loop {
            let hits = self.hits();
            if hits.len() >= n {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "receiver got {} deliveries within {limit:?}, expected {n}",
                hits.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asserts that the receiver still has exactly `n` deliveries after `settle` of real time:
    /// the check that something did NOT happen. `settle` covers several dispatcher polls
    /// (250 ms each), so a due delivery would have been attempted within it.
    pub async fn assert_stays_at(&self, n: usize, settle: Duration, why: &str) {
        tokio::time::sleep(settle).await;
        let hits = self.hits();
        assert_eq!(
            hits.len(),
            n,
            "{why}: receiver got {} deliveries, expected {n}: {:?}",
            hits.len(),
            hits.iter()
                .map(|h| (&h.delivery_id, h.event_id()))
                .collect::<Vec<_>>()
        );
    }
}

async fn handle(state: Arc<State>, headers: HeaderMap, body: Bytes) -> Response {
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if event["event"] == "endpoint.url_validation" {
        state
            .handshakes
            .lock()
            .unwrap()
            .push((headers, body.clone()));
        return handshake_answer(&state, &event).await;
    }
    let arrived = Instant::now();
    let delivery_id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let _guard = {
        let mut map = state.in_flight.lock().unwrap();
        let n = map.entry(delivery_id.clone()).or_default();
        if *n > 0 {
            state.overlaps.lock().unwrap().push(delivery_id.clone());
        }
        *n += 1;
        let total: usize = map.values().sum();
        let mut max = state.max_concurrent.lock().unwrap();
        *max = (*max).max(total);
        InFlight {
            state: state.clone(),
            id: delivery_id.clone(),
        }
    };
    state.hits.lock().unwrap().push(Hit {
        headers,
        body,
        arrived,
        delivery_id,
        event,
    });
    let answer = {
        let mut script = state.script.lock().unwrap();
        match script.queue.pop_front() {
            Some(a) => a,
            None => script
                .default
                .clone()
                .unwrap_or_else(|| Answer::status(200)),
        }
    };
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let status = StatusCode::from_u16(answer.status).unwrap();
    let mut response = (status, format!("answered {}", answer.status)).into_response();
    for (name, value) in &answer.headers {
        response.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    response
}

async fn handshake_answer(state: &State, event: &Value) -> Response {
    let plain = event["payload"]["plainToken"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let secret = state.secret.lock().unwrap().clone();
    let mode = state.handshake.lock().unwrap().clone();
    let answer = |secret: &str, plain: &str| {
        let enc = qss_delivery::signing::handshake_answer(secret, plain);
        axum::Json(json!({"plainToken": plain, "encryptedToken": enc})).into_response()
    };
    match mode {
        Handshake::Correct => answer(&secret, &plain),
        Handshake::WrongSecret => {
            let enc = qss_delivery::signing::handshake_answer("some-other-secret-0000", &plain);
            axum::Json(json!({"plainToken": plain, "encryptedToken": enc})).into_response()
        }
        Handshake::WrongPlainToken => answer(&secret, "not-the-plain-token"),
        Handshake::Slow(delay) => {
            tokio::time::sleep(delay).await;
            answer(&secret, &plain)
        }
        Handshake::Status(code) => {
            (StatusCode::from_u16(code).unwrap(), axum::Json(json!({}))).into_response()
        }
    }
}

/// An in-process server with a manual clock, one account with 10 s windows and no grace, and a
/// token. Phone events are the unit of work: each call with a sample in a window gives one
/// `qss.phone_call_qos` event when the clock reaches the window's end.
pub struct Fixture {
    pub app: TestApp,
    pub account: TestAccount,
    pub token: String,
    calls: Mutex<usize>,
}

pub const WINDOW_MS: i64 = 10_000;
pub const PHONE: &str = "qss.phone_call_qos";
pub const PARTICIPANT: &str = "qss.meeting_participant_qos";

impl Fixture {
    pub async fn start(flags: Vec<(&str, &str)>) -> Fixture {
        let app = common::spawn_app_with(flags).await;
        let account = app.create_account("business", true).await;
        let token = app.token(&account).await;
        let r = app
            .patch_settings(
                &account,
                &token,
                json!({"aggregation_interval_seconds": 10, "aggregation_grace_seconds": 0}),
            )
            .await;
        assert_eq!(r.status(), 204);
        Fixture {
            app,
            account,
            token,
            calls: Mutex::new(0),
        }
    }

    pub fn webhooks_path(&self) -> String {
        format!("/v2/accounts/{}/qss/webhooks", self.account.account_id)
    }

    pub fn now_ms(&self) -> i64 {
        self.app.clock.now_ms()
    }

    /// Any request with the fixture's token; returns the status and the JSON body (or Null).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .app
            .client
            .request(method, format!("{}{path}", self.app.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// POST to the subscriptions collection.
    pub async fn create(&self, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, &self.webhooks_path(), Some(body))
            .await
    }

    /// Creates an active subscription to `events` at `url` with `secret` (the handshake runs).
    pub async fn subscribe(&self, url: &str, secret: &str, events: &[&str]) -> Value {
        let (status, v) = self
            .create(json!({"url": url, "events": events, "secret_token": secret}))
            .await;
        assert_eq!(status, 201, "{v}");
        assert_eq!(v["status"], "active", "{v}");
        v
    }

    pub async fn webhook(&self, webhook_id: &str) -> (u16, Value) {
        let path = format!("{}/{webhook_id}", self.webhooks_path());
        self.call(reqwest::Method::GET, &path, None).await
    }

    pub async fn list_webhooks(&self) -> Vec<Value> {
        let (status, v) = self
            .call(reqwest::Method::GET, &self.webhooks_path(), None)
            .await;
        assert_eq!(status, 200, "{v}");
        v["webhooks"].as_array().unwrap().clone()
    }

    /// The first page (newest first) of a subscription's delivery log.
    pub async fn deliveries(&self, webhook_id: &str) -> Vec<Value> {
        let path = format!(
            "{}/{webhook_id}/deliveries?page_size=300",
            self.webhooks_path()
        );
        let (status, v) = self.call(reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 200, "{v}");
        v["deliveries"].as_array().unwrap().clone()
    }

    /// One delivery with its attempts.
    pub async fn delivery(&self, webhook_id: &str, delivery_id: &str) -> Value {
        let path = format!(
            "{}/{webhook_id}/deliveries/{delivery_id}",
            self.webhooks_path()
        );
        let (status, v) = self.call(reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 200, "{v}");
        v
    }

    /// Polls one delivery until `pred` holds (at most 10 s of real time).
    pub async fn wait_delivery(
        &self,
        webhook_id: &str,
        delivery_id: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let d = self.delivery(webhook_id, delivery_id).await;
            if pred(&d) {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "delivery never became {what}: {d}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls a subscription until `pred` holds (at most 10 s of real time).
    pub async fn wait_webhook(
        &self,
        webhook_id: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, w) = self.webhook(webhook_id).await;
            if pred(&w) {
                return w;
            }
            assert!(
                Instant::now() < deadline,
                "webhook never became {what}: {w}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Posts one call sample for each of `calls` new calls in the current window, then moves
    /// the clock to the window's end, so the aggregation thread emits one phone event per call
    /// at its next tick (every 250 ms of real time). Returns the new call ids and the real time
    /// at which the clock was moved.
    pub async fn emit_calls(&self, calls: usize) -> (Vec<String>, Instant) {
        let ids: Vec<String> = {
            let mut n = self.calls.lock().unwrap();
            (0..calls)
                .map(|_| {
                    *n += 1;
                    format!("call-{n:05}")
                })
                .collect()
        };
        let now = self.now_ms();
        let samples: Vec<Value> = ids
            .iter()
            .map(|id| {
                json!({"kind": "call_qos", "call_id": id, "direction": "inbound",
                       "caller_number": "+15550100", "codec": "opus",
                       "timestamp": common::iso(now),
                       "metrics": {"bitrate": 32, "latency": 100, "jitter": 10, "packet_loss": 1}})
            })
            .collect();
        let r = self.app.post_samples(&self.account, json!(samples)).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        let moved = self.advance_to_window_end();
        (ids, moved)
    }

    /// Like [`Fixture::emit_calls`], for `participants` participants of one new meeting: one
    /// `qss.meeting_participant_qos` event each.
    pub async fn emit_participants(&self, participants: usize) -> Instant {
        let meeting = {
            let mut n = self.calls.lock().unwrap();
            *n += 1;
            format!("meeting-{n:05}")
        };
        let now = self.now_ms();
        let samples: Vec<Value> = (0..participants)
            .map(|p| {
                json!({"kind": "participant_qos", "meeting_id": meeting,
                       "participant_id": format!("p{p:05}"), "timestamp": common::iso(now),
                       "metrics": {"audio": {"bitrate": 64, "latency": 50, "jitter": 5, "packet_loss": 0}}})
            })
            .collect();
        let r = self.app.post_samples(&self.account, json!(samples)).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        self.advance_to_window_end()
    }

    /// Moves the clock to the end of the current window; returns the real time of the move.
    pub fn advance_to_window_end(&self) -> Instant {
        let now = self.now_ms();
        let end = now.div_euclid(WINDOW_MS) * WINDOW_MS + WINDOW_MS;
        self.app.clock.advance_ms(end - now);
        Instant::now()
    }

    /// Emits one phone event and waits until `receiver` got it; returns that delivery.
    pub async fn emit_one_and_receive(&self, receiver: &Receiver) -> Hit {
        let before = receiver.hit_count();
        self.emit_calls(1).await;
        let hits = receiver
            .wait_for_hits(before + 1, Duration::from_secs(10))
            .await;
        hits[before].clone()
    }
}

/// Parses an API date-time (whole seconds, `Z`) to epoch milliseconds.
pub fn ms(v: &Value) -> i64 {
    qss_domain::timefmt::parse_datetime(
        v.as_str().unwrap_or_else(|| panic!("not a date-time: {v}")),
    )
    .unwrap_or_else(|| panic!("not a date-time: {v}"))
}
