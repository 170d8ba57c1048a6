//! Webhook delivery benchmark: `cargo bench -p qss --bench delivery`.
//!
//! A whole qss server in the process (SQLite file, system clock, private networks allowed for
//! the loopback receiver) with one subscription to a keep-alive receiver on 127.0.0.1 that
//! answers 204 at once. Events are committed straight through the store in batches (each
//! commit creates the deliveries in the same transaction, like the aggregation thread does)
//! at an offered rate of `QSS_BENCH_RATE` deliveries/s (default 12,000) for
//! `QSS_BENCH_SECONDS` (default 5), spread over `QSS_BENCH_ENDPOINTS` subscriptions (default 1;
//! each event goes to every one of them). Reports deliveries/s and emission-to-first-attempt
//! latency (commit time in the event to arrival at the receiver) p50/p99/max.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use qss_store::{NewEvent, WriteBatch};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "bench-admin-token-0123456789abcdef";
const SECRET: &str = "bench-receiver-secret-0123456789";
const BATCH: usize = 500;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let rate = env_num("QSS_BENCH_RATE", 12_000);
    let seconds = env_num("QSS_BENCH_SECONDS", 5);
    let endpoints = env_num("QSS_BENCH_ENDPOINTS", 1);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(rate, seconds, endpoints))
}

async fn run(rate: u64, seconds: u64, endpoints: u64) -> anyhow::Result<()> {
    // The receiver: records arrival latency from the event's event_ts.
    let latencies: Arc<Mutex<Vec<i64>>> = Arc::default();
    let l = latencies.clone();
    let receiver = axum::Router::new().route(
        "/hook/{n}",
        post(move |_n: axum::extract::Path<u64>, body: Bytes| {
            let l = l.clone();
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
                l.lock()
                    .unwrap()
                    .push(now_ms() - v["event_ts"].as_i64().unwrap_or(0));
                (StatusCode::OK, axum::Json(json!({})))
            }
        }),
    );
    let rl = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver_addr = rl.local_addr()?;
    tokio::spawn(async move { axum::serve(rl, receiver).await });

    let dir = tempfile::tempdir()?;
    let overrides = vec![
        (
            "database".to_string(),
            format!("sqlite://{}", dir.path().join("qss.db").display()),
        ),
        ("admin_token".to_string(), ADMIN.to_string()),
        (
            "webhook.allow_private_networks".to_string(),
            "true".to_string(),
        ),
    ];
    let config = qss_server::Config::load(None, Vec::new(), &overrides)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let shutdown = CancellationToken::new();
    let server = qss_server::start(
        config,
        listener,
        Arc::new(qss_api::SystemClock),
        shutdown.clone(),
    )
    .await?;
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let a: Value = http
        .post(format!("{base}/admin/accounts"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "bench", "plan": "business", "qss_addon": true}))
        .send()
        .await?
        .json()
        .await?;
    let account = a["account_id"].as_str().unwrap_or_default().to_string();
    let tok: Value = http
        .post(format!(
            "{base}/oauth/token?grant_type=account_credentials&account_id={account}"
        ))
        .basic_auth(
            a["credentials"]["client_id"].as_str().unwrap_or(""),
            a["credentials"]["client_secret"].as_str(),
        )
        .send()
        .await?
        .json()
        .await?;
    for n in 0..endpoints {
        let url = format!("http://{receiver_addr}/hook/{n}");
        let r = http
            .post(format!("{base}/v2/accounts/{account}/qss/webhooks"))
            .bearer_auth(tok["access_token"].as_str().unwrap_or(""))
            .json(&json!({"url": url, "events": ["qss.phone_call_qos"], "secret_token": SECRET}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "subscribing: {}", r.text().await?);
    }

    let store = server.state.store.clone();
    let wake = server.state.delivery_wake.clone();
    let events_total = (rate * seconds / endpoints) as usize;
    let total = events_total * endpoints as usize;
    let batches = events_total.div_ceil(BATCH);
    let interval = Duration::from_secs_f64(BATCH as f64 * endpoints as f64 / rate as f64);
    let started = Instant::now();
    for b in 0..batches {
        let ts = now_ms();
        let events: Vec<NewEvent> = (0..BATCH)
            .map(|i| {
                let id = qss_domain::event::new_event_id(ts);
                let body = json!({"id": id, "event": "qss.phone_call_qos", "event_ts": ts,
                    "payload": {"account_id": account, "object": {"call_id": format!("c{b}-{i}"), "direction": "inbound",
                    "timestamp": "2026-11-27T10:00:00Z", "interval_seconds": 60, "sample_count": 6,
                    "metrics": {"bitrate": 32, "latency": 100, "jitter": 10, "packet_loss": 1, "mos": 4.27},
                    "quality": {"mos": 4.27, "r_factor": 87.45, "grade": "good", "issues": []}}}});
                NewEvent {
                    id,
                    account_id: account.clone(),
                    event_type: "qss.phone_call_qos".into(),
                    event_ts: ts,
                    meeting_id: None,
                    meeting_instance_id: None,
                    participant_id: None,
                    call_id: Some(format!("c{b}-{i}")),
                    dedup_key: format!("bench-{b}-{i}"),
                    body: body.to_string(),
                }
            })
            .collect();
        let s = store.clone();
        tokio::task::spawn_blocking(move || {
            s.commit(&WriteBatch {
                events,
                ..Default::default()
            })
        })
        .await??;
        wake.notify_one();
        let next = started + interval * (b as u32 + 1);
        tokio::time::sleep_until(next.into()).await;
    }
    let offered_for = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    while latencies.lock().unwrap().len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let mut l = latencies.lock().unwrap().clone();
    l.sort_unstable();
    let pct = |p: usize| {
        l.get((l.len() * p).div_ceil(100).max(1) - 1)
            .copied()
            .unwrap_or(-1)
    };
    println!("| measure | value |\n|---|---|");
    println!(
        "| offered | {total} deliveries ({events_total} events x {endpoints} subscriptions) at {rate}/s over {:.1} s |",
        offered_for.as_secs_f64()
    );
    println!(
        "| delivered | {} in {:.2} s |",
        l.len(),
        elapsed.as_secs_f64()
    );
    println!(
        "| deliveries/s | {:.0} |",
        l.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "| emission-to-first-attempt p50 / p99 / max | {} / {} / {} ms |",
        pct(50),
        pct(99),
        l.last().copied().unwrap_or(-1)
    );
    shutdown.cancel();
    server.wait().await?;
    Ok(())
}
